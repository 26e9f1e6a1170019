"""Model cards from the reference library's published results (src/zoo/results/, written by
tools/sync_results.py): one name's card, and a search over every registered weight set by accuracy,
size and cost. The figures are the publisher's measurements, not zoo's."""

from __future__ import annotations

import functools
from importlib import resources

from zoo import api
from zoo.domain.cards import CostRow, ModelCard, ResultRow, SearchFilter, SortKey, parse_costs, parse_results
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError
from zoo.domain.values import DefaultCfg

__all__ = ["ModelCard", "model_card", "published_costs", "published_results", "search_models"]


@functools.cache
def published_results() -> dict[str, tuple[ResultRow, ...]]:
    """NAME.TAG -> the publisher's ImageNet-1k evaluations of it (best first), for the tags zoo registers."""
    return parse_results(resources.files("zoo").joinpath("results/imagenet-results.csv").read_text("utf-8"))


@functools.cache
def published_costs() -> dict[tuple[str, int], CostRow]:
    """(NAME, image size) -> the publisher's parameters, GMACs and activations for it."""
    return parse_costs(resources.files("zoo").joinpath("results/inference-cost.csv").read_text("utf-8"))


def _source(cfg: DefaultCfg) -> str:
    return f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url


def _pick(rows: tuple[ResultRow, ...], cfg: DefaultCfg) -> ResultRow | None:
    """The evaluation at the cfg's input size, else at its test size, else the best one published."""
    for size in (cfg.input_size, cfg.test_input_size):
        for row in rows:
            if size is not None and row.img_size == size[1]:
                return row
    return rows[0] if rows else None


def model_card(name: str, *, img_size: int | None = None, zoo: api.ModelZoo | None = None) -> ModelCard:
    """The card of NAME or NAME.TAG (a bare name: its default tag's) at img_size.

    img_size None: the size the publisher evaluated the weights at that the cfg names (its input size, else
    its test size), else the best evaluation published. Figures not published at that size are None.
    A saved model (local-dir:, hf-hub:) has no published figures: InvalidValueError.
    """
    from zoo.describe import is_saved_name

    if is_saved_name(name):
        raise InvalidValueError(
            f"name={name!r} is invalid for a model card: a saved model has no published results; "
            "give a registered NAME or NAME.TAG (see `zoo list`)"
        )
    spec, cfg = (zoo or api.default_zoo()).registry.resolve(name)
    rows = published_results().get(f"{spec.name}.{cfg.tag}" if cfg.tag else spec.name, ())
    if img_size is None:
        row = _pick(rows, cfg)
        size = row.img_size if row is not None else cfg.input_size[1]
    else:
        size = check_int("img_size", img_size, ge=1)
        row = next((r for r in rows if r.img_size == size), None)
    cost = published_costs().get((spec.name, size))
    params = row.params_m if row is not None else cost.params_m if cost is not None else None
    return ModelCard(
        name=spec.name,
        tag=cfg.tag,
        img_size=size,
        top1=None if row is None else row.top1,
        top5=None if row is None else row.top5,
        params_m=params,
        gmacs=None if cost is None else cost.gmacs,
        activations_m=None if cost is None else cost.activations_m,
        crop_pct=None if row is None else row.crop_pct,
        license=cfg.license,
        source=_source(cfg),
    )


def search_models(
    filter: str | list[str] | tuple[str, ...] = "",
    *,
    exclude_filters: str | list[str] | tuple[str, ...] = (),
    sort: SortKey | None = None,
    max_params: float | None = None,
    min_top1: float | None = None,
    max_gmacs: float | None = None,
    img_size: int | None = None,
    zoo: api.ModelZoo | None = None,
) -> list[ModelCard]:
    """The cards of every registered NAME.TAG matching the fnmatch filters that pass the bounds, sorted.

    max_params is in millions, min_top1 in percent, max_gmacs in billions of multiply-accumulates; img_size
    keeps weight sets with a figure published at that size (their cards are at it). A card without the
    figure a bound or the sort needs is left out. sort: "top1" (best first), "params" or "gmacs" (smallest
    first), None (name order, as list_models).
    """
    search = SearchFilter(sort=sort, max_params=max_params, min_top1=min_top1, max_gmacs=max_gmacs, img_size=img_size)
    zoo = zoo or api.default_zoo()
    names = zoo.list_models(filter, exclude_filters=exclude_filters, include_tags=True)
    return search.apply(model_card(n, img_size=search.img_size, zoo=zoo) for n in names)

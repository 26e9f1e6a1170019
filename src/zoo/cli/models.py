"""zoo list, zoo info and zoo features: the registered names, one model described, a backbone's taps."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo import api
from zoo.cli._common import MAX_IMAGE_SIDE, Subcommands, one_line, say
from zoo.domain.cards import SORT_KEYS
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError, ZooError
from zoo.domain.values import FEATURE_CLASSES

if TYPE_CHECKING:
    import torch

    from zoo import FeatureExtractor
    from zoo.describe import ModelDescription
    from zoo.domain.cards import ModelCard


def _cmd_list(args: argparse.Namespace) -> int:
    bounds = (args.sort, args.max_params, args.min_top1, args.max_gmacs, args.img_size)
    if args.json or any(b is not None for b in bounds):
        return _list_cards(args)
    names = api.list_models(args.patterns or "", pretrained=args.pretrained, include_tags=True if args.tags else None)
    for name in names:
        print(name)
    if not names:
        say("note", f"no model matches {' '.join(map(repr, args.patterns)) or 'the filters'}")
        return 1
    return 0


def _list_cards(args: argparse.Namespace) -> int:
    """zoo list with published figures: a table (or --json) of the cards passing the bounds, in --sort order."""
    if args.pretrained or args.tags:
        say("note", "--pretrained and --tags are implied: cards are per weight set (NAME.TAG)")
    bounds = {"max_params": args.max_params, "min_top1": args.min_top1, "max_gmacs": args.max_gmacs}
    try:
        cards = api.search_models(args.patterns or "", sort=args.sort, img_size=args.img_size, **bounds)
    except InvalidValueError as e:  # said with the flag's spelling: --max-params, not max_params
        message = str(e)
        for key in (*bounds, "img_size"):
            message = message.replace(f"{key}=", f"--{key.replace('_', '-')} ")
        raise InvalidValueError(message) from None
    if args.json:
        print(json.dumps([c.to_dict() for c in cards], indent=2))
    else:
        if cards:
            print(f"{'model':58} {'img':>4} {'top1':>7} {'top5':>7} {'params_m':>9} {'gmacs':>8}")
        for c in cards:
            print(
                f"{c.full_name:58} {c.img_size:>4} {_figure(c.top1, 3)} {_figure(c.top5, 3)} "
                f"{_figure(c.params_m, 2, 9)} {_figure(c.gmacs, 2, 8)}"
            )
    if not cards:
        say(
            "note",
            f"no weight set with published figures matches {' '.join(map(repr, args.patterns)) or 'the filters'}",
        )
        return 1
    return 0


def _figure(value: float | None, digits: int, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _print_card(card: ModelCard) -> None:
    shown = {
        "top-1": None if card.top1 is None else f"{card.top1:.3f}%",
        "top-5": None if card.top5 is None else f"{card.top5:.3f}%",
        "params": None if card.params_m is None else f"{card.params_m:.2f} M",
        "GMACs": None if card.gmacs is None else f"{card.gmacs:.2f}",
        "activations": None if card.activations_m is None else f"{card.activations_m:.2f} M",
        "crop_pct": card.crop_pct,
        "license": card.license or None,
        "weights from": card.source or None,
    }
    print(f"published card ({card.full_name} at {card.img_size} px; the publisher's ImageNet-1k figures):")
    for key, value in shown.items():
        print(f"  {key:17} {'-' if value is None else value}")


def _cmd_info(args: argparse.Namespace) -> int:
    from zoo.describe import describe_model

    # shapes only: parameters on meta, no memory, no init, no weights read (a saved model's config.json is)
    described = describe_model(args.name)
    spec, cfg, saved = described.spec, described.cfg, described.saved
    if args.json:
        print(json.dumps(_info_record(described), indent=2))
        return 0
    print(f"name:        {spec.name}" + (f" (saved: {args.name})" if saved else ""))
    print(f"family:      {spec.family}")
    print(f"parameters:  {described.parameters:,}")
    print(f"features:    {getattr(described.layout, 'num_features', '?')}")
    if not saved:  # a saved model's weights are its own, not one of the architecture's published sets
        print(f"tags:        {', '.join(t or '(none)' for t in spec.tags)}")
    print(f"default cfg ({'saved' if saved else cfg.tag or 'untagged'}):")
    for key, value in cfg.to_dict().items():
        if value not in ("", None):
            print(f"  {key:17} {value}")
    print("feature taps:")
    print(f"  {'index':>5}  {'module':20} {'channels':>8} {'reduction':>9}")
    for tap in described.feature_info:
        print(f"  {tap.index:>5}  {tap.module:20} {tap.num_chs:>8} {tap.reduction:>9}")
    if not saved:
        _print_card(api.model_card(args.name))
    return 0


INFO_SCHEMA = 1


def _info_record(described: ModelDescription) -> dict[str, object]:
    """What `zoo info NAME --json` prints; its keys are stable within one INFO_SCHEMA (see the README)."""
    from zoo.data import resolve_data_config

    spec, cfg, saved = described.spec, described.cfg, described.saved
    return {
        "schema": INFO_SCHEMA,
        "name": spec.name,
        "tag": "" if saved else cfg.tag,  # a saved model's weights are its own, not a published set
        "family": spec.family,
        "parameters": described.parameters,
        "num_classes": cfg.num_classes,
        "num_features": described.num_features,
        "pruned": spec.prune_spec is not None,
        "tags": [] if saved else list(spec.tags),
        "default_cfg": cfg.to_dict(),
        "data_config": resolve_data_config(cfg).to_dict(),
        "feature_info": [
            {"index": t.index, "module": t.module, "num_chs": t.num_chs, "reduction": t.reduction}
            for t in described.feature_info
        ],
        # the publisher's figures for this weight set (null for a saved model)
        "card": None if saved else api.model_card(described.name).to_dict(),
    }


def _timed_taps(extractor: FeatureExtractor, x: torch.Tensor) -> tuple[list[torch.Tensor], float]:
    """The extractor's outputs for x in eval mode, and the seconds one forward took after a warm-up."""
    import torch

    extractor.eval()
    with torch.inference_mode():
        extractor.forward_taps(x)  # warm-up: the first call also pays for kernel selection and allocation
        t0 = time.perf_counter()
        outputs = extractor.forward_taps(x)
        return outputs, time.perf_counter() - t0


def _print_pyramid(extractor: FeatureExtractor, outputs: Sequence[torch.Tensor]) -> None:
    print(f"  {'index':>5}  {'module':20} {'channels':>8} {'reduction':>9}  output shape")
    for tap, out in zip(extractor.feature_info, outputs, strict=True):
        print(f"  {tap.index:>5}  {tap.module:20} {tap.num_chs:>8} {tap.reduction:>9}  {tuple(out.shape)}")


# a 1-channel (or 4-channel) input builds the extractor for that many channels; past this it is a typo
MAX_INPUT_CHANNELS = 1024


def _input_size(values: Sequence[int] | None) -> tuple[int, int, int] | None:
    """--input-size C H W, checked: C in [1, MAX_INPUT_CHANNELS], H and W in [1, MAX_IMAGE_SIDE]."""
    if values is None:
        return None
    c, h, w = values
    shown = " ".join(map(str, values))
    limits = f"C in [1, {MAX_INPUT_CHANNELS}], H and W in [1, {MAX_IMAGE_SIDE}]"
    for what, value, high in (("C", c, MAX_INPUT_CHANNELS), ("H", h, MAX_IMAGE_SIDE), ("W", w, MAX_IMAGE_SIDE)):
        try:
            check_int(what, value, ge=1, le=high)
        except InvalidValueError:
            raise InvalidValueError(f"--input-size {shown} is invalid: {what}={value}; expected {limits}") from None
    return c, h, w


def _cmd_features(args: argparse.Namespace) -> int:
    import torch

    size = _input_size(args.input_size)
    extractor = api.create_model(
        args.name,
        features_only=True,
        out_indices=args.out_indices,
        feature_cls=args.feature_cls,
        in_chans=None if size is None else size[0],  # the first convolution takes the input's channels
    )
    input_size = size or extractor.default_cfg.input_size
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        outputs, seconds = _timed_taps(extractor, x)
    except ZooError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:  # the size is the one thing asked here that torch can refuse
        default = " ".join(map(str, api.get_default_cfg(args.name).input_size))
        raise InvalidValueError(
            f"--input-size {' '.join(map(str, input_size))} does not fit {args.name} (its cfg's is {default}): "
            f"{one_line(e)[:300]}"
        ) from None
    print(f"{args.name}: {type(extractor).__name__}, out_indices={extractor.out_indices}, input {tuple(x.shape)}")
    _print_pyramid(extractor, outputs)
    print(f"forward: {seconds * 1000:.1f} ms (one run after a warm-up)")
    return 0


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("list", help="list registered model names")
    p.add_argument("patterns", nargs="*", help="fnmatch patterns, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only names with published weights")
    p.add_argument("--tags", action="store_true", help="list name.tag for every weight set")
    figures = "the publisher's ImageNet-1k figures (any of these shows NAME.TAG cards: img, top1, top5, params, gmacs)"
    g = p.add_argument_group(figures)
    g.add_argument("--sort", choices=SORT_KEYS, help="top1 best first; params or gmacs smallest first")
    g.add_argument("--max-params", type=float, metavar="M", help="at most M million parameters")
    g.add_argument("--min-top1", type=float, metavar="X", help="ImageNet-1k top-1 of at least X percent")
    g.add_argument("--max-gmacs", type=float, metavar="G", help="at most G billion multiply-accumulates per image")
    g.add_argument("--img-size", type=int, metavar="N", help="weight sets with figures published at N px")
    g.add_argument("--json", action="store_true", help="the cards as a JSON list")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe a model: parameters, default cfg, tags, feature taps")
    p.add_argument("name", help="NAME, NAME.TAG, local-dir:PATH or hf-hub:ORG/NAME")
    p.add_argument("--json", action="store_true", help="one JSON object, for tools (keys documented in the README)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("features", help="build a model as a feature extractor and show its taps and output shapes")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--out-indices", type=int, nargs="+", help="taps to return (negative: from the last; default: all)")
    p.add_argument("--feature-cls", choices=FEATURE_CLASSES, help="strategy (default: the model family's)")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        help=f"input size (default: the model's cfg); C in [1, {MAX_INPUT_CHANNELS}] builds the model for C "
        f"input channels, H and W in [1, {MAX_IMAGE_SIDE}]",
    )
    p.set_defaults(func=_cmd_features)

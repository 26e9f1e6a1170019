"""zoo list, zoo info and zoo features: the registered names, one model described, a backbone's taps."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo import api
from zoo.cli._common import _count_params
from zoo.domain.values import FEATURE_CLASSES, BuildRequest, DefaultCfg, ModelSpec

if TYPE_CHECKING:
    import torch

    from zoo.services.features import FeatureExtractor


def _cmd_list(args: argparse.Namespace) -> int:
    names = api.list_models(args.patterns or "", pretrained=args.pretrained, include_tags=True if args.tags else None)
    for name in names:
        print(name)
    if not names:
        print("no model matches", file=sys.stderr)
        return 1
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from zoo.services.weights.meta import parameters_on_meta

    zoo = api.default_zoo()
    spec, cfg = zoo.registry.resolve(args.name)
    kwargs = zoo.builder.model_kwargs(spec, BuildRequest(tag=cfg.tag), cfg)
    # shapes only: no parameter memory and no init (torch.device("meta") would import torch._dynamo on init)
    with parameters_on_meta():
        model = spec.constructor(**kwargs)
        if spec.prune_spec is not None and zoo.builder.pruner is not None:
            model = zoo.builder.pruner.prune(model, spec.prune_spec)  # taps and widths as the pruned model has them
    if args.json:
        print(json.dumps(_info_record(spec, cfg, model), indent=2))
        return 0
    print(f"name:        {spec.name}")
    print(f"family:      {spec.family}")
    print(f"parameters:  {_count_params(model):,}")
    print(f"features:    {getattr(model, 'num_features', '?')}")
    print(f"tags:        {', '.join(t or '(none)' for t in spec.tags)}")
    print(f"default cfg ({cfg.tag or 'untagged'}):")
    for key, value in cfg.to_dict().items():
        if value not in ("", None):
            print(f"  {key:17} {value}")
    taps = getattr(model, "feature_info", [])
    print("feature taps:")
    print(f"  {'index':>5}  {'module':20} {'channels':>8} {'reduction':>9}")
    for tap in taps:
        print(f"  {tap.index:>5}  {tap.module:20} {tap.num_chs:>8} {tap.reduction:>9}")
    return 0


INFO_SCHEMA = 1


def _info_record(spec: ModelSpec, cfg: DefaultCfg, model: object) -> dict[str, object]:
    """What `zoo info NAME --json` prints; its keys are stable within one INFO_SCHEMA (see the README)."""
    from zoo.data import resolve_data_config

    features = getattr(model, "num_features", None)
    return {
        "schema": INFO_SCHEMA,
        "name": spec.name,
        "tag": cfg.tag,
        "family": spec.family,
        "parameters": _count_params(model),
        "num_classes": cfg.num_classes,
        "num_features": features if isinstance(features, int) else None,
        "pruned": spec.prune_spec is not None,
        "tags": list(spec.tags),
        "default_cfg": cfg.to_dict(),
        "data_config": resolve_data_config(cfg).to_dict(),
        "feature_info": [
            {"index": t.index, "module": t.module, "num_chs": t.num_chs, "reduction": t.reduction}
            for t in getattr(model, "feature_info", [])
        ],
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


def _cmd_features(args: argparse.Namespace) -> int:
    import torch

    extractor = api.create_model(
        args.name, features_only=True, out_indices=args.out_indices, feature_cls=args.feature_cls
    )
    input_size = tuple(args.input_size) if args.input_size else extractor.default_cfg.input_size
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    print(f"{args.name}: {type(extractor).__name__}, out_indices={extractor.out_indices}, input {tuple(x.shape)}")
    outputs, seconds = _timed_taps(extractor, x)
    _print_pyramid(extractor, outputs)
    print(f"forward: {seconds * 1000:.1f} ms (one run after a warm-up)")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("list", help="list registered model names")
    p.add_argument("patterns", nargs="*", help="fnmatch patterns, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only names with published weights")
    p.add_argument("--tags", action="store_true", help="list name.tag for every weight set")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe a model: parameters, default cfg, tags, feature taps")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--json", action="store_true", help="one JSON object, for tools (keys documented in the README)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("features", help="build a model as a feature extractor and show its taps and output shapes")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--out-indices", type=int, nargs="+", help="taps to return (negative: from the last; default: all)")
    p.add_argument("--feature-cls", choices=FEATURE_CLASSES, help="strategy (default: the model family's)")
    p.add_argument(
        "--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="input size (default: the model's cfg)"
    )
    p.set_defaults(func=_cmd_features)

"""The `zoo` command: a thin shell over zoo.api."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from zoo import api
from zoo.domain.errors import ZooError
from zoo.domain.values import BuildRequest


def _cmd_list(args: argparse.Namespace) -> int:
    names = api.list_models(args.patterns or "", pretrained=args.pretrained, include_tags=args.tags)
    for name in names:
        print(name)
    if not names:
        print("no model matches", file=sys.stderr)
        return 1
    return 0


def _count_params(model: object) -> int:
    from torch import nn

    assert isinstance(model, nn.Module)
    return sum(p.numel() for p in model.parameters())


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    zoo = api.default_zoo()
    spec, cfg = zoo.registry.resolve(args.name)
    kwargs = zoo.builder.model_kwargs(spec, BuildRequest(tag=cfg.tag), cfg)
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = spec.constructor(**kwargs)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    name = args.name
    print(f"zoo demo: {len(api.list_models())} architectures registered; creating {name!r}")
    t0 = time.perf_counter()
    model = api.create_model(name, num_classes=10)
    t_create = time.perf_counter() - t0
    model.eval()
    cfg = api.get_default_cfg(name)
    image = torch.rand(1, *cfg.input_size, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = model((image - mean) / std)
        t_forward = time.perf_counter() - t0
    probs = logits.softmax(-1)[0]
    top = probs.topk(3)
    print(f"  parameters:   {_count_params(model):,}")
    print(f"  input:        synthetic {tuple(image.shape)} image, normalised with the default cfg's mean/std")
    print(f"  output:       logits {tuple(logits.shape)}; top-3 classes {top.indices.tolist()} (random init)")
    print(f"  create time:  {t_create * 1000:.0f} ms")
    print(f"  forward time: {t_forward * 1000:.0f} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `zoo` command."""
    parser = argparse.ArgumentParser(prog="zoo", description="A typed model zoo for PyTorch image models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered model names")
    p.add_argument("patterns", nargs="*", help="fnmatch patterns, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only names with published weights")
    p.add_argument("--tags", action="store_true", help="list name.tag for every weight set")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe a model: parameters, default cfg, tags, feature taps")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="create, describe and run a model on a synthetic image")
    p.add_argument("--name", default="resnet50", help="model to demonstrate (default: resnet50)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""zoo prune and zoo export: a pruned layout as a spec file, a model as an ONNX or .pt2 file."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

from zoo.cli._common import DEVICE_HELP, MAX_IMAGE_SIDE, Subcommands, check_out, create_named, one_line
from zoo.devices import resolve_device
from zoo.domain.checks import check_float, check_int
from zoo.domain.errors import InvalidValueError, ZooError


def _cmd_prune(args: argparse.Namespace) -> int:
    from zoo.artefacts import derive_prune_spec
    from zoo.describe import count_macs, measure_model

    # everything asked is checked before the model is pruned
    ratio = check_float("--ratio", args.ratio, ge=0.0, lt=1.0)
    size = check_int("--image-size", args.image_size, ge=1, le=MAX_IMAGE_SIDE)
    out = check_out("--out", args.out)
    model, weights = create_named(args.name, checkpoint=args.checkpoint)
    model.eval()
    with _size_fits(args.name, size):
        count_macs(model, size)  # on a meta copy: no time spent, and an image too small for the kernels fails here
    spec, pruned = derive_prune_spec(model, ratio)
    try:
        out.write_text(spec.to_text() + "\n", encoding="utf-8")
    except OSError as e:
        raise InvalidValueError(f"--out {args.out!r} cannot be written: {e}") from e
    with _size_fits(args.name, size):
        before, after = measure_model(model, image_size=size), measure_model(pruned.eval(), image_size=size)
    print(f"{args.name} pruned by ratio {args.ratio}: spec written to {out} ({len(spec)} layers)")
    print(f"  weights: {weights}")
    print(f"  {'':14} {'before':>16} {'after':>16} {'after/before':>12}")
    rows = (
        ("parameters", before.params, after.params),
        ("FLOPs (MACs)", before.flops, after.flops),
    )
    for label, b, a in rows:
        print(f"  {label:14} {b:>16,} {a:>16,} {a / b:>12.3f}")
    tb, ta = before.seconds or 0.0, after.seconds or 0.0
    ratio_text = f"{ta / tb:>12.3f}" if tb else f"{'-':>12}"
    print(f"  {'forward (ms)':14} {tb * 1000:>16.1f} {ta * 1000:>16.1f} {ratio_text}")
    print(f"  (one {size}x{size} image, CPU, median of 5 runs after a warm-up)")
    return 0


@contextlib.contextmanager
def _size_fits(name: str, size: int) -> Iterator[None]:
    """A forward that torch refuses at --image-size (kernels larger than the feature map) is the size's fault."""
    try:
        yield
    except ZooError:
        raise
    except (RuntimeError, ValueError) as e:
        raise InvalidValueError(f"--image-size {size} is too small for {name}: {one_line(e)[:300]}") from None


def _cmd_export(args: argparse.Namespace) -> int:
    from zoo.artefacts import check_export, export_model

    # the format, opset and output file are checked before the model is built and exported (minutes, for some)
    check_out("--out", args.out)
    check_export(args.out, fmt=args.format, opset=args.opset)
    device = resolve_device(args.device)
    model, weights = create_named(args.name, checkpoint=args.checkpoint, features_only=args.features)
    model.to(device)
    t0 = time.perf_counter()
    exported = export_model(model, args.out, fmt=args.format, opset=args.opset)
    seconds = time.perf_counter() - t0
    path = exported.path
    what = f"{args.name} ({type(model).__name__})" if args.features else args.name
    print(f"{what} exported as {args.format} to {path} ({path.stat().st_size / 2**20:.1f} MiB) in {seconds:.1f} s")
    print(f"  weights   {weights}")
    for name, low, high in exported.inputs:
        extent = str(low) if low == high else f"{low} to {'any' if high is None else high} (dynamic)"
        print(f"  input {name:9} {extent}")
    return 0


_NAME_HELP = (
    "NAME (random weights), NAME.TAG (its published weights) or local-dir:PATH / hf-hub:ORG/NAME (a saved model's "
    "weights); weights that cannot be had (offline, not cached) are replaced by random ones, with a warning"
)


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("prune", help="derive a pruned layout by weight magnitude and write it as a prune spec")
    p.add_argument("name", help=_NAME_HELP)
    p.add_argument("--checkpoint", metavar="PATH", help="weights to prune by (default: the name's)")
    p.add_argument("--ratio", type=float, required=True, help="fraction of each prunable layer's channels to drop")
    p.add_argument("--out", required=True, metavar="SPEC", help="file to write the spec to")
    p.add_argument(
        "--image-size",
        type=int,
        default=224,
        help=f"input height and width for FLOPs and timing, in [1, {MAX_IMAGE_SIDE}] (default: 224)",
    )
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("export", help="export a model (or its feature extractor) as ONNX or a torch.export .pt2 file")
    p.add_argument("name", help=_NAME_HELP)
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load (default: the name's)")
    p.add_argument("--features", action="store_true", help="export the feature extractor (features_only=True)")
    p.add_argument("--format", required=True, choices=("onnx", "pt2"), help="onnx (needs zoo[onnx]) or pt2")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=_cmd_export)

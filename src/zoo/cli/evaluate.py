"""zoo validate and zoo benchmark: a model's accuracy on an image folder, and its speed on this machine."""

from __future__ import annotations

import argparse
import json

from zoo.cli._common import DEVICE_HELP, OPTIMIZE_HELP, Subcommands, create_named, optimized, say
from zoo.devices import AMP_DTYPES


def _cmd_validate(args: argparse.Namespace) -> int:
    from zoo.devices import resolve_device
    from zoo.validate import ImageFolderSamples, validate_model

    # what can be checked before a model is built (and its weights fetched) is checked first
    resolve_device(args.device)
    ImageFolderSamples.scan(args.directory)
    model, weights = create_named(args.model, checkpoint=args.checkpoint)
    result = validate_model(
        optimized(model, args) if args.optimize else model,
        args.directory,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        limit=args.limit,
    )
    for message in result.unreadable:
        say("warning", f"left out: {message}")
    if args.json:
        print(json.dumps({"model": args.model, "weights": weights, **result.to_dict()}, indent=2))
        return 0
    print(f"{args.model} ({weights}) on {result.images} images of {args.directory} ({result.mapping} classes)")
    print(f"top-1 {result.top1:.3f}%  top-{result.top_k} {result.top5:.3f}%")
    print(f"{result.images_per_sec:.1f} images/s on {result.device} ({result.seconds:.1f} s, loading included)")
    return 0


# the columns the table shows, of BenchmarkResult.to_dict()'s (--json has them all)
TABLE = (
    ("model", "model", 40),
    ("infer_samples_per_sec", "infer/s", 10),
    ("infer_step_time", "ms/step", 10),
    ("train_samples_per_sec", "train/s", 10),
    ("param_count", "params_m", 9),
    ("infer_gmacs", "gmacs", 8),
    ("infer_peak_mem_mb", "peak_mb", 9),
)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from zoo import api
    from zoo.benchmark import benchmark_model
    from zoo.devices import resolve_device

    resolve_device(args.device)
    for name in args.names:  # every name is checked before the first is timed
        api.get_default_cfg(name)
    rows = []
    for name in args.names:
        result = benchmark_model(
            name,
            batch_size=args.batch_size,
            img_size=args.img_size,
            device=args.device,
            amp=args.amp,
            channels_last=args.channels_last,
            compile=args.compile,
            fuse=args.fuse,
            train=args.train,
            optimize=args.optimize,
            warmup=args.warmup,
            steps=args.steps,
        )
        rows.append(result.to_dict())
        if not args.json:
            if len(rows) == 1:
                print(
                    " ".join(
                        f"{title:>{width}}" if key != "model" else f"{title:{width}}" for key, title, width in TABLE
                    )
                )
            print(" ".join(_cell(rows[-1].get(key), width, key == "model") for key, _, width in TABLE))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _cell(value: object, width: int, left: bool) -> str:
    text = "-" if value is None else str(value)
    return f"{text:{width}}" if left else f"{text:>{width}}"


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--amp", choices=AMP_DTYPES, help="autocast to bfloat16 or float16")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--json", action="store_true", help="one JSON value, for scripts")
    p.add_argument("--optimize", action="store_true", help=OPTIMIZE_HELP)


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser(
        "validate",
        help="a classifier's top-1/top-5 accuracy on an image folder (one folder per class)",
        description="Validate a classifier on DIR/CLASS/IMAGE with its own preprocessing. Class folders map to "
        "the model's classes by a saved model's label_names, by ImageNet-1k synset ids (n01440764, ...) for a "
        "1000-class model, or by sorted folder name when there are as many folders as classes.",
    )
    p.add_argument("directory", metavar="DIR", help="an image folder in torchvision's ImageFolder layout")
    p.add_argument("--model", required=True, help="NAME, NAME.TAG, local-dir:PATH or hf-hub:ORG/NAME")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load (default: the name's weights)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2; 0 loads in-process)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N images only (sorted order)")
    _run_options(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "benchmark",
        help="time models on this machine: samples/s, step time, parameters, GMACs, peak memory",
        description="Time each NAME with a random batch (warm-up, then timed steps synchronised on the device). "
        "--json gives one row per name under the reference's benchmark column names.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="registered names (random weights: speed needs none)")
    p.add_argument("--img-size", type=int, metavar="N", help="square input side (default: the cfg's input size)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--fuse", action="store_true", help="fold batch norms into convolutions (inference only)")
    p.add_argument("--train", action="store_true", help="also time training steps (forward, backward, SGD step)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: 10)")
    p.add_argument("--steps", type=int, default=40, help="timed steps (default: 40)")
    _run_options(p)
    p.set_defaults(func=_cmd_benchmark)

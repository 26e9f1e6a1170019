"""The `zoo` command: a thin shell over zoo.api."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zoo import api
from zoo.domain.checks import check_int
from zoo.domain.errors import InvalidValueError, ZooError
from zoo.domain.values import FEATURE_CLASSES, BuildRequest, DefaultCfg, ModelSpec

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from zoo.archs.base import ZooModule
    from zoo.services.features import FeatureExtractor


def _cmd_list(args: argparse.Namespace) -> int:
    names = api.list_models(args.patterns or "", pretrained=args.pretrained, include_tags=True if args.tags else None)
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
    from zoo.services.weights.meta import parameters_on_meta

    zoo = api.default_zoo()
    spec, cfg = zoo.registry.resolve(args.name)
    kwargs = zoo.builder.model_args(spec, BuildRequest(cfg=cfg))
    # shapes only: no parameter memory and no init (torch.device("meta") would import torch._dynamo on init)
    with parameters_on_meta():
        model = spec.constructor(**kwargs)
        if spec.prune_layout is not None and zoo.builder.pruner is not None:
            model = zoo.builder.pruner.prune(model, spec.prune_layout)  # taps and widths as the pruned model has them
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


def _cmd_predict(args: argparse.Namespace) -> int:
    from zoo.data.predict import load_image

    spec, cfg = api.default_zoo().registry.resolve(args.model)  # an unknown name fails before any image is read
    name = f"{spec.name}.{cfg.tag}" if cfg.tag else spec.name
    top_k = check_int("--top-k", args.top_k, ge=1)
    images = [load_image(path, channels=cfg.input_size[0]) for path in args.images]
    checkpoint = args.checkpoint
    model = api.create_model(args.model, pretrained=checkpoint is None, checkpoint_path=checkpoint)
    return _predict(model, name, list(zip(args.images, images, strict=True)), top_k, checkpoint, as_json=args.json)


def _predict(
    model: ZooModule,
    name: str,
    images: Sequence[tuple[str, Image]],
    top_k: int,
    checkpoint: str | None,
    *,
    as_json: bool,
) -> int:
    """`zoo predict`'s output for a model already built and its (path, image) pairs; checkpoint names the weights."""
    from zoo.data import resolve_data_config
    from zoo.data.labels import IMAGENET_1K_CLASSES
    from zoo.data.predict import classify

    if model.num_classes:  # none: classify says the model has no classifier
        top_k = check_int("--top-k", top_k, ge=1, le=model.num_classes)
    data_cfg = resolve_data_config(model)
    results = classify(model, [image for _, image in images], top_k=top_k, data_cfg=data_cfg)
    weights = f"checkpoint {checkpoint}" if checkpoint else "pretrained weights"
    if as_json:
        record = {
            "model": name,
            "weights": {"source": "checkpoint" if checkpoint else "pretrained", "checkpoint": checkpoint},
            "data_config": data_cfg.to_dict(),
            "labels": "imagenet-1k" if model.num_classes == IMAGENET_1K_CLASSES else None,
            "images": [
                {"path": path, "predictions": [p.to_dict() for p in preds]}
                for (path, _), preds in zip(images, results, strict=True)
            ],
        }
        print(json.dumps(record, indent=2))
        return 0
    height, width = data_cfg.image_size
    print(
        f"{name} ({weights}); input {height}x{width}, {data_cfg.interpolation}, "
        f"crop_pct {data_cfg.crop_pct} ({data_cfg.crop_mode})"
    )
    for (path, _), preds in zip(images, results, strict=True):
        print(path)
        for rank, p in enumerate(preds, 1):
            label = f"{p.label}  ({p.index}, {p.synset})" if p.label is not None else f"class {p.index}"
            print(f"  {rank:>2}. {p.probability * 100:6.2f}%  {label}")
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
    _demo_weights()
    _demo_features()
    _demo_predict()
    return 0


def _demo_weights() -> None:
    """Save a checkpoint, serve it from a file URL, load it adapted to in_chans=1 and num_classes=10."""
    import tempfile
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from zoo.services.weights import CachedWeightLoader, WeightCache

    name = "resnet18"
    print(f"zoo demo: pretrained weights for {name!r}, from a file URL, adapted to in_chans=1 and num_classes=10")
    with tempfile.TemporaryDirectory() as tmp:
        source = api.create_model(name)  # random init stands in for published weights
        path = Path(tmp) / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
        cache_dir = Path(tmp) / "cache"  # the demo leaves the user's cache alone
        app = api.ModelZoo(weight_loader=CachedWeightLoader(cache_dir=cache_dir, progress=False))

        # the applier logs what it adapted; collect those lines to show them
        notes = _Collect()
        log = logging.getLogger("zoo.weights")
        level = log.level
        log.addHandler(notes)
        log.setLevel(logging.INFO)
        try:
            t0 = time.perf_counter()
            overlay = {"url": path.as_uri(), "hf_hub_id": ""}
            with warnings.catch_warnings():
                # the dropped 1000-class head is the point of this step, and is shown below with the other notes
                warnings.simplefilter("ignore", UserWarning)
                model = app.create_model(
                    name, pretrained=True, in_chans=1, num_classes=10, pretrained_cfg_overlay=overlay
                )
            t_load = time.perf_counter() - t0
        finally:
            log.removeHandler(notes)
            log.setLevel(level)
        (entry,) = WeightCache(cache_dir).entries()
        print(f"  checkpoint:   {path.name} ({path.stat().st_size / 2**20:.1f} MiB), served at {overlay['url']}")
        print(f"  cached as:    {entry.key}; fetched into the cache and loaded in {t_load * 1000:.0f} ms")
        for note in notes.messages:
            if not note.startswith("downloading"):
                print(f"  adapted:      {note}")
        grey = source.get_parameter("conv1.weight").sum(dim=1, keepdim=True)
        error = (model.get_parameter("conv1.weight") - grey).abs().max().item()
        with torch.inference_mode():
            logits = model.eval()(torch.rand(1, 1, 64, 64))
        print(f"  first conv:   max |weight - sum of the source's RGB filters| = {error:.1e}")
        print(f"  output:       logits {tuple(logits.shape)} from a 1-channel 64x64 image")


DEMO_PREDICT_MODEL = "resnet18.a1_in1k"
_TRUE = ("1", "true", "yes", "on")


def _network_problem(urls: Sequence[str], *, timeout: float = 3.0) -> str | None:
    """Why none of the urls' hosts can be reached now, or None when one answers (or a proxy is set: it decides).

    A quick connect, so that a machine with no network learns it in seconds instead of after the
    download's own timeout.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    for var in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return None
    reasons: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        if not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return None
        except OSError as e:
            reasons.append(f"{parts.hostname}: {e}")
    return "; ".join(reasons) or "no remote source"


def _demo_predict() -> None:
    """zoo predict on a picture the demo draws, with the published weights or, offline, a random-weight checkpoint."""
    import contextlib
    import io
    import os
    import tempfile
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from zoo.data.predict import load_image
    from zoo.data.sample import draw_beach
    from zoo.domain.errors import WeightsError
    from zoo.services.weights import CachedWeightLoader

    name = DEMO_PREDICT_MODEL
    cfg = api.get_default_cfg(name)
    print(f"zoo demo: predict with {name!r} on a picture the demo draws (a beach at sunset, 320x240)")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "beach.png"
        draw_beach().save(image)
        hub = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        problem = _network_problem([hub, cfg.url])
        checkpoint: Path | None = None
        # the model is built once, here, and handed to predict: loading it again there would double the demo's wait
        try:
            if problem is None:
                print(f"  weights:      {name}'s published weights (downloaded into the cache on first use)")
                model = api.create_model(name, pretrained=True)
            else:  # no network: weights an earlier run left in the cache still serve
                offline = api.ModelZoo(weight_loader=CachedWeightLoader(offline=True, progress=False))
                model = offline.create_model(name, pretrained=True)
                print(f"  weights:      {name}'s published weights, from the cache (no network: {problem})")
        except WeightsError as e:
            checkpoint = Path(tmp) / "resnet18-random-init.safetensors"
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = api.create_model(name)
            # written so that the command shown below is the one that gives these results
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
            print(f"  weights:      NOT AVAILABLE ({problem or e})")
            print(f"                the demo wrote {checkpoint.name}, a RANDOMLY INITIALISED {name.split('.')[0]}:")
            print("                the classes below are MEANINGLESS; they show the pipeline (preprocessing")
            print("                from the cfg, ImageNet-1k labels, top-k), not a prediction.")
        argv = ["predict", str(image), "--model", name, "--top-k", "5"]
        if checkpoint is not None:
            argv += ["--checkpoint", str(checkpoint)]
        print("  $ zoo " + " ".join(a if a.startswith("-") else Path(a).name for a in argv))
        pictures = [(str(image), load_image(image, channels=cfg.input_size[0]))]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            _predict(model, name, pictures, 5, None if checkpoint is None else str(checkpoint), as_json=False)
        for line in out.getvalue().splitlines():
            print(f"  {line}")


class _Collect(logging.Handler):
    """A logging handler that keeps the messages it is given."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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


def _demo_features() -> None:
    """A backbone's feature pyramid, and what selecting fewer taps saves."""
    import torch

    name = "resnet50"
    print(f"zoo demo: {name!r} as a backbone (features_only=True): its feature pyramid for a 224x224 image")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pyramid = api.create_model(name, features_only=True)
    outputs, t_all = _timed_taps(pyramid, x)
    _print_pyramid(pyramid, outputs)
    _, t_early = _timed_taps(api.create_model(name, features_only=True, out_indices=(1,)), x)
    print(f"  forward time: {t_all * 1000:.0f} ms for every tap; {t_early * 1000:.0f} ms for out_indices=(1,),")
    print("                which stops after layer1")


def _cmd_fetch(args: argparse.Namespace) -> int:
    from zoo.services.weights import CachedWeightLoader

    cfg = api.get_default_cfg(args.name)
    path = CachedWeightLoader().fetch(cfg, progress=False if args.no_progress else None)
    print(path)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from zoo.services.weights import WeightCache, WeightSettings

    settings = WeightSettings.resolve()
    cache = WeightCache(settings.cache_dir)
    mib = 2**20
    # hub weights live in the Hugging Face cache, shared with other libraries: shown where, never cleared here
    hub_note = f"hub weights are in the Hugging Face cache {settings.hub_cache_dir} (manage it with `hf cache`)"
    if args.action == "clear":
        files, size = cache.clear()
        print(f"removed {files} file(s), {size / mib:.1f} MiB, from {cache.root}")
        print(hub_note)
        return 0
    entries = cache.entries()
    for entry in entries:
        print(f"{entry.size / mib:10.1f} MiB  {entry.key}")
    print(f"{len(entries)} file(s), {sum(e.size for e in entries) / mib:.1f} MiB, in {cache.root}")
    print(hub_note)
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zoo.services.pruner import ChannelPruner, measure

    model = api.create_model(args.name).eval()
    spec, pruned = ChannelPruner().derive(model, args.ratio)
    out = Path(args.out)
    try:
        out.write_text(spec.to_text() + "\n", encoding="utf-8")
    except OSError as e:
        raise InvalidValueError(f"--out {args.out!r} cannot be written: {e}") from e
    size = args.image_size
    before, after = measure(model, image_size=size), measure(pruned.eval(), image_size=size)
    print(f"{args.name} pruned by ratio {args.ratio}: spec written to {out} ({len(spec)} layers)")
    print(f"  {'':14} {'before':>16} {'after':>16} {'after/before':>12}")
    rows = (
        ("parameters", before.params, after.params),
        ("FLOPs (MACs)", before.flops, after.flops),
    )
    for label, b, a in rows:
        print(f"  {label:14} {b:>16,} {a:>16,} {a / b:>12.3f}")
    tb, ta = before.seconds or 0.0, after.seconds or 0.0
    ratio = f"{ta / tb:>12.3f}" if tb else f"{'-':>12}"
    print(f"  {'forward (ms)':14} {tb * 1000:>16.1f} {ta * 1000:>16.1f} {ratio}")
    print(f"  (one {size}x{size} image, CPU, median of 5 runs after a warm-up)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from zoo.services.export import export_file, input_dims

    model = api.create_model(args.name, checkpoint_path=args.checkpoint, features_only=args.features)
    t0 = time.perf_counter()
    path, program = export_file(model, args.out, fmt=args.format, opset=args.opset)
    seconds = time.perf_counter() - t0
    what = f"{args.name} ({type(model).__name__})" if args.features else args.name
    print(f"{what} exported as {args.format} to {path} ({path.stat().st_size / 2**20:.1f} MiB) in {seconds:.1f} s")
    for name, low, high in input_dims(program):
        extent = str(low) if low == high else f"{low} to {'any' if high is None else high} (dynamic)"
        print(f"  input {name:9} {extent}")
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
    p.add_argument("--json", action="store_true", help="one JSON object, for tools (keys documented in the README)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("fetch", help="download a model's published weights into the cache (hub: the HF cache)")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("cache", help="list or clear zoo's cache of URL weights (ZOO_CACHE_DIR)")
    p.add_argument("action", choices=("list", "clear"))
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("features", help="build a model as a feature extractor and show its taps and output shapes")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--out-indices", type=int, nargs="+", help="taps to return (negative: from the last; default: all)")
    p.add_argument("--feature-cls", choices=FEATURE_CLASSES, help="strategy (default: the model family's)")
    p.add_argument(
        "--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="input size (default: the model's cfg)"
    )
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("prune", help="derive a pruned layout by weight magnitude and write it as a prune spec")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--ratio", type=float, required=True, help="fraction of each prunable layer's channels to drop")
    p.add_argument("--out", required=True, metavar="SPEC", help="file to write the spec to")
    p.add_argument("--image-size", type=int, default=224, help="input height and width for FLOPs and timing")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("predict", help="classify image files: the top classes and their probabilities")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--model", required=True, help="NAME or NAME.TAG; its cfg gives the preprocessing")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load (default: the tag's published weights)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a model (or its feature extractor) as ONNX or a torch.export .pt2 file")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--checkpoint", metavar="PATH", help="weights to load first (default: random init)")
    p.add_argument("--features", action="store_true", help="export the feature extractor (features_only=True)")
    p.add_argument("--format", required=True, choices=("onnx", "pt2"), help="onnx (needs zoo[onnx]) or pt2")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=_cmd_export)

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

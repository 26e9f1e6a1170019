"""zoo demo: a classifier, adapted pretrained weights, a feature pyramid and a prediction, end to end."""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence

from zoo import api
from zoo.cli._common import Subcommands, _count_params
from zoo.cli.models import _print_pyramid, _timed_taps
from zoo.cli.predict import _predict


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

    from zoo.weights import cache_contents, weight_loader

    name = "resnet18"
    print(f"zoo demo: pretrained weights for {name!r}, from a file URL, adapted to in_chans=1 and num_classes=10")
    with tempfile.TemporaryDirectory() as tmp:
        source = api.create_model(name)  # random init stands in for published weights
        path = Path(tmp) / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
        cache_dir = Path(tmp) / "cache"  # the demo leaves the user's cache alone
        app = api.ModelZoo(weight_loader=weight_loader(cache_dir=cache_dir, progress=False))

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
        (entry,) = cache_contents(cache_dir=cache_dir).entries
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
    from zoo.weights import weight_loader

    name = DEMO_PREDICT_MODEL
    cfg = api.get_default_cfg(name)
    print(f"zoo demo: predict with {name!r} on a picture the demo draws (a beach at sunset, 320x240)")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "beach.png"
        draw_beach().save(image)
        hub = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        from zoo import cli  # the probe as the package holds it now: a test or a script may replace it there

        problem = cli._network_problem([hub, cfg.url])
        checkpoint: Path | None = None
        # the model is built once, here, and handed to predict: loading it again there would double the demo's wait
        try:
            if problem is None:
                print(f"  weights:      {name}'s published weights (downloaded into the cache on first use)")
                model = api.create_model(name, pretrained=True)
            else:  # no network: weights an earlier run left in the cache still serve
                offline = api.ModelZoo(weight_loader=weight_loader(offline=True, progress=False))
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


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("demo", help="create, describe and run a model on a synthetic image")
    p.add_argument("--name", default="resnet50", help="model to demonstrate (default: resnet50)")
    p.set_defaults(func=_cmd_demo)

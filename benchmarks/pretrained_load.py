"""Pretrained loading: create_model(pretrained=True) to the first output, against init + load_state_dict.

Each measurement runs in a fresh subprocess (fair peak RSS), modes alternating, and the median is
reported. The checkpoint is a randomly initialised model saved in a temp dir by a subprocess of its own
(this process never holds a model), as safetensors or, with --format torch, a torch.save zip file; the
fast path reads it through pretrained_cfg_overlay={"file": ...}. The ordinary path builds the model with
its random init, reads the file (safetensors.torch.load_file; torch.load(weights_only=True), unmapped, as
a plain load does) and copies it in with load_state_dict.

    .venv/bin/python benchmarks/pretrained_load.py [--models ...] [--sizes 224 32] [--repeats 3] [--threads N]
        [--format safetensors|torch]

On a shared or busy machine pass --threads 1: OpenMP barriers under contention swamp every figure.
For the largest names memory is the point, and a 32 px input keeps the forward cheap, e.g.
    benchmarks/pretrained_load.py --models convnext_xxlarge convnextv2_huge --sizes 32 --repeats 2

Targets (issue 4): time ratio <= 0.3; peak RSS growth <= 1.3x the checkpoint size. Columns: seconds from
create_model to the first output (median), their ratio, the forward's own compute (a second forward,
the same in both modes) and the ratio without it; then each mode's peak RSS growth in MiB and over the
checkpoint size, and the ratio of the two peaks (fast path over ordinary path).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import torch

MODES = ("pretrained", "init+load")
FORMATS = ("safetensors", "torch")
DEFAULT_MODELS = ("resnet50", "wide_resnet101_2")
MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _read_plain(path: str) -> dict[str, torch.Tensor]:
    """The checkpoint as an ordinary load reads it."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    loaded: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


def _child(mode: str, name: str, path: str, size: str, threads: str) -> None:
    import torch
    import torch.nn.functional as F

    from zoo.api import create_model, get_default_cfg

    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    # pay one-off costs outside the measurement, equally for both modes: imports, the kernels a
    # ResNet runs (their code pages count in RSS), and the collection of import-time garbage
    get_default_cfg(name)
    import safetensors.torch  # noqa: F401

    import zoo.services.weights  # noqa: F401

    x = torch.randn(1, 3, int(size), int(size))
    with torch.no_grad():
        y = F.conv2d(x, torch.randn(8, 3, 3, 3), padding=1)
        y = F.batch_norm(y, torch.zeros(8), torch.ones(8), torch.ones(8), torch.zeros(8), training=False)
        y = F.max_pool2d(F.relu(y + y), 3, 2, 1)
        F.linear(y.mean((2, 3)), torch.randn(4, 8), torch.zeros(4))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    rss0 = _status_kib("VmRSS")

    start = time.perf_counter()
    if mode == "pretrained":
        model = create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path})
    else:
        model = create_model(name)
        model.load_state_dict(_read_plain(path))
    model.eval()
    with torch.no_grad():
        out = model(x)
    seconds = time.perf_counter() - start
    peak_growth = (_status_kib("VmHWM") - rss0) * 1024
    assert out.shape[0] == 1  # one image: its logits (or a CLIP tower's embedding)
    # the forward's own compute (weights resident, kernels warm), the same for both modes
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    forward = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_growth": peak_growth, "forward": forward}))


def _write_child(name: str, path: str) -> None:
    """Save name's randomly initialised state_dict at path (safetensors or torch.save, by the suffix)."""
    import torch
    from safetensors.torch import save_file

    from zoo.api import create_model

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in create_model(name).state_dict().items()}
    if path.endswith(".safetensors"):
        save_file(state, path)  # written from the tensors' own memory, not from a serialised copy
    else:
        torch.save(state, path)


def _save_checkpoint(name: str, folder: Path, fmt: str) -> Path:
    path = folder / f"{name}.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    # in a subprocess: a model as large as the checkpoint must not stay in this process's memory
    subprocess.run([sys.executable, __file__, "--write", name, str(path)], check=True)
    return path


def _measure(mode: str, name: str, path: Path, size: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, name, str(path), str(size), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 32], help="input sizes of the first forward")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--format", choices=FORMATS, default="safetensors", help="the checkpoint file's format")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if args.write:
        _write_child(*args.write)
        return

    from zoo.api import is_model

    unknown = [name for name in args.models if not is_model(name)]
    if unknown:
        parser.error(f"not registered here: {', '.join(unknown)}")
    width = max(18, *map(len, args.models))
    print(f"checkpoint format: {args.format}; peak RSS growth in MiB, then over the checkpoint size")
    print(
        f"{'model':{width}} {'input':>5} {'ckpt MiB':>8} | {'pretrained s':>12} {'init+load s':>11} {'ratio':>6} | "
        f"{'forward s':>9} {'ratio less fwd':>14} | {'pretrained peak':>17} {'init+load peak':>17} {'ratio':>6}"
    )
    # one model at a time, so each row shows as soon as its runs end
    rows = (r for name in args.models for r in measure([name], args.sizes, args.repeats, args.threads, fmt=args.format))
    for r in rows:
        print(
            f"{r.name:{width}} {r.size:5} {r.checkpoint_bytes / MIB:8.1f} | {r.pretrained_s:12.3f} "
            f"{r.init_load_s:11.3f} {r.ratio:5.2f}x | {r.forward_s:9.3f} {r.ratio_less_forward:13.2f}x | "
            f"{r.pretrained_peak_bytes / MIB:9.0f} {r.pretrained_rss:6.2f}x "
            f"{r.init_load_peak_bytes / MIB:9.0f} {r.init_load_rss:6.2f}x {r.peak_ratio:5.2f}x",
            flush=True,
        )


@attrs.frozen
class PretrainedLoad:
    """One model at one input size: medians of both modes, their ratios, and peak RSS growth (bytes; over the ckpt)."""

    name: str
    size: int
    checkpoint_bytes: int
    pretrained_s: float
    init_load_s: float
    ratio: float
    forward_s: float
    ratio_less_forward: float
    pretrained_rss: float
    init_load_rss: float
    pretrained_peak_bytes: float
    init_load_peak_bytes: float

    @property
    def peak_ratio(self) -> float:
        """The fast path's peak RSS growth over the ordinary path's."""
        return self.pretrained_peak_bytes / self.init_load_peak_bytes if self.init_load_peak_bytes else float("nan")


def measure(
    names: Sequence[str], sizes: Sequence[int] = (224,), repeats: int = 3, threads: int = 0, *, fmt: str = "safetensors"
) -> list[PretrainedLoad]:
    """Time-to-output and peak RSS of both modes, each run in a fresh subprocess, modes alternating."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = _save_checkpoint(name, Path(tmp), fmt)
            ckpt = path.stat().st_size
            for size in sizes:
                runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
                for i in range(repeats):
                    for mode in MODES:
                        run = _measure(mode, name, path, size, threads)
                        runs[mode].append(run)
                        # each run as it ends, on stderr: a large model's run is long, and an outlier shows here
                        print(
                            f"  {name} {size}px run {i + 1}/{repeats} {mode}: {run['seconds']:.3f} s, peak RSS growth "
                            f"{run['peak_growth'] / MIB:.0f} MiB ({run['peak_growth'] / ckpt:.2f}x the checkpoint)",
                            file=sys.stderr,
                            flush=True,
                        )
                t = {m: statistics.median(r["seconds"] for r in runs[m]) for m in MODES}
                peak = {m: statistics.median(r["peak_growth"] for r in runs[m]) for m in MODES}
                fwd = statistics.median(r["forward"] for m in MODES for r in runs[m])
                # noise can make a first run faster than the warm second forward; say so rather than print nonsense
                less_fwd = (t["pretrained"] - fwd) / (t["init+load"] - fwd) if t["pretrained"] > fwd else float("nan")
                rows.append(
                    PretrainedLoad(
                        name=name,
                        size=size,
                        checkpoint_bytes=ckpt,
                        pretrained_s=t["pretrained"],
                        init_load_s=t["init+load"],
                        ratio=t["pretrained"] / t["init+load"],
                        forward_s=fwd,
                        ratio_less_forward=less_fwd,
                        pretrained_rss=peak["pretrained"] / ckpt,
                        init_load_rss=peak["init+load"] / ckpt,
                        pretrained_peak_bytes=peak["pretrained"],
                        init_load_peak_bytes=peak["init+load"],
                    )
                )
            path.unlink()
    return rows


if __name__ == "__main__":
    main()

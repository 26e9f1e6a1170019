"""Peak memory of one training step with and without set_grad_checkpointing, measured side by side in one run.

Usage: python benchmarks/grad_checkpointing.py [--model NAME] [--batch B] [--size S] [--device cpu|cuda] [--threads T]

Each mode runs one SGD step (forward, loss, backward, update) from the same weights and input and reports:

- peak: on CUDA, torch.cuda.max_memory_allocated over the step minus what was allocated before it; on CPU,
  the growth of the process's peak resident set (ru_maxrss) over the step, each mode in a fresh process so
  neither inherits the other's heap, with glibc mapping every tensor separately so that freed memory leaves
  the resident set (MALLOC_MMAP_THRESHOLD_);
- saved: the bytes autograd keeps for backward (counted by saved-tensor hooks): the activations checkpointing
  drops, independent of the allocator;
- time: wall time of the step (checkpointing recomputes each block's forward in backward).

and the ratio checkpointed / plain of each, plus the loss of both (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import zoo

MODES = ("plain", "checkpointed")


def step(name: str, batch: int, size: int, device: str, checkpointed: bool) -> dict[str, float]:
    """One training step of a fresh model in this process; its memory figures, time and loss."""
    torch.manual_seed(0)
    model = zoo.create_model(name).to(device).train()
    model.set_grad_checkpointing(checkpointed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    target = torch.randint(0, model.num_classes, (batch,), generator=torch.Generator().manual_seed(2)).to(device)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = float(torch.cuda.memory_allocated())
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # KiB on Linux
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), target)
    torch.autograd.backward(loss)
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0 - before
    return {"peak": peak, "saved": float(saved), "time": seconds, "loss": float(loss)}


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, float]:
    """One mode's figures: in a child process on CPU (a fresh peak RSS), in this process on CUDA."""
    if args.device == "cuda":
        return step(args.model, args.batch, args.size, "cuda", mode == "checkpointed")
    command = [sys.executable, __file__, "--child", mode, "--model", args.model, "--batch", str(args.batch)]
    command += ["--size", str(args.size), "--device", "cpu", "--threads", str(args.threads)]
    # tensors above 64 KiB get their own mappings, returned on free: the resident set then follows live memory
    # instead of the heap's high-water mark (glibc would otherwise keep freed activations resident)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(step(args.model, args.batch, args.size, "cpu", args.child == "checkpointed")))
        return

    results = {mode: run_mode(args, mode) for mode in MODES}
    plain, ckpt = results["plain"], results["checkpointed"]
    print(f"{args.model}, one training step, batch {args.batch} at {args.size}x{args.size} on {args.device}")
    print(f"{'':14}{'peak MiB':>10}{'saved MiB':>11}{'time s':>9}{'loss':>10}")
    for mode, r in results.items():
        print(f"{mode:14}{r['peak'] / 2**20:10.0f}{r['saved'] / 2**20:11.0f}{r['time']:9.2f}{r['loss']:10.4f}")
    print(
        f"{'ratio':14}{ckpt['peak'] / plain['peak']:10.2f}{ckpt['saved'] / plain['saved']:11.2f}"
        f"{ckpt['time'] / plain['time']:9.2f}"
    )
    peak_what = "max_memory_allocated" if args.device == "cuda" else "peak RSS growth"
    print(f"checkpointed / plain peak memory ({peak_what}): {ckpt['peak'] / plain['peak']:.2f}")


if __name__ == "__main__":
    main()

"""Hand check that a randomly initialised zoo model is drawn as the reference implementation's (timm's) is.

Run in a throwaway environment that has timm installed (never in CI, never a dependency):
    PYTHONPATH=src python tools/check_init_parity.py [PATTERN ...]
For every zoo model matching the patterns (all by default), it builds timm's model of the same name
without weights and zoo's with create_model (random init), and compares each tensor of the two
state_dicts. Constant tensors (ones, zeros, layer-scale values, running statistics) must be equal;
random ones must agree in median and interquartile range within a few standard errors, so a conv
drawn with another spread (a default init where the architecture has its own, fan-in for fan-out)
shows. (Quantiles, not moments: a truncated normal clamps the rare draw of exactly the bound to it,
and one such value in a tensor moves its standard deviation by several standard errors.) It prints
one line per model and the tensors that differ, and exits 1 if any does.

The published pruned names differ on purpose: timm builds the full network, then replaces each
pruned layer with a new one that keeps torch's default init; zoo gives pruned layers the family's
init (tests/unit/test_init_once.py). They are reported apart and do not fail the run.
"""

from __future__ import annotations

import fnmatch
import math
import sys

import timm  # type: ignore[import-not-found]  # throwaway environment only
import torch

import zoo

# names later versions of timm dropped, or that need a kernel timm never shipped: their init is the
# counterpart's (see tools/check_parity.py)
SKIP = {"densenet121d", "densenet264", "cspresnext50_iabn", "cspdarknet53_iabn"}


def _differs(a: torch.Tensor, b: torch.Tensor) -> str | None:
    """Why a (zoo) and b (timm) are not drawn alike, or None."""
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if not a.is_floating_point():
        return None if torch.equal(a, b) else "integer values differ"
    x, y = a.double().flatten(), b.double().flatten()
    if bool((y == y[0]).all()) or bool((x == x[0]).all()):
        return None if torch.equal(x, y) else f"constant {y[0].item():.4g} vs {x[0].item():.4g} (timm vs zoo)"
    q = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    (x1, mx, x3), (y1, my, y3) = torch.quantile(x[:1_000_000], q).tolist(), torch.quantile(y[:1_000_000], q).tolist()
    spread = max(x3 - x1, y3 - y1)
    # both standard errors are about 1.2 IQR / sqrt(n) for the distributions inits use; eight of them
    tolerance = 8 * 1.2 * spread / math.sqrt(min(x.numel(), 1_000_000)) + 1e-12
    if abs(mx - my) > tolerance:
        return f"median {mx:.4g} vs {my:.4g} (zoo vs timm)"
    if abs((x3 - x1) - (y3 - y1)) > tolerance:
        return f"interquartile range {x3 - x1:.4g} vs {y3 - y1:.4g} (zoo vs timm)"
    return None


def main(patterns: list[str]) -> int:
    names = [n for n in zoo.list_models() if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns)]
    failed = 0
    for name in names:
        if name in SKIP:
            print(f"{name}: skipped (no timm model of this name)")
            continue
        torch.manual_seed(0)
        ours = zoo.create_model(name).state_dict()
        theirs = timm.create_model(name, pretrained=False).state_dict()
        problems = [f"  {k}: {why}" for k in theirs if (why := _differs(ours[k], theirs[k])) is not None]
        pruned = name.endswith("_pruned")
        verdict = "same distributions" if not problems else f"{len(problems)} tensor(s) differ"
        print(f"{name}: {verdict}{' (pruned: expected, see above)' if problems and pruned else ''}")
        if problems and not pruned:
            print("\n".join(problems[:12]))
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Hand check of output parity with the reference implementation (timm), for the same weights.

Run in a throwaway environment that has timm installed (never in CI, never a dependency):
    PYTHONPATH=src python tools/check_parity.py [PATTERN ...]
For every zoo model matching the patterns it builds timm's model of the same name, copies timm's
randomly initialised weights into zoo's model (strict), and compares logits, forward_features and,
when available, the features_only outputs, in eval mode, on the same input.
"""

from __future__ import annotations

import sys

import timm  # type: ignore[import-not-found]  # throwaway environment only
import torch

import zoo


def check(name: str, **kwargs: object) -> str:
    torch.manual_seed(0)
    ref = timm.create_model(name, **kwargs).eval()
    mine = zoo.create_model(name, **kwargs).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        diffs = {
            "logits": (ref(x) - mine(x)).abs().max().item(),
            "features": (ref.forward_features(x) - mine.forward_features(x)).abs().max().item(),
        }
        try:
            ref_f = timm.create_model(name, features_only=True, **kwargs).eval()
            mine_f = zoo.create_model(name, features_only=True, **kwargs).eval()
            mine_f.load_state_dict(ref_f.state_dict(), strict=True)
            outs = zip(ref_f(x), mine_f(x), strict=True)
            diffs["taps"] = max((a - b).abs().max().item() for a, b in outs)
        except zoo.ZooError as err:
            diffs["taps"] = float("nan")
            print(f"  {name}: features_only unavailable: {err}")
    worst = max(diffs.values())
    status = "OK " if worst < 1e-4 else "BAD"
    return f"{status} {name} {kwargs or ''} " + " ".join(f"{k}={v:.2e}" for k, v in diffs.items())


def main(patterns: list[str]) -> int:
    bad = 0
    for name in zoo.list_models(patterns or ""):
        for kwargs in (
            ({}, {"output_stride": 8}) if name.startswith(("resnet", "resnext", "seres", "ecares", "wide")) else ({},)
        ):
            line = check(name, **kwargs)
            bad += line.startswith("BAD")
            print(line, flush=True)
    print(f"{bad} model(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

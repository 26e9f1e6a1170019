"""Hand check of output parity with the reference implementation (timm), for the same weights.

Run in a throwaway environment that has timm installed (never in CI, never a dependency):
    PYTHONPATH=src python tools/check_parity.py [PATTERN ...]
For every zoo model matching the patterns, and each knob setting its family has (output_stride,
memory_efficient, pooling), it builds timm's model of the same name, copies timm's randomly
initialised weights into zoo's model (strict) and compares, on the same input:
- eval mode: logits, forward_features, every tap of forward_intermediates and (where timm builds it)
  the default features_only extractor;
- train mode: logits, the input gradient and every parameter gradient of one backward pass, and the
  batch-norm running statistics both models hold afterwards.
Names later versions of timm dropped (densenet121d, densenet264) are built from timm's own class with
the arguments timm 0.4.12 used. The in-place activated batch-norm names (cspresnext50_iabn,
cspdarknet53_iabn) needed a CUDA extension timm never shipped; with that kernel replaced by its math
(batch norm, then leaky ReLU 0.01 or nothing) timm's model is its plain counterpart (cspresnext50,
cspdarknet53), which is what they are compared with, less the num_batches_tracked counters.
ViTs are fed their img_size (the name's own; dynamic_img_size knobs get about 96x96 in whole patches, or
88x100 padded to whole patches), compared with timm's extractor of the last three blocks (timm's default),
and their pretrained filter is compared with timm's: a checkpoint's pos_embed resampled to other grids.
A ViT of more than REDUCE_ABOVE parameters (by the reference's state_dict) is compared at REDUCED_DEPTH
blocks, both models built with depth=REDUCED_DEPTH (its width, heads and every other setting as published);
its line says so.
memory_efficient is a zoo-side knob here: zoo's checkpointed model is compared with timm's plain one,
since checkpointing must change neither outputs, gradients nor statistics.

--default-only compares the default model alone (and, for a ViT, its pretrained filter): a quicker pass over
many names of a family whose knob settings have passed on their siblings.

--sequential (for models too large to hold twice, with gradients: convnext_xxlarge, say) keeps one model
alive at a time: timm's model is built, its weights saved as safetensors in a temp dir, its eval outputs
(logits, forward_features, every tap) kept and the parameter gradients of one train-mode forward/backward
saved beside them; it is freed, and zoo's model is built loading that file (create_model's checkpoint_path:
memory-mapped, nothing copied) and compared gradient by gradient, each read from disk alone. Batch 1 at
--size (64 by default), the default model only (no knob settings, no features_only extractor):
    PYTHONPATH=src:TIMM python tools/check_parity.py --sequential convnext_xlarge
Beside each absolute max |diff| it prints the relative one (over the reference's max |value|, per tensor for
gradients), and the run's peak resident memory.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import inspect
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import timm  # type: ignore[import-not-found]  # throwaway environment only
import torch
from torch import nn

import zoo
from zoo.domain.values import FeatureInfo

ROOT = Path(__file__).resolve().parents[1]

# knob settings checked per family (the first, no knobs, is the default model)
KNOBS: dict[str, tuple[dict[str, object], ...]] = {
    "zoo.archs.resnet": ({}, {"output_stride": 8}),
    "zoo.archs.densenet": ({}, {"memory_efficient": True}, {"global_pool": "catavgmax", "num_classes": 10}),
    "zoo.archs.xception": ({}, {"output_stride": 16}, {"output_stride": 8}),
    "zoo.archs.cspnet": ({}, {"output_stride": 16}, {"output_stride": 8}, {"global_pool": "max", "num_classes": 10}),
    "zoo.archs.vit": (
        {},
        {"img_size": 96},
        {"img_size": (64, 96), "global_pool": "avg", "num_classes": 10},
        {"dynamic_img_size": True},
        {"dynamic_img_size": True, "dynamic_img_pad": True, "global_pool": "avgmax"},
    ),
    "zoo.archs.efficientnet": (
        {},
        {"output_stride": 16},
        {"output_stride": 8},
        {"global_pool": "max", "num_classes": 10},
    ),
    "zoo.archs.mobilenetv3": (
        {},
        {"output_stride": 16},
        {"output_stride": 8},
        {"global_pool": "max", "num_classes": 10},
    ),
    "zoo.archs.convnext": (
        {},
        {"output_stride": 16},
        {"output_stride": 8},
        {"conv_mlp": True, "ls_init_value": 0.5},
        {"head_norm_first": True, "global_pool": "max", "num_classes": 10},
        {"head_hidden_size": 64, "num_classes": 10},
    ),
    "zoo.archs.regnet": (
        {},
        {"output_stride": 16},
        {"output_stride": 8},
        {"global_pool": "catavgmax", "num_classes": 10, "drop_path_rate": 0.0},
    ),
}
# knobs the reference's classifier does not take but its features_only extractor does (timm's MobileNetV3
# dilates only as MobileNetV3Features): compared extractor with extractor
FEATURES_ONLY_KNOBS: dict[str, set[str]] = {"zoo.archs.mobilenetv3": {"output_stride"}}
IABN = {"cspresnext50_iabn": "cspresnext50", "cspdarknet53_iabn": "cspdarknet53"}
# reference arguments timm applies only when it loads the published weights, and zoo always (its published
# checkpoint was trained with TensorFlow's batch-norm eps)
PRETRAINED_ONLY: dict[str, dict[str, object]] = {"fbnetc_100": {"bn_eps": 1e-3}}
ZOO_ONLY = ("memory_efficient",)
DROPPED: dict[str, dict[str, object]] = {
    "densenet121d": {"growth_rate": 32, "block_config": (6, 12, 24, 16), "stem_type": "deep"},
    "densenet264": {"growth_rate": 48, "block_config": (6, 12, 64, 48)},
}
TOLERANCE = 1e-4
# ViTs above this many parameters are compared at a reduced depth (the machine holds two copies and gradients)
REDUCE_ABOVE = 200_000_000
REDUCED_DEPTH = 3
# families whose fresh models hold parameters at constants that hide a layer's computation (ConvNeXt: layer
# scale at 1e-6, V2's global response norm at 0, so an identity; CSPNet: zero_init_last starts every residual
# branch at zero, so its blocks, attention included, would pass their input through; ViT: DINOv2's layer scale
# at 1e-5, the prefix tokens at 1e-6): every parameter is jittered before the comparison, so each layer
# computes something visible
JITTERED = ("zoo.archs.convnext", "zoo.archs.cspnet", "zoo.archs.vit")


def _timm_model(name: str, **kwargs: object) -> Any:  # a timm model: timm is untyped here
    if name in DROPPED:
        from timm.models.densenet import DenseNet  # type: ignore[import-not-found]  # throwaway environment only

        model: nn.Module = DenseNet(**DROPPED[name], **kwargs)
        return model
    made: nn.Module = timm.create_model(IABN.get(name, name), **{**PRETRAINED_ONLY.get(name, {}), **kwargs})
    return made


def _without_counters(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    # in-place ABN keeps no num_batches_tracked
    return {k: v for k, v in state.items() if not (name in IABN and k.endswith("num_batches_tracked"))}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max().item())


def _ramp(out: torch.Tensor) -> torch.Tensor:
    """The loss of the train-mode comparison: a ramp over the classes, so every logit's gradient differs."""
    return (out * torch.linspace(-1, 1, out.shape[-1])).sum()


def _train_diffs(ref: nn.Module, mine: nn.Module, x: torch.Tensor) -> dict[str, float]:
    ref, mine = copy.deepcopy(ref).train(), copy.deepcopy(mine).train()
    xr, xm = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r, out_m = ref(xr), mine(xm)
    torch.autograd.backward(_ramp(out_r))
    torch.autograd.backward(_ramp(out_m))
    grads_r = {k: p.grad for k, p in ref.named_parameters() if p.grad is not None}
    grads_m = {k: p.grad for k, p in mine.named_parameters() if p.grad is not None}
    assert grads_r.keys() == grads_m.keys(), "different parameters received gradients"
    assert xr.grad is not None
    assert xm.grad is not None
    stats_r, stats_m = ref.state_dict(), mine.state_dict()
    return {
        "train_logits": _max_diff(out_r, out_m),
        "train_input_grad": _max_diff(xr.grad, xm.grad),
        "train_param_grads": max(_max_diff(g, grads_m[k]) for k, g in grads_r.items()),
        # 0 for a model without batch norm (ViT, ConvNeXt)
        "train_bn_stats": max(
            (
                _max_diff(v, stats_m[k])
                for k, v in stats_r.items()
                if k in stats_m and ("running" in k or "tracked" in k)
            ),
            default=0.0,
        ),
    }


def _is_vit(name: str) -> bool:
    return zoo.api.default_zoo().get_spec(name).family == "zoo.archs.vit"


def _reduced(name: str) -> dict[str, Any]:  # model keywords
    """depth=REDUCED_DEPTH for a ViT above REDUCE_ABOVE parameters, else nothing."""
    if not _is_vit(name):
        return {}
    facts = json.loads((ROOT / "tests" / "reference" / "timm-1.0.31" / f"{name}.json").read_text())
    count = sum(math.prod(shape) for shape in facts["state_dict"].values())
    return {"depth": REDUCED_DEPTH} if count > REDUCE_ABOVE else {}


def _input_size(name: str, kwargs: dict[str, object]) -> tuple[int, int]:
    """A fixed-size model's img_size (the name's own unless given), 88x100 for a padding ViT, else about 96x96
    (whole patches of a ViT's patch size)."""
    spec = zoo.api.default_zoo().get_spec(name)
    args = {**spec.model_args, **kwargs}
    if not _is_vit(name) or args.get("dynamic_img_size"):
        if kwargs.get("dynamic_img_pad"):
            return (88, 100)
        patch = int(args.get("patch_size", 16))  # type: ignore[call-overload]  # an int
        side = patch * -(-96 // patch)
        return (side, side)
    size = args.get("img_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))  # type: ignore[index]  # a pair


def check_pos_embed_filter(name: str) -> str:
    """A 224-px checkpoint loaded into a model of another grid: zoo's and timm's resampled pos_embed agree."""
    from timm.models.vision_transformer import checkpoint_filter_fn  # type: ignore[import-not-found]  # throwaway

    from zoo.archs.vit import checkpoint_filter

    torch.manual_seed(0)
    reduced = _reduced(name)
    sd = _timm_model(name, **reduced).state_dict()
    worst = 0.0
    for size in (96, 384, (160, 320)):
        ref = checkpoint_filter_fn(dict(sd), _timm_model(name, img_size=size, **reduced))["pos_embed"]
        mine = checkpoint_filter(dict(sd), zoo.create_model(name, img_size=size, **reduced))["pos_embed"]
        assert ref.shape == mine.shape, f"{ref.shape} != {mine.shape}"
        worst = max(worst, _max_diff(ref, mine))
    status = "OK " if worst < TOLERANCE else "BAD"
    return f"{status} {name} pos_embed filter (96, 384, 160x320) pos_embed={worst:.1e}"


def _jittered(name: str, model: Any) -> Any:  # a timm model: timm is untyped here
    if zoo.api.default_zoo().get_spec(name).family in JITTERED:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model


def check_features_only(name: str, **kwargs: Any) -> str:  # any model keyword of the family
    """The eval outputs of zoo's and timm's default features_only extractors built with kwargs, timm's weights."""
    torch.manual_seed(0)
    ref = _timm_model(name, features_only=True, **kwargs).eval()
    mine = zoo.create_model(name, features_only=True, **kwargs).eval()
    ref_taps = [(d["module"], d["num_chs"], d["reduction"]) for d in ref.feature_info.get_dicts()]
    mine_taps = [(t.module, t.num_chs, t.reduction) for t in mine.feature_info]
    assert mine_taps == ref_taps, f"feature_info differs: {mine_taps} != {ref_taps}"
    mine_keys = list(mine.state_dict())
    ref_values = list(_without_counters(ref.state_dict(), name).values())
    assert len(mine_keys) == len(ref_values), "features_only extractors hold different tensors"
    mine.load_state_dict(dict(zip(mine_keys, ref_values, strict=True)), strict=True)
    x = torch.randn(2, 3, *_input_size(name, kwargs))
    with torch.no_grad():
        worst = max(_max_diff(a, b) for a, b in zip(ref(x), mine(x), strict=True))
    status = "OK " if worst < TOLERANCE else "BAD"
    note = "(extractors: the reference's classifier does not take it)"
    return f"{status} {name} {kwargs} {note} features_only={worst:.1e}"


def check(name: str, **kwargs: Any) -> str:  # any model keyword of the family
    torch.manual_seed(0)
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in ZOO_ONLY}
    ref = _jittered(name, _timm_model(name, **ref_kwargs).eval())
    mine = zoo.create_model(name, features_only=False, **kwargs).eval()
    mine.load_state_dict(_without_counters(ref.state_dict(), name), strict=True)
    info: list[FeatureInfo] = getattr(mine, "feature_info")  # noqa: B009  # nn.Module types attributes as tensors
    mine_taps = [(t.module, t.num_chs, t.reduction) for t in info]
    ref_info = [(d["module"], d["num_chs"], d["reduction"]) for d in ref.feature_info]
    assert mine_taps == ref_info, f"feature_info differs: {mine_taps} != {ref_info}"
    x = torch.randn(2, 3, *_input_size(name, kwargs))
    with torch.no_grad():
        diffs = {
            "logits": _max_diff(ref(x), mine(x)),
            "features": _max_diff(ref.forward_features(x), mine.forward_features(x)),
        }
        # families still on the older surface answer forward_intermediates(x) with the taps alone
        intermediates: Callable[..., list[torch.Tensor]] = getattr(mine, "forward_intermediates")  # noqa: B009
        full_surface = "intermediates_only" in inspect.signature(intermediates).parameters
        ref_taps = ref.forward_intermediates(x, intermediates_only=True)
        my_taps = intermediates(x, intermediates_only=True) if full_surface else intermediates(x)
        assert len(ref_taps) == len(my_taps), "different number of taps"
        diffs["intermediates"] = max(_max_diff(a, b) for a, b in zip(ref_taps, my_taps, strict=True))
        if name not in DROPPED:
            ref_f = _jittered(name, _timm_model(name, features_only=True, **ref_kwargs).eval())
            # timm's ViT extractor takes the last three blocks by default, zoo's every block
            last3: dict[str, Any] = {"out_indices": (-3, -2, -1)} if _is_vit(name) else {}
            mine_f = zoo.create_model(name, features_only=True, **kwargs, **last3).eval()
            # the extractors name their modules differently (timm flattens 'blocks.0' to 'blocks_0'): pair by order
            mine_keys = list(mine_f.state_dict())
            ref_values = list(_without_counters(ref_f.state_dict(), name).values())
            assert len(mine_keys) == len(ref_values), "features_only extractors hold different tensors"
            mine_f.load_state_dict(dict(zip(mine_keys, ref_values, strict=True)), strict=True)
            outs = list(zip(ref_f(x), mine_f(x), strict=True))
            diffs["features_only"] = max(_max_diff(a, b) for a, b in outs)
    diffs.update(_train_diffs(ref, mine, x))
    worst = max(diffs.values())
    status = "OK " if worst < TOLERANCE else "BAD"
    return f"{status} {name} {kwargs or ''} " + " ".join(f"{k}={v:.1e}" for k, v in diffs.items())


def _eval_outputs(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:  # timm's model or zoo's
    with torch.no_grad():
        outs = {"logits": model(x), "features": model.forward_features(x)}
        taps: list[torch.Tensor] = model.forward_intermediates(x, intermediates_only=True)
    outs.update({f"tap{i}": t for i, t in enumerate(taps)})
    return outs


def _train_outputs(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:  # timm's model or zoo's
    """One train-mode forward/backward: the logits, the input gradient and the batch-norm statistics after it;
    the parameter gradients are left on the model."""
    model.train()
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    torch.autograd.backward(_ramp(out))
    assert xg.grad is not None
    stats = {f"stat.{k}": v for k, v in model.state_dict().items() if "running" in k or "tracked" in k}
    return {"train_logits": out.detach(), "train_input_grad": xg.grad, **stats}


def _rel(diff: float, ref: torch.Tensor) -> float:
    scale = float(ref.detach().float().abs().max().item()) if ref.numel() else 0.0
    return diff / scale if scale else diff


def _peak_mib() -> float:
    """This process's peak resident memory since the last _reset_peak (Linux; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return 0.0
    line = next((ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        clear.write_text("5")  # the peak mark (VmHWM) starts again from the current resident memory


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing).

    Tensors under glibc's mmap threshold (up to 32 MiB once larger ones were freed) live on the heap, and a
    freed model's heap pages stay resident: zoo's model would otherwise be measured on top of timm's.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _saved_grads(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The gradients saved at path, one at a time, each read into memory of its own (not mapped)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu", backend="pread") as f:
        for key in f.keys():  # noqa: SIM118  # safe_open is not a Mapping
            yield key, f.get_tensor(key)


def check_sequential(name: str, size: int = 64) -> tuple[str, dict[str, float], dict[str, float]]:
    """Full-size parity with one model alive at a time (see --sequential): the report line, absolute and
    relative max |diff| per quantity."""
    from safetensors.torch import save_file

    _reset_peak()
    start = time.monotonic()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        weights, grads = Path(tmp) / "weights.safetensors", Path(tmp) / "grads.safetensors"
        torch.manual_seed(0)
        ref = _jittered(name, _timm_model(name).eval())
        ref_info = [(d["module"], d["num_chs"], d["reduction"]) for d in ref.feature_info]
        save_file({k: v.contiguous() for k, v in _without_counters(ref.state_dict(), name).items()}, str(weights))
        expected = _eval_outputs(ref, x)
        expected.update(_train_outputs(ref, x))
        save_file({k: p.grad.contiguous() for k, p in ref.named_parameters() if p.grad is not None}, str(grads))
        del ref
        gc.collect()
        _return_freed_memory()

        mine: Any = zoo.create_model(name, checkpoint_path=str(weights)).eval()
        info: list[FeatureInfo] = mine.feature_info
        mine_taps = [(t.module, t.num_chs, t.reduction) for t in info]
        assert mine_taps == ref_info, f"feature_info differs: {mine_taps} != {ref_info}"
        got = _eval_outputs(mine, x)
        got.update(_train_outputs(mine, x))
        assert got.keys() == expected.keys(), f"different outputs: {sorted(got)} != {sorted(expected)}"
        diffs: dict[str, float] = {}
        rel: dict[str, float] = {}

        def note(quantity: str, a: torch.Tensor, b: torch.Tensor) -> None:
            assert a.shape == b.shape, f"{quantity}: shape {tuple(b.shape)} != {tuple(a.shape)}"
            d = _max_diff(a, b)
            diffs[quantity] = max(diffs.get(quantity, 0.0), d)
            rel[quantity] = max(rel.get(quantity, 0.0), _rel(d, a))

        for k, v in expected.items():
            quantity = "intermediates" if k.startswith("tap") else "train_bn_stats" if k.startswith("stat.") else k
            note(quantity, v, got[k])
        params = dict(mine.named_parameters())
        seen = set()
        for k, g in _saved_grads(grads):
            mine_grad = params[k].grad
            assert mine_grad is not None, f"{k} received no gradient in zoo's model"
            note("train_param_grads", g, mine_grad)
            params[k].grad = None  # freed as it goes: the peak holds one set of gradients
            seen.add(k)
        extra = sorted(k for k, p in params.items() if p.grad is not None and k not in seen)
        assert not extra, f"only zoo's model gave gradients to {extra[:5]}"
        diffs.setdefault("train_bn_stats", 0.0)  # 0 for a model without batch norm (ViT, ConvNeXt)
        rel.setdefault("train_bn_stats", 0.0)
        del mine, params
        gc.collect()
    worst = max(diffs.values())
    status = "OK " if worst < TOLERANCE else "BAD"
    line = (
        f"{status} {name} (sequential, 1x3x{size}x{size}) "
        + " ".join(f"{k}={v:.1e}" for k, v in diffs.items())
        + f"\n    relative: {' '.join(f'{k}={v:.1e}' for k, v in rel.items())}; "
        + f"peak RSS {_peak_mib():.0f} MiB, {time.monotonic() - start:.0f} s"
    )
    return line, diffs, rel


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", help="model name patterns (fnmatch); none: every model")
    parser.add_argument("--sequential", action="store_true", help="one model alive at a time (see above)")
    parser.add_argument("--size", type=int, default=64, help="--sequential's input size (default 64)")
    parser.add_argument(
        "--default-only",
        action="store_true",
        help="the default setting only, no knob settings (a quick pass over names whose family's knobs passed)",
    )
    args = parser.parse_args(argv)
    if args.sequential:
        return _main_sequential(args.patterns, args.size)
    return _main_knobs(args.patterns, default_only=args.default_only)


def _main_sequential(patterns: list[str], size: int) -> int:
    bad = 0
    for name in zoo.list_models(patterns or ""):
        line, _, _ = check_sequential(name, size)
        bad += line.startswith("BAD")
        print(line, flush=True)
    print(f"{bad} model(s) differ")
    return 1 if bad else 0


def _main_knobs(patterns: list[str], *, default_only: bool = False) -> int:
    bad = 0
    worst: dict[str, float] = {}
    for name in zoo.list_models(patterns or ""):
        spec = zoo.api.default_zoo().get_spec(name)
        family = spec.family
        knobs = KNOBS.get(family, ({},))
        for knob in knobs[:1] if default_only else knobs:
            kwargs = {**knob, **_reduced(name)}
            combined = {**spec.model_args, **kwargs}
            if combined.get("head_hidden_size") and combined.get("head_norm_first"):
                print(f"-- {name} {kwargs}: not a setting (a head_norm_first head has no hidden layer)")
                continue
            if family in FEATURES_ONLY_KNOBS and set(knob) <= FEATURES_ONLY_KNOBS[family] and knob:
                lines = [check_features_only(name, **kwargs)]
            else:
                lines = [check(name, **kwargs)]
            if family == "zoo.archs.vit" and not knob:
                lines.append(check_pos_embed_filter(name))
            for line in lines:
                bad += line.startswith("BAD")
                values = [float(part.split("=")[1]) for part in line.split() if "=" in part and part[0].isalpha()]
                worst[family] = max(worst.get(family, 0.0), *values)
                print(line, flush=True)
    for family, value in worst.items():
        print(f"max |diff| {family}: {value:.2e}")
    print(f"{bad} model setting(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

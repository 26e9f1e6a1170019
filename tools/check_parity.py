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
ViTs are fed their img_size (224 by default; dynamic_img_size knobs get 96x96, or 88x100 padded to
whole patches), compared with timm's extractor of the last three blocks (timm's default), and their
pretrained filter is compared with timm's: a 224 px checkpoint's pos_embed resampled to other grids.
memory_efficient is a zoo-side knob here: zoo's checkpointed model is compared with timm's plain one,
since checkpointing must change neither outputs, gradients nor statistics.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable
from typing import Any

import timm  # type: ignore[import-not-found]  # throwaway environment only
import torch
from torch import nn

import zoo
from zoo.domain.values import FeatureInfo

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
    "zoo.archs.efficientnet": ({}, {"global_pool": "max", "num_classes": 10}),
    "zoo.archs.mobilenetv3": ({}, {"global_pool": "max", "num_classes": 10}),
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
# families whose fresh models hold parameters at constants that hide a layer's computation (ConvNeXt: layer
# scale at 1e-6, V2's global response norm at 0, so an identity): every parameter is jittered before the
# comparison, so each layer computes something visible
JITTERED = ("zoo.archs.convnext",)


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


def _train_diffs(ref: nn.Module, mine: nn.Module, x: torch.Tensor) -> dict[str, float]:
    ref, mine = copy.deepcopy(ref).train(), copy.deepcopy(mine).train()
    xr, xm = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r, out_m = ref(xr), mine(xm)
    (out_r * torch.linspace(-1, 1, out_r.shape[-1])).sum().backward()
    (out_m * torch.linspace(-1, 1, out_m.shape[-1])).sum().backward()
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


def _input_size(name: str, kwargs: dict[str, object]) -> tuple[int, int]:
    """A fixed-size model's img_size (224 unless given), 88x100 for a padding ViT, else 96x96."""
    if not name.startswith("vit_") or kwargs.get("dynamic_img_size"):
        return (88, 100) if kwargs.get("dynamic_img_pad") else (96, 96)
    size = kwargs.get("img_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))  # type: ignore[index]  # a pair


def check_pos_embed_filter(name: str) -> str:
    """A 224-px checkpoint loaded into a model of another grid: zoo's and timm's resampled pos_embed agree."""
    from timm.models.vision_transformer import checkpoint_filter_fn  # type: ignore[import-not-found]  # throwaway

    from zoo.archs.vit import checkpoint_filter

    torch.manual_seed(0)
    sd = _timm_model(name).state_dict()
    worst = 0.0
    for size in (96, 384, (160, 320)):
        ref = checkpoint_filter_fn(dict(sd), _timm_model(name, img_size=size))["pos_embed"]
        mine = checkpoint_filter(dict(sd), zoo.create_model(name, img_size=size))["pos_embed"]
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
            last3: dict[str, Any] = {"out_indices": (-3, -2, -1)} if name.startswith("vit_") else {}
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


def main(patterns: list[str]) -> int:
    bad = 0
    worst: dict[str, float] = {}
    for name in zoo.list_models(patterns or ""):
        spec = zoo.api.default_zoo().get_spec(name)
        family = spec.family
        for kwargs in KNOBS.get(family, ({},)):
            combined = {**spec.model_args, **kwargs}
            if combined.get("head_hidden_size") and combined.get("head_norm_first"):
                print(f"-- {name} {kwargs}: not a setting (a head_norm_first head has no hidden layer)")
                continue
            lines = [check(name, **kwargs)]
            if family == "zoo.archs.vit" and not kwargs:
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

"""ConvNeXt V1 and V2: a patchify (or overlapping) stem, then stages of depthwise-7x7 + norm + MLP blocks with
layer scale (V1) or global response norm in the MLP (V2).

Parameter names and shapes follow timm 1.0.31 for the same model names, so published checkpoints for
those names load unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs
import torch
from torch import nn

from zoo.archs.base import ZooModule
from zoo.archs.catalogue import family_specs
from zoo.archs.layers import (
    POOL_TYPES,
    ClassifierHead,
    DropPath,
    GlobalPool,
    check_head,
    init_each_module,
    is_scripting,
    sequential_prefix,
)
from zoo.archs.layers.conv_mlp import MLP_ACT_LAYERS, PointwiseMlp, make_mlp_act
from zoo.archs.layers.helpers import OUTPUT_STRIDES, make_divisible
from zoo.archs.layers.norm import CHANNEL_NORMS, channel_norm
from zoo.archs.layers.norm_head import NormMlpClassifierHead
from zoo.archs.layers.same_pad import same_conv
from zoo.archs.surface import TapStep, run_stage, take_taps
from zoo.domain.checks import check_bool, check_choice, check_float, check_int, check_ints
from zoo.domain.errors import InvalidValueError
from zoo.domain.grouping import GroupMatcher, GroupRule
from zoo.domain.values import FeatureCfg, FeatureInfo, ModelSpec

__all__ = [
    "MODEL_SPECS",
    "OUTPUT_STRIDES",
    "STEM_TYPES",
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvNeXtStage",
    "convert_fb_checkpoint",
]

# 'patch': one patch_size-strided conv; the others two 3x3 stride-2 convs ('tiered': the first half as wide,
# 'act': an activation between them)
STEM_TYPES: tuple[str, ...] = ("patch", "overlap", "overlap_tiered", "overlap_act")


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, norm, pointwise MLP (4x wide, V2: with global response norm), layer scale (`gamma`),
    stochastic depth, residual.

    The MLP runs channels-last on nn.Linear layers, or on 1x1 convolutions with conv_mlp.
    """

    def __init__(
        self,
        chs: int,
        *,
        kernel_size: int,
        dilation: int,
        mlp_ratio: float,
        conv_mlp: bool,
        conv_bias: bool,
        ls_init_value: float | None,
        eps: float,
        drop_path_rate: float,
        norm_layer: str = "layernorm",
        act_layer: str = "gelu",
        use_grn: bool = False,
    ) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        padding = dilation * (kernel_size - 1) // 2
        self.conv_dw = nn.Conv2d(chs, chs, kernel_size, 1, padding, dilation, groups=chs, bias=conv_bias)
        self.norm = channel_norm(norm_layer, chs, eps, channels_last=not conv_mlp)
        self.mlp = PointwiseMlp(chs, int(mlp_ratio * chs), use_conv=conv_mlp, act_layer=act_layer, use_grn=use_grn)
        self.ls_init_value = ls_init_value
        self.gamma: nn.Parameter | None = (
            nn.Parameter(torch.full((chs,), ls_init_value)) if ls_init_value is not None else None
        )
        self.drop_path: nn.Module = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def reset_parameters(self) -> None:
        """Layer scale back to ls_init_value (the block's own tensor: its layers reset themselves)."""
        if self.gamma is not None and self.ls_init_value is not None:
            nn.init.constant_(self.gamma, self.ls_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        gamma = self.gamma
        if gamma is not None:
            x = x.mul(gamma.reshape(1, -1, 1, 1))
        out: torch.Tensor = self.drop_path(x) + shortcut
        return out


class ConvNeXtStage(nn.Module):
    """An optional downsample (norm, then a 2x2 strided or dilated conv) and a sequence of ConvNeXt blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int,
        dilation: tuple[int, int],
        depth: int,
        drop_path_rates: Sequence[float],
        kernel_size: int,
        conv_mlp: bool,
        conv_bias: bool,
        ls_init_value: float | None,
        eps: float,
        norm_layer: str = "layernorm",
        act_layer: str = "gelu",
        use_grn: bool = False,
    ) -> None:
        super().__init__()
        first_dilation, block_dilation = dilation
        self.downsample: nn.Module = nn.Identity()
        if in_chs != out_chs or stride > 1 or first_dilation != block_dilation:
            reshaped = stride > 1 or first_dilation != block_dilation
            ds_kernel = 2 if reshaped else 1
            conv: nn.Module
            if block_dilation > 1:
                # dilated instead of strided: the 2x2 conv keeps the size ('same' padding, the odd pixel right/bottom)
                conv = same_conv(in_chs, out_chs, ds_kernel, first_dilation, bias=conv_bias)
            else:
                conv = nn.Conv2d(in_chs, out_chs, ds_kernel, stride, 0, first_dilation, bias=conv_bias)
            self.downsample = nn.Sequential(channel_norm(norm_layer, in_chs, eps), conv)
        self.blocks = nn.Sequential(
            *(
                ConvNeXtBlock(
                    out_chs,
                    kernel_size=kernel_size,
                    dilation=block_dilation,
                    mlp_ratio=4.0,
                    conv_mlp=conv_mlp,
                    conv_bias=conv_bias,
                    ls_init_value=ls_init_value,
                    eps=eps,
                    drop_path_rate=rate,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    use_grn=use_grn,
                )
                for rate in drop_path_rates
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.downsample(x))
        return out

    def forward_checkpointed(self, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
        """forward, recomputing each block's activations in backward when checkpointed."""
        return run_stage(self.blocks, self.downsample(x), checkpointed)


def _stem(
    stem_type: str, in_chans: int, chs: int, patch_size: int, conv_bias: bool, act_layer: str, norm: nn.Module
) -> nn.Sequential:
    """The stem, stride 4 (patch_size for 'patch'), ending in norm: its layers are numbered as the reference's."""
    if stem_type == "patch":
        return nn.Sequential(nn.Conv2d(in_chans, chs, patch_size, patch_size, bias=conv_bias), norm)
    mid_chs = make_divisible(chs // 2) if stem_type == "overlap_tiered" else chs
    layers: list[nn.Module] = [nn.Conv2d(in_chans, mid_chs, 3, 2, 1, bias=conv_bias)]
    if stem_type == "overlap_act":
        layers.append(make_mlp_act(act_layer))
    layers += [nn.Conv2d(mid_chs, chs, 3, 2, 1, bias=conv_bias), norm]
    return nn.Sequential(*layers)


def _head_pools(head: nn.Module) -> tuple[str, ...]:
    """The poolings a head takes: a hidden layer after pooling reads a fixed width, so not the doubling 'catavgmax'."""
    if isinstance(head, NormMlpClassifierHead) and head.hidden_size is not None:
        return tuple(p for p in POOL_TYPES if p != "catavgmax")
    return POOL_TYPES


def _init_weights(model: ConvNeXt, *, fresh: bool) -> None:
    """ConvNeXt's init, on construction (fresh=False: over torch's defaults) and one-pass creation (fresh: every
    tensor once): convolutions and linears N(0, 0.02) with zero bias, the head's linears scaled by head_init_scale;
    layer scale, norms and global response norms as built (their reset_parameters)."""
    head = set(model.head.modules())
    head_scale = abs(model._head_init_scale)

    def rule(m: nn.Module) -> bool:
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            return False
        # timm draws trunc_normal_(std=0.02), cut at +-2: 100 std out, where no normal draw reaches, so it is normal_
        # (the same values from the same seed, in torch 2.14) plus a rejection check costing 3/4 as much again. The
        # head's linears are then scaled: N(0, 0.02 * |scale|), a symmetric law ignoring the sign.
        scale = head_scale if isinstance(m, nn.Linear) and m in head else 1.0
        nn.init.normal_(m.weight, std=0.02 * scale)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return True

    init_each_module(model, rule, fresh=fresh)


class ConvNeXt(ZooModule):
    """ConvNeXt: a stem (STEM_TYPES) ending in a norm, four stages; dilation replaces striding past output_stride.

    The default head pools, then normalises, then classifies (through a GELU hidden layer with
    head_hidden_size); head_norm_first normalises the map before pooling instead (the norm then ends
    forward_features). norm_layer picks every norm (CHANNEL_NORMS), act_layer the MLPs' activation
    (and the 'overlap_act' stem's), use_grn adds V2's global response norm to the MLPs.
    set_grad_checkpointing recomputes each block's activations in backward. global_pools: the poolings the
    head takes (reset_classifier refuses the others).
    """

    classifier_name = "head.fc"

    def __init__(
        self,
        *,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        kernel_sizes: int | Sequence[int] = 7,
        ls_init_value: float | None = 1e-6,
        stem_type: str = "patch",
        patch_size: int = 4,
        head_init_scale: float = 1.0,
        head_norm_first: bool = False,
        head_hidden_size: int | None = None,
        conv_mlp: bool = False,
        conv_bias: bool = True,
        use_grn: bool = False,
        act_layer: str = "gelu",
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        depths = check_ints("depths", depths, ge=1)
        dims = check_ints("dims", dims, length=len(depths), ge=1)
        if not depths:
            raise InvalidValueError("depths=() is invalid: expected at least one stage")
        kernels = (
            (check_int("kernel_sizes", kernel_sizes, ge=1),) * len(depths)
            if not isinstance(kernel_sizes, Sequence)
            else check_ints("kernel_sizes", kernel_sizes, length=len(depths), ge=1)
        )
        if any(k % 2 == 0 for k in kernels):
            raise InvalidValueError(f"kernel_sizes={kernel_sizes!r} is invalid: expected odd sizes")
        in_chans = check_int("in_chans", in_chans, ge=1)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        if ls_init_value is not None:
            ls_init_value = check_float("ls_init_value", ls_init_value, ge=0.0)
        check_choice("stem_type", stem_type, STEM_TYPES)
        patch_size = check_int("patch_size", patch_size, ge=1)
        head_init_scale = check_float("head_init_scale", head_init_scale)
        check_bool("head_norm_first", head_norm_first)
        if head_hidden_size is not None:
            head_hidden_size = check_int("head_hidden_size", head_hidden_size, ge=1)
            if head_norm_first:
                raise InvalidValueError(
                    f"head_hidden_size={head_hidden_size} is invalid with head_norm_first=True: expected None"
                )
        check_bool("conv_mlp", conv_mlp)
        check_bool("conv_bias", conv_bias)
        check_bool("use_grn", use_grn)
        check_choice("act_layer", act_layer, MLP_ACT_LAYERS)
        check_choice("norm_layer", norm_layer, CHANNEL_NORMS)
        eps = check_float("norm_eps", norm_eps, ge=0.0, lt=1.0)
        drop_rate = check_float("drop_rate", drop_rate, ge=0.0, lt=1.0)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, ge=0.0, lt=1.0)
        check_head(num_classes, global_pool)
        GlobalPool(global_pool)  # refuses an unknown pooling before anything is built
        if not head_norm_first:
            NormMlpClassifierHead(1, 0, global_pool, hidden_size=head_hidden_size)  # refuses a pooling it cannot use
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = _stem(
            stem_type, in_chans, dims[0], patch_size, conv_bias, act_layer, channel_norm(norm_layer, dims[0], eps)
        )
        rates = torch.linspace(0.0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.Sequential()
        self.feature_info = []
        chs, reduction, dilation = dims[0], (patch_size if stem_type == "patch" else 4), 1
        for i, (depth, out_chs) in enumerate(zip(depths, dims, strict=True)):
            stride = 2 if i > 0 or reduction == 2 else 1  # a stride-2 patch stem: the first stage halves too
            if reduction >= output_stride and stride > 1:
                dilation *= stride
                stride = 1
            reduction *= stride
            first_dilation = 1 if dilation in (1, 2) else 2
            stage = ConvNeXtStage(
                chs,
                out_chs,
                stride=stride,
                dilation=(first_dilation, dilation),
                depth=depth,
                drop_path_rates=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                kernel_size=kernels[i],
                conv_mlp=conv_mlp,
                conv_bias=conv_bias,
                ls_init_value=ls_init_value,
                eps=eps,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_grn=use_grn,
            )
            self.stages.add_module(str(i), stage)
            chs = out_chs
            self.feature_info.append(FeatureInfo(index=i, module=f"stages.{i}", num_chs=chs, reduction=reduction))
        self.num_features = chs
        self.norm_pre: nn.Module = channel_norm(norm_layer, chs, eps) if head_norm_first else nn.Identity()
        self.head: ClassifierHead | NormMlpClassifierHead = (
            ClassifierHead(chs, num_classes, global_pool, drop_rate)
            if head_norm_first
            else NormMlpClassifierHead(
                chs,
                num_classes,
                global_pool,
                drop_rate,
                hidden_size=head_hidden_size,
                norm=channel_norm(norm_layer, chs, eps),
            )
        )
        self.head_hidden_size = self.head.num_features
        self.global_pools = _head_pools(self.head)
        self._head_init_scale = head_init_scale
        _init_weights(self, fresh=False)

    def init_all_weights(self) -> None:
        """Every tensor once, by the family's rules (_init_weights)."""
        _init_weights(self, fresh=True)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one (0: none); optionally change the pooling.

        The head's norm (and hidden layer) keep their weights.
        """
        head = self.head
        pool = head.global_pool.pool_type if global_pool is None else global_pool
        if isinstance(head, NormMlpClassifierHead):
            self.head = NormMlpClassifierHead(
                self.num_features,
                num_classes,
                pool,
                self.drop_rate,
                hidden_size=head.hidden_size,
                norm=head.norm,
                pre_logits=head.pre_logits,
            )
        else:  # head_norm_first, or a pruned head without its norm
            self.head = ClassifierHead(self.num_features, num_classes, pool, self.drop_rate)
        self.num_classes = num_classes
        self.head_hidden_size = self.head.num_features
        self.global_pools = _head_pools(self.head)

    @torch.jit.unused
    def _stages_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            assert isinstance(stage, ConvNeXtStage)
            x = stage.forward_checkpointed(x, True)
        return x

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The stem, then each stage's downsampling and each block (each stage with coarse); the head last."""
        if coarse:
            return GroupMatcher.of(stem=r"^stem", blocks=r"^stages\.(\d+)")
        return GroupMatcher.of(
            stem=r"^stem",
            blocks=(
                GroupRule(r"^stages\.(\d+)\.downsample", suffix=(0,)),
                GroupRule(r"^stages\.(\d+)\.blocks\.(\d+)"),
                GroupRule(r"^norm_pre", joins_previous=True),
            ),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output (normalised when head_norm_first)."""
        x = self.stem(x)
        # is_scripting() must stand in the if itself: TorchScript then drops the branch it cannot compile
        if self.grad_checkpointing and not is_scripting():  # noqa: SIM108  # a ternary would not be dropped
            x = self._stages_checkpointed(x)
        else:
            x = self.stages(x)
        return self._finish(x)  # forward_intermediates ends the same way

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, normalise (default head), drop out and classify; pre_logits stops before the classifier."""
        out: torch.Tensor = self.head(x, pre_logits=pre_logits)
        return out

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm_pre(x)
        return out

    def _run_stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if i == 0:
            x = self.stem(x)
        stage = self.stages[i]
        assert isinstance(stage, ConvNeXtStage)
        x = stage.forward_checkpointed(x, self.grad_checkpointing)
        return x, x

    def _tap_steps(self) -> list[TapStep]:
        steps: list[TapStep] = []
        for i in range(len(self.feature_info)):

            def step(x: torch.Tensor, i: int = i) -> tuple[torch.Tensor, torch.Tensor]:
                return self._run_stage(i, x)

            steps.append(step)
        return steps

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only the stages the taps at indices need (and drop the head); returns the kept indices.

        prune_norm drops head_norm_first's norm before pooling; pruning the head drops the head's norm
        too, so the model then returns its last stage's map.
        """
        kept = take_taps(self.feature_info, indices)
        check_bool("prune_norm", prune_norm)
        check_bool("prune_head", prune_head)
        last = max(kept)
        if last < len(self.feature_info) - 1:
            self.stages = sequential_prefix(self.stages, last + 1)
            self.feature_info = self.feature_info[: last + 1]
            self.num_features = self.feature_info[last].num_chs
            self.norm_pre = nn.Identity()  # sized for, and only applied to, the last stage
            prune_head = True  # the head was sized for the dropped stages
        if prune_norm:
            self.norm_pre = nn.Identity()
        if prune_head:
            # no pooling, no norm, no classifier: forward returns the map
            self.head = ClassifierHead(self.num_features, 0, "", self.drop_rate)
            self.global_pools = POOL_TYPES
            self.num_classes = 0
            self.head_hidden_size = self.num_features
        return list(kept)


_FB_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.dwconv\.", ".conv_dw."),
    (r"\.pwconv(\d)\.", r".mlp.fc\1."),
    (r"\.grn\.gamma$", ".mlp.grn.weight"),
    (r"\.grn\.beta$", ".mlp.grn.bias"),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)
# prefixes of extra heads some releases carry (distillation projectors, feature norms): not part of the model
_FB_EXTRAS = ("projectors.", "norms.")
_CLIP_TRUNK = "visual.trunk."


def _from_clip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # an OpenCLIP image tower: the trunk is this model; its projection (or projection MLP) becomes the classifier
    out = {k.removeprefix(_CLIP_TRUNK): v for k, v in state_dict.items() if k.startswith(_CLIP_TRUNK)}
    proj = state_dict.get("visual.head.proj.weight")
    if proj is None and "visual.head.mlp.fc1.weight" in state_dict:
        out["head.pre_logits.fc.weight"] = state_dict["visual.head.mlp.fc1.weight"]
        out["head.pre_logits.fc.bias"] = state_dict["visual.head.mlp.fc1.bias"]
        proj = state_dict["visual.head.mlp.fc2.weight"]
    if proj is not None:
        out["head.fc.weight"] = proj
        out["head.fc.bias"] = torch.zeros(proj.shape[0], dtype=proj.dtype)
    return out


def convert_fb_checkpoint(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint in the original ConvNeXt (V1, V2) release's layout (the fb_* urls) or an OpenCLIP image tower,
    renamed to this model's.

    Checkpoints already in this layout (the hub's) pass unchanged. Linear MLP weights are reshaped
    to 1x1 convolutions where the model was built with conv_mlp, global response norm's (1, 1, 1, C)
    tensors to (C,).
    """
    if "head.norm.weight" in state_dict or "norm_pre.weight" in state_dict:
        return dict(state_dict)
    nested = state_dict.get("model")
    source: Mapping[str, torch.Tensor] = nested if isinstance(nested, Mapping) else state_dict
    if _CLIP_TRUNK + "stem.0.weight" in source:
        return _from_clip(source)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith(_FB_EXTRAS):
            continue
        for pattern, replacement in _FB_RENAMES:
            key = re.sub(pattern, replacement, key)
        shape = shapes.get(key)
        if (
            not key.startswith("head.")
            and shape is not None
            and value.shape != shape
            and value.numel() == shape.numel()
        ):
            value = value.reshape(shape)
        out[key] = value
    return out


_V2 = {"use_grn": True, "ls_init_value": None}
_TEST = {"norm_eps": 1e-5, "depths": (1, 1, 1, 1), "dims": (32, 64, 96, 128)}


def _cfg(depths: tuple[int, ...], dims: tuple[int, ...], **kwargs: object) -> dict[str, object]:
    return {"depths": depths, "dims": dims, **kwargs}


_SHORT, _LONG = (2, 2, 6, 2), (3, 3, 27, 3)
_ARCHS: dict[str, dict[str, object]] = {
    "convnext_tiny": _cfg((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": _cfg(_LONG, (96, 192, 384, 768)),
    "convnext_zepto_rms": _cfg((2, 2, 4, 2), (32, 64, 128, 256), conv_mlp=True, norm_layer="simplenorm"),
    "convnext_zepto_rms_ols": _cfg(
        (2, 2, 4, 2), (32, 64, 128, 256), conv_mlp=True, norm_layer="simplenorm", stem_type="overlap_act"
    ),
    "convnext_atto": _cfg(_SHORT, (40, 80, 160, 320), conv_mlp=True),
    "convnext_atto_ols": _cfg(_SHORT, (40, 80, 160, 320), conv_mlp=True, stem_type="overlap_tiered"),
    "convnext_femto": _cfg(_SHORT, (48, 96, 192, 384), conv_mlp=True),
    "convnext_femto_ols": _cfg(_SHORT, (48, 96, 192, 384), conv_mlp=True, stem_type="overlap_tiered"),
    "convnext_pico": _cfg(_SHORT, (64, 128, 256, 512), conv_mlp=True),
    "convnext_pico_ols": _cfg(_SHORT, (64, 128, 256, 512), conv_mlp=True, stem_type="overlap_tiered"),
    "convnext_nano": _cfg((2, 2, 8, 2), (80, 160, 320, 640), conv_mlp=True),
    "convnext_nano_ols": _cfg((2, 2, 8, 2), (80, 160, 320, 640), conv_mlp=True, stem_type="overlap"),
    "convnext_tiny_hnf": _cfg((3, 3, 9, 3), (96, 192, 384, 768), head_norm_first=True, conv_mlp=True),
    "convnext_base": _cfg(_LONG, (128, 256, 512, 1024)),
    "convnext_large": _cfg(_LONG, (192, 384, 768, 1536)),
    "convnext_large_mlp": _cfg(_LONG, (192, 384, 768, 1536), head_hidden_size=1536),
    "convnext_xlarge": _cfg(_LONG, (256, 512, 1024, 2048)),
    "convnext_xxlarge": _cfg((3, 4, 30, 3), (384, 768, 1536, 3072), norm_eps=1e-5),
    "convnextv2_atto": _cfg(_SHORT, (40, 80, 160, 320), conv_mlp=True, **_V2),
    "convnextv2_femto": _cfg(_SHORT, (48, 96, 192, 384), conv_mlp=True, **_V2),
    "convnextv2_pico": _cfg(_SHORT, (64, 128, 256, 512), conv_mlp=True, **_V2),
    "convnextv2_nano": _cfg((2, 2, 8, 2), (80, 160, 320, 640), conv_mlp=True, **_V2),
    "convnextv2_tiny": _cfg((3, 3, 9, 3), (96, 192, 384, 768), **_V2),
    "convnextv2_base": _cfg(_LONG, (128, 256, 512, 1024), **_V2),
    "convnextv2_large": _cfg(_LONG, (192, 384, 768, 1536), **_V2),
    "convnextv2_huge": _cfg(_LONG, (352, 704, 1408, 2816), **_V2),
    "test_convnext": {**_TEST, "depths": (1, 2, 4, 2), "dims": (24, 32, 48, 64), "act_layer": "gelu_tanh"},
    "test_convnext2": {**_TEST, "act_layer": "gelu_tanh"},
    "test_convnext3": {**_TEST, "kernel_sizes": (7, 5, 5, 3), "act_layer": "silu"},
}

MODEL_SPECS: tuple[ModelSpec, ...] = tuple(
    attrs.evolve(spec, pretrained_filter=convert_fb_checkpoint)
    for spec in family_specs(__name__, ConvNeXt, _ARCHS, FeatureCfg(out_indices=(0, 1, 2, 3), flatten_sequential=True))
)

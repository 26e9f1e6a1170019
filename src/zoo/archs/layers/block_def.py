"""The typed definition of a run of mobile blocks (EfficientNet, MobileNet): kind, widths, kernels, options.

layers.block_string decodes the reference's block strings into these; layers.mbconv builds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from zoo.archs.layers.norm_act import ACT_LAYERS
from zoo.domain.checks import check_bool, check_choice, check_float, check_int
from zoo.domain.errors import InvalidValueError

__all__ = ["BLOCK_KINDS", "KERNELS", "BlockDef"]

BLOCK_KINDS: tuple[str, ...] = ("ds", "ir", "er", "cn", "uir", "mqa")
KERNELS: tuple[int, ...] = (1, 3, 5, 7, 9, 11)


def _opt_act(inst: object, a: attrs.Attribute[str | None], v: str | None) -> None:
    if v is not None:
        check_choice(f"BlockDef.{a.name}", v, ACT_LAYERS)


def _kernels(value: int | Sequence[int]) -> tuple[int, ...]:
    # a bare int is one kernel; _check_kernels then checks every size
    if isinstance(value, Sequence):
        return tuple(value)
    return (value,)


def _check_kernels(inst: object, a: attrs.Attribute[tuple[int, ...]], v: tuple[int, ...]) -> None:
    if not v:
        raise InvalidValueError(f"BlockDef.{a.name}={v!r} is invalid: expected at least one kernel size")
    # a 'uir' block's three depthwise kernels (kernel, exp_kernel, pw_kernel) may be 0: that conv is left out
    allowed = (0, *KERNELS) if getattr(inst, "kind", None) == "uir" else KERNELS
    for k in v:
        check_choice(f"BlockDef.{a.name}", k, allowed)


@attrs.frozen
class BlockDef:
    """One run of identical blocks of one kind.

    Kinds: 'ds' depthwise-separable, 'ir' inverted residual (MBConv), 'er' edge residual (fused MBConv:
    a full conv expands), 'cn' conv-bn-act, 'uir' universal inverted residual (MobileNetV4: kernel is the
    middle depthwise conv's, exp_kernel the start one's, pw_kernel the end one's, 0 for none; depthwise by
    default), 'mqa' mobile multi-query attention (num_heads, key_dim, kv_stride; kernel: the strided key/value
    conv's). The first block of the run strides; act None takes the model's activation; se_ratio 0 means
    no squeeze-and-excitation. kernel is the spatial conv's kernel
    (the depthwise one; 'er': the expansion's), exp_kernel / pw_kernel the 1x1 expansion's and projection's;
    several sizes make a mixed-kernel conv over as many channel groups. group_size None is the kind's
    grouping (depthwise for 'ds'/'ir', dense for 'er'/'cn'), 0 dense, n groups of n channels. noskip
    drops the residual of 'ds'/'ir'/'er'; skip gives 'cn' one; pw_act activates 'ds''s projection;
    num_experts > 0 makes an 'ir' CondConv; force_in_chs sizes an 'er' expansion from that width. s2d
    ('ds' only) turns space into depth first: a 2x2 stride-2 conv to 4x the channels, a depthwise kernel
    of about half the size; the blocks after it work at 4x widths until the next strided block, which
    does not stride but divides its expansion by 4 instead (EfficientNet-X). dilation spaces the spatial
    convs' taps (set by the builder where a network keeps a smaller output_stride instead of striding).
    """

    kind: str = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.kind", v, BLOCK_KINDS))
    repeats: int = attrs.field(validator=lambda i, a, v: check_int("BlockDef.repeats", v, ge=1))
    kernel: tuple[int, ...] = attrs.field(converter=_kernels, validator=_check_kernels)
    stride: int = attrs.field(validator=lambda i, a, v: check_choice("BlockDef.stride", v, (1, 2)))
    out_chs: int = attrs.field(validator=lambda i, a, v: check_int("BlockDef.out_chs", v, ge=1))
    exp_ratio: float = attrs.field(
        default=1.0, validator=lambda i, a, v: check_float("BlockDef.exp_ratio", v, ge=1.0, le=16.0)
    )
    se_ratio: float = attrs.field(
        default=0.0, validator=lambda i, a, v: check_float("BlockDef.se_ratio", v, ge=0.0, le=1.0)
    )
    act: str | None = attrs.field(default=None, validator=_opt_act)
    noskip: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.noskip", v))
    exp_kernel: tuple[int, ...] = attrs.field(default=(1,), converter=_kernels, validator=_check_kernels)
    pw_kernel: tuple[int, ...] = attrs.field(default=(1,), converter=_kernels, validator=_check_kernels)
    group_size: int | None = attrs.field(
        default=None, validator=lambda i, a, v: v is None or check_int("BlockDef.group_size", v, ge=0)
    )
    skip: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.skip", v))
    pw_act: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.pw_act", v))
    num_experts: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.num_experts", v, ge=0))
    force_in_chs: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.force_in_chs", v, ge=0))
    s2d: bool = attrs.field(default=False, validator=lambda i, a, v: check_bool("BlockDef.s2d", v))
    num_heads: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.num_heads", v, ge=0))
    key_dim: int = attrs.field(default=0, validator=lambda i, a, v: check_int("BlockDef.key_dim", v, ge=0))
    kv_stride: int = attrs.field(default=1, validator=lambda i, a, v: check_int("BlockDef.kv_stride", v, ge=1))
    dilation: int = attrs.field(default=1, validator=lambda i, a, v: check_int("BlockDef.dilation", v, ge=1))

    @classmethod
    def ds(cls, kernel: int, stride: int, out_chs: int, *, se: float = 0.0, act: str | None = None) -> BlockDef:
        """One depthwise-separable block."""
        return cls("ds", 1, kernel, stride, out_chs, se_ratio=se, act=act)

    @classmethod
    def ir(
        cls,
        repeats: int,
        kernel: int,
        stride: int,
        exp_ratio: float,
        out_chs: int,
        *,
        se: float = 0.0,
        act: str | None = None,
    ) -> BlockDef:
        """A run of inverted-residual blocks."""
        return cls("ir", repeats, kernel, stride, out_chs, exp_ratio=exp_ratio, se_ratio=se, act=act)

    def __attrs_post_init__(self) -> None:
        if self.s2d and self.kind != "ds":
            raise InvalidValueError(f"BlockDef.s2d=True is invalid with kind={self.kind!r}: only 'ds' blocks have it")

    def groups(self, chs: int) -> int:
        """The groups of this block's spatial conv over chs channels."""
        size = self.group_size if self.group_size is not None else (1 if self.kind in ("ds", "ir", "uir") else 0)
        if size == 0:
            return 1
        if chs % size:
            raise InvalidValueError(f"BlockDef.group_size={size} is invalid: it does not divide {chs} channels")
        return chs // size

"""The block-string notation of the EfficientNet and MobileNet families, decoded into BlockDefs.

A string describes one run of blocks: its kind first, then options joined by '_', in any order, e.g.
'ir_r2_k3_s2_e6_c24_se0.25' (two inverted residuals, 3x3, the first strided, expansion 6, 24 channels,
SE 0.25). The notation is the reference's (timm 1.0.31's arch_def strings), so a family's definition
reads as published. Kinds: 'ds', 'dsa' (a 'ds' whose projection is activated and never residual), 'ir',
'er', 'cn', 'uir' (MobileNetV4's universal inverted residual: a<k> / k<k> / p<k> are its start, middle and
end depthwise kernels, 0 or absent for none, except k, which is required), 'mqa' (MobileNetV4's mobile
multi-query attention: h<n> query heads, d<n> key and value width, v<n> key/value stride, k<k> the kernel of
the strided key/value conv). Options:

    r<n>  repeats            k<k>[.<k>...]  spatial kernel(s)    a<k>[.<k>...]  expansion kernel(s)
    p<k>[.<k>...]  projection kernel(s)     s<n>  stride         e<x>  expansion ratio
    c<n>  output channels    se<x>  SE ratio                     gs<n>  group size (1: depthwise)
    cc<n>  CondConv experts  fc<n>  width the expansion is sized from ('er')
    nre / nr6 / nsw / nhs  ReLU / ReLU6 / SiLU / hard-swish instead of the model's activation
    noskip  no residual      skip  a residual ('cn')        d1  space to depth first ('ds')

Several kernel sizes ('k3.5.7') make a mixed-kernel conv over as many channel groups. An option a kind
does not use is ignored, as the reference ignores it; an unknown kind or option is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from zoo.archs.layers.block_def import BlockDef
from zoo.domain.errors import InvalidValueError

__all__ = ["decode_block", "decode_stages"]

_ACTS = {"re": "relu", "r6": "relu6", "sw": "silu", "hs": "hard_swish"}
# longest keys first: 'se' before 's', 'cc' before 'c', 'gs' before 'g'
_OPTION = re.compile(r"^(se|cc|fc|gs|r|k|a|p|s|e|c|d|h|v)(\d[\d.]*)$")
_KINDS = ("ds", "dsa", "ir", "er", "cn", "uir", "mqa")


def _refuse(text: str, why: str) -> InvalidValueError:
    return InvalidValueError(f"block string {text!r} is invalid: {why}")


def _kernels(text: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in value.split("."))
    except ValueError:
        raise _refuse(text, f"kernel sizes {value!r} are not integers joined by '.'") from None


def _number(text: str, key: str, value: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(value)
    except ValueError:
        raise _refuse(text, f"option {key!r} has value {value!r}, not a {kind.__name__}") from None


def decode_block(text: str) -> BlockDef:
    """One block string as a BlockDef (repeats unscaled); InvalidValueError naming the string if malformed."""
    if not isinstance(text, str):
        raise InvalidValueError(f"block string {text!r} is invalid: expected a str")
    kind, *ops = text.split("_")
    if kind not in _KINDS:
        raise _refuse(text, f"unknown block kind {kind!r} (expected one of {', '.join(_KINDS)})")
    options: dict[str, str] = {}
    act: str | None = None
    skip: bool | None = None
    for op in ops:
        if op in ("skip", "noskip"):
            skip = op == "skip"
        elif op.startswith("n") and op[1:] in _ACTS:
            act = _ACTS[op[1:]]
        elif (m := _OPTION.match(op)) is not None:
            options[m.group(1)] = m.group(2)
        else:
            raise _refuse(text, f"unknown option {op!r}")
    for key in ("r", "k", "s", "c"):
        if key not in options:
            raise _refuse(text, f"option {key!r} is missing")
    fields: dict[str, object] = {
        "kind": "ds" if kind == "dsa" else kind,
        "repeats": int(_number(text, "r", options["r"], int)),
        "kernel": _kernels(text, options["k"]),
        "stride": int(_number(text, "s", options["s"], int)),
        "out_chs": int(_number(text, "c", options["c"], int)),
        "act": act,
    }
    if "gs" in options:
        fields["group_size"] = int(_number(text, "gs", options["gs"], int))
    if kind == "mqa":
        for key in ("h", "d"):
            if key not in options:
                raise _refuse(text, f"option {key!r} is missing")
        fields["num_heads"] = int(_number(text, "h", options["h"], int))
        fields["key_dim"] = int(_number(text, "d", options["d"], int))
        fields["kv_stride"] = int(_number(text, "v", options.get("v", "1"), int))
        fields["noskip"] = skip is False
    elif kind == "cn":
        fields["skip"] = skip is True
    else:
        fields["se_ratio"] = _number(text, "se", options.get("se", "0"), float)
        fields["pw_kernel"] = _kernels(text, options.get("p", "1"))
        fields["noskip"] = skip is False or kind == "dsa"
    if kind == "dsa":
        fields["pw_act"] = True
    if kind != "mqa" and int(_number(text, "d", options.get("d", "0"), int)):  # mqa's 'd' is its key width
        fields["s2d"] = True
    if kind == "uir":
        fields["exp_kernel"] = _kernels(text, options.get("a", "0"))
        fields["pw_kernel"] = _kernels(text, options.get("p", "0"))
    if kind in ("ir", "er", "uir"):
        if "e" not in options:
            raise _refuse(text, "option 'e' is missing")
        fields["exp_ratio"] = _number(text, "e", options["e"], float)
    if kind == "ir":
        fields["exp_kernel"] = _kernels(text, options.get("a", "1"))
        fields["num_experts"] = int(_number(text, "cc", options.get("cc", "0"), int))
    if kind == "er":
        fields["force_in_chs"] = int(_number(text, "fc", options.get("fc", "0"), int))
    return BlockDef(**fields)  # type: ignore[arg-type]  # each field is checked by BlockDef's validators


def decode_stages(arch: Sequence[Sequence[str]], *, experts_multiplier: int = 1) -> tuple[tuple[BlockDef, ...], ...]:
    """An architecture definition (stages of block strings) as BlockDef stages.

    experts_multiplier multiplies every CondConv block's expert count (the reference's '_8e' variants of a
    '_cc4' definition).
    """
    if isinstance(arch, str) or not isinstance(arch, Sequence) or not arch:
        raise InvalidValueError(f"arch={arch!r} is invalid: expected a non-empty sequence of stages of block strings")
    stages: list[tuple[BlockDef, ...]] = []
    for stage in arch:
        if isinstance(stage, str) or not isinstance(stage, Sequence) or not stage:
            raise InvalidValueError(f"stage {stage!r} is invalid: expected a non-empty sequence of block strings")
        defs = [decode_block(text) for text in stage]
        stages.append(
            tuple(attrs.evolve(d, num_experts=d.num_experts * experts_multiplier) if d.num_experts else d for d in defs)
        )
    return tuple(stages)

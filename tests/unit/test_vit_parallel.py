"""The ViT's other block kinds: differential attention and the parallel blocks, against their formulas written out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model_checks import check_script_and_fx, images, small_model
from zoo.archs.layers.diff_attention import DiffAttention
from zoo.archs.vit import VisionTransformer
from zoo.archs.vit_blocks import BlockCfg
from zoo.archs.vit_parallel import DiffParallelScalingBlock, ParallelScalingBlock, make_block
from zoo.domain.errors import InvalidValueError

X = images(2, 32, 48)


def small(**kwargs: object) -> VisionTransformer:
    """Three blocks 32 wide on a 4 x 6 grid of 8 px patches, average-pooled behind one register token."""
    defaults = {
        "img_size": (32, 48),
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 3,
        "num_heads": 2,
        "num_classes": 5,
        "class_token": False,
        "reg_tokens": 1,
        "global_pool": "avg",
        "init_values": 1e-5,
    }
    return small_model(VisionTransformer, defaults, kwargs)


def _softmax_maps(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)


def _diff_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, lam: torch.Tensor) -> torch.Tensor:
    """The differential attention of [B, N, C] q, k, v written out head by head: [B, heads, N, C / heads]."""
    width = q.shape[-1] // heads
    out = []
    for h in range(heads):
        qh, kh, vh = (t[..., h * width : (h + 1) * width] for t in (q, k, v))
        half = width // 2
        first = _softmax_maps(qh[..., :half], kh[..., :half])
        second = _softmax_maps(qh[..., half:], kh[..., half:])
        out.append((first - lam * second) @ vh)
    return torch.stack(out, dim=1)


def _lambda(m: DiffAttention | DiffParallelScalingBlock) -> torch.Tensor:
    return torch.exp((m.lambda_q1 * m.lambda_k1).sum()) - torch.exp((m.lambda_q2 * m.lambda_k2).sum()) + m.lambda_init


def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight


def test_diff_attention_is_the_difference_of_two_softmax_maps() -> None:
    torch.manual_seed(0)
    attn = DiffAttention(32, 2, depth=3).eval()
    nn.init.normal_(attn.sub_norm.weight)  # a norm weight other than ones shows where it applies
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
        heads = _rms(_diff_heads(q, k, v, 2, _lambda(attn)), attn.sub_norm.weight) * (1 - attn.lambda_init)
        expected = attn.proj(heads.transpose(1, 2).reshape(2, 7, 32))
        torch.testing.assert_close(attn(x), expected)
    assert attn.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.9))


def test_parallel_block_adds_attention_and_mlp_of_one_normalised_input() -> None:
    torch.manual_seed(0)
    block = ParallelScalingBlock(BlockCfg(32, 2, 2.0, qkv_bias=False, init_values=0.5)).eval()
    assert block.mlp_bias is not None  # without a qkv bias, the MLP's bias is its own
    nn.init.normal_(block.mlp_bias)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        y = block.in_norm(x) @ block.in_proj.weight.T
        h, q, k, v = y.split([64, 32, 32, 32], dim=-1)
        per_head = [
            _softmax_maps(q[..., i * 16 : (i + 1) * 16], k[..., i * 16 : (i + 1) * 16]) @ v[..., i * 16 : (i + 1) * 16]
            for i in range(2)
        ]
        attn = block.attn_out_proj(torch.cat(per_head, dim=-1))
        mlp = block.mlp_out_proj(nn.functional.gelu(h + block.mlp_bias))
        torch.testing.assert_close(block(x), x + 0.5 * (attn + mlp))


def test_diff_parallel_block_projects_both_branches_at_once() -> None:
    torch.manual_seed(0)
    block = DiffParallelScalingBlock(BlockCfg(32, 2, 2.0, qkv_bias=True, init_values=None, depth=5)).eval()
    assert block.mlp_bias is None  # folded into in_proj's bias
    nn.init.normal_(block.in_proj.bias)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        h, q, k, v = block.in_proj(block.in_norm(x)).split([64, 32, 32, 32], dim=-1)
        heads = _rms(_diff_heads(q, k, v, 2, _lambda(block)), block.sub_norm.weight) * (1 - block.lambda_init)
        fused = torch.cat((heads.transpose(1, 2).reshape(2, 7, 32), nn.functional.gelu(h)), dim=-1)
        torch.testing.assert_close(block(x), x + block.out_proj(fused))


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"attn_layer": "diff"}, DiffAttention),
        ({"block_fn": "parallel"}, ParallelScalingBlock),
        ({"block_fn": "diff_parallel"}, DiffParallelScalingBlock),
    ],
)
def test_block_kinds_build_script_and_initialise(kwargs: dict[str, object], kind: type[nn.Module]) -> None:
    model = small(**kwargs).eval()
    assert all(isinstance(m, kind) for m in (getattr(b, "attn", b) for b in model.blocks))
    # each block's lambda starts from its own index's value
    inits = [m.lambda_init for m in model.modules() if isinstance(m, (DiffAttention, DiffParallelScalingBlock))]
    assert inits == ([0.8 - 0.6 * math.exp(-0.3 * i) for i in range(3)] if "diff" in str(kwargs) else [])
    check_script_and_fx(model, X)
    fresh = small(**kwargs)
    with torch.no_grad():
        for p in fresh.parameters():
            p.fill_(float("nan"))
    fresh.init_all_weights()  # every tensor, the lambdas and layer scales included
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"block_fn": "parallel", "attn_layer": "diff"}, "attn_layer='diff'"),
        ({"block_fn": "diff_parallel", "mlp_layer": "glu"}, "mlp_layer='glu'"),
        ({"block_fn": "serial"}, "block_fn='serial'"),
        ({"attn_layer": "linear"}, "attn_layer='linear'"),
        ({"attn_layer": "diff", "num_heads": 32}, "num_heads=32"),  # 32 wide: a half-head of 0.5 channels
    ],
)
def test_invalid_block_choices_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidValueError, match=named):
        small(**kwargs)


def test_make_block_builds_the_pre_norm_block_by_default() -> None:
    block = make_block("block", BlockCfg(32, 2, 4.0))
    assert {n for n, _ in block.named_children()} >= {"norm1", "attn", "norm2", "mlp"}

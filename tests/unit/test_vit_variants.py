"""Vision Transformer variants: RMS norms, SwiGLU, BEiT-3's inner norms, the post-norm block, patch resampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from model_checks import check_grad_checkpointing, check_script_and_fx, images, small_model
from weights_support import CheckpointServer, safetensors_bytes
from zoo.api import default_zoo
from zoo.archs.layers.mlp import Mlp, SwiGLU
from zoo.archs.layers.norm import RmsNorm, token_norm
from zoo.archs.layers.patch_embed import resample_patch_embed
from zoo.archs.layers.self_attention import Attention
from zoo.archs.vit import VisionTransformer, checkpoint_filter
from zoo.archs.vit_blocks import Block
from zoo.archs.vit_variant_cfgs import AIMV2
from zoo.archs.vit_variants import ResPostBlock

X = images(2, 32, 48)


def small(**kwargs: object) -> VisionTransformer:
    """Three blocks 32 wide on a 4 x 6 grid of 8 px patches."""
    defaults = {"img_size": (32, 48), "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 5}
    return small_model(VisionTransformer, defaults, kwargs)


# AIMv2's published settings (vit_variant_cfgs.AIMV2) on the small model
AIMV2_LIKE: dict[str, object] = dict(AIMV2)


def test_rms_norm_divides_by_the_root_mean_square() -> None:
    norm = RmsNorm(4, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[3.0, -4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # rms of the first row: sqrt((9 + 16) / 4) = 2.5; of the second: 1
    expected = torch.tensor([[3.0 / 2.5, -8.0 / 2.5, 0.0, 0.0], [1.0, 2.0, 0.5, -1.0]])
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-4)
    assert list(norm.state_dict()) == ["weight"]
    assert isinstance(token_norm("rmsnorm", 4), RmsNorm)
    assert type(token_norm("layernorm", 4)) is nn.LayerNorm
    with pytest.raises(zoo.ZooError, match="norm_layer"):
        token_norm("batchnorm", 4)


def test_swiglu_gates_the_value_with_the_silu_of_the_gate() -> None:
    torch.manual_seed(0)
    mlp = SwiGLU(6, 10)
    x = torch.randn(3, 6)
    expected = mlp.fc2(F.silu(mlp.fc1_g(x)) * mlp.fc1_x(x))
    torch.testing.assert_close(mlp(x), expected)
    # gate and value are not interchangeable: swapping their weights changes the output
    swapped = SwiGLU(6, 10)
    swapped.fc1_g.load_state_dict(mlp.fc1_x.state_dict())
    swapped.fc1_x.load_state_dict(mlp.fc1_g.state_dict())
    swapped.fc2.load_state_dict(mlp.fc2.state_dict())
    assert not torch.allclose(swapped(x), mlp(x))


def test_aimv2_layout_normalises_the_patches_and_pools_after_the_final_norm() -> None:
    model = small(**AIMV2_LIKE).eval()
    assert isinstance(model.patch_embed.norm, RmsNorm)
    assert isinstance(model.norm, RmsNorm)
    assert isinstance(model.fc_norm, nn.Identity)
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert isinstance(block.mlp, SwiGLU)
    assert isinstance(block.attn, Attention)
    assert block.attn.proj.bias is None
    assert block.mlp.fc2.bias is None
    assert block.attn.qkv.bias is None
    assert model.patch_embed.proj.bias is not None
    with torch.no_grad():
        tokens = model.forward_features(X)
        assert tokens.shape == (2, 24, 32)  # no class token
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens.mean(dim=1))
        # the patch tokens are normalised before the position embeddings join them
        patches = model.patch_embed(X)
        rms = patches.pow(2).mean(dim=-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-3, atol=1e-3)


def test_beit3_inner_norms_normalise_the_attention_and_the_hidden_activations() -> None:
    model = small(scale_attn_norm=True, scale_mlp_norm=True, norm_eps=1e-5, global_pool="avg").eval()
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert isinstance(block.attn, Attention)
    assert isinstance(block.attn.norm, nn.LayerNorm)
    assert block.attn.norm.normalized_shape == (32,)
    assert isinstance(block.mlp.norm, nn.LayerNorm)
    assert block.mlp.norm.normalized_shape == (128,)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        attn = block.attn
        assert isinstance(attn, Attention)
        q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 32)
        torch.testing.assert_close(attn(x), attn.proj(F.layer_norm(attended, (32,), eps=1e-5)))
        mlp = block.mlp
        assert isinstance(mlp, Mlp)
        hidden = F.gelu(mlp.fc1(x))
        torch.testing.assert_close(mlp(x), mlp.fc2(F.layer_norm(hidden, (128,), eps=1e-5)))
    plain = small(global_pool="avg")
    assert len(model.state_dict()) == len(plain.state_dict()) + 4 * 3  # two norms (weight, bias) per block


def test_res_post_block_normalises_each_branch_output_starting_at_init_values() -> None:
    model = small(block_fn="res_post", init_values=0.25, class_token=False, global_pool="avg", qkv_bias=False)
    block = model.blocks[1]
    assert isinstance(block, ResPostBlock)
    assert torch.equal(block.norm1.weight, torch.full((32,), 0.25))
    assert torch.equal(block.norm2.weight, torch.full((32,), 0.25))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = x + block.norm1(block.attn(x))
        torch.testing.assert_close(block(x), y + block.norm2(block.mlp(y)))
    # a one-pass init gives the norms init_values again, and every linear its usual start
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.init_all_weights()
    assert torch.equal(block.norm1.weight, torch.full((32,), 0.25))
    assert isinstance(block.norm2, nn.LayerNorm)
    assert torch.equal(block.norm2.bias, torch.zeros(32))
    assert isinstance(block.mlp, Mlp)
    assert block.mlp.fc1.bias is not None
    assert torch.equal(block.mlp.fc1.bias, torch.zeros(128))
    assert block.attn.qkv.weight.std() < 0.05


def test_swiglu_gate_starts_near_zero_in_construction_and_in_one_pass_init() -> None:
    model = small(mlp_layer="swiglu", act_layer="silu")
    mlp = model.blocks[0].mlp
    assert isinstance(mlp, SwiGLU)
    for _ in range(2):
        assert mlp.fc1_g.weight.abs().max() < 1e-4
        assert mlp.fc1_g.bias is not None
        assert torch.equal(mlp.fc1_g.bias, torch.ones(128))
        assert 0.01 < mlp.fc1_x.weight.std() < 0.03
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(3.0)
        model.init_all_weights()


def test_variants_script_trace_and_checkpoint() -> None:
    for kwargs in (
        AIMV2_LIKE,
        {"block_fn": "res_post", "init_values": 1e-5, "class_token": False, "global_pool": "avg"},
        {"scale_attn_norm": True, "scale_mlp_norm": True, "global_pool": "avg"},
    ):
        model = small(**kwargs, drop_path_rate=0.1)
        check_script_and_fx(model, X)
        check_grad_checkpointing(small(**kwargs), X)


def test_resampled_patch_kernel_sees_an_upsampled_patch_as_the_old_kernel_saw_the_patch() -> None:
    torch.manual_seed(0)
    kernel = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    assert resample_patch_embed(kernel, [8, 8]) is kernel
    resampled = resample_patch_embed(kernel, [16, 16])
    assert resampled.shape == (4, 3, 16, 16)
    assert resampled.dtype == torch.float64
    patch = torch.randn(1, 3, 8, 8)
    upsampled = F.interpolate(patch, size=[16, 16], mode="bicubic", antialias=True)
    old = F.conv2d(patch.double(), kernel)
    new = F.conv2d(upsampled.double(), resampled)
    torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-4)
    # a plain interpolation of the kernel would not: the pseudo-inverse is what keeps the response
    naive = F.interpolate(kernel, size=[16, 16], mode="bicubic")
    assert not torch.allclose(F.conv2d(upsampled.double(), naive), old, rtol=1e-2, atol=1e-2)


def test_a_checkpoint_of_another_patch_size_is_resampled_on_loading() -> None:
    source = small(patch_size=16, img_size=(32, 48), no_embed_class=True)  # a 2 x 3 grid
    target = small(patch_size=8, img_size=(16, 24), no_embed_class=True)  # the same 2 x 3 grid
    state = checkpoint_filter(source.state_dict(), target)
    assert state["patch_embed.proj.weight"].shape == (32, 3, 8, 8)
    target.load_state_dict(state)
    expected = resample_patch_embed(source.patch_embed.proj.weight.detach(), [8, 8])
    assert torch.equal(target.patch_embed.proj.weight.detach(), expected)
    # the same checkpoint for a model of its own patch size is left alone
    own = source.state_dict()
    assert checkpoint_filter(own, source)["patch_embed.proj.weight"] is own["patch_embed.proj.weight"]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"norm_layer": "batchnorm"}, "norm_layer"),
        ({"block_fn": "sandwich"}, "block_fn"),
        ({"mlp_layer": "swigelu"}, "mlp_layer"),
        ({"embed_norm": "yes"}, "embed_norm"),
        ({"proj_bias": 0}, "proj_bias"),
        ({"scale_attn_norm": None}, "scale_attn_norm"),
        ({"scale_mlp_norm": 1.0}, "scale_mlp_norm"),
    ],
)
def test_invalid_variant_arguments_name_themselves(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(zoo.ZooError, match=named):
        small(**kwargs)


def test_flexivit_loads_its_checkpoint_at_another_patch_size(server: CheckpointServer, cache_dir: Path) -> None:
    with torch.device("meta"):
        layout = zoo.create_model("flexivit_small", depth=1)
    torch.manual_seed(0)
    state = {k: torch.randn(v.shape) * 0.02 for k, v in layout.state_dict().items()}
    url = server.add("/timm/flexivit_small.safetensors", safetensors_bytes(state))
    overlay = {"url": url, "hf_hub_id": ""}
    model = default_zoo().create_model(
        "flexivit_small", pretrained=True, pretrained_cfg_overlay=overlay, depth=1, patch_size=8, img_size=120
    )
    assert isinstance(model, VisionTransformer)
    expected = resample_patch_embed(state["patch_embed.proj.weight"], [8, 8])
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(), expected)
    # 120 px in 8 px patches is the checkpoint's own 15 x 15 grid: the position embeddings load as they are
    assert torch.equal(model.pos_embed.detach(), state["pos_embed"])
    assert torch.equal(model.state_dict()["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc1.weight"])

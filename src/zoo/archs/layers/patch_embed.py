"""Patch embedding: an image cut into non-overlapping patches, each projected to a token (parameters under proj)."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from zoo.domain.errors import InvalidValueError

__all__ = ["PatchEmbed", "fit_to_patches", "resample_patch_embed"]


def fit_to_patches(
    x: torch.Tensor, img_size: list[int], patch_size: list[int], strict: bool, pad: bool
) -> torch.Tensor:
    """x checked against what a patch embedding accepts, zero-padded (right, bottom) to whole patches when pad.

    strict: the size must be img_size; otherwise any size, which must be a whole number of patches
    unless pad. A size that does not fit raises InvalidValueError (under TorchScript, torch.jit.Error
    with the same message).
    """
    h, w = x.shape[-2], x.shape[-1]
    if strict:
        if h != img_size[0] or w != img_size[1]:
            raise InvalidValueError(
                f"input size {h}x{w} is invalid: the model was built for img_size={img_size[0]}x{img_size[1]}; "
                "resize the input to that size, or build with img_size=<your size> or dynamic_img_size=True"
            )
        return x
    ph = (patch_size[0] - h % patch_size[0]) % patch_size[0]
    pw = (patch_size[1] - w % patch_size[1]) % patch_size[1]
    if pad:
        # padded whether or not it is needed: no branch on the input's size, so torch.export keeps the size dynamic
        return F.pad(x, [0, pw, 0, ph])
    if ph != 0 or pw != 0:
        raise InvalidValueError(
            f"input size {h}x{w} is invalid: height and width must be multiples of the patch size "
            f"{patch_size[0]}x{patch_size[1]}; resize the input, or build with dynamic_img_pad=True to pad it"
        )
    return x


# a leaf of torch.fx graphs: the size checks run (on real shapes) each time the traced graph runs
torch.fx.wrap("fit_to_patches")


class PatchEmbed(nn.Module):
    """Conv2d with kernel = stride = patch size; returns the token grid channels-last, [B, H / p, W / p, C].

    strict_img_size refuses inputs other than img_size; without it any size is accepted (a whole number
    of patches, or zero-padded to one with dynamic_img_pad). bias=False drops the projection's bias (CLIP);
    norm, when given, normalises each token (AIMv2).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        *,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        bias: bool = True,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.img_size = [img_size[0], img_size[1]]
        self.patch_size = [patch_size, patch_size]
        self.grid_size = [img_size[0] // patch_size, img_size[1] // patch_size]
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm: nn.Module = nn.Identity() if norm is None else norm

    def feat_size(self, h: int, w: int) -> tuple[int, int]:
        """The token grid for an h x w input (rounded up where the input is padded to whole patches)."""
        if self.dynamic_img_pad:
            return -(-h // self.patch_size[0]), -(-w // self.patch_size[1])
        return h // self.patch_size[0], w // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fit_to_patches(x, self.img_size, self.patch_size, self.strict_img_size, self.dynamic_img_pad)
        out: torch.Tensor = self.norm(self.proj(x).permute(0, 2, 3, 1))
        return out

    def extra_repr(self) -> str:
        return (
            f"img_size={self.img_size}, patch_size={self.patch_size}, strict_img_size={self.strict_img_size}, "
            f"dynamic_img_pad={self.dynamic_img_pad}"
        )


def resample_patch_embed(
    weight: torch.Tensor, new_size: list[int], interpolation: str = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """A patch projection's kernel [O, I, h, w] resampled to [O, I, *new_size] (FlexiViT's pseudo-inverse resize).

    Resizing a patch is a linear map R (from h * w pixels to the new count); the new kernel is the old one
    times R's pseudo-inverse, so that on a patch resized from p it gives what the old kernel gave on p (exactly
    where R loses nothing: the new size at least the old). Computed in float32, returned in weight's dtype.
    """
    old_h, old_w = weight.shape[-2], weight.shape[-1]
    if [old_h, old_w] == [new_size[0], new_size[1]]:
        return weight
    old_total = old_h * old_w
    # R's columns: each old pixel's basis image resized
    basis = torch.eye(old_total, dtype=torch.float32, device=weight.device).reshape(old_total, 1, old_h, old_w)
    resized = F.interpolate(basis, size=[new_size[0], new_size[1]], mode=interpolation, antialias=antialias)
    resize = resized.reshape(old_total, new_size[0] * new_size[1]).T
    inverse: torch.Tensor = torch.linalg.pinv(resize)
    kernel = weight.float().reshape(weight.shape[0], weight.shape[1], old_total) @ inverse
    return kernel.reshape(weight.shape[0], weight.shape[1], new_size[0], new_size[1]).to(weight.dtype)

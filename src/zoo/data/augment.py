"""Training augmentations torchvision.transforms.v2 lacks in the reference's (timm's) form, as v2-compatible modules.

RandAugment with the reference's op set, per-op probability and magnitude noise; random erasing after
normalisation with its 'const' / 'rand' / 'pixel' modes and several regions; AugMix and TrivialAugment
(torchvision's) that take float images too; a border trim. All draw from torch's random generator, so
torch.manual_seed makes a pipeline reproducible. This module imports torchvision (the `zoo[data]` extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from PIL.Image import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from zoo.data.augment_config import AugMixSpec, AutoAugmentSpec, RandAugmentSpec
from zoo.domain.errors import InvalidValueError

__all__ = [
    "RAND_OPS",
    "RAND_OPS_INCREASING",
    "EightBitAugment",
    "RandAugment",
    "RandomErasing",
    "TrimBorder",
    "auto_augment_step",
]

RAND_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
"""The reference's RandAugment ops (its default set)."""
_INCREASING = ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
RAND_OPS_INCREASING: tuple[str, ...] = tuple(f"{op}Increasing" if op in _INCREASING else op for op in RAND_OPS)
"""The set with `inc1`: the same ops, those six in the variant whose strength grows with the magnitude."""

# the strength of each op at full magnitude (10), as the reference scales them
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3
_TRANSLATE_PCT = 0.45
_LEVEL_DENOM = 10.0

ImageOrTensor = Image | torch.Tensor


def _chance(p: float) -> bool:
    return bool(torch.rand(()) < p)


def _negated(value: float) -> float:
    return -value if _chance(0.5) else value


def _eight_bit(fn: Callable[[ImageOrTensor], ImageOrTensor], img: ImageOrTensor) -> ImageOrTensor:
    """fn on img; a float image is quantised to 8 bits for it (these ops are 8-bit ops) and returned as float."""
    if isinstance(img, torch.Tensor) and img.is_floating_point():
        out = cast(torch.Tensor, fn(F.to_dtype(img, torch.uint8, scale=True)))  # a tensor in, a tensor out
        back: torch.Tensor = F.to_dtype(out, img.dtype, scale=True)
        return back
    return fn(img)


def _solarize_add(img: ImageOrTensor, add: int, threshold: int = 128) -> ImageOrTensor:
    tensor = F.pil_to_tensor(img) if isinstance(img, Image) else img
    added = (tensor.to(torch.int16) + add).clamp(max=255).to(torch.uint8)
    out = torch.where(tensor < threshold, added, tensor)
    result: ImageOrTensor = F.to_pil_image(out, mode=img.mode) if isinstance(img, Image) else out
    return result


def _posterize(img: ImageOrTensor, bits: int) -> ImageOrTensor:
    if bits == 0 and isinstance(img, Image):  # Pillow refuses 0 bits; keeping no bits makes the image black
        black: Image = F.to_pil_image(F.posterize(F.pil_to_tensor(img), 0), mode=img.mode)
        return black
    out: ImageOrTensor = F.posterize(img, bits)
    return out


class RandAugment(nn.Module):
    """RandAugment as the reference runs it: num_ops ops drawn per image (with replacement), each applied with prob.

    Each op's magnitude is `magnitude` plus Gaussian noise of std `magnitude_std` (uniform in [0,
    magnitude] when infinite), clipped to [0, magnitude_max]; 10 is an op's full strength (rotate 30
    degrees, shear 0.3, translate 45% of the side, enhance factors 0.1..1.9, posterize to 0 bits,
    solarize at 0, solarize-add 110). Geometric ops resample with interpolation (bilinear for a tensor
    where it is bicubic: torchvision's tensor affine has no bicubic) and fill with `fill` (0..255 per channel).
    """

    def __init__(
        self,
        spec: RandAugmentSpec,
        *,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        fill: Sequence[int] = (128, 128, 128),
    ) -> None:
        super().__init__()
        self.spec = spec
        self.ops = RAND_OPS_INCREASING if spec.increasing else RAND_OPS
        self.interpolation = interpolation
        self.fill = [int(v) for v in fill]

    def _magnitude(self) -> float:
        spec = self.spec
        magnitude = float(spec.magnitude)
        if math.isinf(spec.magnitude_std):
            magnitude = float(torch.rand(())) * magnitude
        elif spec.magnitude_std > 0:
            magnitude = float(torch.normal(magnitude, spec.magnitude_std, ()))
        return max(0.0, min(magnitude, float(spec.magnitude_max)))

    def _mode(self, img: ImageOrTensor) -> InterpolationMode:
        if isinstance(img, torch.Tensor) and self.interpolation == InterpolationMode.BICUBIC:
            return InterpolationMode.BILINEAR
        return self.interpolation

    def _affine(self, img: ImageOrTensor, *, translate: Sequence[float], shear: Sequence[float]) -> ImageOrTensor:
        out: ImageOrTensor = F.affine(
            img,
            angle=0.0,
            translate=list(translate),
            scale=1.0,
            shear=list(shear),
            interpolation=self._mode(img),
            fill=[float(v) for v in self.fill],
            center=[0, 0],  # the reference shears and translates about the top-left corner
        )
        return out

    def apply_op(self, name: str, img: ImageOrTensor, magnitude: float) -> ImageOrTensor:
        """img with the op `name` applied at `magnitude` (0..magnitude_max; 10 is full strength)."""
        level = magnitude / _LEVEL_DENOM
        out: ImageOrTensor
        if name in ("AutoContrast", "Equalize", "Invert"):
            out = {"AutoContrast": F.autocontrast, "Equalize": F.equalize, "Invert": F.invert}[name](img)
        elif name == "Rotate":
            fill = [float(v) for v in self.fill]
            out = F.rotate(img, _negated(level * _ROTATE_DEGREES), interpolation=self._mode(img), fill=fill)
        elif name.startswith("Posterize"):
            bits = int(level * 4)
            bits = min(8, max(0, 4 - bits if name.endswith("Increasing") else bits))
            out = img if bits >= 8 else _posterize(img, bits)
        elif name.startswith("Solarize") and name != "SolarizeAdd":
            threshold = min(256, int(level * 256))
            threshold = 256 - threshold if name.endswith("Increasing") else threshold
            out = img if threshold >= 256 else F.solarize(img, float(threshold))
        elif name == "SolarizeAdd":
            out = _solarize_add(img, min(128, int(level * 110)))
        elif name.startswith(("Color", "Contrast", "Brightness", "Sharpness")):
            increasing = name.endswith("Increasing")
            factor = max(0.1, 1.0 + _negated(level * 0.9)) if increasing else level * 1.8 + 0.1
            adjust = {
                "Color": F.adjust_saturation,
                "Contrast": F.adjust_contrast,
                "Brightness": F.adjust_brightness,
                "Sharpness": F.adjust_sharpness,
            }[name.removesuffix("Increasing")]
            out = adjust(img, factor)
        elif name in ("ShearX", "ShearY"):
            degrees = math.degrees(math.atan(_negated(level * _SHEAR)))
            out = self._affine(img, translate=(0.0, 0.0), shear=(degrees, 0.0) if name == "ShearX" else (0.0, degrees))
        elif name in ("TranslateXRel", "TranslateYRel"):
            height, width = F.get_size(img)
            pct = -_negated(level * _TRANSLATE_PCT)  # the reference's positive shift moves the content left / up
            shift = (pct * width, 0.0) if name == "TranslateXRel" else (0.0, pct * height)
            out = self._affine(img, translate=shift, shear=(0.0, 0.0))
        else:
            raise InvalidValueError(f"unknown RandAugment op {name!r}; valid ops: {', '.join(RAND_OPS_INCREASING)}")
        return out

    def _augment(self, img: ImageOrTensor) -> ImageOrTensor:
        for index in torch.randint(len(self.ops), (self.spec.num_ops,)).tolist():
            if self.spec.prob < 1.0 and not _chance(self.spec.prob):
                continue
            img = self.apply_op(self.ops[index], img, self._magnitude())
        return img

    def forward(self, img: ImageOrTensor) -> ImageOrTensor:
        """img with num_ops randomly drawn ops applied; a PIL image stays a PIL image."""
        return _eight_bit(self._augment, img)

    def extra_repr(self) -> str:
        spec = self.spec
        return (
            f"magnitude={spec.magnitude}, num_ops={spec.num_ops}, prob={spec.prob}, "
            f"magnitude_std={spec.magnitude_std}, magnitude_max={spec.magnitude_max}, increasing={spec.increasing}, "
            f"interpolation={self.interpolation.value}, fill={self.fill}"
        )


class EightBitAugment(nn.Module):
    """A torchvision auto-augmentation (AugMix, TrivialAugmentWide) that takes float images too.

    torchvision's fill is in the image's own scale and its ops are 8-bit ops: a float image is quantised
    to 8 bits for them (the fill is 0..255) and returned as float. `transform` is the torchvision module.
    """

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def _run(self, img: ImageOrTensor) -> ImageOrTensor:
        out: ImageOrTensor = self.transform(img)
        return out

    def forward(self, img: ImageOrTensor) -> ImageOrTensor:
        """The augmented image; a PIL image stays a PIL image."""
        return _eight_bit(self._run, img)


def auto_augment_step(spec: AutoAugmentSpec, *, interpolation: InterpolationMode, fill: Sequence[int]) -> nn.Module:
    """The module an auto_augment spec describes, resampling with interpolation and filling with fill (0..255)."""
    if isinstance(spec, RandAugmentSpec):
        return RandAugment(spec, interpolation=interpolation, fill=fill)
    fills = [float(v) for v in fill]
    if isinstance(spec, AugMixSpec):
        mode = InterpolationMode.BILINEAR if interpolation == InterpolationMode.BICUBIC else interpolation
        augmix = v2.AugMix(
            severity=spec.severity,
            mixture_width=spec.width,
            chain_depth=spec.depth,
            alpha=spec.alpha,
            all_ops=True,
            interpolation=mode,  # its tensor ops have no bicubic
            fill=fills,
        )
        return EightBitAugment(augmix)
    mode = InterpolationMode.BILINEAR if interpolation == InterpolationMode.BICUBIC else interpolation
    return EightBitAugment(v2.TrivialAugmentWide(interpolation=mode, fill=fills))


class RandomErasing(nn.Module):
    """Erase random rectangles of a normalised image tensor, as the reference does after normalisation.

    With probability `probability`, erase between 1 and max_count rectangles (a random count), each of
    a random area in [min_area, max_area] of the image over the count and a log-uniform aspect ratio in
    [min_aspect, 1 / min_aspect]. mode: "const" fills with 0 (the mean after normalisation), "rand" with
    one normal random colour per rectangle, "pixel" with normal noise per pixel. For a batch, each
    image is erased independently; with num_splits > 1 the first batch // num_splits images are left clean.
    """

    def __init__(
        self,
        probability: float = 0.5,
        *,
        mode: str = "const",
        max_count: int = 1,
        num_splits: int = 0,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
    ) -> None:
        super().__init__()
        self.probability = probability
        self.mode = mode
        self.max_count = max_count
        self.num_splits = num_splits
        self.area = (min_area, max_area)
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(()))

    def _fill(self, chans: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.randn((chans, height, width), dtype=like.dtype).to(like.device)
        if self.mode == "rand":
            return torch.randn((chans, 1, 1), dtype=like.dtype).to(like.device)
        return torch.zeros((chans, 1, 1), dtype=like.dtype, device=like.device)

    def _erase(self, img: torch.Tensor) -> None:
        if not _chance(self.probability):
            return
        chans, height, width = img.shape
        count = 1 if self.max_count == 1 else int(torch.randint(1, self.max_count + 1, ()))
        for _ in range(count):
            for _attempt in range(10):
                area = self._uniform(*self.area) * height * width / count
                aspect = math.exp(self._uniform(*self.log_aspect))
                h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if w < width and h < height:
                    top = int(torch.randint(0, height - h + 1, ()))
                    left = int(torch.randint(0, width - w + 1, ()))
                    img[:, top : top + h, left : left + w] = self._fill(chans, h, w, img)
                    break

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """A copy of img ([C, H, W] or a batch [..., C, H, W]) with rectangles erased."""
        out = img.clone(memory_format=torch.contiguous_format)
        flat = out.view(-1, *out.shape[-3:])  # a view: erasing flat erases out
        start = flat.shape[0] // self.num_splits if self.num_splits > 1 else 0
        for i in range(start, flat.shape[0]):
            self._erase(flat[i])
        return out

    def extra_repr(self) -> str:
        return (
            f"probability={self.probability}, mode={self.mode!r}, max_count={self.max_count}, "
            f"num_splits={self.num_splits}, area={self.area}"
        )


class TrimBorder(nn.Module):
    """Cut border_size pixels off every edge of an image (the reference's crop_border_pixels)."""

    def __init__(self, border_size: int) -> None:
        super().__init__()
        self.border_size = border_size

    def forward(self, img: ImageOrTensor) -> ImageOrTensor:
        """img without its border; refused when nothing would be left."""
        height, width = F.get_size(img)
        border = self.border_size
        if height <= 2 * border or width <= 2 * border:
            raise InvalidValueError(
                f"crop_border_pixels={border} leaves nothing of a {width}x{height} (width x height) image: "
                f"expected images wider and taller than {2 * border} pixels, or a smaller border"
            )
        out: ImageOrTensor = F.crop(img, border, border, height - 2 * border, width - 2 * border)
        return out

    def extra_repr(self) -> str:
        return f"border_size={self.border_size}"

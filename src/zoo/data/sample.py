"""A picture the code draws, for demos and tests: deterministic, and free of any licence question."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["draw_beach"]


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def draw_beach(width: int = 320, height: int = 240) -> Image:
    """A beach at sunset (sky, sun, sea with waves, sand), drawn with Pillow; the same pixels on every call."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    img = PILImage.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    horizon, shore = round(height * 0.55), round(height * 0.78)
    for y in range(horizon):  # sky: deep blue overhead to orange at the horizon
        draw.line([(0, y), (width, y)], fill=_blend((40, 70, 150), (250, 160, 80), y / max(horizon - 1, 1)))
    r = height // 8
    cx, cy = width * 2 // 3, horizon - r // 2
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 220, 120))
    for y in range(horizon, shore):  # sea, darker towards the shore, with a light crest every few rows
        t = (y - horizon) / max(shore - horizon - 1, 1)
        colour = (200, 200, 210) if (y - horizon) % 9 == 8 else _blend((60, 90, 140), (20, 60, 100), t)
        draw.line([(0, y), (width, y)], fill=colour)
    draw.rectangle([0, shore, width, height], fill=(225, 200, 150))  # sand
    draw.polygon([(0, shore), (width, shore - 4), (width, shore + 3), (0, shore + 6)], fill=(245, 245, 240))  # foam
    return img

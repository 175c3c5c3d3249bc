"""What segmentation writes per image: the class-index mask, its colour picture and the overlay on the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from densevision.data.io import write_colour_mask, write_mask_png
from densevision.tasks.segmentation.drawing import blend_mask

__all__ = ["SEGMENTATION_OUTPUTS", "write_segmentation"]

SEGMENTATION_OUTPUTS = ("mask", "color", "overlay")  # <stem>_<kind>.png


def write_segmentation(
    stem: str,
    image: np.ndarray,
    mask: np.ndarray,
    out_dir: Path,
    palette: Sequence[Sequence[int]],
    *,
    num_classes: int,
    overlay_alpha: float = 0.5,
) -> list[Path]:
    """``<stem>_mask.png`` (class indices; a palette PNG for up to 256 classes), ``<stem>_color.png`` and
    ``<stem>_overlay.png`` under ``out_dir``; returns them."""
    mask_path, colour_path, overlay_path = (out_dir / f"{stem}_{kind}.png" for kind in SEGMENTATION_OUTPUTS)
    write_mask_png(mask_path, mask, palette if num_classes <= 256 else None)
    write_colour_mask(colour_path, mask, palette)
    Image.fromarray(blend_mask(image, mask, palette, overlay_alpha)).save(overlay_path)
    return [mask_path, colour_path, overlay_path]

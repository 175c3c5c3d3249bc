"""Masks drawn over images: the overlays tools/infer.py writes and a run's sample pictures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densevision.formats.image import display_rgb

__all__ = ["blend_mask"]


def blend_mask(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """The image (as ``display_rgb``) blended with the mask's palette colours, ``(1 - alpha) * image + alpha *
    colour``; indices without a palette colour (void) stay uncoloured. H×W×3 uint8."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    rgb = display_rgb(image).astype(np.float32)
    mask = np.asarray(mask)
    if rgb.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image size {rgb.shape[:2]} and mask size {mask.shape[:2]} differ")
    known = (mask >= 0) & (mask < len(palette))
    colours = np.zeros_like(rgb)
    if len(palette):
        colours[known] = np.asarray(palette, dtype=np.float32).reshape(-1, 3)[mask[known]]
    blended = np.where(known[..., None], (1 - alpha) * rgb + alpha * colours, rgb)
    return np.round(blended).astype(np.uint8)

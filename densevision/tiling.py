"""Tiled prediction of images larger than one network input: overlapping windows whose softmax probabilities are
averaged per pixel (uniform or Hann weights), so a large image is predicted without seams and in bounded memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from densevision.registry import ConfigError

__all__ = ["TILE_WINDOWS", "blend_tiles", "window_starts", "window_weights"]

TILE_WINDOWS = ("uniform", "hann")


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` with at least ``overlap`` (a fraction) shared
    between neighbours; the last window ends at the border. A length within one window gives ``[0]``."""
    if not 0 <= overlap < 1:
        raise ConfigError(f"tile overlap must be in [0, 1), got {overlap}")
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    return [*range(0, length - window, stride), length - window]


def window_weights(height: int, width: int, kind: str, device: torch.device) -> Tensor:
    """Per-pixel weights of one tile: uniform, or a Hann window (positive everywhere, so every pixel counts)."""
    if kind not in TILE_WINDOWS:
        raise ConfigError(f"tile_window must be one of {TILE_WINDOWS}, got {kind!r}")
    if kind == "uniform":
        return torch.ones((height, width), dtype=torch.float32, device=device)

    def hann(n: int) -> Tensor:
        return torch.sin(torch.pi * (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n) ** 2

    return hann(height)[:, None] * hann(width)[None, :]


def blend_tiles(
    probabilities: Callable[[Tensor], Tensor],
    image: Tensor,
    tile: tuple[int, int],
    *,
    num_classes: int,
    overlap: float,
    window: str = "uniform",
    batch_size: int = 4,
) -> Tensor:
    """Softmax probabilities (num_classes×H×W) of a normalised C×H×W ``image`` from overlapping ``tile`` windows:
    ``probabilities`` maps N×C×h×w tiles to N×num_classes×h×w; each pixel averages its tiles with ``window`` weights
    (``window_weights``), ``batch_size`` tiles per call. With a model that looks at single pixels the result equals a
    whole-image prediction up to float rounding."""
    height, width = image.shape[-2:]
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    windows = [
        (top, left) for top in window_starts(height, tile_h, overlap) for left in window_starts(width, tile_w, overlap)
    ]
    # float32 sums, the size of the result: a pixel averages a few tiles (4 at the default overlap), so rounding
    # stays within 1e-7 of the exact mean; float64 would double the largest buffer of a large image for nothing.
    total = torch.zeros((num_classes, height, width), dtype=torch.float32, device=image.device)
    weight_sum = torch.zeros((height, width), dtype=torch.float32, device=image.device)
    weights = window_weights(tile_h, tile_w, window, image.device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        tiles = torch.stack([image[:, top : top + tile_h, left : left + tile_w] for top, left in chunk])
        for (top, left), tile_probs in zip(chunk, probabilities(tiles)):
            total[:, top : top + tile_h, left : left + tile_w].addcmul_(tile_probs, weights)
            weight_sum[top : top + tile_h, left : left + tile_w] += weights
    return total.div_(weight_sum)

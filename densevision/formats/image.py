"""Plain images (PNG, JPEG, BMP, TIFF): read whole through ``densevision.data.io``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densevision.data.io import IMAGE_EXTENSIONS, read_image
from densevision.formats.registry import FileFormat, register_format

__all__ = ["IMAGE", "ImageFormat", "display_rgb"]


class ImageFormat(FileFormat):
    """One image per file, H×W×C in its stored dtype."""

    name = "image"
    suffixes = IMAGE_EXTENSIONS

    def read(self, path: str | Path) -> np.ndarray:
        return read_image(path)


IMAGE = register_format(ImageFormat())


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image as H×W×3 uint8 for viewing: one band as grey, the first three of more; other dtypes min-max scaled."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    array = np.repeat(array[..., :1], 3, axis=2) if array.shape[2] < 3 else array[..., :3]
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.round(scaled * 255).astype(np.uint8)

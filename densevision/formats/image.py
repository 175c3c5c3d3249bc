"""Plain images (PNG, JPEG, BMP, TIFF): read whole through ``densevision.data.io``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densevision.data.io import IMAGE_EXTENSIONS, read_image
from densevision.formats.registry import FileFormat, register_format

__all__ = ["IMAGE", "ImageFormat"]


class ImageFormat(FileFormat):
    """One image per file, H×W×C in its stored dtype."""

    name = "image"
    suffixes = IMAGE_EXTENSIONS

    def read(self, path: str | Path) -> np.ndarray:
        return read_image(path)


IMAGE = register_format(ImageFormat())

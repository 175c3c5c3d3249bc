"""Dataset validation: the error every reader and ``check()`` raises, the per-pair checks and the summary they return.

A dataset's ``check()`` reads every file once before training, so a wrong label value or a misaligned mask is
reported with its file name at start-up instead of as a CUDA assert (or a silently wrong metric) hours later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densevision.errors import DensevisionError

__all__ = ["DatasetError", "DatasetSummary", "check_same_size", "check_label_values"]


class DatasetError(DensevisionError, ValueError):
    """A dataset file is missing, unreadable or holds a bad value; the message names the file (and the value)."""


def check_same_size(image_shape: Sequence[int], mask_shape: Sequence[int], image_path: Path, mask_path: Path) -> None:
    """Raise unless the image and its mask cover the same H×W pixels."""
    if tuple(image_shape[:2]) != tuple(mask_shape[:2]):
        raise DatasetError(
            f"mask and image sizes differ: image {image_path} is {image_shape[0]}x{image_shape[1]} (HxW), "
            f"mask {mask_path} is {mask_shape[0]}x{mask_shape[1]}"
        )


def check_label_values(mask: np.ndarray, num_classes: int, ignore_index: int, mask_path: Path) -> np.ndarray:
    """Per-class pixel counts of ``mask``; raise on a value that is neither a class index nor ``ignore_index``."""
    values, counts = np.unique(mask, return_counts=True)
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        raise DatasetError(
            f"label value(s) {bad} in {mask_path} are outside the {num_classes} classes (0..{num_classes - 1}) "
            f"and not the ignore index {ignore_index}"
        )
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    valid = values < num_classes
    pixel_counts[values[valid].astype(np.int64)] = counts[valid]
    return pixel_counts


@dataclass
class DatasetSummary:
    """What ``check()`` saw: how many samples, and per class how many pixels (segmentation), images
    (classification) or boxes (detection)."""

    num_images: int
    classes: tuple[str, ...]
    counts: list[int]
    unit: str = "pixels"
    ignored: int = 0

    def table(self) -> str:
        """A plain-text table for tools/check_dataset.py."""
        total = sum(self.counts) + self.ignored
        width = max([len(name) for name in self.classes] + [len("(ignored)"), len("class")])
        lines = [f"{self.num_images} images", f"{'class':<{width}}  {self.unit:>12}  {'share':>7}"]
        rows = list(zip(self.classes, self.counts))
        if self.unit in ("pixels", "boxes"):  # void pixels; difficult/crowd boxes
            rows.append(("(ignored)", self.ignored))
        for name, count in rows:
            share = 100.0 * count / total if total else 0.0
            lines.append(f"{name:<{width}}  {count:>12}  {share:>6.2f}%")
        return "\n".join(lines)

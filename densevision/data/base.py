"""What every segmentation dataset shares: image/mask pairs in, the batch contract's sample dicts out, and ``check()``.

Subclasses only find their files (``samples``) and say how a label file becomes class indices (``_load_mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densevision.contracts import DenseDataset
from densevision.data.checks import (
    DatasetError,
    DatasetSummary,
    FileChecker,
    ProblemHandler,
    check_label_values,
    check_mask_values,
    check_same_size,
)
from densevision.data.io import Colour, read_image, read_mask
from densevision.data.transforms import apply_pipeline, resolve_pipeline

__all__ = ["SegmentationDataset", "image_format", "image_to_tensor", "mask_to_tensor", "default_palette"]


def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H×W×C array (what the pipeline returns) -> C×H×W float32 tensor; a tensor (ToTensorV2 ran) is only cast."""
    if isinstance(image, torch.Tensor):
        return image.float()
    return torch.from_numpy(np.array(image.transpose(2, 0, 1), dtype=np.float32, order="C"))


def mask_to_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H×W class indices -> int64 tensor (a copy: pipelines may hand back read-only views)."""
    if isinstance(mask, torch.Tensor):
        return mask.long()
    return torch.from_numpy(np.array(mask, dtype=np.int64))


def image_format(path: Path, *, to_rgb: bool = False) -> dict[str, Any] | None:
    """What a model trained on images like ``path`` takes, for ``metainfo['image_format']`` (and so checkpoints), so a
    predictor can prepare other files the same way: ``dtype`` as read and ``max_value``, its value scale (255 for
    8-bit, 65535 for 16-bit, ``None`` for float: a 16-bit file given to a model trained on 8-bit ones is scaled by
    255/65535), ``channels`` as the pipeline gets them, and ``to_rgb``: whether grey files are repeated to RGB and
    alpha dropped before the pipeline (detection). ``None`` when ``path`` cannot be read (``check()`` names it)."""
    try:
        image = read_image(path)
    except DatasetError:
        return None
    integer = np.issubdtype(image.dtype, np.integer)
    return {
        "dtype": str(image.dtype),
        "max_value": int(np.iinfo(image.dtype).max) if integer else None,
        "channels": 3 if to_rgb else int(image.shape[2]),
        "to_rgb": to_rgb,
    }


def default_palette(num_classes: int) -> list[Colour]:
    """Distinct, reproducible colours (the PASCAL VOC bit-interleaving scheme) for datasets that define none."""
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.append((r, g, b))
    return palette


def _compact(mask: np.ndarray) -> np.ndarray:
    """The smallest unsigned dtype holding ``mask``: OpenCV-based transforms handle uint8/uint16, not int64."""
    if mask.dtype in (np.uint8, np.uint16):
        return mask
    if mask.size and mask.min() < 0:
        raise ValueError(f"negative class index {int(mask.min())} in mask")
    return mask.astype(np.uint8 if not mask.size or mask.max() < 256 else np.uint16)


class SegmentationDataset(DenseDataset):
    """Image/mask pairs -> ``{'image': C×H×W float32, 'mask': H×W int64, 'meta': {...}}`` after the pipeline.

    ``samples`` is a list of ``(image_path, mask_path)``; ``colours`` (``{(r, g, b): index}``) maps RGB-coded label
    files. ``reduce_zero_label`` (ADE20K convention) makes label 0 ``ignore_index`` and shifts the rest down by one.
    Subclasses that list folders set ``skipped_files`` to the hidden files (macOS ``._*``) they did not take.
    """

    skipped_files: Sequence[Path] = ()

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        *,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        colours: Mapping[Colour, int] | None = None,
        reduce_zero_label: bool = False,
    ) -> None:
        self.classes = tuple(classes)
        if not self.classes:
            raise ValueError("a segmentation dataset needs at least one class name")
        palette = default_palette(len(self.classes)) if palette is None else [tuple(c) for c in palette]
        if len(palette) != len(self.classes):
            raise ValueError(f"palette has {len(palette)} colours for {len(self.classes)} classes {self.classes}")
        self.palette: list[Colour] = palette
        self.ignore_index = int(ignore_index)
        self.samples = [(Path(image), Path(mask)) for image, mask in samples]
        self.colours = colours
        self.reduce_zero_label = reduce_zero_label
        self.pipeline = resolve_pipeline(pipeline, task="segmentation")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metainfo(self) -> dict[str, Any]:
        """Classes, colours and void label: the one source the runner hands to the task, the metric and checkpoints."""
        return {"classes": self.classes, "palette": list(self.palette), "ignore_index": self.ignore_index}

    def __len__(self) -> int:
        return len(self.samples)

    def _load_mask(self, index: int) -> np.ndarray:
        """Class indices of sample ``index`` in a compact unsigned dtype."""
        path = self.samples[index][1]
        mask = read_mask(path, self.colours)
        if self.reduce_zero_label:
            shifted = mask.astype(np.int64) - 1
            shifted[(mask == 0) | (mask == self.ignore_index)] = self.ignore_index
            mask = shifted
        try:
            return _compact(mask)
        except ValueError as err:
            raise DatasetError(f"{err}: {path}") from err

    def read_mask(self, index: int) -> np.ndarray:
        """Class indices of sample ``index`` as H×W int64 (after colour mapping, before augmentation)."""
        return self._load_mask(index).astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self._load_mask(index)
        check_same_size(image.shape, mask.shape, image_path, mask_path)
        check_mask_values(mask, self.num_classes, self.ignore_index, mask_path)  # names the file when checks are off
        out = apply_pipeline(self.pipeline, image_path, image=image, mask=mask)
        return {
            "image": image_to_tensor(out["image"]),
            "mask": mask_to_tensor(out["mask"]),
            "meta": {"path": str(image_path), "mask_path": str(mask_path), "ori_shape": tuple(image.shape[:2])},
        }

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Read every pair and count class pixels. Problems (unreadable file, size mismatch, label value outside the
        classes, image format unlike the rest or not ``channels``, image smaller than the pipeline's crop, no
        labelled pixel in the whole split) go to ``on_problem``; without it the first raises ``DatasetError`` naming
        the file, once all were read. Masks without a labelled pixel are listed in the summary's ``unlabelled``."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        for index, (image_path, mask_path) in enumerate(self.samples):
            with checker.sample(image_path):
                image = read_image(image_path)
                mask = self._load_mask(index)
                check_same_size(image.shape, mask.shape, image_path, mask_path)
                mask_counts = check_label_values(mask, self.num_classes, self.ignore_index, mask_path)
                checker.labelled(mask_path, int(mask_counts.sum()))
                counts += mask_counts
                ignored += int(np.count_nonzero(mask == self.ignore_index))
                checker.image(image_path, image)
        return checker.summary(
            len(self.samples), self.classes, counts, unit="pixels", ignored=ignored, skipped=list(self.skipped_files)
        )

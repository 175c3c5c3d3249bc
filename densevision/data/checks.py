"""Dataset validation: the error every reader and ``check()`` raises, the per-file checks and the summary they return.

A dataset's ``check()`` reads every file once before training, so a wrong label value, a misaligned mask, an image
with other channels than the rest or smaller than the training crop is reported with its file name at start-up
instead of as a CUDA assert (or a silently wrong metric) hours later. Every file is read even after a bad one, so one
run lists them all (``tools/check_dataset.py``); the runner gets one ``DatasetError`` naming the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from densevision.errors import DensevisionError

__all__ = [
    "DatasetError",
    "DatasetSummary",
    "FileChecker",
    "ProblemHandler",
    "check_same_size",
    "check_label_values",
    "check_mask_values",
    "bad_label_values",
    "crop_too_large",
    "pipeline_crop",
]

logger = logging.getLogger("densevision")

ProblemHandler = Callable[[str], None]
"""Receives one line per problem found by ``check(on_problem=...)``, naming the file and what is wrong with it."""

# Dual transforms that never change an image's height and width (image-only transforms never do).
_SIZE_KEEPING = (A.HorizontalFlip, A.VerticalFlip)
# How many label files without a labelled pixel the summary and the runner's warning name (the rest are counted).
_UNLABELLED_SHOWN = 10
# How many warnings (boxes clipped to their image) the summary table lists before counting the rest.
_WARNINGS_SHOWN = 50


class DatasetError(DensevisionError, ValueError):
    """A dataset file is missing, unreadable or holds a bad value; the message names the file (and the value)."""


def check_same_size(image_shape: Sequence[int], mask_shape: Sequence[int], image_path: Path, mask_path: Path) -> None:
    """Raise unless the image and its mask cover the same H×W pixels."""
    if tuple(image_shape[:2]) != tuple(mask_shape[:2]):
        raise DatasetError(
            f"mask and image sizes differ: image {image_path} is {image_shape[0]}x{image_shape[1]} (HxW), "
            f"mask {mask_path} is {mask_shape[0]}x{mask_shape[1]}"
        )


def bad_label_values(mask: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    """The values of ``mask`` that are neither a class index nor ``ignore_index``; cheap when there are none."""
    if not mask.size or (mask.min() >= 0 and mask.max() < num_classes):
        return []
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    return [int(v) for v in np.unique(mask[bad])]


def _label_error(bad: list[int], num_classes: int, ignore_index: int, mask_path: Path) -> DatasetError:
    return DatasetError(
        f"label value(s) {bad} in {mask_path} are outside the {num_classes} classes (0..{num_classes - 1}) "
        f"and not the ignore index {ignore_index}"
    )


def check_label_values(mask: np.ndarray, num_classes: int, ignore_index: int, mask_path: Path) -> np.ndarray:
    """Per-class pixel counts of ``mask``; raise on a value that is neither a class index nor ``ignore_index``."""
    bad = bad_label_values(mask, num_classes, ignore_index)
    if bad:
        raise _label_error(bad, num_classes, ignore_index, mask_path)
    values, counts = np.unique(mask, return_counts=True)
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    valid = values < num_classes
    pixel_counts[values[valid].astype(np.int64)] = counts[valid]
    return pixel_counts


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, mask_path: Path) -> None:
    """Raise naming ``mask_path`` on a value that is neither a class index nor ``ignore_index`` (the per-sample
    check of ``__getitem__``: it costs one min/max when the mask is clean)."""
    bad = bad_label_values(mask, num_classes, ignore_index)
    if bad:
        raise _label_error(bad, num_classes, ignore_index, mask_path)


def pipeline_crop(pipeline: Any) -> tuple[str, int, int] | None:
    """``(description, height, width)`` of the fixed-size crop ``pipeline`` applies to the image as read, if any.

    Walks the steps while they keep the image size (image-only transforms, flips); the first other step counts if it
    is a crop with ``height`` and ``width`` that neither pads (``pad_if_needed``) nor resizes (``interpolation``):
    such a crop fails on a smaller image. Steps after it see other sizes, so they are not compared with the files.
    """
    for position, step in enumerate(getattr(pipeline, "transforms", None) or []):
        if isinstance(step, (A.ImageOnlyTransform, *_SIZE_KEEPING)):
            continue
        name = type(step).__name__
        height, width = getattr(step, "height", None), getattr(step, "width", None)
        if (
            "Crop" in name
            and isinstance(height, int)
            and isinstance(width, int)
            and not getattr(step, "pad_if_needed", False)
            and not hasattr(step, "interpolation")
        ):
            return f"pipeline[{position}] {name}", height, width
        return None
    return None


def crop_too_large(path: Path | str, height: int, width: int, crop: tuple[str, int, int]) -> str | None:
    """The problem with image ``path`` (``height``×``width``) if the ``pipeline_crop`` ``crop`` does not fit it."""
    what, crop_height, crop_width = crop
    if crop_height <= height and crop_width <= width:
        return None
    return f"image {path} is {height}x{width} (HxW), smaller than the {crop_height}x{crop_width} crop of {what}"


@dataclass
class DatasetSummary:
    """What ``check()`` saw: how many samples, and per class how many pixels (segmentation), images
    (classification) or boxes (detection) in the samples that could be read; how many problems it reported, how many
    samples were left out of the counts for them, which hidden files (macOS ``._*``) were not taken as samples, and
    which label files hold no labelled pixel (every pixel void: a warning, as a few empty tiles can be legitimate),
    and other warnings (a box clipped to its image), one line each naming the file."""

    num_images: int
    classes: tuple[str, ...]
    counts: list[int]
    unit: str = "pixels"
    ignored: int = 0
    num_problems: int = 0
    num_bad: int = 0
    skipped: list[Path] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A plain-text table for tools/check_dataset.py."""
        total = sum(self.counts) + self.ignored
        width = max([len(name) for name in self.classes] + [len("(ignored)"), len("class")])
        header = f"{self.num_images} images"
        if self.num_bad:
            header += f" ({self.num_bad} unreadable or with bad labels, not counted)"
        lines = [header, f"{'class':<{width}}  {self.unit:>12}  {'share':>7}"]
        rows = list(zip(self.classes, self.counts))
        if self.unit in ("pixels", "boxes"):  # void pixels; difficult/crowd boxes
            rows.append(("(ignored)", self.ignored))
        for name, count in rows:
            share = 100.0 * count / total if total else 0.0
            lines.append(f"{name:<{width}}  {count:>12}  {share:>6.2f}%")
        if self.unlabelled:
            lines.append(_unlabelled_line(self.unlabelled, self.num_images, self.unit))
        lines += [f"warning: {line}" for line in self.warnings[:_WARNINGS_SHOWN]]
        if len(self.warnings) > _WARNINGS_SHOWN:
            lines.append(f"... and {len(self.warnings) - _WARNINGS_SHOWN} more warning(s)")
        return "\n".join(lines)


def _unlabelled_line(paths: Sequence[Path], num_images: int, unit: str) -> str:
    shown = ", ".join(str(p) for p in paths[:_UNLABELLED_SHOWN])
    more = f" and {len(paths) - _UNLABELLED_SHOWN} more" if len(paths) > _UNLABELLED_SHOWN else ""
    return f"warning: {len(paths)} of the {num_images} label files have no labelled {unit} (all void): {shown}{more}"


class FileChecker:
    """The part of ``check()`` every dataset shares: reports problems and keeps reading, compares image formats.

    ``on_problem`` ``None`` (the runner): ``summary()`` raises one ``DatasetError`` with the first problem and how many
    more there are. Otherwise each problem goes to ``on_problem`` as it is found and ``summary()`` returns.
    ``channels`` (the model's ``in_chans``) makes every image with another channel count a problem; images whose
    channel count or dtype differs from most images' are problems either way (a 16-bit grey or an RGBA file among RGB
    ones fails in normalisation or batching, not here). ``pipeline``'s crop (``pipeline_crop``) must fit every image.
    A split whose readable samples hold no labelled pixel, voxel or box at all (every label void or ignored) is a
    problem: training on it would log a zero loss and "succeed". Single label files without one are only listed
    (``labelled``), since a few empty tiles can be legitimate.
    """

    def __init__(self, *, pipeline: Any = None, channels: int | None = None, on_problem: ProblemHandler | None = None):
        self.crop = pipeline_crop(pipeline)
        self.channels = channels
        self.on_problem = on_problem
        self.num_problems = 0
        self.num_bad = 0
        self._first: str | None = None
        self._flagged: set[Path] = set()
        self._formats: dict[str, list[Path]] = {}
        self._first_sample: Path | None = None
        self.unlabelled: list[Path] = []
        self.warnings: list[str] = []  # lines for the summary, not problems

    def report(self, path: Path, message: str) -> None:
        """One problem with the sample of image ``path``; ``message`` names the file at fault."""
        self._flagged.add(path)
        self.num_problems += 1
        if self._first is None:
            self._first = message
        if self.on_problem is not None:
            self.on_problem(message)

    @contextmanager
    def sample(self, path: Path) -> Iterator[None]:
        """Reading and validating the sample of image ``path``: a ``DatasetError`` is reported and the sample left
        out of the counts (the block stops there)."""
        if self._first_sample is None:
            self._first_sample = path
        try:
            yield
        except DatasetError as err:
            self.num_bad += 1
            self.report(path, str(err))

    def image(self, path: Path, image: np.ndarray) -> None:
        """Record the format of ``image`` (H×W×C, as the pipeline gets it) and check its channels and size."""
        height, width, channels = image.shape
        kind = f"{channels}-channel {image.dtype}"
        self._formats.setdefault(kind, []).append(path)
        if self.channels is not None and channels != self.channels:
            self.report(path, f"image {path} is {kind}; the model takes in_chans={self.channels}")
        problem = None if self.crop is None else crop_too_large(path, height, width, self.crop)
        if problem is not None:
            self.report(path, problem)

    def bad_sample(self, path: Path, problems: Sequence[str]) -> None:
        """The sample of image ``path`` cannot be read for ``problems`` (found before, e.g. parsing its annotation):
        each is reported and the sample left out of the counts."""
        if self._first_sample is None:
            self._first_sample = path
        self.num_bad += 1
        for problem in problems:
            self.report(path, problem)

    def labelled(self, label_path: Path, count: int) -> None:
        """Record that label file ``label_path`` holds ``count`` labelled pixels; one with none is listed."""
        if count == 0:
            self.unlabelled.append(label_path)

    def _report_no_labels(self, num_images: int, counts: Sequence[int], unit: str, ignored: int) -> None:
        """The split's readable samples hold no labelled ``unit`` at all."""
        readable = num_images - self.num_bad
        if readable <= 0 or sum(counts) or self._first_sample is None:
            return
        void = f"all {ignored} {unit} are void or ignored" if ignored else f"they hold no {unit}"
        self.report(
            self._first_sample,
            f"no labelled {unit} in the {readable} readable sample(s) of this split (first {self._first_sample}): "
            f"{void}, so training would learn nothing",
        )

    def _report_odd_formats(self) -> None:
        """Images whose format differs from most images' (of those without another problem already)."""
        formats = {kind: [p for p in paths if p not in self._flagged] for kind, paths in self._formats.items()}
        formats = {kind: paths for kind, paths in formats.items() if paths}
        if len(formats) < 2:
            return
        common, usual = max(formats.items(), key=lambda item: len(item[1]))
        total = sum(len(paths) for paths in formats.values())
        for kind, paths in formats.items():
            if kind == common:
                continue
            for path in paths:
                self.report(path, f"image {path} is {kind}, unlike {len(usual)} of the {total} images ({common})")

    def summary(self, num_images: int, classes: Sequence[str], counts: Sequence[int], **kwargs: Any) -> DatasetSummary:
        """The ``DatasetSummary`` (``kwargs``: its ``unit``, ``ignored``, ``skipped``) once every file was read;
        raises the first problem when there is no ``on_problem`` to report them to."""
        self._report_odd_formats()
        counts = [int(c) for c in counts]
        self._report_no_labels(num_images, counts, kwargs.get("unit", "pixels"), kwargs.get("ignored", 0))
        if self._first is not None and self.on_problem is None:
            more = self.num_problems - 1
            hint = f" (and {more} more problem(s): tools/check_dataset.py lists them all)" if more else ""
            raise DatasetError(self._first + hint)
        if self.unlabelled and self.on_problem is None:  # the runner's check: say so in the run log
            logger.warning("%s", _unlabelled_line(self.unlabelled, num_images, kwargs.get("unit", "pixels")))
        return DatasetSummary(
            num_images,
            tuple(classes),
            counts,
            num_problems=self.num_problems,
            num_bad=self.num_bad,
            unlabelled=list(self.unlabelled),
            warnings=list(self.warnings),
            **kwargs,
        )

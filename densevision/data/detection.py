"""What every detection dataset shares: (image, parsed annotation) samples in, the batch contract's dicts out.

Subclasses (``VOCDetection``, ``CocoDetection``) only parse their annotation format into ``DetectionAnnotation``
records: boxes as continuous pixel coordinates ``(x1, y1, x2, y2)`` of the original image (a box covering pixel
columns 0..9 inclusive is ``x1=0, x2=10``), contiguous labels ``0..K-1`` and an ``ignore`` flag per object (VOC
difficult, COCO crowd). This base clips boxes to the annotated image size once, drops the ones left with no area and
says so in one warning per dataset, reads images lazily, runs the pipeline and checks every file in ``check()``.

What ``check()`` (and so tools/check_dataset.py) reports, each box named by its file and object (VOC object position,
COCO annotation id): an annotation its parser could not read (the sample is bad, like an unreadable image, and
reading it raises) and a box left with no area (x2 <= x1, a negative COCO width, wholly outside the image: dropped)
are problems; a box reaching outside the image (clipped, kept) is a warning in the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densevision.contracts import DenseDataset
from densevision.data.base import default_palette, image_format, image_to_tensor
from densevision.data.checks import DatasetError, DatasetSummary, FileChecker, ProblemHandler
from densevision.data.io import Colour, read_image
from densevision.data.transforms import apply_pipeline, resolve_pipeline

__all__ = ["ClippedBoxes", "DetectionAnnotation", "DetectionDataset", "clip_boxes"]

logger = logging.getLogger("densevision")


@dataclass(frozen=True)
class DetectionAnnotation:
    """One image's objects in original-image pixels, parsed once when the dataset is built.

    ``boxes`` m×4 float32 ``(x1, y1, x2, y2)``; ``labels`` m int64 in ``0..K-1``; ``ignore`` m bool (VOC difficult,
    COCO crowd: kept for evaluation, not trained on); ``size`` the ``(H, W)`` the annotation states, if any;
    ``source`` the annotation file, named in every message about this image; ``object_names`` how messages name each
    object in its file (``'object 3'`` by default, ``'annotation 1234'`` for COCO); ``problems`` what the parser could
    not read (each line naming the file): such a sample is bad, reading it raises the first.
    """

    image_id: int | str
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    source: Path
    size: tuple[int, int] | None = None
    object_names: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalise dtypes and the empty case once, so every consumer can rely on m×4 / m.
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "ignore", np.asarray(self.ignore, dtype=bool).reshape(-1))
        names = tuple(self.object_names) or tuple(f"object {i}" for i in range(len(self.boxes)))
        object.__setattr__(self, "object_names", names)
        object.__setattr__(self, "problems", tuple(self.problems))
        if not len(self.boxes) == len(self.labels) == len(self.ignore) == len(self.object_names):
            raise ValueError(
                f"{self.source}: {len(self.boxes)} boxes, {len(self.labels)} labels, {len(self.ignore)} ignore "
                f"flags and {len(self.object_names)} object names; expected one of each per object"
            )

    @classmethod
    def unreadable(cls, image_id: int | str, source: Path, problems: Sequence[str]) -> DetectionAnnotation:
        """The record of an annotation the parser could not read: no objects, only its ``problems``."""
        return cls(image_id, [], [], [], source=source, problems=tuple(problems))


@dataclass(frozen=True)
class ClippedBoxes:
    """What ``clip_boxes`` changed: one line per box, naming its file and object."""

    clipped: list[str]  # reached outside the image; clipped and kept
    dropped: list[str]  # no area inside the image; left out


def clip_boxes(annotation: DetectionAnnotation, height: int, width: int) -> tuple[DetectionAnnotation, ClippedBoxes]:
    """``annotation`` with boxes clipped to the ``height``×``width`` image and zero-area boxes dropped, and a line
    for each box clipped or dropped (naming the annotation file, the object and its box)."""
    boxes = annotation.boxes
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = keep & (clipped != boxes).any(axis=1)
    if not changed.any() and keep.all():
        return annotation, ClippedBoxes([], [])

    def named(index: int) -> str:
        box = ", ".join(f"{v:g}" for v in boxes[index])
        return f"{annotation.source}: {annotation.object_names[index]} (x1, y1, x2, y2 = {box})"

    image = f"the {height}x{width} (HxW) image"
    report = ClippedBoxes(
        clipped=[f"{named(i)} reaches outside {image}: clipped" for i in np.flatnonzero(changed)],
        dropped=[
            f"{named(i)} "
            + ("has x2 <= x1 or y2 <= y1" if (boxes[i, 2:] <= boxes[i, :2]).any() else f"lies outside {image}")
            + ": dropped"
            for i in np.flatnonzero(~keep)
        ],
    )
    record = replace(
        annotation,
        boxes=clipped[keep],
        labels=annotation.labels[keep],
        ignore=annotation.ignore[keep],
        object_names=tuple(name for name, kept in zip(annotation.object_names, keep) if kept),
    )
    return record, report


def as_rgb(image: np.ndarray, path: Path) -> np.ndarray:
    """Detectors take RGB: grayscale images (COCO holds a few) are repeated to 3 channels, alpha is dropped."""
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return image[..., :3]
    raise DatasetError(f"image {path} has {channels} channels; detection expects RGB (or grayscale) images")


class DetectionDataset(DenseDataset):
    """``(image_path, DetectionAnnotation)`` samples -> the detection sample dict of the batch contract.

    ``dataset[i]`` is ``{'image': C×H×W float32, 'boxes': n×4 float32, 'labels': n int64, 'meta': {...}}`` with
    boxes in pixels of the transformed image; ``meta`` carries ``gt_boxes``/``gt_labels``/``gt_ignore`` of every
    object in original pixels for evaluation. ``skip_ignored`` leaves ignored objects out of the training targets.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, DetectionAnnotation]],
        *,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        category_ids: Sequence[int] | None = None,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        skip_ignored: bool = True,
    ) -> None:
        self.classes = tuple(classes)
        if not self.classes:
            raise ValueError("a detection dataset needs at least one class name")
        # Colour k+1 of the VOC scheme for class k: colour 0 is black, a poor box colour.
        palette = default_palette(len(self.classes) + 1)[1:] if palette is None else [tuple(c) for c in palette]
        if len(palette) != len(self.classes):
            raise ValueError(f"palette has {len(palette)} colours for {len(self.classes)} classes {self.classes}")
        self.palette: list[Colour] = palette
        self.category_ids = None if category_ids is None else [int(i) for i in category_ids]
        if self.category_ids is not None and len(self.category_ids) != len(self.classes):
            raise ValueError(f"{len(self.category_ids)} category ids for {len(self.classes)} classes")
        self.skip_ignored = skip_ignored
        self.samples = self._validated([(Path(path), annotation) for path, annotation in samples])
        self.pipeline = resolve_pipeline(pipeline, task="detection")

    def _validated(self, samples: list[tuple[Path, DetectionAnnotation]]) -> list[tuple[Path, DetectionAnnotation]]:
        """Check labels and clip every sized annotation to its image; warn once with the counts and the files, and
        keep each clipped or dropped box's line for ``check()``."""
        self._clipped: dict[int, ClippedBoxes] = {}
        sources: dict[Path, None] = {}  # the files at fault, in order
        out = []
        for index, (path, annotation) in enumerate(samples):
            bad = annotation.labels[(annotation.labels < 0) | (annotation.labels >= len(self.classes))]
            if len(bad):
                raise DatasetError(
                    f"label {int(bad[0])} in {annotation.source} is outside the {len(self.classes)} classes "
                    f"(0..{len(self.classes) - 1})"
                )
            if annotation.size is not None:
                annotation, report = clip_boxes(annotation, *annotation.size)
                if report.clipped or report.dropped:
                    self._clipped[index] = report
                    sources[annotation.source] = None
            out.append((path, annotation))
        if sources:
            changed = sum(len(report.clipped) for report in self._clipped.values())
            dropped = sum(len(report.dropped) for report in self._clipped.values())
            first = next(iter(sources))
            where = f"in {first}" if len(sources) == 1 else f"in {len(sources)} files, first {first}"
            logger.warning(
                "%s: clipped %d box(es) reaching outside their image and dropped %d box(es) left with no area %s "
                "(tools/check_dataset.py names each box)",
                type(self).__name__, changed, dropped, where,
            )  # fmt: skip
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metainfo(self) -> dict[str, Any]:
        """Classes, box colours, (COCO) original category ids and the format of the images (the first one's, made RGB)
        training sees: what the task, the metric, checkpoints and predictors read."""
        return {
            "classes": self.classes,
            "palette": list(self.palette),
            "category_ids": None if self.category_ids is None else list(self.category_ids),
            "ignore_index": None,
            "image_format": image_format(self.samples[0][0], to_rgb=True) if self.samples else None,
        }

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Path, np.ndarray, DetectionAnnotation, ClippedBoxes]:
        """The RGB image of sample ``index`` and its annotation, checked against each other, and the boxes clipping
        to the image changed."""
        path, annotation = self.samples[index]
        if annotation.problems:
            more = len(annotation.problems) - 1
            raise DatasetError(
                annotation.problems[0]
                + (f" (and {more} more problem(s) in the annotation of this image)" if more else "")
            )
        image = as_rgb(read_image(path), path)
        height, width = image.shape[:2]
        report = self._clipped.get(index, ClippedBoxes([], []))
        if annotation.size is None:
            annotation, report = clip_boxes(annotation, height, width)
        elif annotation.size != (height, width):
            raise DatasetError(
                f"image {path} is {height}x{width} (HxW) but its annotation in {annotation.source} says "
                f"{annotation.size[0]}x{annotation.size[1]}"
            )
        return path, image, annotation, report

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, image, annotation, _ = self._load(index)
        target = ~annotation.ignore if self.skip_ignored else np.ones(len(annotation.ignore), dtype=bool)
        boxes, labels = annotation.boxes[target], annotation.labels[target]
        out = apply_pipeline(self.pipeline, path, image=image, bboxes=boxes, labels=labels)
        tensor = image_to_tensor(out["image"])
        return {
            "image": tensor,
            "boxes": torch.from_numpy(np.array(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.array(out["labels"], dtype=np.int64).reshape(-1)),
            "meta": {
                "path": str(path),
                "index": index,
                "image_id": annotation.image_id,
                "ori_shape": tuple(image.shape[:2]),
                "img_shape": tuple(tensor.shape[-2:]),
                "gt_boxes": annotation.boxes.copy(),
                "gt_labels": annotation.labels.copy(),
                "gt_ignore": annotation.ignore.copy(),
            },
        }

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Read every image against its annotation and count boxes per class (ignored difficult/crowd boxes apart).
        Problems (an annotation its parser could not read, each problem of it; unreadable image, size unlike its
        annotation's, format unlike the rest or not ``channels``, image smaller than the pipeline's crop; each box left
        with no area, by file and object; no box in the whole split) go to ``on_problem``; without it the first raises
        ``DatasetError`` naming the file, once all were read. Boxes clipped to their image are the summary's
        ``warnings``."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        for index, (path, parsed) in enumerate(self.samples):
            if parsed.problems:
                checker.bad_sample(path, parsed.problems)
                continue
            with checker.sample(path):
                _, image, annotation, report = self._load(index)
                counts += np.bincount(annotation.labels[~annotation.ignore], minlength=self.num_classes)
                ignored += int(np.count_nonzero(annotation.ignore))
                checker.image(path, image)
                for line in report.dropped:
                    checker.report(path, line)
                checker.warnings.extend(report.clipped)
        return checker.summary(len(self.samples), self.classes, counts, unit="boxes", ignored=ignored)

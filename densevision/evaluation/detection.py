"""Object detection metrics: PASCAL VOC AP (the devkit's rules) and COCO AP (pycocotools' COCOeval itself).

Both rank detections over the whole split, so their state does not add up across processes: each keeps one record
per image (ground truth from ``batch["meta"]``, predictions in original image pixels) in ``records``, which
``Metric.sync`` gathers in dataset order. Labels are the datasets' contiguous foreground labels ``0..K-1``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevision.data.checks import DatasetError
from densevision.evaluation.base import Metric
from densevision.registry import METRICS, ConfigError
from densevision.tasks.detection.results import coco_results, write_coco_results

__all__ = ["VOCMetric", "CocoMetric", "box_iou"]

AP_METHODS = ("11point", "area")
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_TRUE_POSITIVE, _FALSE_POSITIVE, _IGNORED = 1, 0, -1


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, *, legacy_coordinates: bool = False) -> np.ndarray:
    """``n×m`` IoU of ``(x1, y1, x2, y2)`` boxes, in float64.

    ``legacy_coordinates`` counts both end pixels (width ``x2 - x1 + 1``), the VOC devkit's rule for integer-pixel
    boxes; without it boxes are continuous coordinates. Boxes of zero area have IoU 0 with everything.
    """
    a, b = np.asarray(boxes1, dtype=np.float64), np.asarray(boxes2, dtype=np.float64)
    extra = 1.0 if legacy_coordinates else 0.0
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + extra
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + extra
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _array(value: Any, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` (tensor, array or list) as a CPU numpy array of ``dtype`` and ``shape`` (-1: any length)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    if array.size == 0:
        array = array.reshape([0 if size == -1 else size for size in shape])
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape)):
        raise ValueError(f"{what} has shape {tuple(array.shape)}, expected {tuple(shape)} (-1: any)")
    return array


def _plain_id(image_id: Any) -> Any:
    """An image id as JSON and pycocotools want it: a Python int or str, never a numpy or torch scalar."""
    if isinstance(image_id, torch.Tensor):
        image_id = image_id.item()
    return image_id.item() if isinstance(image_id, np.generic) else image_id


def _check_labels(record: dict[str, Any], num_classes: int) -> None:
    for key in ("gt_labels", "labels"):
        bad = record[key][(record[key] < 0) | (record[key] >= num_classes)]
        if bad.size:
            raise ValueError(f"{key} {np.unique(bad)[:5].tolist()} outside the classes [0, {num_classes})")


class _DetectionMetric(Metric):
    """Per-image records of ground truth and predictions, gathered across processes; class names from the config or
    from ``dataset_meta["classes"]``."""

    gather_states = ("records",)

    def __init__(self, *, classes: Sequence[str] | None = None) -> None:
        self._classes = tuple(classes) if classes is not None else None
        self.records: list[dict[str, Any]] = []

    @property
    def classes(self) -> tuple[str, ...]:
        if self._classes is not None:
            return self._classes
        if self.dataset_meta and self.dataset_meta.get("classes") is not None:
            return tuple(self.dataset_meta["classes"])
        raise ConfigError(
            f"{type(self).__name__} has no class names: pass classes=[...] or evaluate a dataset whose metainfo has "
            "'classes' (the runner hands it over as dataset_meta)"
        )

    @property
    def num_classes(self) -> int | None:
        """Number of foreground classes, or None while neither the config nor a dataset has named them."""
        if self._classes is None and not (self.dataset_meta and self.dataset_meta.get("classes") is not None):
            return None
        return len(self.classes)

    def reset(self) -> None:
        self.records = []

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        """Record each image's predictions (original pixels) and its ``meta`` ground truth (difficult/crowd kept)."""
        metas = batch["meta"]
        if len(preds) != len(metas):
            raise ValueError(f"{len(preds)} predictions for a batch of {len(metas)} images")
        for position, (pred, meta) in enumerate(zip(preds, metas)):
            where = meta.get("path", f"image {position} of the batch")
            missing = [k for k in ("image_id", "gt_boxes", "gt_labels", "gt_ignore") if k not in meta]
            if missing:
                raise DatasetError(f"{where}: meta lacks {', '.join(missing)} (detection datasets' meta carries them)")
            try:
                record = {
                    "index": meta.get("index"),
                    "image_id": _plain_id(meta["image_id"]),
                    "gt_boxes": _array(meta["gt_boxes"], np.float32, (-1, 4), "meta gt_boxes"),
                    "gt_labels": _array(meta["gt_labels"], np.int64, (-1,), "meta gt_labels"),
                    "gt_ignore": _array(meta["gt_ignore"], np.bool_, (-1,), "meta gt_ignore"),
                    "boxes": _array(pred["boxes"], np.float32, (-1, 4), "predicted boxes"),
                    "scores": _array(pred["scores"], np.float32, (-1,), "predicted scores"),
                    "labels": _array(pred["labels"], np.int64, (-1,), "predicted labels"),
                }
                self._check_record(record)
            except ValueError as err:
                raise DatasetError(f"{where}: {err}") from err
            self.records.append(record)

    def _check_record(self, record: dict[str, Any]) -> None:
        gts, dets = len(record["gt_boxes"]), len(record["boxes"])
        if not len(record["gt_labels"]) == len(record["gt_ignore"]) == gts:
            raise ValueError(
                f"{gts} gt_boxes, {len(record['gt_labels'])} gt_labels and {len(record['gt_ignore'])} gt_ignore flags"
            )
        if not len(record["scores"]) == len(record["labels"]) == dets:
            raise ValueError(f"{dets} predicted boxes, {len(record['scores'])} scores, {len(record['labels'])} labels")
        if self.num_classes is not None:
            _check_labels(record, self.num_classes)

    def _checked_records(self) -> list[dict[str, Any]]:
        """The records, their labels checked against the classes (which may have been unknown at ``update``)."""
        num_classes = len(self.classes)
        for record in self.records:
            try:
                _check_labels(record, num_classes)
            except ValueError as err:
                raise DatasetError(f"image {record['image_id']!r}: {err}") from err
        return self.records


@METRICS.register_module()
class VOCMetric(_DetectionMetric):
    """PASCAL VOC per-class AP and their mean: ``compute() -> {"mAP", "AP/<class>"}`` (fractions in [0, 1]).

    The devkit's rules (``VOCevaldet``): per class, detections over the whole split in descending score order (ties
    in dataset order); each is matched to the ground truth of its class in its image with the highest IoU; at IoU
    ``>= iou_threshold`` it is a true positive if that ground truth is not yet matched, a false positive if it is (a
    duplicate), and neither if it is difficult (``gt_ignore``); below the threshold it is a false positive. Difficult
    objects do not count as positives. ``ap_method='11point'`` (VOC2007) averages the highest precision at recall
    ``>= t`` for t in ``np.arange(0, 1.1, 0.1)``, exactly as the devkit and py-faster-rcnn's voc_eval compare them
    (so a recall of exactly 0.3 misses the t = 0.3 point, since 0.1·3 > 0.3 in floating point: figures stay
    comparable with published ones); ``'area'`` (VOC2010+) is the
    area under the monotone precision envelope. A class without positives has AP NaN and is left out of mAP.
    """

    def __init__(
        self,
        *,
        classes: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        ap_method: str = "11point",
        legacy_coordinates: bool = False,
    ) -> None:
        if ap_method not in AP_METHODS:
            raise ConfigError(f"ap_method must be one of {AP_METHODS}, got {ap_method!r}")
        if not 0 < iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        super().__init__(classes=classes)
        self.iou_threshold = iou_threshold
        self.ap_method = ap_method
        self.legacy_coordinates = legacy_coordinates
        self._counts: dict[str, np.ndarray] = {}

    def compute(self) -> dict[str, float]:
        classes = self.classes
        num_classes = len(classes)
        scores: list[list[np.ndarray]] = [[] for _ in classes]
        outcomes: list[list[np.ndarray]] = [[] for _ in classes]
        positives = np.zeros(num_classes, dtype=np.int64)
        for record in self._checked_records():
            positives += np.bincount(record["gt_labels"][~record["gt_ignore"]], minlength=num_classes)
            for label in np.unique(record["labels"]):
                chosen = record["labels"] == label
                order = np.argsort(-record["scores"][chosen], kind="stable")
                truth = record["gt_labels"] == label
                scores[label].append(record["scores"][chosen][order])
                outcomes[label].append(
                    self._match(record["boxes"][chosen][order], record["gt_boxes"][truth], record["gt_ignore"][truth])
                )
        aps = np.full(num_classes, math.nan)
        detections = np.zeros(num_classes, dtype=np.int64)
        for label in range(num_classes):
            ranked = np.concatenate(outcomes[label]) if outcomes[label] else np.zeros(0, dtype=np.int8)
            if ranked.size:
                ranked = ranked[np.argsort(-np.concatenate(scores[label]), kind="stable")]
            detections[label] = ranked.size
            counted = ranked[ranked != _IGNORED]
            aps[label] = self._average_precision(
                np.cumsum(counted == _TRUE_POSITIVE), np.cumsum(counted == _FALSE_POSITIVE), int(positives[label])
            )
        self._counts = {"positives": positives, "detections": detections}
        defined = aps[~np.isnan(aps)]
        results = {"mAP": float(defined.mean()) if defined.size else math.nan}
        results.update({f"AP/{name}": float(ap) for name, ap in zip(classes, aps)})
        return results

    def _match(self, boxes: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray) -> np.ndarray:
        """Outcome of each detection of one class in one image, given in descending score order.

        Greedy matching in score order reduces to: a detection whose best ground truth reaches the threshold is the
        true positive of that ground truth if no higher-scored detection had the same best ground truth.
        """
        outcome = np.full(len(boxes), _FALSE_POSITIVE, dtype=np.int8)
        if not len(gt_boxes) or not len(boxes):
            return outcome
        iou = box_iou(boxes, gt_boxes, legacy_coordinates=self.legacy_coordinates)
        best = iou.argmax(axis=1)
        hit = iou[np.arange(len(boxes)), best] >= self.iou_threshold
        outcome[hit & gt_ignore[best]] = _IGNORED
        candidates = np.flatnonzero(hit & ~gt_ignore[best])
        _, first = np.unique(best[candidates], return_index=True)
        outcome[candidates[first]] = _TRUE_POSITIVE
        return outcome

    def _average_precision(self, true_positives: np.ndarray, false_positives: np.ndarray, positives: int) -> float:
        """AP from cumulative TP/FP counts in score order (difficult hits already removed)."""
        if positives == 0:
            return math.nan
        if true_positives.size == 0:
            return 0.0
        precision = true_positives / (true_positives + false_positives)
        if self.ap_method == "11point":
            recall = true_positives / positives
            total = 0.0
            for threshold in np.arange(0.0, 1.1, 0.1):  # the devkit's thresholds, floating-point quirks included
                reached = recall >= threshold
                total += float(precision[reached].max()) if reached.any() else 0.0
            return total / 11
        recall = np.concatenate([[0.0], true_positives / positives, [1.0]])
        envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
        steps = np.flatnonzero(recall[1:] != recall[:-1])
        return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))

    def summary_table(self) -> str:
        """Per-class AP in percent with the counts of (non-difficult) ground truths and detections, then mAP."""
        results = self.compute()
        classes = self.classes
        width = max(len("class"), *(len(name) for name in classes))
        rule = "-" * (width + 24)
        lines = [f"{'class':<{width}}  {'gts':>6}  {'dets':>6}  {'AP %':>6}", rule]
        for label, name in enumerate(classes):
            gts, dets = self._counts["positives"][label], self._counts["detections"][label]
            lines.append(f"{name:<{width}}  {gts:>6d}  {dets:>6d}  {_percent(results[f'AP/{name}'])}")
        lines += [rule, f"{'mAP':<{width}}  {'':>6}  {'':>6}  {_percent(results['mAP'])}"]
        return "\n".join(lines)


@METRICS.register_module()
class CocoMetric(_DetectionMetric):
    """COCO box AP and AR as pycocotools' ``COCOeval`` computes them, plus per-class AP@[.5:.95] from its
    precision array. ``compute()`` keys: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``,
    ``AR1``, ``AR10``, ``AR100``, ``ARs``, ``ARm``, ``ARl``, ``AP/<class>``; COCOeval's -1 (no ground truth in that
    range) is reported as NaN.

    Ground truth comes from ``ann_file`` when given, else from the records' ``meta`` (boxes as ``[x, y, w, h]``,
    area ``w * h``, ``iscrowd`` from ``gt_ignore``: equal to the file for box-only annotations; a file's mask areas
    differ). Only the evaluated images count. Detections are written with the dataset's own category ids
    (``dataset_meta["category_ids"]``, else the ann file's sorted ids, else label + 1), and to ``results_file`` as
    COCO results JSON when given (by the main process). For VOC's difficult flags use ``VOCMetric``: COCOeval treats
    ``iscrowd`` boxes with a different IoU.
    """

    def __init__(
        self, *, ann_file: str | None = None, classes: Sequence[str] | None = None, results_file: str | None = None
    ) -> None:
        if ann_file is not None and not Path(ann_file).is_file():
            raise ConfigError(f"CocoMetric ann_file not found: {ann_file}")
        super().__init__(classes=classes)
        self.ann_file = ann_file
        self.results_file = results_file
        self._file_ground_truth: Any = None
        self._summary = ""

    def compute(self) -> dict[str, float]:
        classes = self.classes
        if not self.records:
            self._summary = "no images evaluated"
            return {**dict.fromkeys(COCO_STATS, math.nan), **{f"AP/{name}": math.nan for name in classes}}
        self._checked_records()
        ground_truth = self._ground_truth()
        category_ids = self._category_ids(ground_truth)
        detections = self.results(category_ids)
        if self.results_file is not None and not (dist.is_initialized() and dist.get_rank() != 0):
            write_coco_results(self.results_file, detections)
        with contextlib.redirect_stdout(io.StringIO()):
            results = ground_truth.loadRes(detections) if detections else _empty_results(ground_truth)
            evaluator = COCOeval(ground_truth, results, "bbox")
            evaluator.params.imgIds = list(dict.fromkeys(record["image_id"] for record in self.records))
            evaluator.evaluate()
            evaluator.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.summarize()
        self._summary = summary.getvalue().rstrip()
        figures = {name: _defined(value) for name, value in zip(COCO_STATS, evaluator.stats)}
        precision = evaluator.eval["precision"]  # IoU × recall × category × area range × max detections
        for name, category_id in zip(classes, category_ids):
            values = precision[:, :, evaluator.params.catIds.index(category_id), 0, -1]
            values = values[values > -1]
            figures[f"AP/{name}"] = float(values.mean()) if values.size else math.nan
        return figures

    def results(self, category_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The records' detections as COCO results JSON entries (``bbox`` is ``[x, y, w, h]``)."""
        detections = []
        for record in self.records:
            detections += coco_results(
                record["image_id"], record["boxes"], record["scores"].tolist(), record["labels"], category_ids
            )
        return detections

    def _ground_truth(self) -> Any:
        if self.ann_file is None:
            return self._ground_truth_from_records()
        if self._file_ground_truth is None:
            with contextlib.redirect_stdout(io.StringIO()):
                self._file_ground_truth = COCO(self.ann_file)
        unknown = {record["image_id"] for record in self.records} - set(self._file_ground_truth.getImgIds())
        if unknown:
            raise DatasetError(f"image ids {sorted(unknown, key=str)[:5]} evaluated but not in {self.ann_file}")
        return self._file_ground_truth

    def _ground_truth_from_records(self) -> Any:
        category_ids = self._category_ids(None)
        annotations = []
        for record in self.records:
            for box, label, ignore in zip(record["gt_boxes"].tolist(), record["gt_labels"], record["gt_ignore"]):
                x1, y1, x2, y2 = box
                width, height = x2 - x1, y2 - y1
                annotations.append(
                    {
                        "id": len(annotations) + 1,  # COCOeval reads id 0 as "unmatched"
                        "image_id": record["image_id"],
                        "category_id": int(category_ids[label]),
                        "bbox": [x1, y1, width, height],
                        "area": width * height,
                        "iscrowd": int(ignore),
                    }
                )
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": [{"id": image_id} for image_id in dict.fromkeys(r["image_id"] for r in self.records)],
            "categories": [{"id": int(i), "name": name} for i, name in zip(category_ids, self.classes)],
            "annotations": annotations,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth.createIndex()
        return ground_truth

    def _category_ids(self, ground_truth: Any) -> list[int]:
        """The dataset category id of each contiguous label."""
        num_classes = len(self.classes)
        given = (self.dataset_meta or {}).get("category_ids")
        if given is not None:
            ids, source = [int(i) for i in given], "dataset_meta category_ids"
        elif self.ann_file is not None:
            ids, source = sorted(ground_truth.getCatIds()), f"the categories of {self.ann_file}"
        else:
            ids, source = list(range(1, num_classes + 1)), "label + 1"
        if len(ids) != num_classes:
            raise ConfigError(f"{source} give {len(ids)} category ids for {num_classes} classes {list(self.classes)}")
        if ground_truth is not None and self.ann_file is not None:
            missing = sorted(set(ids) - set(ground_truth.getCatIds()))
            if missing:
                raise ConfigError(f"category ids {missing} (from {source}) are not categories of {self.ann_file}")
        return ids

    def summary_table(self) -> str:
        """COCOeval's own summary lines, then per-class AP@[.5:.95] in percent."""
        results = self.compute()
        classes = self.classes
        width = max(len("class"), *(len(name) for name in classes))
        lines = [self._summary, "", f"{'class':<{width}}  {'AP %':>6}", "-" * (width + 8)]
        lines += [f"{name:<{width}}  {_percent(results[f'AP/{name}'])}" for name in classes]
        return "\n".join(lines)


def _empty_results(ground_truth: Any) -> Any:
    """A results set with no detections (``COCO.loadRes`` refuses an empty list): figures with ground truth are 0."""
    results = COCO()
    results.dataset = {
        "images": list(ground_truth.dataset["images"]),
        "categories": copy.deepcopy(ground_truth.dataset["categories"]),
        "annotations": [],
    }
    results.createIndex()
    return results


def _defined(value: float) -> float:
    return math.nan if value == -1 else float(value)


def _percent(value: float) -> str:
    return f"{'-':>6}" if math.isnan(value) else f"{100 * value:6.2f}"

"""Semantic segmentation metrics: a split-wide confusion matrix and the mIoU / accuracy figures derived from it.

Intersections and unions are summed over the whole split before dividing (the Tiramisu and mmseg protocol), never
averaged per image: per-image IoU over-weights small images and classes that appear in few pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from densevision.data.checks import DatasetError
from densevision.evaluation.base import PerClassMetric
from densevision.registry import METRICS, ConfigError

__all__ = ["ConfusionMatrix", "SegmentationMetric"]


def _first_values(values: Tensor, limit: int = 5) -> list[int]:
    """Up to ``limit`` distinct offending values, for error messages."""
    return torch.unique(values)[:limit].tolist()


class ConfusionMatrix:
    """``num_classes × num_classes`` pixel counts (rows: ground truth, columns: prediction), accumulated over a split.

    Pixels whose ground truth is ``ignore_index`` are skipped whatever their prediction. Any other ground-truth or
    predicted value outside ``[0, num_classes)`` is an error (a 12-class mask fed to an 11-class metric must not be
    silently dropped).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix = torch.zeros_like(self.matrix)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count one prediction against its ground truth (any matching shape, integer class indices)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(f"expected integer class indices, got prediction {pred.dtype} and target {target.dtype}")
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).to(device=target.device, dtype=torch.long)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target, pred = target[valid], pred[valid]
        num_classes = self.num_classes
        bad_target = (target < 0) | (target >= num_classes)
        if bad_target.any():
            raise ValueError(
                f"ground-truth label(s) {_first_values(target[bad_target])} outside [0, {num_classes}) "
                f"and not the ignore index {self.ignore_index}"
            )
        bad_pred = (pred < 0) | (pred >= num_classes)
        if bad_pred.any():
            raise ValueError(f"predicted label(s) {_first_values(pred[bad_pred])} outside [0, {num_classes})")
        counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
        self.matrix += counts.reshape(num_classes, num_classes).cpu()

    def scores(self) -> dict[str, Tensor]:
        """Per-class ``iou`` and ``acc`` (float64, NaN where undefined) and the global ``aacc`` (0-d)."""
        counts = self.matrix.double()
        true_positive = counts.diagonal()
        ground_truth = counts.sum(dim=1)
        predicted = counts.sum(dim=0)
        union = ground_truth + predicted - true_positive
        nan = torch.tensor(math.nan, dtype=torch.float64)
        return {
            "iou": torch.where(union > 0, true_positive / union.clamp_min(1), nan),
            "acc": torch.where(ground_truth > 0, true_positive / ground_truth.clamp_min(1), nan),
            "aacc": true_positive.sum() / counts.sum() if counts.sum() > 0 else nan,
        }


@METRICS.register_module()
class SegmentationMetric(PerClassMetric):
    """mIoU, mean class accuracy and global pixel accuracy over a split, plus per-class IoU and accuracy.

    ``compute()`` returns fractions in [0, 1]: ``mIoU``, ``mAcc``, ``aAcc``, ``IoU/<class>``, ``Acc/<class>``.
    A class absent from both ground truth and predictions has IoU NaN, and a class absent from the ground truth has
    accuracy NaN; NaNs are left out of the means (mmseg's rule), so a split that lacks a class is not penalised for it.
    A class that is predicted but absent from the ground truth has IoU 0 and does count in mIoU.
    """

    sum_states = ("confusion.matrix",)

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, ignore_index, class_names)

    def _configure(self, num_classes: int | None, ignore_index: int | None, class_names: Sequence[str] | None) -> None:
        super()._configure(num_classes, ignore_index, class_names)
        self.confusion = ConfusionMatrix(self.num_classes, ignore_index) if self.num_classes is not None else None

    def _require_classes(self) -> ConfusionMatrix:
        if self.confusion is None:
            raise ConfigError("SegmentationMetric needs num_classes (or class_names, or a dataset's metainfo)")
        return self.confusion

    def reset(self) -> None:
        if self.confusion is not None:
            self.confusion.reset()

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        targets = batch["mask"]
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for a batch of {len(targets)} masks")
        metas = batch.get("meta") or [{}] * len(preds)
        confusion = self._require_classes()
        for index, (pred, target, meta) in enumerate(zip(preds, targets, metas)):
            try:
                confusion.update(pred["mask"], target)
            except ValueError as err:
                where = meta.get("path", f"image {index} of the batch")
                raise DatasetError(f"{where}: {err}") from err

    def compute(self) -> dict[str, float]:
        scores = self._require_classes().scores()
        names = self.class_names or [str(i) for i in range(len(scores["iou"]))]
        iou, acc = scores["iou"], scores["acc"]
        results = {"mIoU": _nanmean(iou), "mAcc": _nanmean(acc), "aAcc": float(scores["aacc"])}
        results.update({f"IoU/{name}": float(value) for name, value in zip(names, iou)})
        results.update({f"Acc/{name}": float(value) for name, value in zip(names, acc)})
        return results

    def summary_table(self) -> str:
        """Per-class IoU and accuracy in percent, then the split-wide figures; ``-`` marks an undefined value."""
        results = self.compute()
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        width = max(len("class"), *(len(name) for name in names))
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'Acc %':>7}", "-" * (width + 18)]
        for name in names:
            lines.append(f"{name:<{width}}  {_percent(results[f'IoU/{name}'])}  {_percent(results[f'Acc/{name}'])}")
        lines.append("-" * (width + 18))
        lines.append(f"{'mean':<{width}}  {_percent(results['mIoU'])}  {_percent(results['mAcc'])}")
        lines.append(f"{'aAcc':<{width}}  {'':>7}  {_percent(results['aAcc'])}")
        return "\n".join(lines)


def _nanmean(values: Tensor) -> float:
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else math.nan


def _percent(value: float) -> str:
    return f"{'-':>7}" if math.isnan(value) else f"{100 * value:7.2f}"

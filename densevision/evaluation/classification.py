"""Image classification metric: top-k accuracy over a split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from densevision.evaluation.base import Metric
from densevision.registry import METRICS

__all__ = ["Accuracy"]


@METRICS.register_module()
class Accuracy(Metric):
    """Top-k accuracy (fractions in [0, 1]) reported as ``top1``, ``top5``, ... for each k in ``topk``.

    k larger than the number of classes is clipped to it (top-5 of a 3-class problem is top-3, i.e. 1.0), so the same
    config works for CIFAR-10 and a 3-class toy set. Correct and total counts are summed across processes.
    """

    sum_states = ("correct", "total")

    def __init__(self, topk: Sequence[int] = (1, 5)) -> None:
        topk = tuple(topk)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f"topk must be a non-empty sequence of positive integers, got {topk}")
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(len(self.topk), dtype=torch.int64)
        self.total = torch.zeros((), dtype=torch.int64)

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        labels = torch.as_tensor(batch["label"]).reshape(-1).long().cpu()
        if len(preds) != len(labels):
            raise ValueError(f"{len(preds)} predictions for a batch of {len(labels)} labels")
        if not preds:
            return
        scores = torch.stack([torch.as_tensor(pred["scores"]).reshape(-1) for pred in preds]).float().cpu()
        num_classes = scores.shape[1]
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f"label(s) {labels[bad].unique().tolist()} outside the {num_classes} classes of the scores"
            )
        ranked = scores.topk(min(max(self.topk), num_classes), dim=1).indices
        hits = ranked == labels[:, None]
        for i, k in enumerate(self.topk):
            self.correct[i] += hits[:, :k].any(dim=1).sum()
        self.total += len(labels)

    def compute(self) -> dict[str, float]:
        total = int(self.total)
        return {f"top{k}": int(c) / total if total else math.nan for k, c in zip(self.topk, self.correct)}

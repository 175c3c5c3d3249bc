"""Per-exit top-k accuracy of an early-exit classifier's predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from densevision.evaluation.base import Metric
from densevision.registry import METRICS

__all__ = ["EarlyExitAccuracy"]


@METRICS.register_module()
class EarlyExitAccuracy(Metric):
    """Top-k accuracy (fractions in [0, 1]) of every exit, ``top{k}/exit{e}``, and of the task's chosen exit, ``top{k}``
    (what checkpoint selection monitors), from predictions carrying ``scores`` and ``exit_scores`` (exits × K).

    k larger than the number of classes is clipped to it, as in ``Accuracy``. Counts are summed across processes.
    """

    sum_states = ("correct", "total")

    def __init__(self, topk: Sequence[int] = (1,)) -> None:
        topk = tuple(topk)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f"topk must be a non-empty sequence of positive integers, got {topk}")
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        # correct[0]: the chosen exit; correct[1 + e]: exit e (allocated once the first batch shows the exit count)
        self.correct = torch.zeros((0, len(self.topk)), dtype=torch.int64)
        self.total = torch.zeros((), dtype=torch.int64)

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        labels = torch.as_tensor(batch["label"]).reshape(-1).long().cpu()
        if len(preds) != len(labels):
            raise ValueError(f"{len(preds)} predictions for a batch of {len(labels)} labels")
        if not preds:
            return
        if any("exit_scores" not in pred for pred in preds):
            raise ValueError("EarlyExitAccuracy needs predictions with `exit_scores` (an EarlyExitClassifier's)")
        chosen = torch.stack([torch.as_tensor(pred["scores"]).reshape(-1) for pred in preds]).float().cpu()
        exits = torch.stack([torch.as_tensor(pred["exit_scores"]) for pred in preds], 1).float().cpu()  # E×N×K
        scores = torch.cat([chosen[None], exits])
        num_classes = scores.shape[-1]
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f"label(s) {labels[bad].unique().tolist()} outside the {num_classes} classes of the scores"
            )
        if not len(self.correct):
            self.correct = torch.zeros((len(scores), len(self.topk)), dtype=torch.int64)
        elif len(scores) != len(self.correct):
            raise ValueError(f"predictions with {len(scores) - 1} exits after {len(self.correct) - 1}")
        ranked = scores.topk(min(max(self.topk), num_classes), dim=2).indices  # (1 + E)×N×k
        hits = ranked == labels[None, :, None]
        for i, k in enumerate(self.topk):
            self.correct[:, i] += hits[..., :k].any(dim=2).sum(dim=1)
        self.total += len(labels)

    def compute(self) -> dict[str, float]:
        total = int(self.total)
        results = {}
        for i, k in enumerate(self.topk):
            accuracies = [int(c) / total if total else math.nan for c in self.correct[:, i]]
            results[f"top{k}"] = accuracies[0] if accuracies else math.nan
            results.update({f"top{k}/exit{e}": a for e, a in enumerate(accuracies[1:])})
        return results

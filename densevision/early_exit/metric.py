"""Per-exit top-k accuracy of an early-exit classifier's predictions, and the budgeted-batch report of tools/test.py."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densevision.evaluation.base import Metric
from densevision.registry import METRICS

__all__ = ["EarlyExitAccuracy"]


@METRICS.register_module()
class EarlyExitAccuracy(Metric):
    """Top-k accuracy (fractions in [0, 1]) of every exit, ``top{k}/exit{e}``, and of the task's chosen exit, ``top{k}``
    (what checkpoint selection monitors), from predictions carrying ``scores`` and ``exit_scores`` (exits × K).

    k larger than the number of classes is clipped to it, as in ``Accuracy``. One record per image (its hits, and
    every exit's confidence and top-1 hit for budgeted evaluation) is gathered across processes, so a process that saw
    no image adds nothing and needs no exit count.

    On tools/test.py it also reports anytime prediction and budgeted batch classification (``test_report``): exit
    thresholds calibrated on the ``val`` split (``report_splits``) for each budget, applied to the test split.
    """

    gather_states = ("records",)
    report_splits = ("val",)

    def __init__(self, topk: Sequence[int] = (1,)) -> None:
        topk = tuple(topk)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f"topk must be a non-empty sequence of positive integers, got {topk}")
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        # per image: "hits" ((1 + exits) × len(topk): the chosen exit, then each exit), "confidence" and "correct"
        # (each exit's top softmax score and top-1 hit), "image_shape" (C, H, W: what FLOPs are counted at)
        self.records: list[dict[str, Any]] = []

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
        if self.records and len(self.records[-1]["confidence"]) != len(exits):
            raise ValueError(f"predictions with {len(exits)} exits after {len(self.records[-1]['confidence'])}")
        ranked = scores.topk(min(max(self.topk), num_classes), dim=2).indices  # (1 + E)×N×k
        hits = ranked == labels[None, :, None]
        hits_at_k = torch.stack([hits[..., :k].any(dim=2) for k in self.topk], dim=2)  # (1 + E)×N×len(topk)
        confidences, predictions = exits.max(dim=2)
        correct = predictions == labels[None]
        image_shape = tuple(batch["image"].shape[1:]) if "image" in batch else None
        for i in range(len(labels)):
            self.records.append(
                {
                    "hits": hits_at_k[:, i].tolist(),
                    "confidence": confidences[:, i].tolist(),
                    "correct": correct[:, i].tolist(),
                    "image_shape": image_shape,
                }
            )

    def compute(self) -> dict[str, float]:
        results: dict[str, float] = {}
        hits = torch.tensor([record["hits"] for record in self.records], dtype=torch.float64)  # N×(1 + E)×len(topk)
        for i, k in enumerate(self.topk):
            if not self.records:
                results[f"top{k}"] = math.nan
                continue
            accuracies = hits[:, :, i].mean(dim=0).tolist()
            results[f"top{k}"] = accuracies[0]
            results.update({f"top{k}/exit{e}": a for e, a in enumerate(accuracies[1:])})
        return results

    def exit_outcomes(self) -> tuple[Tensor, Tensor]:
        """Every exit's confidence (float64) and top-1 hit (bool) per image, exits × images, in dataset order."""
        if not self.records:
            raise ValueError("EarlyExitAccuracy saw no images: nothing to report")
        confidences = torch.tensor([record["confidence"] for record in self.records], dtype=torch.float64)
        correct = torch.tensor([record["correct"] for record in self.records], dtype=torch.bool)
        return confidences.T, correct.T

    def test_report(self, *, task: nn.Module, splits: Mapping[str, Metric], out_dir: Path) -> str:
        """Anytime accuracy and FLOPs of every exit and the budget sweep (thresholds from ``splits['val']``, applied
        to the test images this metric saw): the table returned, ``early_exit.json``, ``early_exit.png`` and
        ``exit_thresholds.json`` (for adaptive inference) written into ``out_dir``."""
        from densevision.early_exit.report import write_budget_report

        val = splits["val"]
        if not isinstance(val, EarlyExitAccuracy):
            raise TypeError(f"the val split was evaluated with {type(val).__name__}, not EarlyExitAccuracy")
        return write_budget_report(task, val, self, out_dir)

"""Anytime prediction and budgeted batch classification from per-exit class scores (Huang et al., MSDNet, sec. 4).

Budgeted batch: for a budget, a sample leaves at the first exit whose confidence (its top softmax score) reaches that
exit's threshold. Thresholds come from validation scores, for exit proportions ``p_k ∝ q^k`` (a geometric
distribution; q < 1 sends most samples out early, q > 1 late), by the authors' procedure (kalviny/MSDNet-PyTorch,
``adaptive_inference.py``): the threshold of exit k is the confidence of the ``floor(N * p_k)``-th most confident
validation sample still in the network there; the last exit takes everyone left. The same thresholds applied to the
test scores give one (accuracy, mean FLOPs per image) point per q.

Scores are softmax probabilities laid out exits × samples × classes; budgeted evaluation needs only each exit's
confidence and top-1 hit per sample (``exit_outcomes``: exits × samples each, which is what EarlyExitAccuracy keeps);
accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "AUTHORS_QS",
    "BudgetPoint",
    "ThresholdResult",
    "anytime_accuracy",
    "assign_exits",
    "budget_sweep",
    "calibrate_thresholds",
    "collect_exit_scores",
    "evaluate_thresholds",
    "exit_outcomes",
    "geometric_exit_proportions",
]

# The authors' sweep: q = 0.05, 0.10, ..., 1.95.
AUTHORS_QS: tuple[float, ...] = tuple(p / 20 for p in range(1, 40))


@dataclass
class ThresholdResult:
    """Thresholds applied to one split: its accuracy, mean FLOPs per image and the fraction leaving at each exit."""

    accuracy: float
    mean_flops: float
    exit_fractions: list[float]


@dataclass
class BudgetPoint:
    """One budget of a sweep: its q, the exit proportions aimed at, thresholds calibrated on validation, and their
    result on validation and on test."""

    q: float
    target_proportions: list[float]
    thresholds: list[float]
    val: ThresholdResult
    test: ThresholdResult


def _check_scores(scores: Tensor, labels: Tensor | None = None) -> None:
    if scores.dim() != 3:
        raise ValueError(f"scores must be exits × samples × classes, got shape {tuple(scores.shape)}")
    if labels is not None and labels.shape != scores.shape[1:2]:
        raise ValueError(f"{tuple(labels.shape)} labels for {scores.shape[1]} samples")


@torch.no_grad()
def collect_exit_scores(task: nn.Module, batches: Iterable[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
    """Every exit's scores (exits × samples × classes, float32 on CPU) and the labels of a split, in order, from an
    EarlyExitClassifier's ``predict`` (eval mode) over ``batches`` (a DataLoader of classification batches)."""
    device = next(task.parameters()).device
    was_training = task.training
    task.eval()
    scores, labels = [], []
    try:
        for batch in batches:
            predictions = task.predict({**batch, "image": batch["image"].to(device)})
            scores.append(torch.stack([prediction["exit_scores"].float().cpu() for prediction in predictions], 1))
            labels.append(torch.as_tensor(batch["label"]).reshape(-1).cpu())
    finally:
        task.train(was_training)
    if not scores:
        raise ValueError("no batches to collect exit scores from")
    return torch.cat(scores, 1), torch.cat(labels)


def geometric_exit_proportions(q: float, num_exits: int) -> Tensor:
    """``p_k ∝ q^k`` over ``num_exits`` exits, summing to 1 (float64)."""
    if q <= 0 or num_exits < 1:
        raise ValueError(f"q must be > 0 and num_exits >= 1, got q={q}, num_exits={num_exits}")
    powers = torch.full((num_exits,), float(q), dtype=torch.float64).pow(torch.arange(num_exits, dtype=torch.float64))
    return powers / powers.sum()


def calibrate_thresholds(confidences: Tensor, proportions: Sequence[float] | Tensor) -> Tensor:
    """Per-exit thresholds (float64; the last is -inf) sending ``floor(N * proportions[k])`` of the N samples out at
    each exit but the last, from their confidences (exits × samples, e.g. the top softmax score of each exit).

    An exit whose share is 0, or larger than the samples still left, gets +inf: nobody leaves there.
    """
    if confidences.dim() != 2:
        raise ValueError(f"confidences must be exits × samples, got shape {tuple(confidences.shape)}")
    num_exits, num_samples = confidences.shape
    proportions = torch.as_tensor(proportions, dtype=torch.float64)
    if proportions.shape != (num_exits,):
        raise ValueError(f"{len(proportions)} proportions for {num_exits} exits")
    confidences = confidences.double()
    thresholds = torch.full((num_exits,), math.inf, dtype=torch.float64)
    exited = torch.zeros(num_samples, dtype=torch.bool)
    for k in range(num_exits - 1):
        leaving = math.floor(num_samples * float(proportions[k]))
        order = confidences[k].argsort(descending=True)
        remaining = order[~exited[order]]
        if 0 < leaving <= len(remaining):
            thresholds[k] = confidences[k, remaining[leaving - 1]]
        exited |= confidences[k] >= thresholds[k]
    thresholds[-1] = -math.inf
    return thresholds


def assign_exits(confidences: Tensor, thresholds: Tensor) -> Tensor:
    """Each sample's exit (int64): the first whose confidence reaches its threshold, else the last."""
    passes = confidences.double() >= thresholds.double()[:, None]
    passes[-1] = True
    return passes.int().argmax(dim=0)


def exit_outcomes(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every exit's confidence (its top score) and top-1 hit per sample, exits × samples each, from exits × samples ×
    classes scores: all that budgeted evaluation needs to know of a sample."""
    _check_scores(scores, labels)
    confidences, predictions = scores.max(dim=2)
    return confidences, predictions == labels[None]


def _check_outcomes(confidences: Tensor, correct: Tensor) -> None:
    if confidences.dim() != 2 or confidences.shape != correct.shape:
        raise ValueError(
            f"confidences and hits must both be exits × samples, got shapes {tuple(confidences.shape)} and "
            f"{tuple(correct.shape)}"
        )


def evaluate_thresholds(
    confidences: Tensor, correct: Tensor, thresholds: Tensor, exit_flops: Sequence[float]
) -> ThresholdResult:
    """Accuracy and mean FLOPs per image when every sample stops at its first confident exit (``confidences`` and
    top-1 hits ``correct``: exits × samples)."""
    _check_outcomes(confidences, correct)
    if len(exit_flops) != confidences.shape[0]:
        raise ValueError(f"{len(exit_flops)} FLOP figures for {confidences.shape[0]} exits")
    exits = assign_exits(confidences, thresholds)
    hits = correct[exits, torch.arange(confidences.shape[1])]
    fractions = torch.bincount(exits, minlength=confidences.shape[0]).double() / confidences.shape[1]
    mean_flops = float((fractions * torch.as_tensor(exit_flops, dtype=torch.float64)).sum())
    return ThresholdResult(float(hits.double().mean()), mean_flops, fractions.tolist())


def anytime_accuracy(correct: Tensor) -> list[float]:
    """Top-1 accuracy of each exit on its own (anytime prediction: the answer when time runs out after exit k), from
    the exits × samples top-1 hits."""
    if correct.dim() != 2:
        raise ValueError(f"hits must be exits × samples, got shape {tuple(correct.shape)}")
    return correct.double().mean(dim=1).tolist()


def budget_sweep(
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    exit_flops: Sequence[float],
    *,
    qs: Sequence[float] = AUTHORS_QS,
) -> list[BudgetPoint]:
    """One budget per q: thresholds calibrated on the validation confidences, then evaluated on validation and on
    test. ``val`` and ``test`` are each split's ``(confidences, top-1 hits)``, exits × samples (``exit_outcomes``)."""
    _check_outcomes(*val)
    _check_outcomes(*test)
    if val[0].shape[0] != test[0].shape[0]:
        raise ValueError(f"validation outcomes have {val[0].shape[0]} exits, test outcomes {test[0].shape[0]}")
    points = []
    for q in qs:
        proportions = geometric_exit_proportions(q, val[0].shape[0])
        thresholds = calibrate_thresholds(val[0], proportions)
        points.append(
            BudgetPoint(
                q=float(q),
                target_proportions=proportions.tolist(),
                thresholds=thresholds.tolist(),
                val=evaluate_thresholds(*val, thresholds, exit_flops),
                test=evaluate_thresholds(*test, thresholds, exit_flops),
            )
        )
    return points

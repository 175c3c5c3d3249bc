import math

import pytest
import torch
import torch.distributed as dist

from densevision.evaluation.classification import Accuracy
from densevision.registry import METRICS

# Scores over 4 classes; the true label's rank is 1, 2, 3 and 4 in turn.
SCORES = torch.tensor(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.3, 0.4, 0.2, 0.1],
        [0.1, 0.3, 0.2, 0.4],
        [0.1, 0.2, 0.3, 0.4],
    ]
)
LABELS = torch.tensor([0, 0, 2, 0])


def update_in_two_batches(metric):
    for rows in (slice(0, 1), slice(1, 4)):
        metric.update([{"scores": s} for s in SCORES[rows]], {"label": LABELS[rows]})


@pytest.mark.parametrize(
    ("topk", "expected"),
    [
        ((1, 5), {"top1": 0.25, "top5": 1.0}),  # top-5 of 4 classes is clipped to top-4
        ((1, 2, 3), {"top1": 0.25, "top2": 0.5, "top3": 0.75}),
    ],
)
def test_topk_accuracy_over_several_batches(topk, expected):
    metric = METRICS.build(dict(type="Accuracy", topk=topk))
    update_in_two_batches(metric)
    assert metric.compute() == pytest.approx(expected)


def test_reset_and_empty_split():
    metric = Accuracy()
    update_in_two_batches(metric)
    metric.reset()
    assert all(math.isnan(v) for v in metric.compute().values())


def test_sync_without_distributed_is_a_no_op():
    metric = Accuracy(topk=(1, 2))
    update_in_two_batches(metric)
    metric.sync()
    assert metric.correct.tolist() == [1, 2] and int(metric.total) == 4


def test_sync_sums_counts(monkeypatch):
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.mul_(2))
    metric = Accuracy(topk=(1, 2))
    update_in_two_batches(metric)
    metric.sync()
    assert metric.correct.tolist() == [2, 4] and int(metric.total) == 8
    assert metric.compute() == pytest.approx({"top1": 0.25, "top2": 0.5})


def test_bad_input_raises():
    metric = Accuracy()
    with pytest.raises(ValueError, match=r"label\(s\) \[4\] outside the 4 classes"):
        metric.update([{"scores": SCORES[0]}], {"label": torch.tensor([4])})
    with pytest.raises(ValueError, match="2 predictions for a batch of 1"):
        metric.update([{"scores": SCORES[0]}] * 2, {"label": torch.tensor([0])})
    with pytest.raises(ValueError, match="positive integers"):
        Accuracy(topk=(0,))

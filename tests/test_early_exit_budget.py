"""Budgeted batch classification and anytime accuracy from per-exit scores (densevision.early_exit.budget)."""

import math

import pytest
import torch

from densevision.early_exit.budget import (
    AUTHORS_QS,
    anytime_accuracy,
    assign_exits,
    budget_sweep,
    calibrate_thresholds,
    collect_exit_scores,
    evaluate_thresholds,
    exit_outcomes,
    geometric_exit_proportions,
)
from densevision.early_exit.task import EarlyExitClassifier
from tests.test_early_exit import TINY_MSDNET

NUM_CLASSES = 10


def scores_from(confidences, predictions):
    """Exits × samples × classes softmax-like scores whose top class is ``predictions`` with ``confidences``."""
    confidences = torch.as_tensor(confidences, dtype=torch.float64)
    scores = ((1 - confidences) / (NUM_CLASSES - 1))[..., None].repeat(1, 1, NUM_CLASSES)
    return scores.scatter_(2, torch.as_tensor(predictions)[..., None], confidences[..., None])


# Three exits, four samples. Sample 0 is confident at exit 0 and even more so at exit 1, where it has already left.
CONFIDENCES = [[0.9, 0.8, 0.3, 0.2], [0.99, 0.2, 0.95, 0.6], [0.5, 0.5, 0.5, 0.5]]
PREDICTIONS = [[1, 2, 0, 0], [1, 2, 3, 4], [1, 5, 3, 0]]
LABELS = torch.tensor([1, 5, 3, 4])


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, [4 / 7, 2 / 7, 1 / 7]), (1.0, [1 / 3, 1 / 3, 1 / 3]), (2.0, [1 / 7, 2 / 7, 4 / 7])],
)
def test_geometric_proportions(q, expected):
    torch.testing.assert_close(geometric_exit_proportions(q, 3), torch.tensor(expected, dtype=torch.float64))


def test_thresholds_by_hand_count_only_samples_still_in_the_network():
    # exit 0 takes floor(4 * 0.25) = 1 sample: the most confident (0.9); exit 1 takes 2 of the 3 left: samples 2
    # (0.95) and 3 (0.6), sample 0's 0.99 not counting; the last exit takes sample 1.
    thresholds = calibrate_thresholds(torch.tensor(CONFIDENCES), [0.25, 0.5, 0.25])
    assert thresholds.tolist() == pytest.approx([0.9, 0.6, -math.inf])
    assert assign_exits(torch.tensor(CONFIDENCES), thresholds).tolist() == [0, 2, 1, 1]


@pytest.mark.parametrize("q", [0.3, 0.8, 1.0, 1.7])
@pytest.mark.parametrize("num_exits", [2, 5])
def test_calibrated_thresholds_reproduce_the_target_proportions(q, num_exits):
    generator = torch.Generator().manual_seed(0)
    num_samples = 1000
    confidences = torch.rand(num_exits, num_samples, generator=generator)
    proportions = geometric_exit_proportions(q, num_exits)
    exits = assign_exits(confidences, calibrate_thresholds(confidences, proportions))
    counts = torch.bincount(exits, minlength=num_exits).tolist()
    targets = [math.floor(num_samples * float(p)) for p in proportions[:-1]]
    assert counts[:-1] == targets
    assert counts[-1] == num_samples - sum(targets)


def test_an_exit_with_no_share_lets_everyone_through():
    confidences = torch.tensor([[0.9, 0.8], [0.7, 0.6], [0.5, 0.4]])
    thresholds = calibrate_thresholds(confidences, [0.0, 0.5, 0.5])
    assert thresholds[0] == math.inf
    assert assign_exits(confidences, thresholds).tolist() == [1, 2]


def test_evaluation_with_thresholds_counts_accuracy_and_mean_flops():
    confidences, correct = exit_outcomes(scores_from(CONFIDENCES, PREDICTIONS), LABELS)
    torch.testing.assert_close(confidences, torch.tensor(CONFIDENCES, dtype=torch.float64))
    thresholds = torch.tensor([0.9, 0.6, -math.inf], dtype=torch.float64)
    result = evaluate_thresholds(confidences, correct, thresholds, [10, 30, 60])
    # exits [0, 2, 1, 1]: predictions 1 (right), 5 (right), 3 (right), 4 (right)
    assert result.accuracy == 1.0
    assert result.exit_fractions == [0.25, 0.5, 0.25]
    assert result.mean_flops == pytest.approx(0.25 * 10 + 0.5 * 30 + 0.25 * 60)
    assert anytime_accuracy(correct) == [0.25, 0.75, 0.75]


def test_a_sweep_calibrates_on_validation_and_applies_to_test():
    generator = torch.Generator().manual_seed(1)
    val = torch.rand(3, 200, NUM_CLASSES, generator=generator).softmax(2)
    test = torch.rand(3, 300, NUM_CLASSES, generator=generator).softmax(2)
    val_labels = torch.randint(NUM_CLASSES, (200,), generator=generator)
    test_labels = torch.randint(NUM_CLASSES, (300,), generator=generator)
    flops = [1.0, 2.0, 4.0]
    val, test = exit_outcomes(val, val_labels), exit_outcomes(test, test_labels)
    points = budget_sweep(val, test, flops)
    assert [p.q for p in points] == list(AUTHORS_QS) and len(points) == 39
    for point in points:
        targets = [math.floor(200 * p) / 200 for p in point.target_proportions[:-1]]
        assert point.val.exit_fractions[:-1] == pytest.approx(targets)
        expected = evaluate_thresholds(*test, torch.tensor(point.thresholds), flops)
        assert point.test == expected
    mean_flops = [p.test.mean_flops for p in points]
    assert mean_flops[0] < 1.5 and mean_flops[-1] > 2.5  # small q: mostly the first exit; large q: mostly the last


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: calibrate_thresholds(torch.rand(3, 4), [0.5, 0.5]), "2 proportions for 3 exits"),
        (
            lambda: evaluate_thresholds(torch.rand(2, 4), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2), [1.0]),
            "1 FLOP figures",
        ),  # fmt: skip
        (lambda: evaluate_thresholds(torch.rand(2, 4), torch.ones(2, 3), torch.zeros(2), [1.0, 2.0]), "both be exits"),
        (lambda: exit_outcomes(torch.rand(4, 3), torch.zeros(4)), "exits × samples × classes"),
        (lambda: anytime_accuracy(torch.ones(4, dtype=torch.bool)), "hits must be exits × samples"),
        (lambda: geometric_exit_proportions(0.0, 3), "q must be > 0"),
    ],
)
def test_bad_inputs_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_exit_scores_are_collected_in_order_in_eval_mode():
    task = EarlyExitClassifier(TINY_MSDNET).train()
    batches = [{"image": torch.randn(n, 3, 32, 32), "label": torch.arange(n) % 3} for n in (3, 2)]
    scores, labels = collect_exit_scores(task, batches)
    assert task.training  # the mode it had is restored
    task.eval()
    expected = torch.cat([torch.stack([p["exit_scores"] for p in task.predict(b)], 1) for b in batches], 1)
    assert scores.shape == (3, 5, 3)
    torch.testing.assert_close(scores, expected)
    assert labels.tolist() == [0, 1, 2, 0, 1]

import math

import pytest
import torch
import torch.distributed as dist

from densevision.evaluation import segmentation  # noqa: F401  (registers the metric)
from densevision.evaluation.segmentation import ConfusionMatrix, SegmentationMetric
from densevision.registry import METRICS

IGNORE = 255


def reference_scores(batches, num_classes, ignore_index):
    """mIoU / accuracies from per-class sets of pixel positions over the whole split: no matrix, no vectorisation."""
    truth = {c: set() for c in range(num_classes)}
    predicted = {c: set() for c in range(num_classes)}
    labelled = correct = 0
    for b, (preds, targets) in enumerate(batches):
        for i, (pred, target) in enumerate(zip(preds.tolist(), targets.tolist())):
            for y, (pred_row, target_row) in enumerate(zip(pred, target)):
                for x, (p, t) in enumerate(zip(pred_row, target_row)):
                    if t == ignore_index:
                        continue
                    truth[t].add((b, i, y, x))
                    predicted[p].add((b, i, y, x))
                    labelled += 1
                    correct += t == p
    iou, acc = [], []
    for c in range(num_classes):
        union = truth[c] | predicted[c]
        iou.append(len(truth[c] & predicted[c]) / len(union) if union else math.nan)
        acc.append(len(truth[c] & predicted[c]) / len(truth[c]) if truth[c] else math.nan)

    def nanmean(values):
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined)

    return {"mIoU": nanmean(iou), "mAcc": nanmean(acc), "aAcc": correct / labelled, "IoU": iou, "Acc": acc}


def random_batches(num_batches, num_classes, seed):
    """Batches of 2 masks 5×6 with void pixels; the last class never appears, the one before only in predictions."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        targets = torch.randint(0, num_classes - 2, (2, 5, 6), generator=generator)
        targets[torch.rand(targets.shape, generator=generator) < 0.2] = IGNORE
        preds = torch.randint(0, num_classes - 1, (2, 5, 6), generator=generator)
        agree = torch.rand(targets.shape, generator=generator) < 0.5
        preds = torch.where(agree & (targets != IGNORE), targets, preds)
        batches.append((preds, targets))
    return batches


def evaluate(batches, num_classes, **kwargs):
    metric = SegmentationMetric(num_classes, **kwargs)
    for preds, targets in batches:
        metric.update([{"mask": p} for p in preds], {"mask": targets})
    return metric


def assert_close_or_both_nan(actual, expected):
    assert (math.isnan(actual) and math.isnan(expected)) or actual == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_class_set_computation_over_several_batches(seed):
    batches = random_batches(num_batches=3, num_classes=5, seed=seed)
    names = ["sky", "road", "car", "ghost", "absent"]
    results = evaluate(batches, 5, ignore_index=IGNORE, class_names=names).compute()
    expected = reference_scores(batches, 5, IGNORE)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert results[key] == pytest.approx(expected[key], abs=1e-12)
    for c, name in enumerate(names):
        assert_close_or_both_nan(results[f"IoU/{name}"], expected["IoU"][c])
        assert_close_or_both_nan(results[f"Acc/{name}"], expected["Acc"][c])
    # "ghost" is predicted but never in the ground truth: IoU 0 (counted in mIoU), accuracy undefined.
    assert results["IoU/ghost"] == 0.0 and math.isnan(results["Acc/ghost"])
    # "absent" is in neither: NaN, left out of the mean.
    assert math.isnan(results["IoU/absent"]) and math.isnan(results["Acc/absent"])


def test_hand_computed_example():
    target = torch.tensor([[0, 0, 1, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 2]])  # the void pixel's prediction (2) must not count
    results = evaluate([(pred[None], target[None])], 3).compute()
    assert results["IoU/0"] == 0.5 and results["IoU/1"] == 0.5 and math.isnan(results["IoU/2"])
    assert results["Acc/0"] == 0.5 and results["Acc/1"] == 1.0
    assert results["mIoU"] == 0.5
    assert results["mAcc"] == 0.75
    assert results["aAcc"] == pytest.approx(2 / 3)


def test_sums_over_split_not_per_image_mean():
    # Image 1: class 1 perfectly predicted on 1 pixel; image 2: class 1 IoU 1/3 on 3 pixels. Split IoU = 2/4.
    targets = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 1, 0]]])
    preds = torch.tensor([[[1, 0, 0, 0]], [[1, 0, 0, 0]]])
    results = evaluate([(preds, targets)], 2).compute()
    assert results["IoU/1"] == pytest.approx(2 / 4)


def test_confusion_matrix_rows_are_ground_truth():
    matrix = ConfusionMatrix(3, ignore_index=IGNORE)
    matrix.update(torch.tensor([2, 2, 0, 1]), torch.tensor([0, 0, 0, IGNORE]))
    assert matrix.matrix.dtype == torch.int64
    assert matrix.matrix.tolist() == [[1, 0, 2], [0, 0, 0], [0, 0, 0]]
    matrix.reset()
    assert matrix.matrix.sum() == 0


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        ([0, 0], [0, 11], r"ground-truth label\(s\) \[11\]"),
        ([0, 0], [-1, 0], r"ground-truth label\(s\) \[-1\]"),
        ([0, 7], [0, 1], r"predicted label\(s\) \[7\]"),
    ],
)
def test_out_of_range_labels_raise_naming_the_value(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(3, ignore_index=IGNORE).update(torch.tensor(pred), torch.tensor(target))


def test_bad_label_error_names_the_image_path():
    metric = SegmentationMetric(3)
    batch = {"mask": torch.tensor([[[0, 9]]]), "meta": [{"path": "trainannot/0001.png"}]}
    with pytest.raises(ValueError, match=r"trainannot/0001\.png.*\[9\]"):
        metric.update([{"mask": torch.tensor([[0, 0]])}], batch)


def test_shape_and_count_mismatches_raise():
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match="does not match"):
        metric.update([{"mask": torch.zeros(2, 3, dtype=torch.long)}], {"mask": torch.zeros(1, 2, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match="2 predictions for a batch of 1"):
        metric.update([{"mask": torch.zeros(2, 2, dtype=torch.long)}] * 2, {"mask": torch.zeros(1, 2, 2)})
    with pytest.raises(ValueError, match="class_names has 2 names"):
        SegmentationMetric(3, class_names=["a", "b"])


def test_reset_clears_the_split():
    metric = evaluate(random_batches(1, 4, seed=0), 4)
    metric.reset()
    assert math.isnan(metric.compute()["mIoU"])
    assert math.isnan(metric.compute()["aAcc"])


def test_sync_without_distributed_is_a_no_op():
    metric = evaluate(random_batches(2, 4, seed=3), 4)
    before = metric.confusion.matrix.clone()
    results = metric.compute()
    metric.sync()
    assert torch.equal(metric.confusion.matrix, before)
    assert metric.compute() == pytest.approx(results, nan_ok=True)


def test_sync_sums_the_confusion_matrix_across_processes(monkeypatch):
    # Two ranks that saw the same data: all_reduce doubles every count, the scores stay the same.
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.mul_(2))
    metric = evaluate(random_batches(2, 4, seed=4), 4)
    before = metric.confusion.matrix.clone()
    results = metric.compute()
    metric.sync()
    assert torch.equal(metric.confusion.matrix, 2 * before)
    assert metric.compute() == pytest.approx(results, nan_ok=True)


def test_built_from_registry_with_summary_table():
    metric = METRICS.build(dict(type="SegmentationMetric", num_classes=3, class_names=["Sky", "Road", "Car"]))
    metric.update([{"mask": torch.tensor([[0, 1], [1, 1]])}], {"mask": torch.tensor([[[0, 1], [0, 1]]])})
    table = metric.summary_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "%", "Acc", "%"]
    assert lines[2].split() == ["Sky", "50.00", "50.00"]
    assert lines[3].split() == ["Road", "66.67", "100.00"]
    assert lines[4].split() == ["Car", "-", "-"]
    assert lines[-2].split() == ["mean", "58.33", "75.00"]
    assert lines[-1].split() == ["aAcc", "75.00"]

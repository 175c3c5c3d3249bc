"""tools/test.py's early-exit report: per-exit accuracy and FLOPs, the budget sweep calibrated on val, its files."""

import json
import math

import pytest
import torch

from densevision.config import Config
from densevision.early_exit.budget import BudgetPoint, ThresholdResult
from densevision.early_exit.metric import EarlyExitAccuracy
from densevision.early_exit.report import REPORT_FILES, matching_budget
from densevision.early_exit.task import EarlyExitClassifier
from densevision.engine.launch import run_test
from densevision.engine.runner import Runner
from densevision.evaluation.base import interleave
from densevision.flops import count_flops
from tests.test_early_exit import TINY_MSDNET, prediction


def early_exit_config(tmp_path):
    shapes = dict(type="ShapesClassification", root=str(tmp_path / "data"), num_train=8, num_val=6, num_test=9)
    pipeline = [dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))]
    loader = dict(batch_size=4, num_workers=0, shuffle=False)
    return dict(
        work_dir=str(tmp_path / "run"),
        seed=0,
        device="cpu",
        model=dict(type="EarlyExitClassifier", model=TINY_MSDNET),
        train_dataloader=dict(loader, shuffle=True, dataset=dict(shapes, split="train", pipeline=pipeline)),
        val_dataloader=dict(loader, dataset=dict(shapes, split="val", pipeline=pipeline)),
        test_dataloader=dict(loader, dataset=dict(shapes, split="test", pipeline=pipeline)),
        val_evaluator=dict(type="EarlyExitAccuracy"),
        test_evaluator=dict(type="EarlyExitAccuracy"),
        optim_wrapper=dict(optimizer=dict(type="Adam", lr=1e-3)),
        train_cfg=dict(max_epochs=None, max_iters=2, val_interval=2),
        checkpoint=dict(monitor="top1", mode="max"),
        visualization=dict(num_samples=0),
    )


def test_test_run_reports_exits_and_budgets_calibrated_on_val(tmp_path):
    cfg = early_exit_config(tmp_path)
    Runner(cfg).train()
    shown = []
    out = tmp_path / "results" / "metrics.json"
    metrics, table = run_test(Config(cfg), tmp_path / "run" / "last.pth", out, show=shown.append)
    assert json.loads(out.read_text())["top1/exit2"] == pytest.approx(metrics["top1/exit2"])
    assert len(shown) == 2 and "budgeted batch" in shown[1] and table.endswith(shown[1])
    report = json.loads((out.parent / REPORT_FILES["report"]).read_text())
    assert (report["val_images"], report["test_images"], report["image_shape"]) == (6, 9, [3, 64, 64])
    task = EarlyExitClassifier(TINY_MSDNET)
    expected_flops = count_flops(task.model, torch.zeros(1, 3, 64, 64), exits=task.model.classifiers).at_exits
    assert [row["flops"] for row in report["anytime"]] == expected_flops
    assert [row["top1"] for row in report["anytime"]] == pytest.approx([metrics[f"top1/exit{e}"] for e in range(3)])
    assert len(report["budgeted"]) == 39
    for row in report["budgeted"]:
        assert min(expected_flops) <= row["mean_flops"] <= max(expected_flops)
        assert sum(row["exit_fractions"]) == pytest.approx(1.0)
        assert row["thresholds"][-1] is None  # -inf: the last exit takes everyone left (JSON has no infinity)
    calibration = json.loads((out.parent / REPORT_FILES["thresholds"]).read_text())
    assert calibration["exit_flops"] == expected_flops
    assert [b["mean_flops"] for b in calibration["budgets"]] == [r["val_mean_flops"] for r in report["budgeted"]]
    assert (out.parent / REPORT_FILES["plot"]).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("val_is_test", [False, True])
def test_thresholds_fitted_on_the_test_split_itself_are_flagged(tmp_path, caplog, val_is_test):
    """The MSDNet anytime configs evaluate on test during training (the authors' run without --use-valid): a budget
    sweep calibrated there is fitted to the test images, which the log says."""
    cfg = early_exit_config(tmp_path)
    if val_is_test:
        cfg["val_dataloader"] = cfg["test_dataloader"]
    Runner(cfg).train()
    with caplog.at_level("WARNING", logger="densevision"):
        run_test(Config(cfg), tmp_path / "run" / "last.pth", tmp_path / "metrics.json")
    assert ("the val split is the test split itself" in caplog.text) == val_is_test


def test_metrics_without_a_report_add_nothing(tmp_path):
    cfg = early_exit_config(tmp_path)
    cfg.update(model=dict(type="Classifier", model=dict(type="DenseNet", growth_rate=4, block_config=(1,),
                                                        stem_channels=8, num_classes=3)),  # fmt: skip
               val_evaluator=dict(type="Accuracy"), test_evaluator=dict(type="Accuracy"))  # fmt: skip
    Runner(cfg).train()
    out = tmp_path / "metrics.json"
    _, table = run_test(Config(cfg), tmp_path / "run" / "last.pth", out)
    assert "budgeted" not in table and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["metrics.json"]


def test_per_image_records_gather_across_processes_that_saw_nothing():
    """Rank 1 saw no image (a split smaller than the process count): gathering its empty records changes nothing."""
    single, rank0, rank1 = EarlyExitAccuracy(), EarlyExitAccuracy(), EarlyExitAccuracy()
    preds = [prediction([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), prediction([[0.1, 0.2, 0.7], [0.3, 0.6, 0.1]])]
    batch = {"label": torch.tensor([1, 2]), "image": torch.zeros(2, 3, 8, 8)}
    single.update(preds, batch)
    rank0.update(preds, batch)
    rank0.records = interleave([rank0.records, rank1.records])
    assert rank0.compute() == single.compute() == {"top1": 0.5, "top1/exit0": 0.5, "top1/exit1": 0.5}
    confidences, correct = rank0.exit_outcomes()
    torch.testing.assert_close(confidences, torch.tensor([[0.7, 0.7], [0.8, 0.6]], dtype=torch.float64))
    assert correct.tolist() == [[False, True], [True, False]]
    assert math.isnan(rank1.compute()["top1"])
    with pytest.raises(ValueError, match="saw no images"):
        rank1.exit_outcomes()


def point(q, accuracy, mean_flops):
    result = ThresholdResult(accuracy, mean_flops, [1.0])
    return BudgetPoint(q=q, target_proportions=[1.0], thresholds=[0.0], val=result, test=result)


@pytest.mark.parametrize(
    ("last_accuracy", "expected_q"), [(0.9, 0.5), (0.904, 0.5), (0.906, 1.0), (0.95, 1.5), (0.99, None)]
)
def test_the_cheapest_budget_within_half_a_point_of_the_last_exit(last_accuracy, expected_q):
    points = [point(1.5, 0.95, 30.0), point(0.5, 0.9, 10.0), point(1.0, 0.91, 20.0)]
    match = matching_budget(points, last_accuracy)
    assert (match.q if match else None) == expected_q


def test_exit_flops_leave_the_batchnorm_statistics_and_mode_alone():
    task = EarlyExitClassifier(TINY_MSDNET).train()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    flops = task.exit_flops((3, 32, 32))
    assert len(flops) == 3 and flops == sorted(flops) and task.training
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())

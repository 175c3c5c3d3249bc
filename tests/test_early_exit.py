"""EarlyExitClassifier and EarlyExitAccuracy: joint loss, per-exit predictions and accuracy, training through the
runner."""

import json

import pytest
import torch
from torch import nn

from densevision.early_exit.metric import EarlyExitAccuracy
from densevision.early_exit.task import EarlyExitClassifier
from densevision.engine.runner import Runner
from densevision.registry import METRICS, TASKS

TINY_MSDNET = dict(
    type="MSDNet",
    num_blocks=3,
    step_mode="even",
    step=1,
    base=1,
    stem_channels=4,
    growth_rate=4,
    growth_factors=(1, 2),
    bottleneck_factors=(1, 2),
    classifier_channels=8,
    num_classes=3,
)


def batch(size=4):
    return {"image": torch.randn(size, 3, 32, 32), "label": torch.tensor([0, 1, 2, 1][:size])}


@pytest.mark.parametrize("exit_weights", [None, (0.5, 0.0, 2.0)])
def test_loss_is_the_weighted_sum_of_the_exits_cross_entropies(exit_weights):
    task = TASKS.build(dict(type="EarlyExitClassifier", model=TINY_MSDNET, exit_weights=exit_weights)).eval()
    data = batch()
    losses = task.loss(data)
    exits = task.model(data["image"])
    expected = [nn.functional.cross_entropy(logits, data["label"]) for logits in exits]
    for k, value in enumerate(expected):
        torch.testing.assert_close(losses[f"loss/exit{k}"], value)
    weights = exit_weights or (1.0, 1.0, 1.0)
    torch.testing.assert_close(losses["loss"], sum(w * v for w, v in zip(weights, expected, strict=True)))
    assert set(losses) == {"loss", "loss/exit0", "loss/exit1", "loss/exit2"}


@pytest.mark.parametrize(
    ("arguments", "description"),
    [
        (dict(), "early exits: 3, loss weights (1, 1, 1); predictions from exit 2"),
        (
            dict(exit_weights=(0.5, 0, 2), predict_exit=-2),
            "early exits: 3, loss weights (0.5, 0, 2); predictions from exit 1",
        ),
    ],
)
def test_the_run_log_names_the_weights_and_the_answering_exit(arguments, description):
    assert EarlyExitClassifier(TINY_MSDNET, **arguments).describe() == description


@pytest.mark.parametrize(("predict_exit", "chosen"), [(-1, 2), (0, 0), (1, 1)])
def test_predict_answers_from_the_chosen_exit_and_returns_every_exit(predict_exit, chosen):
    task = EarlyExitClassifier(TINY_MSDNET, predict_exit=predict_exit).eval()
    data = batch(2)
    predictions = task.predict(data)
    probabilities = torch.stack([logits.softmax(1) for logits in task.model(data["image"])], 1)
    assert len(predictions) == 2
    for prediction, expected in zip(predictions, probabilities, strict=True):
        assert prediction["exit_scores"].shape == (3, 3)
        torch.testing.assert_close(prediction["exit_scores"], expected)
        torch.testing.assert_close(prediction["scores"], expected[chosen])
        assert prediction["label"] == expected[chosen].argmax()
    # forward gives the chosen exit's logits and runs no deeper block
    ran = []
    for index, block in enumerate(task.model.blocks):
        block.register_forward_hook(lambda module, args, output, index=index: ran.append(index))
    torch.testing.assert_close(task(data["image"]).softmax(1), probabilities[:, chosen])
    assert ran == list(range(chosen + 1))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(exit_weights=(1.0, 1.0)), "exit_weights must be 3"),
        (dict(exit_weights=(0.0, 0.0, 0.0)), "not all zero"),
        (dict(predict_exit=3), "predict_exit must index one of the 3 exits"),
    ],
)
def test_bad_task_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        EarlyExitClassifier(TINY_MSDNET, **arguments)


def test_a_single_exit_model_is_refused():
    with pytest.raises(ValueError, match="needs a model with exits.*Linear"):
        EarlyExitClassifier(nn.Linear(2, 2))


def prediction(exit_scores, chosen=-1):
    scores = torch.tensor(exit_scores, dtype=torch.float32)
    return {"label": scores[chosen].argmax(), "scores": scores[chosen], "exit_scores": scores}


def test_metric_reports_each_exit_and_the_chosen_one():
    metric = METRICS.build(dict(type="EarlyExitAccuracy", topk=(1, 2)))
    preds = [
        prediction([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]),  # label 1: exit 0 wrong (right in top 2), exit 1 right
        prediction([[0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]),  # label 2: exit 0 right, exit 1 wrong (and not in top 2)
    ]
    metric.update(preds[:1], {"label": torch.tensor([1])})
    metric.update(preds[1:], {"label": torch.tensor([2])})
    assert metric.compute() == {
        "top1": 0.5,
        "top1/exit0": 0.5,
        "top1/exit1": 0.5,
        "top2": 0.5,
        "top2/exit0": 1.0,
        "top2/exit1": 0.5,
    }
    metric.reset()
    metric.update([prediction([[0.1, 0.9], [0.9, 0.1]], chosen=0)], {"label": torch.tensor([1])})
    assert metric.compute()["top1"] == 1.0 and metric.compute()["top1/exit1"] == 0.0


def test_metric_refuses_predictions_without_exit_scores():
    with pytest.raises(ValueError, match="exit_scores"):
        EarlyExitAccuracy().update([{"label": 0, "scores": torch.ones(3)}], {"label": torch.tensor([0])})


def test_an_early_exit_classifier_trains_and_tests_through_the_runner(tmp_path):
    shapes = dict(type="ShapesClassification", root=str(tmp_path / "data"), num_train=8, num_val=4, num_test=4)
    pipeline = [dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))]
    loader = dict(batch_size=4, num_workers=0, shuffle=False)
    cfg = dict(
        work_dir=str(tmp_path / "run"),
        seed=0,
        device="cpu",
        model=dict(type="EarlyExitClassifier", model=TINY_MSDNET, exit_weights=(1.0, 1.0, 2.0)),
        train_dataloader=dict(loader, shuffle=True, dataset=dict(shapes, split="train", pipeline=pipeline)),
        val_dataloader=dict(loader, dataset=dict(shapes, split="val", pipeline=pipeline)),
        test_dataloader=dict(loader, dataset=dict(shapes, split="test", pipeline=pipeline)),
        val_evaluator=dict(type="EarlyExitAccuracy"),
        test_evaluator=dict(type="EarlyExitAccuracy"),
        optim_wrapper=dict(optimizer=dict(type="Adam", lr=1e-3)),
        train_cfg=dict(max_epochs=None, max_iters=2, val_interval=1),
        checkpoint=dict(monitor="top1", mode="max"),
        visualization=dict(num_samples=0),
        log_interval=1,
    )
    runner = Runner(cfg)
    before = {k: v.clone() for k, v in runner.task.state_dict().items()}
    metrics = runner.train()
    assert set(metrics) >= {"top1", "top1/exit0", "top1/exit1", "top1/exit2"}
    assert metrics["top1"] == metrics["top1/exit2"]  # the chosen exit is the last
    after = runner.task.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # two optimizer steps changed the weights
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["mode"] == "train"]
    assert len(train) == 2 and {"loss", "loss/exit0", "loss/exit2"} <= set(train[0])
    assert (tmp_path / "run" / "best.pth").is_file()
    tested = runner.test(tmp_path / "run" / "last.pth")
    assert set(tested) == set(metrics) | {"checkpoint"}

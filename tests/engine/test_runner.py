import json

import numpy as np
import pytest
import torch

from densevision.config import Config
from densevision.data.shapes import ShapesDetection
from densevision.engine import loaders
from densevision.engine.checkpoint import load_checkpoint
from densevision.engine.errors import CheckpointError, NonFiniteLossError, WorkDirError
from densevision.engine.loaders import describe_dataset
from densevision.engine.loop import TrainLoop
from densevision.engine.runner import Runner, seed_everything
from densevision.registry import ConfigError
from tests.engine.toys import ToySegmentation, ToySegmentor, toy_config


def records(work_dir, mode):
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["mode"] == mode]


def test_a_run_writes_checkpoints_logs_plots_and_samples(tmp_path):
    ToySegmentation.checked.clear()
    cfg = toy_config(tmp_path, visualization=dict(num_samples=2), log_interval=2)
    cfg["train_dataloader"]["num_workers"] = 2
    runner = Runner(cfg)
    metrics = runner.train()

    assert ToySegmentation.checked == [8, 8]  # train and val datasets checked before training
    expected_counts = torch.bincount(ToySegmentation().masks.flatten(), minlength=3)
    assert torch.equal(runner.task.class_counts, expected_counts)  # on_train_start saw the training masks
    assert [r["step"] for r in records(tmp_path, "train")] == [2, 4, 6, 8]  # 4 iterations per epoch, every 2nd
    assert {"loss", "loss_ce", "lr"} <= set(records(tmp_path, "train")[0])
    val = records(tmp_path, "val")
    assert [r["epoch"] for r in val] == [1, 2] and val[-1]["acc"] == pytest.approx(metrics["acc"])
    assert Config.fromfile(tmp_path / "config.py")["train_cfg"]["max_epochs"] == 2
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "predictions" / "epoch_002").iterdir()) == [
        "sample_00.png",
        "sample_01.png",
    ]
    last = load_checkpoint(tmp_path / "last.pth")
    assert last["meta"]["epoch"] == 2 and last["meta"]["iteration"] == 8
    best = load_checkpoint(tmp_path / "best.pth")
    accuracies = [r["acc"] for r in val]
    assert best["meta"]["epoch"] == 1 + int(np.argmax(accuracies))
    assert best["best"]["metric"] == pytest.approx(max(accuracies))

    tested = runner.test(tmp_path / "last.pth")
    assert tested.pop("checkpoint") == str(tmp_path / "last.pth")  # which weights were tested
    where = f"test output (run.log, metrics.jsonl, predictions/test) goes to {tmp_path}"
    assert where in (tmp_path / "run.log").read_text()
    assert tested == pytest.approx(metrics)  # the test split is the validation split here
    assert "acc" in runner.test_evaluator.summary_table()


def resumable_config(work_dir, **overrides):
    """Everything a resume must restore: dropout and flips (global RNG), shuffling, momentum, accumulation with a
    remainder, a per-iteration warm-up chained with a per-epoch decay, early-stopping and best-metric state."""
    dataset = dict(type="EngineToySegmentation", num_samples=8, flip=True)
    return toy_config(
        work_dir,
        model=dict(type="EngineToySegmentor", drop_rate=0.3),
        train_dataloader=dict(batch_size=3, num_workers=0, shuffle=True, dataset=dataset),
        optim_wrapper=dict(
            optimizer=dict(type="RMSprop", lr=1e-2, momentum=0.9, weight_decay=1e-4),
            paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
            accumulate_steps=2,
            clip_grad=dict(max_norm=1.0),
        ),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=4),
            dict(type="ExponentialLR", gamma=0.9, by_epoch=True),
        ],
        train_cfg=dict(max_epochs=3, val_interval=1),
        early_stopping=dict(monitor="acc", patience=5, mode="max"),
        **overrides,
    )


def test_an_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, monkeypatch):
    Runner(resumable_config(tmp_path / "straight")).train()

    interrupted = tmp_path / "interrupted"
    original_loss = ToySegmentor.loss

    def loss_until_interrupt(self, batch):  # Ctrl-C in the middle of epoch 3 (3 iterations per epoch)
        if self.loss_calls == 7:
            raise KeyboardInterrupt
        return original_loss(self, batch)

    monkeypatch.setattr(ToySegmentor, "loss", loss_until_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Runner(resumable_config(interrupted)).train()
    monkeypatch.undo()
    assert load_checkpoint(interrupted / "last.pth")["meta"]["epoch"] == 2

    torch.manual_seed(1234)  # whatever the process did in between must not matter
    Runner(resumable_config(interrupted, resume="auto")).train()

    expected = load_checkpoint(tmp_path / "straight" / "last.pth")
    actual = load_checkpoint(interrupted / "last.pth")
    assert actual["meta"] == expected["meta"]
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][key], value, atol=1e-6, rtol=0)
    expected_moments = expected["optim_wrapper"]["optimizer"]["state"]
    for index, state in actual["optim_wrapper"]["optimizer"]["state"].items():
        torch.testing.assert_close(state["square_avg"], expected_moments[index]["square_avg"], atol=1e-6, rtol=0)
    assert actual["optim_wrapper"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        expected["optim_wrapper"]["optimizer"]["param_groups"][0]["lr"]
    )
    assert actual["history"] == expected["history"]
    assert actual["best"] == expected["best"] and actual["early_stopping"] == expected["early_stopping"]


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    cfg = toy_config(
        tmp_path,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.0)),  # nothing changes, so nothing improves
        train_cfg=dict(max_epochs=10, val_interval=1),
        early_stopping=dict(monitor="acc", patience=2, mode="max"),
    )
    Runner(cfg).train()
    last = load_checkpoint(tmp_path / "last.pth")
    assert last["meta"]["epoch"] == 3  # epoch 1 sets the best, epochs 2 and 3 fail to beat it
    assert last["early_stopping"]["bad_evaluations"] == 2
    assert len(records(tmp_path, "val")) == 3


def test_max_iters_trains_that_many_batches_and_evaluates_at_the_end(tmp_path, caplog):
    # 4 batches per epoch: 6 iterations are one epoch and half of the next, whose last batch still steps.
    cfg = toy_config(
        tmp_path, train_cfg=dict(max_epochs=None, max_iters=6, val_interval=5), optim_wrapper=dict(
            optimizer=dict(type="SGD", lr=1e-2), accumulate_steps=2)
    )  # fmt: skip
    with caplog.at_level("INFO", logger="densevision"):
        Runner(cfg).train()
    last = load_checkpoint(tmp_path / "last.pth")
    assert (last["meta"]["epoch"], last["meta"]["iteration"]) == (2, 6)
    assert [r["epoch"] for r in records(tmp_path, "val")] == [2]
    assert "effective batch 4 = 2 per process x 1 process(es) x 2 accumulation step(s)" in caplog.text
    assert "training length: 6 iterations (4 batches per epoch)" in caplog.text


def test_a_nan_loss_stops_with_epoch_and_iteration_and_keeps_the_last_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, model=dict(type="EngineToySegmentor", nan_at_call=6))  # 4 iterations per epoch
    message = r"loss is nan at epoch 2, iteration 2/4 \(global iteration 6\); .* last good checkpoint is .*last.pth"
    with pytest.raises(NonFiniteLossError, match=message):
        Runner(cfg).train()
    assert load_checkpoint(tmp_path / "last.pth")["meta"]["epoch"] == 1


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = toy_config(tmp_path, checkpoint=dict(monitor=None))
    last = tmp_path / "last.pth"
    real_save = torch.save
    seen = {}

    def save_failing_at_epoch_two(obj, file, *args, **kwargs):
        if obj["meta"]["epoch"] == 2:
            seen["before"] = last.read_bytes()
            file.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_failing_at_epoch_two)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*last.pth.*No space left"):
        Runner(cfg).train()
    assert last.read_bytes() == seen["before"]
    assert load_checkpoint(last)["meta"]["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_an_unwritable_work_dir_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(WorkDirError, match="work dir .*file/run is not writable"):
        Runner(toy_config(tmp_path / "file" / "run"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(train_cfg=dict(max_epoch=2)), "unknown key 'max_epoch' in train_cfg; did you mean 'max_epochs'"),
        (dict(checkpoint=dict(monitor="mIoU")), r"checkpoint.monitor='mIoU' is not among .*\['acc', 'pixels'\]"),
        (dict(checkpoint=dict(monitor="acc", mode="maximum")), "checkpoint.mode must be 'max' or 'min'"),
        (dict(early_stopping=dict(monitor="acc")), "early_stopping needs a monitor and a patience"),
        (dict(train_cfg=dict(max_epochs=0)), "max_epochs must be a positive integer"),
        (dict(train_cfg=dict(max_epochs=2, max_iters=5)), "exactly one of max_epochs and max_iters"),
        (dict(train_cfg=dict(max_epochs=None, max_iters=-1)), "max_iters must be a positive integer"),
        (dict(train_dataloader=dict(batch_size=2)), "config has no train_dataloader with a dataset"),
        (dict(visualization=dict(samples=2)), "did you mean 'num_samples'"),
        (dict(val_dataloader=None, early_stopping=dict(monitor="acc", patience=2)), "early_stopping needs validation"),
    ],
)
def test_bad_runner_config_names_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        Runner(toy_config(tmp_path, **overrides)).train()


def test_seeding_and_deterministic_mode():
    try:
        seed_everything(3, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        first = (np.random.rand(), torch.rand(2))
        seed_everything(3)
        assert not torch.are_deterministic_algorithms_enabled()
        second = (np.random.rand(), torch.rand(2))
    finally:
        seed_everything(0)
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_dataloader_workers_draw_different_numbers_on_different_ranks():
    def worker_draw(rank):
        torch.manual_seed(42)  # the same base seed on both ranks
        loaders.seed_worker(0, rank=rank)
        return np.random.rand(), torch.rand(()).item()

    assert worker_draw(0) == worker_draw(0)
    assert worker_draw(0)[0] != worker_draw(1)[0] and worker_draw(0)[1] != worker_draw(1)[1]


def test_load_from_starts_from_another_runs_weights_with_a_fresh_schedule(tmp_path):
    first = Runner(toy_config(tmp_path / "first", train_cfg=dict(max_epochs=1, val_interval=1)))
    first.train()
    trained = {k: v.clone() for k, v in first.task.state_dict().items()}

    zero_lr = dict(optimizer=dict(type="SGD", lr=0.0), paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
    cfg = toy_config(tmp_path / "second", load_from=str(tmp_path / "first" / "last.pth"), optim_wrapper=zero_lr)
    second = Runner(cfg)
    second.train()
    assert second.progress.epoch == 2  # a fresh run of its own max_epochs, not a resume of the first
    for key, value in second.task.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)  # lr 0: the loaded weights are kept as is

    missing = toy_config(tmp_path / "third", load_from=str(tmp_path / "nowhere.pth"))
    with pytest.raises(CheckpointError, match="load_from checkpoint not found: .*nowhere.pth"):
        Runner(missing).train()


def test_tensorboard_events_mirror_the_jsonl_log(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    Runner(toy_config(tmp_path, log_interval=2)).train()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert any(tag.endswith("loss") and tag.startswith("train") for tag in tags), tags
    val_acc = [tag for tag in tags if tag.startswith("val") and tag.endswith("acc")]
    assert val_acc, tags
    logged = [round(r["acc"], 5) for r in records(tmp_path, "val")]
    assert [round(e.value, 5) for e in events.Scalars(val_acc[0])] == logged


@pytest.mark.parametrize(("check_datasets", "checked"), [(True, [8, 8]), (False, [])])
def test_dataset_checks_before_training_can_be_switched_off(tmp_path, check_datasets, checked):
    ToySegmentation.checked.clear()
    cfg = toy_config(tmp_path, check_datasets=check_datasets, train_cfg=dict(max_epochs=1, val_interval=1))
    Runner(cfg).train()
    assert ToySegmentation.checked == checked


def test_the_run_log_names_the_data_each_split_reads(tmp_path):
    train = dict(type="EngineToySegmentation", num_samples=8, seed=1, flip=True)
    val = dict(type="EngineToySegmentation", num_samples=4, seed=2)
    Runner(
        toy_config(
            tmp_path,
            train_dataloader=dict(batch_size=2, dataset=train),
            val_dataloader=dict(batch_size=2, dataset=val),
            test_dataloader=dict(batch_size=2, dataset=val),
            train_cfg=dict(max_epochs=1),
        )
    ).train()
    log = (tmp_path / "run.log").read_text()
    assert "training on ToySegmentation(num_samples=8, seed=1, flip=True): 8 samples; effective batch 2" in log
    assert "evaluating on ToySegmentation(num_samples=4, seed=2): 4 samples" in log


def test_a_detection_split_is_named_by_its_config_arguments(tmp_path):
    arguments = dict(root=str(tmp_path / "shapes"), split="val", num_train=1, num_val=2, num_test=1, image_size=32)
    dataset = ShapesDetection(**arguments)
    dataset_cfg = dict(type="ShapesDetection", **arguments, pipeline=[dict(type="Normalize")])
    root = tmp_path / "shapes"
    assert describe_dataset(dataset, dataset_cfg) == (
        f"ShapesDetection(root={str(root)!r}, split='val', num_train=1, num_val=2, num_test=1, image_size=32): "
        "2 samples"
    )


def test_a_steps_losses_are_read_once_the_next_step_is_queued(tmp_path, monkeypatch):
    """Reading a loss waits for the device: done at once it would idle a GPU mid-step while the host launches the
    backward, so the log reads each step's losses after the next step (or at the epoch's end)."""
    reads = []
    record_step = TrainLoop._record_step

    def spy(self, step, bar):
        reads.append((step.iteration, self.task.loss_calls))
        return record_step(self, step, bar)

    monkeypatch.setattr(TrainLoop, "_record_step", spy)
    Runner(toy_config(tmp_path, train_cfg=dict(max_epochs=1), val_dataloader=None, checkpoint={})).train()
    assert reads == [(1, 2), (2, 3), (3, 4), (4, 4)]  # 4 iterations per epoch


def test_a_nan_loss_is_reported_before_an_error_it_causes_in_the_next_step(tmp_path, monkeypatch):
    original_loss = ToySegmentor.loss

    def failing_after_nan(self, batch):
        if self.loss_calls == 6:  # the call after the NaN one
            raise RuntimeError("the weights are NaN now")
        return original_loss(self, batch)

    monkeypatch.setattr(ToySegmentor, "loss", failing_after_nan)
    cfg = toy_config(tmp_path, model=dict(type="EngineToySegmentor", nan_at_call=6))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, iteration 2/4 \(global iteration 6\)"):
        Runner(cfg).train()


def test_clipped_runs_log_the_gradient_norm_of_each_step(tmp_path):
    optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(max_norm=0.5))
    Runner(toy_config(tmp_path, train_cfg=dict(max_epochs=1), optim_wrapper=optim_wrapper)).train()
    norms = [r["grad_norm"] for r in records(tmp_path, "train")]
    assert len(norms) == 4 and all(isinstance(n, float) and n > 0 for n in norms)

"""Resuming as a user does it (tools/train.py --resume): the config given now rules the optimizer settings and
schedules, the log holds each step once, a finished run says so, and bad checkpoints are one line each."""

import json
import re

import pytest
import torch

from densevision.engine.checkpoint import load_checkpoint, save_checkpoint
from densevision.engine.runner import Runner
from tests.engine.test_runner import resumable_config
from tests.engine.toys import ToySegmentor, toy_config, write_toy_config
from tests.tool_loader import load_tool


@pytest.fixture(scope="module")
def train_tool():
    return load_tool("train")


def records(work_dir, mode=None):
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if mode is None or r["mode"] == mode]


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_resume_takes_the_lr_and_schedule_of_the_config_it_is_given(tmp_path, train_tool, caplog):
    config = write_toy_config(
        tmp_path / "cfg.py", "param_scheduler = [dict(type='ExponentialLR', gamma=0.5, by_epoch=True)]\n"
    )
    run = ["--work-dir", str(tmp_path / "run")]
    assert train_tool.main([str(config), *run]) == 0
    assert {r["lr"] for r in records(tmp_path / "run", "train")} == {1e-3}  # default_runtime's RMSprop lr

    options = ["optim_wrapper.optimizer.lr=1e-4", "param_scheduler.0.gamma=0.1", "train_cfg.max_epochs=2"]
    with caplog.at_level("INFO", logger="densevision"):
        assert train_tool.main([str(config), *run, "--resume", "--cfg-options", *options]) == 0

    # epoch 2 runs at the new base lr after one epoch of the new decay, not at the checkpoint's 1e-3 * 0.5
    assert [r["lr"] for r in records(tmp_path / "run", "train") if r["epoch"] == 2] == pytest.approx([1e-5] * 4)
    groups = load_checkpoint(tmp_path / "run" / "last.pth")["optim_wrapper"]["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-6, 1e-6])  # after epoch 2's decay
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-4, 1e-4])
    assert "resume: optim_wrapper.optimizer.lr is 0.0001 now (the checkpoint ran with 0.001)" in caplog.text
    assert "resume: param_scheduler.0.gamma is 0.1 now (the checkpoint ran with 0.5)" in caplog.text
    assert "resume: train_cfg.max_epochs is 2 now (the checkpoint ran with 1)" in caplog.text
    assert "resume: optimizer param group 0: lr 0.0005 -> 1e-05, initial_lr 0.001 -> 0.0001" in caplog.text


def test_a_run_that_diverged_resumes_with_a_lower_lr(tmp_path, train_tool, capsys):
    # The toy's loss turns NaN once a weight exceeds 5: lr 100 gets there in one step, 1e-3 never does.
    config = write_toy_config(tmp_path / "cfg.py", "model = dict(type='EngineToySegmentor', nan_above=5.0)\n")
    run = [str(config), "--work-dir", str(tmp_path / "run")]
    assert train_tool.main(run) == 0  # epoch 1 at the default lr 1e-3

    diverging = ["--resume", "--cfg-options", "train_cfg.max_epochs=2", "optim_wrapper.optimizer.lr=100.0"]
    assert train_tool.main([*run, *diverging]) == 1
    message = error_line(capsys.readouterr().err)
    assert re.match(r"error: loss is nan at epoch 2, iteration 2/4 .* last good checkpoint is .*last.pth", message)
    assert [r["lr"] for r in records(tmp_path / "run", "train") if r["epoch"] == 2] == [100.0]

    gentle = ["--resume", "--cfg-options", "train_cfg.max_epochs=2", "optim_wrapper.optimizer.lr=1e-4"]
    assert train_tool.main([*run, *gentle]) == 0
    epoch_two = [r for r in records(tmp_path / "run", "train") if r["epoch"] == 2]
    assert [r["lr"] for r in epoch_two] == [1e-4] * 4  # the diverged attempt's records are gone, the new lr used
    last = load_checkpoint(tmp_path / "run" / "last.pth")
    assert last["meta"]["epoch"] == 2
    assert {g["lr"] for g in last["optim_wrapper"]["optimizer"]["param_groups"]} == {1e-4}
    assert last["config"]["optim_wrapper"]["optimizer"]["lr"] == 1e-4


def test_after_a_kill_mid_epoch_the_log_holds_each_step_once(tmp_path, monkeypatch, caplog):
    Runner(resumable_config(tmp_path / "straight")).train()

    interrupted = tmp_path / "interrupted"
    original_loss = ToySegmentor.loss

    def loss_until_interrupt(self, batch):  # killed in the middle of epoch 3 (3 iterations per epoch)
        if self.loss_calls == 7:
            raise KeyboardInterrupt
        return original_loss(self, batch)

    monkeypatch.setattr(ToySegmentor, "loss", loss_until_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Runner(resumable_config(interrupted)).train()
    monkeypatch.undo()
    assert [r["step"] for r in records(interrupted, "train")][-1] == 7  # epoch 3's first iteration was logged

    with caplog.at_level("INFO", logger="densevision"):
        Runner(resumable_config(interrupted, resume="auto")).train()

    def without_time(work_dir):
        return [{k: v for k, v in r.items() if k != "time"} for r in records(work_dir)]

    assert without_time(interrupted) == without_time(tmp_path / "straight")  # same records, same values, once each
    assert "dropped 1 record(s) after step 6 from metrics.jsonl" in caplog.text
    assert "now (the checkpoint ran with" not in caplog.text  # the same config: nothing to report
    assert "optimizer param group" not in caplog.text


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, train_tool, caplog):
    config = write_toy_config(tmp_path / "cfg.py")
    run = [str(config), "--work-dir", str(tmp_path / "run")]
    assert train_tool.main(run) == 0
    files = {name: (tmp_path / "run" / name).read_bytes() for name in ("last.pth", "metrics.jsonl", "config.py")}

    with caplog.at_level("INFO", logger="densevision"):
        assert train_tool.main([*run, "--resume"]) == 0
    finished = [r.getMessage() for r in caplog.records if "already finished" in r.getMessage()]
    assert finished == [
        f"{tmp_path / 'run' / 'last.pth'}: the run is already finished (epoch 1 of train_cfg.max_epochs=1; raise "
        "max_epochs to train longer); nothing to train"
    ]
    assert {name: (tmp_path / "run" / name).read_bytes() for name in files} == files


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (dict(train_cfg=dict(max_epochs=None, max_iters=4)), "iteration 4 of train_cfg.max_iters=4"),
        (
            dict(train_cfg=dict(max_epochs=5), early_stopping=dict(monitor="acc", patience=1)),
            "early stopping ended it at epoch 2: acc did not improve for 1 evaluations",
        ),
    ],
)
def test_iteration_based_and_early_stopped_runs_are_finished_too(tmp_path, caplog, overrides, reason):
    zero_lr = dict(optimizer=dict(type="SGD", lr=0.0))  # nothing improves after epoch 1
    Runner(toy_config(tmp_path, optim_wrapper=zero_lr, **overrides)).train()
    with caplog.at_level("INFO", logger="densevision"):
        metrics = Runner(toy_config(tmp_path, optim_wrapper=zero_lr, resume="auto", **overrides)).train()
    assert reason in caplog.text and "already finished" in caplog.text
    assert set(metrics) == {"acc", "pixels"}  # the last validation, from the checkpoint


def other_checkpoints(tmp_path):
    """A finished toy run's files, for the damaged and foreign checkpoints below."""
    run = tmp_path / "run"
    assert Runner(toy_config(run, train_cfg=dict(max_epochs=1, val_interval=1))).train()
    return run


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", r"error: checkpoint {last} is empty \(0 bytes\); checkpoints beside it that load safely: {best}$"),
        ("text", r"error: {last} is not a PyTorch checkpoint \(it starts with b'epoc'; expected a .pth file"),
        (
            "truncated",
            r"error: checkpoint {last} is truncated \(\d+ bytes, .*\); checkpoints beside it that load safely: {best}$",
        ),
        (
            "architecture",
            r"error: checkpoint {last} does not fit the model: .*body.0.weight.*torch.Size\(\[8, 3, 3, 3\]",
        ),
        (
            "optimizer",
            r"error: cannot resume from {last}: it was trained with optimizer SGD, the config asks for RMSprop",
        ),
        ("param groups", r"error: cannot resume from {last}: its optimizer state does not fit .*paramwise"),
        ("weights only", r"error: cannot resume from {last}: not a training checkpoint \(no meta, optim_wrapper, rng"),
    ],
)
def test_a_bad_checkpoint_to_resume_from_is_one_line(tmp_path, train_tool, capsys, damage, message):
    run = other_checkpoints(tmp_path)
    last, best = run / "last.pth", run / "best.pth"
    if damage == "empty":
        last.write_bytes(b"")
    elif damage == "text":
        last.write_text("epoch 3 notes\n")
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    elif damage == "architecture":
        other = Runner(toy_config(tmp_path / "wide", model=dict(type="EngineToySegmentor", width=8)))
        other.train()
        last.write_bytes((tmp_path / "wide" / "last.pth").read_bytes())
    elif damage == "optimizer":
        state = load_checkpoint(last)
        state["config"]["optim_wrapper"]["optimizer"]["type"] = "SGD"
        save_checkpoint(state, last)
    elif damage == "param groups":
        state = load_checkpoint(last)
        groups = state["optim_wrapper"]["optimizer"]["param_groups"]
        groups[0]["params"] += groups.pop()["params"]  # as saved without paramwise: one group
        save_checkpoint(state, last)
    else:
        torch.save({"state_dict": load_checkpoint(last)["state_dict"]}, last)
    config = write_toy_config(tmp_path / "cfg.py", "train_cfg = dict(max_epochs=3)\n")
    assert train_tool.main([str(config), "--work-dir", str(run), "--resume"]) == 1
    expected = message.format(last=re.escape(str(last)), best=re.escape(str(best)))
    assert re.match(expected, error_line(capsys.readouterr().err))


def test_resuming_with_other_classes_or_another_class_order_is_refused(tmp_path, train_tool, capsys, caplog):
    config = write_toy_config(tmp_path / "cfg.py")
    run = ["--work-dir", str(tmp_path / "run")]
    assert train_tool.main([str(config), *run]) == 0
    capsys.readouterr()

    def classes(*names):
        return [f"{loader}.dataset.classes={list(names)}" for loader in ("train_dataloader", "val_dataloader")]

    reordered = classes("high", "mid", "low")
    assert train_tool.main([str(config), *run, "--resume", "--cfg-options", *reordered, "train_cfg.max_epochs=2"]) == 1
    assert error_line(capsys.readouterr().err) == (
        f"error: cannot resume from {tmp_path / 'run' / 'last.pth'}: it was trained on classes ['low', 'mid', 'high'], "
        "the dataset now has ['high', 'mid', 'low']; the model's outputs follow the class order, so names and order "
        "must stay (start from its weights with load_from, or keep the checkpoint's classes)"
    )
    assert load_checkpoint(tmp_path / "run" / "last.pth")["meta"]["epoch"] == 1

    # The same classes, now stated in the config: resumed, and the log does not claim the checkpoint had none.
    stated = classes("low", "mid", "high")
    with caplog.at_level("INFO", logger="densevision"):
        assert train_tool.main([str(config), *run, "--resume", "--cfg-options", *stated, "train_cfg.max_epochs=2"]) == 0
    assert "'unset'" not in caplog.text
    stated_line = (
        "train_dataloader.dataset.classes is ['low', 'mid', 'high'] now (the checkpoint's config did not set it)"
    )
    assert f"resume: {stated_line}" in caplog.text

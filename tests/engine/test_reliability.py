"""A finished run is never overwritten, a bad sample found during training is one line (or skipped when asked),
and a picture that cannot be drawn does not end a run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densevision.data.checks import DatasetError
from densevision.engine.checkpoint import load_checkpoint
from densevision.engine.loaders import GuardedDataset
from densevision.engine.runner import Runner
from tests.engine.toys import ToySegmentation, ToySegmentor, bad_file, toy_config, write_toy_config
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_tool():
    return load_tool("train")


def run_train_script(*arguments: str) -> subprocess.CompletedProcess:
    """tools/train.py in a process of its own, as a user runs it, with the toy components registered first."""
    script = "import runpy, tests.engine.toys; runpy.run_path('tools/train.py', run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def refusal(work_dir: Path, found: str) -> str:
    return (
        f"error: {work_dir} already holds a run ({found}); nothing was overwritten: continue it with --resume "
        "(resume='auto'), or train from scratch into a new --work-dir (work_dir)"
    )


def test_a_rerun_without_resume_refuses_to_overwrite_a_finished_run(tmp_path, train_tool):
    config = write_toy_config(tmp_path / "cfg.py")
    work_dir = tmp_path / "run"
    assert train_tool.main([str(config), "--work-dir", str(work_dir)]) == 0
    before = {p.name: p.read_bytes() for p in work_dir.iterdir() if p.is_file()}

    again = run_train_script(str(config), "--work-dir", str(work_dir))
    assert again.returncode == 1
    assert again.stderr == refusal(work_dir, "last.pth, best.pth, metrics.jsonl") + "\n"
    assert {p.name: p.read_bytes() for p in work_dir.iterdir() if p.is_file()} == before


def test_a_run_killed_before_its_first_checkpoint_is_not_overwritten_either(tmp_path, train_tool, capsys, monkeypatch):
    config = write_toy_config(tmp_path / "cfg.py")
    work_dir = tmp_path / "run"
    original_loss = ToySegmentor.loss

    def loss_until_interrupt(self, batch):  # Ctrl-C at the third iteration of epoch 1
        if self.loss_calls == 2:
            raise KeyboardInterrupt
        return original_loss(self, batch)

    monkeypatch.setattr(ToySegmentor, "loss", loss_until_interrupt)
    assert train_tool.main([str(config), "--work-dir", str(work_dir)]) == 130
    monkeypatch.undo()
    assert not (work_dir / "last.pth").exists()

    assert train_tool.main([str(config), "--work-dir", str(work_dir)]) == 1
    assert error_line(capsys.readouterr().err) == refusal(work_dir, "metrics.jsonl")
    assert train_tool.main([str(config), "--work-dir", str(work_dir), "--resume"]) == 0  # from scratch, as asked
    assert [r["step"] for r in map(json.loads, (work_dir / "metrics.jsonl").read_text().splitlines())] == [
        1, 2, 3, 4, 4, 4,  # train records, then the epoch's train_epoch and val records: the killed attempt's are gone
    ]  # fmt: skip


def test_test_records_alone_and_load_from_into_a_fresh_dir_are_not_refused(tmp_path):
    Runner(toy_config(tmp_path / "first", train_cfg=dict(max_epochs=1, val_interval=1))).train()
    tested = tmp_path / "tested"
    Runner(toy_config(tested)).test(tmp_path / "first" / "last.pth")  # writes a "test" record to metrics.jsonl
    Runner(toy_config(tested, train_cfg=dict(max_epochs=1, val_interval=1))).train()
    fresh = tmp_path / "fresh"
    Runner(toy_config(fresh, load_from=str(tmp_path / "first" / "last.pth"))).train()
    assert load_checkpoint(fresh / "last.pth")["meta"]["epoch"] == 2


def bad_sample_config(tmp_path: Path, extra: str = "") -> Path:
    """Training data with an unreadable file at index 5, read by 2 loader workers, with dataset checks off."""
    lines = """
        check_datasets = False
        bad = dict(type="EngineToySegmentation", num_samples=8, bad=(5,))
        train_dataloader = dict(batch_size=2, num_workers=2, dataset=bad)
        """
    return write_toy_config(tmp_path / "cfg.py", lines + extra)


def test_a_bad_file_found_by_a_loader_worker_is_its_own_one_line(tmp_path):
    config = bad_sample_config(tmp_path)
    result = run_train_script(str(config), "--work-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert error_line(result.stderr) == f"error: cannot read image {bad_file(5)}: not an image file"
    assert "worker" not in result.stderr and "Caught" not in result.stderr


def test_skip_bad_samples_replaces_them_and_counts_them_per_epoch(tmp_path, train_tool, caplog):
    config = bad_sample_config(tmp_path, "train_cfg = dict(max_epochs=2, skip_bad_samples=True)\n")
    with caplog.at_level("INFO", logger="densevision"):
        assert train_tool.main([str(config), "--work-dir", str(tmp_path / "run")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"epoch {epoch}: skipped 1 bad sample(s), each replaced by the next good one (train_cfg.skip_bad_samples): "
        f"cannot read image {bad_file(5)}: not an image file"
        for epoch in (1, 2)
    ]
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in epochs if r["mode"] == "train_epoch"] == [1, 1]


def test_a_bad_sample_is_replaced_by_the_next_good_one():
    guarded = GuardedDataset(ToySegmentation(num_samples=4, bad=(1, 2)), skip=True)
    replaced = guarded[1]
    assert replaced.data["meta"]["index"] == 3 and replaced.error is None
    assert replaced.skipped == [f"cannot read image {bad_file(i)}: not an image file" for i in (1, 2)]
    assert guarded[0].skipped == [] and guarded[0].data["meta"]["index"] == 0

    strict = GuardedDataset(ToySegmentation(num_samples=4, bad=(1,)), skip=False)
    assert strict[1].error == f"cannot read image {bad_file(1)}: not an image file"
    everything_bad = GuardedDataset(ToySegmentation(num_samples=2, bad=(0, 1)), skip=True)
    assert everything_bad[0].error.startswith("every sample of the dataset failed to load; the first: cannot read")


def test_validation_never_skips(tmp_path):
    bad = dict(type="EngineToySegmentation", num_samples=8, bad=(2,))
    cfg = toy_config(
        tmp_path,
        check_datasets=False,
        train_cfg=dict(max_epochs=1, skip_bad_samples=True),
        val_dataloader=dict(batch_size=4, num_workers=0, dataset=bad),
    )
    with pytest.raises(DatasetError, match=f"^cannot read image {bad_file(2)}: not an image file$"):
        Runner(cfg).train()


def test_a_curve_that_cannot_be_drawn_is_a_warning(tmp_path, caplog):
    (tmp_path / "curves.png").mkdir()  # savefig cannot write over a directory
    with caplog.at_level("WARNING", logger="densevision"):
        Runner(toy_config(tmp_path)).train()
    assert load_checkpoint(tmp_path / "last.pth")["meta"]["epoch"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all(w.startswith("could not draw curves.png: IsADirectoryError") for w in warnings)


def test_the_error_that_stops_a_run_is_in_run_log_too(tmp_path):
    bad_worker = run_train_script(str(bad_sample_config(tmp_path)), "--work-dir", str(tmp_path / "bad"))
    nan = write_toy_config(tmp_path / "nan.py", "model = dict(type='EngineToySegmentor', nan_at_call=2)\n")
    diverged = run_train_script(str(nan), "--work-dir", str(tmp_path / "nan"))
    for result, work_dir in ((bad_worker, tmp_path / "bad"), (diverged, tmp_path / "nan")):
        assert result.returncode == 1
        line = error_line(result.stderr)
        assert line.startswith("error: ")
        assert (work_dir / "run.log").read_text().splitlines()[-1].endswith(f" ERROR {line}")

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tests.engine.toys  # noqa: F401  (registers the toy task, dataset and metric)
from densevision.engine.checkpoint import load_checkpoint
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_tool():
    return load_tool("train")


@pytest.fixture(scope="module")
def test_tool():
    return load_tool("test")


@pytest.fixture
def config_file(tmp_path) -> Path:
    """A top-level config over the repository's default_runtime.py and the toy components."""
    path = tmp_path / "toy_config.py"
    path.write_text(
        textwrap.dedent(
            f"""
            _base_ = [{str(ROOT / "configs" / "_base_" / "default_runtime.py")!r}]
            device = "cpu"
            model = dict(type="EngineToySegmentor")
            dataset = dict(type="EngineToySegmentation", num_samples=8)
            train_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
            val_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
            test_dataloader = val_dataloader
            val_evaluator = dict(type="EngineToyPixelAccuracy")
            test_evaluator = val_evaluator
            train_cfg = dict(max_epochs=1)
            checkpoint = dict(monitor="acc")
            visualization = dict(num_samples=0)
            """
        )
    )
    return path


def error_line(stderr: str) -> str:
    """The tool's last stderr line (progress bars may come before it); no traceback anywhere."""
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_train_resume_and_test_from_the_command_line(tmp_path, config_file, train_tool, test_tool, capsys):
    work_dir = tmp_path / "run"
    assert train_tool.main([str(config_file), "--work-dir", str(work_dir)]) == 0
    assert load_checkpoint(work_dir / "last.pth")["meta"]["epoch"] == 1
    assert (
        train_tool.main(
            [str(config_file), "--work-dir", str(work_dir), "--resume", "--cfg-options", "train_cfg.max_epochs=2"]
        )
        == 0
    )
    assert load_checkpoint(work_dir / "last.pth")["meta"]["epoch"] == 2

    capsys.readouterr()
    out = tmp_path / "metrics.json"
    assert (
        test_tool.main([str(config_file), str(work_dir / "best.pth"), "--out", str(out), "--work-dir", str(work_dir)])
        == 0
    )
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"checkpoint", "acc", "pixels"} and metrics["pixels"] == 512.0
    assert metrics["checkpoint"] == str(work_dir / "best.pth")
    assert "acc" in capsys.readouterr().out


def test_the_default_work_dir_is_named_after_the_config(tmp_path, config_file, train_tool, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_tool.main([str(config_file)]) == 0
    assert (tmp_path / "work_dirs" / "toy_config" / "last.pth").is_file()


def test_test_without_out_says_where_it_wrote(tmp_path, config_file, train_tool, test_tool, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert train_tool.main([str(config_file)]) == 0
    with caplog.at_level("INFO", logger="densevision"):
        assert test_tool.main([str(config_file), "work_dirs/toy_config/last.pth"]) == 0
    written = Path("work_dirs") / "toy_config" / "test_metrics.json"
    assert (tmp_path / written).is_file()
    assert f"test metrics written to {written}" in caplog.text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.py"], "error: config file not found: missing.py"),
        (
            ["CONFIG", "--cfg-options", "train_cfg.max_epoch=3"],
            "error: unknown config key 'train_cfg.max_epoch' in --cfg-options; did you mean 'train_cfg.max_epochs'?",
        ),
        (["CONFIG", "--cfg-options", "optim_wraper.amp=bf16"], "did you mean 'optim_wrapper'?"),
        (["CONFIG", "--cfg-options", "train_cfg"], "must look like key=value"),
        (["CONFIG", "--work-dir", "BLOCKED/run"], "error: work dir .*BLOCKED/run is not writable"),
        (["CONFIG", "--resume", "nowhere.pth"], "error: checkpoint to resume from not found: nowhere.pth"),
        (  # a new argument of a buildable dict is allowed, and here makes the loss NaN at the 2nd iteration
            ["CONFIG", "--cfg-options", "model.nan_at_call=2"],
            r"error: loss is nan at epoch 1, iteration 2/2 \(global iteration 2\)",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_status_1(tmp_path, config_file, train_tool, capsys, arguments, message):
    blocked = tmp_path / "BLOCKED"
    blocked.write_text("a file, not a directory")
    replace = {"CONFIG": str(config_file), "BLOCKED/run": str(blocked / "run")}
    arguments = [replace.get(a, a) for a in arguments]
    if "--work-dir" not in arguments:
        arguments += ["--work-dir", str(tmp_path / "run")]
    assert train_tool.main(arguments) == 1
    assert re.search(message, error_line(capsys.readouterr().err))


def test_test_tool_reports_a_missing_checkpoint(tmp_path, config_file, test_tool, capsys):
    assert test_tool.main([str(config_file), str(tmp_path / "none.pth"), "--work-dir", str(tmp_path)]) == 1
    assert error_line(capsys.readouterr().err) == f"error: checkpoint not found: {tmp_path / 'none.pth'}"


def test_the_script_exits_1_with_a_single_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train.py"), str(tmp_path / "missing.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    assert result.returncode == 1
    assert result.stderr == f"error: config file not found: {tmp_path / 'missing.py'}\n"


def test_test_tool_shows_the_metrics_before_reporting_an_unwritable_out(tmp_path, config_file, train_tool, test_tool,
                                                                         capsys):  # fmt: skip
    work_dir = tmp_path / "run"
    assert train_tool.main([str(config_file), "--work-dir", str(work_dir)]) == 0
    blocked = tmp_path / "BLOCKED"
    blocked.write_text("a file, not a directory")
    capsys.readouterr()
    out = blocked / "metrics.json"
    assert test_tool.main([str(config_file), str(work_dir / "last.pth"), "--out", str(out), "--work-dir",
                           str(work_dir)]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert re.search(r"^\s+acc\s+[0-9.]+$", captured.out, re.MULTILINE) and "pixels" in captured.out
    reason = f"{blocked} is a file, not a folder"
    assert (
        error_line(captured.err)
        == f"error: could not write the test metrics to {out}: {reason} (the metrics are shown above)"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("train_cfg.max_epochs=[1,", r"error: cannot parse the value '\[1,' of config option 'train_cfg.max_epochs'"),
        ("train_cfg.max_epochs=2x", r"it starts like a Python literal but is not one \(invalid decimal literal\)"),
    ],
)
def test_a_malformed_cfg_options_value_is_one_error_line(tmp_path, config_file, train_tool, capsys, option, message):
    assert train_tool.main([str(config_file), "--work-dir", str(tmp_path / "run"), "--cfg-options", option]) == 1
    assert re.search(message, error_line(capsys.readouterr().err))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tool_name", ["train", "test", "check_dataset", "export", "infer"])
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("cfg.yaml", "model:\n  type: Segmentor\n", r"config .*cfg\.yaml is a \.yaml file; configs are Python files"),
        ("cfg.json", '{"model": {"type": "Segmentor"}}', r"config .*cfg\.json is a \.json file; configs are Python"),
        ("cfg.py", "model:\n  type: Segmentor\n", r"syntax error in config .*cfg\.py, line 1: .*configs are Python"),
    ],
)
def test_every_tool_says_configs_are_python_files(tmp_path, capsys, tool_name, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    arguments = {
        "train": [],
        "test": [str(tmp_path / "model.pth")],
        "check_dataset": [],
        "export": [str(tmp_path / "model.pth"), "--out", str(tmp_path / "m.onnx")],
        "infer": [str(tmp_path / "model.pth"), str(tmp_path), "--out", str(tmp_path / "out")],
    }[tool_name]
    assert load_tool(tool_name).main([str(config), *arguments]) == 1
    assert re.search(message, error_line(capsys.readouterr().err))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--split", "tset"], r"error: .*toy_config\.py defines neither tset_dataloader\.dataset nor tset_dataset"),
        (["--cfg-options", "dataset.num_samples=[8,"], r"error: cannot parse the value '\[8,' of config option"),
        (["--cfg-options", "nowhere.x=1"], r"error: unknown config key 'nowhere\.x' in --cfg-options"),
        (["--cfg-options", "train_dataloader.dataset.type=Nope"], r"error: unknown type 'Nope' in registry 'datasets'"),
    ],
)
def test_check_dataset_config_errors_are_one_line(config_file, capsys, arguments, message):
    assert load_tool("check_dataset").main([str(config_file), *arguments]) == 1
    assert re.search(message, error_line(capsys.readouterr().err))


@pytest.mark.parametrize(
    ("arguments", "cuda", "message"),
    [
        (["--device", "gpu"], True, "error: unknown --device 'gpu'; use cpu, cuda or cuda:N"),
        (["--device", "cuda"], False, "error: --device cuda was asked for but CUDA is not available"),
    ],
)
def test_benchmark_refuses_a_device_it_cannot_use(monkeypatch, capsys, arguments, cuda, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    with pytest.raises(SystemExit) as exit_info:
        load_tool("benchmark").main(["densenet121-train", "--steps", "1", *arguments])
    assert exit_info.value.code == 2
    assert message in error_line(capsys.readouterr().err)


def test_model_info_refuses_zero_classes(capsys):
    with pytest.raises(SystemExit):
        load_tool("model_info").main(["fcdensenet56", "--num-classes", "0"])
    assert error_line(capsys.readouterr().err).endswith("error: --num-classes must be at least 1, got 0")


def test_a_yaml_config_is_one_line_from_the_script(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("model:\n  type: Segmentor\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export.py"), str(config), "x.pth", "--out", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: config {config} is a .yaml file; configs are Python files of `key = value` lines, "
        "e.g. `model = dict(type='Segmentor', ...)`\n"
    )

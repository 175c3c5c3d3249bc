"""A task is a plug-in: tests/plugin_task.py defines brightness regression (model, dataset, metric, predictor) outside
densevision/, and a config that names it in ``custom_imports`` trains, tests and infers through the unchanged tools."""

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest

from densevision.config import load_config
from densevision.registry import ConfigError
from tests.tool_loader import load_tool

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "brightness.py"
    config.write_text(
        textwrap.dedent(
            f"""
            _base_ = [{str(REPO / "configs/_base_/default_runtime.py")!r}]
            custom_imports = ["tests.plugin_task"]
            data_root = {str(tmp_path / "data")!r}
            pipeline = [dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))]
            model = dict(type="PluginBrightnessRegressor", width=4)
            train_dataloader = dict(batch_size=8, num_workers=0, shuffle=True, dataset=dict(
                type="PluginBrightnessImages", root=data_root, split="train", num_samples=32, pipeline=pipeline))
            val_dataloader = dict(batch_size=8, num_workers=0, shuffle=False, dataset=dict(
                type="PluginBrightnessImages", root=data_root, split="val", num_samples=8, pipeline=pipeline))
            test_dataloader = dict(batch_size=8, num_workers=0, shuffle=False, dataset=dict(
                type="PluginBrightnessImages", root=data_root, split="test", num_samples=8, pipeline=pipeline))
            val_evaluator = dict(type="PluginMeanAbsoluteError")
            test_evaluator = val_evaluator
            optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=0.05))
            train_cfg = dict(max_epochs=8, val_interval=4)
            checkpoint = dict(monitor="mae", mode="min")
            """
        )
    )
    return config


def test_a_task_defined_outside_the_package_trains_tests_and_infers_through_the_tools(tmp_path, capsys):
    sys.modules.pop("tests.plugin_task", None)  # registered by the config's custom_imports, not by this test
    config, work_dir = _config(tmp_path), tmp_path / "run"
    assert load_tool("train").main([str(config), "--work-dir", str(work_dir)]) == 0
    assert "tests.plugin_task" in sys.modules

    metrics_file = tmp_path / "test_metrics.json"
    checkpoint = str(work_dir / "best.pth")
    arguments = [str(config), checkpoint, "--work-dir", str(work_dir), "--out", str(metrics_file)]
    assert load_tool("test").main(arguments) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["mae"] < 0.1  # brightness is learnt: a constant guess of 0.5 is off by about 0.25 on this data

    images = sorted(str(p) for p in (tmp_path / "data" / "test").glob("*.png"))
    out = tmp_path / "infer"
    assert load_tool("infer").main([str(config), checkpoint, str(tmp_path / "data" / "test"), "--out", str(out)]) == 0
    with open(out / "brightness.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["image"] for row in rows] == images
    assert all(0 < float(row["brightness"]) < 1 for row in rows)


def test_a_missing_custom_import_is_one_error_naming_it(tmp_path):
    config = tmp_path / "missing.py"
    config.write_text('custom_imports = ["no_such_plugin_module"]\n')
    with pytest.raises(ConfigError, match="no module 'no_such_plugin_module'"):
        load_config(config)

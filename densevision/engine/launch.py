"""What tools/train.py and tools/test.py do, as functions: run, write results (``load_config``, re-exported here,
lives in ``densevision.config``).

The tools only parse arguments; ``densevision.cli.entry_point`` turns user errors into one ``error: ...`` line.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from densevision.config import Config, load_config
from densevision.engine import distributed
from densevision.engine.runner import Runner
from densevision.precision import autocast_dtype
from densevision.splits import split_dataset_cfg

__all__ = ["load_config", "run_training", "run_test", "write_json"]

logger = logging.getLogger("densevision")


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``data`` as strict JSON: a NaN or infinite metric (a class without objects) is ``null``, which every JSON
    reader accepts, where ``json.dumps`` would write a bare ``NaN``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite_or_null(dict(data)), indent=2, allow_nan=False) + "\n")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def run_training(cfg: Config) -> dict[str, float]:
    """Train as the config says; the process group (if any) is closed however the run ends."""
    try:
        return Runner(cfg).train()
    finally:
        distributed.shutdown_distributed()


def run_test(
    cfg: Config,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    show: Callable[[str], Any] | None = None,
    precision: str = "fp32",
) -> tuple[dict[str, float], str | None]:
    """Evaluate ``checkpoint`` on the test split. The main process writes the metrics as JSON (``out``, default
    ``work_dir/test_metrics.json``) and gets the evaluator's summary table back; other processes get ``None``.

    ``show`` receives the summary table before the JSON is written, so a write that fails (an OSError naming the
    file) loses no result: the user has seen the metrics of what may have been a long evaluation. ``precision``:
    the forward's (``'fp32'``, ``'bf16'``, ``'fp16'``; metrics are float32). An evaluator declaring a report
    (``Metric.report_splits`` / ``test_report``) then writes its files beside the JSON, and its text is shown and
    appended to the returned table.
    """
    try:
        runner = Runner(cfg)
        metrics = runner.test(checkpoint, precision=precision)
        evaluator = runner.test_evaluator
        path = Path(out) if out is not None else runner.work_dir / "test_metrics.json"
        table = None
        if runner.dist.is_main:
            table = evaluator.summary_table()
            if show is not None:
                show(table)
            _write_metrics(metrics, path)
        # the evaluator's declared report (e.g. an early-exit budget sweep calibrated on val): its other splits are
        # evaluated in every process, the report is written by the main one beside the metrics JSON
        for name in evaluator.report_splits:
            if split_dataset_cfg(runner.cfg, name) == split_dataset_cfg(runner.cfg, "test"):
                logger.warning(
                    "the %s split is the test split itself: what the report fits on %s (early-exit thresholds) is "
                    "fitted to the test images, so its test figures are optimistic; hold a %s split out of training "
                    "(split='val' with val_size: CIFAR100Folder, ImageFolderDataset)",
                    name, name, name,
                )  # fmt: skip
        splits = {name: _evaluate_split(runner, name, precision) for name in evaluator.report_splits}
        if runner.dist.is_main:
            report = evaluator.test_report(task=runner.task, splits=splits, out_dir=path.parent)
            if report is not None:
                if show is not None:
                    show(report)
                table = f"{table}\n{report}"
        return metrics, table
    finally:
        distributed.shutdown_distributed()


def _write_metrics(metrics: Mapping[str, float], path: Path) -> None:
    try:
        write_json(metrics, path)
    except OSError as err:
        in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{in_the_way} is a file, not a folder" if in_the_way else err.strerror or str(err)
        raise type(err)(f"could not write the test metrics to {path}: {reason} (the metrics are shown above)") from None
    logger.info("test metrics written to %s", path)


def _evaluate_split(runner: Runner, split: str, precision: str) -> Any:
    """A fresh test evaluator after a pass over ``split``'s loader (``{split}_dataloader``), the forward in
    ``precision`` as on the test split."""
    evaluator = runner.build_evaluator("test_evaluator")
    evaluator.dataset_meta = runner.dataset_meta
    loader = runner.build_dataloader(f"{split}_dataloader", train=False)
    runner.evaluate(loader, evaluator, dtype=autocast_dtype(precision, runner.device, what="precision"))
    return evaluator

"""What tools/train.py and tools/test.py do, as functions: load and override the config, run, write results.

The tools only parse arguments; ``densevision.cli.entry_point`` turns user errors into one ``error: ...`` line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.config import Config, parse_cfg_options
from densevision.engine import distributed
from densevision.engine.runner import Runner
from densevision.registry import ConfigError, close_matches

__all__ = ["load_config", "run_training", "run_test", "write_json"]


def _check_override_key(cfg: Mapping[str, Any], dotted: str) -> None:
    """Every part of an override must exist, except new arguments of a buildable dict (one with a ``type``).

    Runner sections (``train_cfg``, ``optim_wrapper``...) and the top level accept no new keys: there a new key is
    almost always a typo (``train_cfg.max_epoch``) that would otherwise be ignored silently.
    """
    node: Any = cfg
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        if isinstance(node, (list, tuple)):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ConfigError(f"unknown config key {dotted!r} in --cfg-options: {where} has no item {part!r}")
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(f"unknown config key {dotted!r} in --cfg-options: {where} is not a dict")
        if part not in node:
            if depth == len(parts) - 1 and "type" in node:
                return
            hint = close_matches(part, [str(k) for k in node])
            suggestion = f"; did you mean {'.'.join([*parts[:depth], hint[0]])!r}?" if hint else ""
            raise ConfigError(f"unknown config key {dotted!r} in --cfg-options{suggestion}")
        node = node[part]


def load_config(
    path: str | os.PathLike,
    cfg_options: Sequence[str] = (),
    *,
    work_dir: str | os.PathLike | None = None,
    **settings: Any,
) -> Config:
    """Read ``path``, apply ``key=value`` overrides (keys must exist), then the tools' settings (``resume``,
    ``launcher``). ``work_dir``: the argument, else the config's, else ``work_dirs/<config name>``."""
    cfg = Config.fromfile(path)
    options = parse_cfg_options(cfg_options)
    for key in options:
        _check_override_key(cfg, key)
    cfg.merge_from_dict(options)
    if work_dir is not None:
        cfg["work_dir"] = str(work_dir)
    elif not cfg.get("work_dir"):
        cfg["work_dir"] = str(Path("work_dirs") / Path(path).stem)
    for key, value in settings.items():
        if value is not None:
            cfg[key] = value
    return cfg


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(data), indent=2) + "\n")


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
    the forward's (``'fp32'``, ``'bf16'``, ``'fp16'``; metrics are float32).
    """
    try:
        runner = Runner(cfg)
        metrics = runner.test(checkpoint, precision=precision)
        if not runner.dist.is_main:
            return metrics, None
        table = runner.test_evaluator.summary_table()
        if show is not None:
            show(table)
        path = Path(out) if out is not None else runner.work_dir / "test_metrics.json"
        try:
            write_json(metrics, path)
        except OSError as err:
            in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            reason = f"{in_the_way} is a file, not a folder" if in_the_way else err.strerror or str(err)
            raise type(err)(
                f"could not write the test metrics to {path}: {reason} (the metrics are shown above)"
            ) from None
        return metrics, table
    finally:
        distributed.shutdown_distributed()

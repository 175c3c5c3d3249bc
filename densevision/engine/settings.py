"""The runner's own config sections, read and validated once when a ``Runner`` is built: a bad value fails before any
data is read or any weight is initialised, naming the key.

Config keys, with their defaults, are documented in configs/_base_/default_runtime.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from densevision.engine import acceleration
from densevision.engine.optim import check_keys
from densevision.registry import ConfigError

__all__ = ["RunSettings"]

TRAIN_CFG_DEFAULTS = {
    "max_epochs": None,
    "max_iters": None,
    "val_interval": 1,
    "skip_bad_samples": False,
    **acceleration.TRAIN_CFG_DEFAULTS,
}
CHECKPOINT_DEFAULTS = {"monitor": None, "mode": "max"}
EARLY_STOPPING_DEFAULTS = {"monitor": None, "patience": None, "mode": "max", "min_delta": 0.0}
VISUALIZATION_DEFAULTS = {"num_samples": 4}


def _section(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg[name]`` over ``defaults``, rejecting keys the runner does not read."""
    given = cfg.get(name) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{name} must be a dict, got {given!r}")
    check_keys(given, list(defaults), name)
    return {**defaults, **given}


def _check_mode(section: Mapping[str, Any], name: str) -> None:
    if section["mode"] not in ("max", "min"):
        raise ConfigError(f"{name}.mode must be 'max' or 'min', got {section['mode']!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class RunSettings:
    """``train_cfg``, ``checkpoint``, ``early_stopping`` (``None``: off) and ``visualization`` over their defaults,
    plus the top-level ``seed``, ``log_interval`` and whether the config has validation."""

    train_cfg: dict[str, Any]
    checkpoint: dict[str, Any]
    early_stopping: dict[str, Any] | None
    visualization: dict[str, Any]
    seed: int
    log_interval: int
    has_val: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RunSettings:
        train_cfg = _section(cfg, "train_cfg", TRAIN_CFG_DEFAULTS)
        checkpoint = _section(cfg, "checkpoint", CHECKPOINT_DEFAULTS)
        _check_mode(checkpoint, "checkpoint")
        early_stopping = _section(cfg, "early_stopping", EARLY_STOPPING_DEFAULTS) if cfg.get("early_stopping") else None
        if early_stopping is not None:
            _check_mode(early_stopping, "early_stopping")
            if early_stopping["monitor"] is None or not _positive_int(early_stopping["patience"]):
                given = dict(cfg["early_stopping"])
                raise ConfigError(f"early_stopping needs a monitor and a patience >= 1, got {given}")
        visualization = _section(cfg, "visualization", VISUALIZATION_DEFAULTS)
        max_epochs, max_iters = train_cfg["max_epochs"], train_cfg["max_iters"]
        if (max_epochs is None) == (max_iters is None):
            raise ConfigError(
                f"train_cfg needs exactly one of max_epochs and max_iters, got max_epochs={max_epochs!r}, "
                f"max_iters={max_iters!r} (set the other to None)"
            )
        for key, value in (("max_epochs", max_epochs), ("max_iters", max_iters)):
            if value is not None and not _positive_int(value):
                raise ConfigError(f"train_cfg.{key} must be a positive integer, got {value!r}")
        if not _positive_int(train_cfg["val_interval"]):
            raise ConfigError(f"train_cfg.val_interval must be a positive integer, got {train_cfg['val_interval']!r}")
        has_val = cfg.get("val_dataloader") is not None
        if not has_val and early_stopping is not None:
            raise ConfigError("early_stopping needs validation: set val_dataloader and val_evaluator")
        return cls(
            train_cfg=train_cfg,
            checkpoint=checkpoint,
            early_stopping=early_stopping,
            visualization=visualization,
            seed=int(cfg.get("seed", 0)),
            log_interval=int(cfg.get("log_interval", 10)),
            has_val=has_val,
        )

    def monitored_names(self) -> list[str]:
        """The metrics the curves highlight: the checkpoint's and early stopping's monitors."""
        names = [self.checkpoint["monitor"]]
        if self.early_stopping is not None:
            names.append(self.early_stopping["monitor"])
        return list(dict.fromkeys(name for name in names if name is not None))

"""Continuing a run from its checkpoint: what a training checkpoint must hold, when a run is already finished, and
what the resumed run may change (hyper-parameters and schedules, each logged) and may not (the optimizer type, the
classes and their order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from densevision.engine.checkpoint import load_checkpoint
from densevision.engine.errors import CheckpointError

__all__ = ["CHECKPOINT_KEYS", "read_training_checkpoint", "finished", "check_same_classes", "plain", "config_changes"]

CHECKPOINT_KEYS = ("meta", "state_dict", "optim_wrapper", "rng")
_NOT_COMPARED = ("resume",)  # how this run was started, not what it trains with


def read_training_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    checkpoint = load_checkpoint(path, map_location=device)
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"cannot resume from {path}: not a training checkpoint (no {', '.join(missing)}); "
            "start from its weights with load_from instead"
        )
    return checkpoint


def finished(
    checkpoint: Mapping[str, Any], train_cfg: Mapping[str, Any], early_stopping: Mapping[str, Any] | None
) -> str:
    """Why the checkpoint's run needs no more training under this config ('' when it does)."""
    epoch, iteration = int(checkpoint["meta"]["epoch"]), int(checkpoint["meta"]["iteration"])
    max_epochs, max_iters = train_cfg["max_epochs"], train_cfg["max_iters"]
    if max_epochs is not None and epoch >= max_epochs:
        return f"epoch {epoch} of train_cfg.max_epochs={max_epochs}; raise max_epochs to train longer"
    if max_iters is not None and iteration >= max_iters:
        return f"iteration {iteration} of train_cfg.max_iters={max_iters}; raise max_iters to train longer"
    state = checkpoint.get("early_stopping") or {}
    if early_stopping is not None and int(state.get("bad_evaluations", 0)) >= early_stopping["patience"]:
        return (
            f"early stopping ended it at epoch {epoch}: {early_stopping['monitor']} did not improve for "
            f"{early_stopping['patience']} evaluations; raise early_stopping.patience to train longer"
        )
    return ""


def check_same_classes(checkpoint: Mapping[str, Any], classes: Sequence[str] | None, path: Path) -> None:
    """Refuse to resume when the dataset's class names or their order differ from the checkpoint's: the weights of
    output k would go on learning another class."""
    saved = ((checkpoint.get("meta") or {}).get("dataset_meta") or {}).get("classes")
    if saved is None or classes is None or [str(c) for c in saved] == [str(c) for c in classes]:
        return
    raise CheckpointError(
        f"cannot resume from {path}: it was trained on classes {[str(c) for c in saved]}, the dataset now has "
        f"{[str(c) for c in classes]}; the model's outputs follow the class order, so names and order must stay "
        "(start from its weights with load_from, or keep the checkpoint's classes)"
    )


def plain(value: Any) -> Any:
    """A config as dicts, lists, tuples and scalars (classes and functions by name): what ``weights_only`` loads."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    name = getattr(value, "__qualname__", None)
    return f"{value.__module__}.{name}" if name is not None else repr(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (``optim_wrapper.optimizer.lr``, ``param_scheduler.0.gamma``) of nested dicts and of lists that
    hold dicts; other lists are values."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
        items = list(enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per config value that differs from the checkpoint's (none for checkpoints without a config). A key
    one of the two configs does not state is said to be left to its default, not given a value it never had."""
    if not saved:
        return []
    before, after = _flatten(saved), _flatten(current)
    changes = []
    for key in dict.fromkeys([*before, *after]):
        if key.split(".")[0] in _NOT_COMPARED:
            continue
        if key not in before:
            changes.append(f"{key} is {after[key]!r} now (the checkpoint's config did not set it)")
        elif key not in after:
            changes.append(f"{key} is not set now (the checkpoint ran with {before[key]!r})")
        elif before[key] != after[key]:
            changes.append(f"{key} is {after[key]!r} now (the checkpoint ran with {before[key]!r})")
    return changes

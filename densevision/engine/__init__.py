"""Training and evaluation: the task-free Runner, checkpoints, distributed helpers, optimizers and run output.

The Runner and the optimizer helpers are imported on first use, so that code which only loads checkpoints
(``densevision.inference``, the export tool) does not load the training loop.
"""

from __future__ import annotations

import importlib
from typing import Any

from densevision.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from densevision.engine.errors import CheckpointError, EngineError, NonFiniteLossError, WorkDirError

_LAZY = {
    "Runner": "densevision.engine.runner",
    "seed_everything": "densevision.engine.runner",
    "OptimWrapper": "densevision.engine.optim",
    "ParamSchedulers": "densevision.engine.optim",
    "build_optim_wrapper": "densevision.engine.optim",
    "build_param_groups": "densevision.engine.optim",
}

__all__ = [
    *_LAZY,
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "EngineError",
    "CheckpointError",
    "NonFiniteLossError",
    "WorkDirError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

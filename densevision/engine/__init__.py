"""Training and evaluation: the task-free Runner, checkpoints, distributed helpers, optimizers and run output."""

from densevision.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from densevision.engine.errors import CheckpointError, EngineError, NonFiniteLossError, WorkDirError
from densevision.engine.optim import OptimWrapper, ParamSchedulers, build_optim_wrapper, build_param_groups
from densevision.engine.runner import Runner, seed_everything

__all__ = [
    "Runner",
    "seed_everything",
    "OptimWrapper",
    "ParamSchedulers",
    "build_optim_wrapper",
    "build_param_groups",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "EngineError",
    "CheckpointError",
    "NonFiniteLossError",
    "WorkDirError",
]

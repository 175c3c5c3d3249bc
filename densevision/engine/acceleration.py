"""Training at the accelerator's pace: ``train_cfg.compile``, ``channels_last`` and ``cudnn_benchmark``.

``compile`` (``False``, ``True`` or a dict of ``torch.compile`` options such as ``dict(mode='reduce-overhead')``)
compiles every submodule of the task in place (``nn.Module.compile``): the network and the loss module, so a detector's
matching and hard-negative mining are compiled with its forward. The task's own glue — its ``loss``/``predict``
methods and the autocast hooks of ``optim_wrapper.amp`` — stays eager, so mixed precision works unchanged, and in-place
compilation keeps every ``state_dict`` name, so checkpoints and exact resume are those of an eager run. Validation
during training runs the same compiled modules (a graph per grad mode and shape).

``mode='reduce-overhead'`` (or ``'max-autotune'``) also captures CUDA graphs, which need one input shape: the first
training batch's shape is taken as the shape, and a batch of another shape (a variable-size pipeline, a short last
batch) recompiles without CUDA graphs, with one log line. ``channels_last`` converts the task's parameters and every
training batch's images to NHWC, the layout cuDNN's tensor-core convolutions run natively. ``cudnn_benchmark`` lets
cuDNN time its convolution algorithms for each new input shape and keep the fastest (fixed shapes pay once); off by
default, because the algorithms it picks may differ between processes, so a resumed run would no longer repeat an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from densevision.registry import ConfigError

__all__ = ["TRAIN_CFG_DEFAULTS", "TrainingAcceleration", "compile_options"]

logger = logging.getLogger("densevision")

TRAIN_CFG_DEFAULTS = {"compile": False, "channels_last": False, "cudnn_benchmark": False}
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes that capture CUDA graphs, and the same mode without them (the fallback for inputs of varying shape).
_WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def compile_options(value: Any, *, key: str = "train_cfg.compile") -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments from a config value (``None`` when not compiling); ``ConfigError`` names
    ``key`` and the value at fault."""
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be False, True or a dict of torch.compile options, got {value!r}")
    accepted = [name for name in inspect.signature(torch.compile).parameters if name != "model"]
    unknown = sorted(set(value) - set(accepted))
    if unknown:
        raise ConfigError(f"{key} has unknown torch.compile option(s) {unknown}; accepted: {accepted}")
    if not isinstance(value.get("options", {}), Mapping):
        raise ConfigError(f"{key}.options must be a dict of inductor options, got {value['options']!r}")
    if value.get("mode") not in COMPILE_MODES:
        raise ConfigError(f"{key}.mode must be one of {list(COMPILE_MODES)}, got {value['mode']!r}")
    return dict(value)


class TrainingAcceleration:
    """What ``train_cfg.compile``, ``channels_last`` and ``cudnn_benchmark`` do to a task and the process (``apply``)
    and to each training batch (``prepare_batch``)."""

    def __init__(self, *, compile: Any = False, channels_last: Any = False, cudnn_benchmark: Any = False) -> None:
        self.compile = compile_options(compile)
        for key, value in (("channels_last", channels_last), ("cudnn_benchmark", cudnn_benchmark)):
            if not isinstance(value, bool):
                raise ConfigError(f"train_cfg.{key} must be True or False, got {value!r}")
        self.channels_last = channels_last
        self.cudnn_benchmark = cudnn_benchmark
        self._compiled: list[nn.Module] = []
        self._graph_shape: torch.Size | None = None  # the input shape CUDA graphs were captured for

    @classmethod
    def from_train_cfg(cls, train_cfg: Mapping[str, Any]) -> TrainingAcceleration:
        return cls(**{key: train_cfg.get(key, default) for key, default in TRAIN_CFG_DEFAULTS.items()})

    @property
    def captures_cuda_graphs(self) -> bool:
        options = self.compile or {}
        return options.get("mode") in _WITHOUT_CUDA_GRAPHS or bool(options.get("options", {}).get("triton.cudagraphs"))

    def apply(self, task: nn.Module) -> list[str]:
        """Channels-last parameters, then each direct submodule compiled in place (draws no random numbers); returns
        what it did, for the run's log."""
        done = []
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
            done.append("cuDNN benchmarks convolution algorithms per input shape (resume not bit-exact on GPUs)")
        if self.channels_last:
            task.to(memory_format=torch.channels_last)
            done.append("channels-last (NHWC) parameters")
        if self.compile is None:
            return done
        self._compiled = list(task.children())
        if not self._compiled:
            raise ConfigError(f"train_cfg.compile: task {type(task).__name__} has no submodules to compile")
        self._compile_children(self.compile)
        names = ", ".join(name for name, _ in task.named_children())
        options = ", ".join(f"{k}={v!r}" for k, v in self.compile.items())
        return [*done, f"compiling {names} of {type(task).__name__} with torch.compile({options})"]

    def prepare_batch(self, batch: Any) -> Any:
        """The batch with its images channels-last (when asked); watches the image shape while CUDA graphs are on."""
        if not isinstance(batch, Mapping) or not isinstance(batch.get("image"), torch.Tensor):
            return batch
        images = batch["image"]
        if self.captures_cuda_graphs:
            self._check_static_shape(images.shape)
        if self.channels_last and images.dim() == 4:
            batch = {**batch, "image": images.contiguous(memory_format=torch.channels_last)}
        return batch

    def _check_static_shape(self, shape: torch.Size) -> None:
        if self._graph_shape is None:
            self._graph_shape = shape
            return
        if shape == self._graph_shape:
            return
        assert self.compile is not None
        options = dict(self.compile)
        if options.get("mode") in _WITHOUT_CUDA_GRAPHS:
            options["mode"] = _WITHOUT_CUDA_GRAPHS[options["mode"]]
        if "options" in options:
            options["options"] = {**options["options"], "triton.cudagraphs": False}
        logger.info(
            "train_cfg.compile: training input shape changed from %s to %s; CUDA graphs need one shape, so the task "
            "is compiled again without them (mode=%r)",
            tuple(self._graph_shape),
            tuple(shape),
            options.get("mode"),
        )
        self.compile = options
        self._compile_children(options)

    def _compile_children(self, options: Mapping[str, Any]) -> None:
        for module in self._compiled:
            module.compile(**options)

"""Optimizer, parameter groups, gradient accumulation/clipping/mixed precision, and chained LR schedules.

``optim_wrapper`` and ``param_scheduler`` in a config map onto ``build_optim_wrapper`` and ``ParamSchedulers``; torch's
own optimizers and schedulers do the arithmetic (they are registered by name in OPTIMIZERS and LR_SCHEDULERS).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from densevision.precision import autocast_dtype, autocast_forward
from densevision.registry import LR_SCHEDULERS, OPTIMIZERS, ConfigError, close_matches

__all__ = [
    "NORM_LAYERS",
    "build_param_groups",
    "build_optimizer",
    "OptimWrapper",
    "build_optim_wrapper",
    "ParamSchedulers",
    "check_keys",
]

logger = logging.getLogger("densevision")

# Layers whose affine parameters are usually exempt from weight decay (decaying a norm's scale fights the norm).
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
AMP_CHOICES = ("bf16", "fp16")
OPTIM_WRAPPER_KEYS = ("optimizer", "paramwise", "accumulate_steps", "clip_grad", "amp")
PARAMWISE_KEYS = ("norm_decay_mult", "bias_decay_mult")
# Schedulers whose length an ``end`` implies when the config does not give it.
_LENGTH_ARGUMENTS = ("total_iters", "T_max")


def check_keys(section: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Reject keys the engine would silently ignore (a typo such as ``max_epoch``), naming the closest allowed one."""
    for key in section:
        if key not in allowed:
            hint = close_matches(str(key), allowed)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(allowed)}"
            raise ConfigError(f"unknown key {key!r} in {where}{suggestion}")


def build_param_groups(
    model: nn.Module, *, weight_decay: float, norm_decay_mult: float = 1.0, bias_decay_mult: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by their weight decay: ``weight_decay`` scaled by ``norm_decay_mult`` for norm
    layers (weights and biases) and by ``bias_decay_mult`` for other biases. One group per distinct decay."""
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            multiplier = norm_decay_mult if is_norm else bias_decay_mult if name == "bias" else 1.0
            groups.setdefault(weight_decay * multiplier, []).append(param)
    return [{"params": params, "weight_decay": decay} for decay, params in groups.items()]


def build_optimizer(
    model: nn.Module, optimizer_cfg: Mapping[str, Any], paramwise: Mapping[str, Any] | None = None
) -> Optimizer:
    """An optimizer from OPTIMIZERS over ``model``'s parameters, split into decay groups when ``paramwise`` is set."""
    if not isinstance(optimizer_cfg, Mapping):
        raise ConfigError(f"optim_wrapper.optimizer must be a dict with a 'type', got {optimizer_cfg!r}")
    if paramwise:
        check_keys(paramwise, PARAMWISE_KEYS, "optim_wrapper.paramwise")
        multipliers = {k: float(v) for k, v in paramwise.items()}
        decay = float(optimizer_cfg.get("weight_decay", 0.0))
        params: Any = build_param_groups(model, weight_decay=decay, **multipliers)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.build(optimizer_cfg, params=params)


class OptimWrapper:
    """Owns the update step: loss scaling for accumulation, mixed precision, clipping, zeroing.

    ``amp='bf16'`` runs the task's forward under autocast on CUDA and on CPUs with native bfloat16 (elsewhere float32,
    with one warning); ``'fp16'`` on CUDA only, with a GradScaler (float32 on CPU, with a warning). Losses are computed
    in float32 either way (``densevision.precision``).

    With ``accumulate_steps=k`` the optimizer steps after every k-th batch and after the last batch of an epoch; each
    loss is divided by the number of batches in its group, so k batches of n equal one batch of k·n.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        device: torch.device,
        accumulate_steps: int = 1,
        clip_grad: Mapping[str, Any] | None = None,
        amp: str | None = None,
    ) -> None:
        if not isinstance(accumulate_steps, int) or accumulate_steps < 1:
            raise ConfigError(f"optim_wrapper.accumulate_steps must be a positive integer, got {accumulate_steps!r}")
        if clip_grad is not None and (not isinstance(clip_grad, Mapping) or "max_norm" not in clip_grad):
            raise ConfigError(f"optim_wrapper.clip_grad must be None or dict(max_norm=...), got {clip_grad!r}")
        if amp is not None and amp not in AMP_CHOICES:
            raise ConfigError(f"optim_wrapper.amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.optimizer = optimizer
        self.accumulate_steps = accumulate_steps
        self.clip_grad = dict(clip_grad) if clip_grad is not None else None
        self.device = device
        self.amp_dtype = autocast_dtype(amp, device, what="optim_wrapper.amp")
        if self.amp_dtype is not None:
            logger.info("mixed precision: the forward runs in %s autocast on %s, losses in float32", amp, device.type)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def autocast(self, module: nn.Module) -> contextlib.AbstractContextManager:
        """While open, ``module``'s forward runs under autocast to the AMP dtype with float32 outputs (nothing when
        training in float32); the loss computed from them stays float32."""
        return autocast_forward(module, self.amp_dtype, self.device.type)

    def group_size(self, index: int, iters_per_epoch: int) -> int:
        """How many batches share the optimizer step that batch ``index`` of the epoch contributes to."""
        start = index - index % self.accumulate_steps
        return min(self.accumulate_steps, iters_per_epoch - start)

    def should_step(self, index: int, iters_per_epoch: int) -> bool:
        return (index + 1) % self.accumulate_steps == 0 or index + 1 == iters_per_epoch

    def backward(self, loss: torch.Tensor, *, group_size: int) -> None:
        loss = loss / group_size
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> torch.Tensor | None:
        """Clip (if asked), step and zero the gradients; returns the gradient norm before clipping, if clipped (on the
        device: reading it waits for the device, which the loop does once the next step is queued)."""
        grad_norm = None
        if self.clip_grad is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            grad_norm = nn.utils.clip_grad_norm_(params, **self.clip_grad).detach()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[str]:
        """Restore the optimizer's moments and step counts and the loss scale, but keep each param group's current
        hyper-parameters (lr, weight_decay, momentum, betas... as the config and its fast-forwarded schedules set
        them): a resumed run follows the config it is given. Returns one line per value that differs from ``state``.
        """
        current = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        changes = []
        for index, (group, wanted) in enumerate(zip(self.optimizer.param_groups, current)):
            differing = [key for key, value in wanted.items() if key not in group or group[key] != value]
            if differing:
                values = ", ".join(f"{key} {_show(group.get(key))} -> {_show(wanted[key])}" for key in differing)
                changes.append(f"optimizer param group {index}: {values}")
            group.update(wanted)
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        return changes


def _show(value: Any) -> str:
    """A hyper-parameter for the log: floats to 6 significant digits (an LR after a schedule has float noise)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return f"({', '.join(_show(v) for v in value)})"
    return repr(value)


def build_optim_wrapper(model: nn.Module, cfg: Mapping[str, Any], device: torch.device) -> OptimWrapper:
    """``optim_wrapper`` config -> OptimWrapper (see configs/_base_/default_runtime.py for the keys)."""
    check_keys(cfg, OPTIM_WRAPPER_KEYS, "optim_wrapper")
    if "optimizer" not in cfg:
        raise ConfigError("optim_wrapper has no 'optimizer', e.g. optimizer=dict(type='RMSprop', lr=1e-3)")
    optimizer = build_optimizer(model, cfg["optimizer"], cfg.get("paramwise"))
    return OptimWrapper(
        optimizer,
        device=device,
        accumulate_steps=cfg.get("accumulate_steps", 1),
        clip_grad=cfg.get("clip_grad"),
        amp=cfg.get("amp"),
    )


@dataclass
class _Phase:
    """One torch scheduler active on ``[begin, end)`` epochs (``by_epoch``) or training iterations (batches)."""

    cfg: dict[str, Any]
    by_epoch: bool
    begin: int
    end: float
    scheduler: LRScheduler | None = None

    def active(self, counter: int) -> bool:
        return self.begin <= counter < self.end


class ParamSchedulers:
    """``param_scheduler``: torch LR schedulers chained on one optimizer, each stepping per epoch or per iteration
    inside its ``[begin, end)`` window.

    Torch's schedulers are chainable (each multiplies the current LR), so a per-iteration ``LinearLR`` warm-up composes
    with a per-epoch ``ExponentialLR``. A phase's scheduler is created when its window opens, so its first value
    applies at ``begin``; ``end`` also fills ``total_iters``/``T_max`` when those are not given.
    """

    def __init__(self, optimizer: Optimizer, cfgs: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> None:
        self.optimizer = optimizer
        if cfgs is None:
            cfgs = []
        elif isinstance(cfgs, Mapping):
            cfgs = [cfgs]
        self.phases = [self._phase(i, cfg) for i, cfg in enumerate(cfgs)]

    @staticmethod
    def _phase(index: int, cfg: Mapping[str, Any]) -> _Phase:
        where = f"param_scheduler[{index}]"
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise ConfigError(f"{where} must be a dict with a 'type' from LR_SCHEDULERS, got {cfg!r}")
        torch_cfg = {k: v for k, v in cfg.items() if k not in ("by_epoch", "begin", "end")}
        begin, end = cfg.get("begin", 0), cfg.get("end", math.inf)
        if not isinstance(begin, int) or begin < 0 or not end > begin:
            raise ConfigError(f"{where} needs 0 <= begin < end, got begin={begin!r}, end={end!r}")
        kind = cfg["type"]
        try:
            factory = LR_SCHEDULERS.get(kind) if isinstance(kind, str) else kind
        except KeyError as err:
            raise ConfigError(f"{where}: {err.args[0]}") from None
        if factory is torch.optim.lr_scheduler.ReduceLROnPlateau:
            raise ConfigError(f"{where}: ReduceLROnPlateau is not supported (it steps on a metric, not a counter)")
        if math.isfinite(end):
            parameters = inspect.signature(factory).parameters
            for name in _LENGTH_ARGUMENTS:
                if name in parameters and name not in torch_cfg:
                    torch_cfg[name] = int(end - begin)
        return _Phase(cfg=torch_cfg, by_epoch=bool(cfg.get("by_epoch", True)), begin=begin, end=end)

    def _open(self, phase: _Phase) -> None:
        phase.scheduler = LR_SCHEDULERS.build(phase.cfg, optimizer=self.optimizer)

    def _advance(self, by_epoch: bool, counter: int, *, starting: bool) -> None:
        for phase in self.phases:
            if phase.by_epoch != by_epoch or not phase.active(counter):
                continue
            if starting:
                if phase.scheduler is None:
                    self._open(phase)
            elif phase.scheduler is not None:
                with warnings.catch_warnings():
                    # Skipped optimizer steps (accumulation, fp16 overflow) are expected here, not a misuse.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                    phase.scheduler.step()

    def before_epoch(self, epoch: int) -> None:
        self._advance(True, epoch, starting=True)

    def after_epoch(self, epoch: int) -> None:
        self._advance(True, epoch, starting=False)

    def before_iter(self, iteration: int) -> None:
        self._advance(False, iteration, starting=True)

    def after_iter(self, iteration: int) -> None:
        self._advance(False, iteration, starting=False)

    def fast_forward(self, *, epochs: int, iterations: int, iters_per_epoch: int) -> None:
        """Step the schedules through ``epochs`` epochs and ``iterations`` batches as training does, without training.

        A resumed run calls this on schedules built from the config it is given, so its LRs are that config's at the
        point where the checkpoint stopped; the same config gives the very LRs of an uninterrupted run. Epoch ``e``
        holds ``iters_per_epoch`` batches, the last one what remains.
        """
        per_iteration = any(not phase.by_epoch for phase in self.phases)
        done = 0
        for epoch in range(epochs):
            self.before_epoch(epoch)
            count = iterations - done if epoch == epochs - 1 else min(iters_per_epoch, iterations - done)
            if per_iteration:
                for iteration in range(done, done + count):
                    self.before_iter(iteration)
                    self.after_iter(iteration)
            done += count
            self.after_epoch(epoch)

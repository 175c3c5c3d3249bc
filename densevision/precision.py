"""Mixed precision for a task's forward pass: on CUDA, and on CPUs that compute in bfloat16 natively.

Only the forward of the task (the network) runs under ``torch.autocast``; its outputs come back as float32, so losses,
softmax probabilities and metrics are computed in float32 whatever the precision. On CPU, bfloat16 pays only with
native bf16 dot products (AVX512-BF16, AMX-BF16, Arm BF16): elsewhere oneDNN emulates it more slowly than float32,
so ``'bf16'`` runs in float32 there, with one warning. ``'fp16'`` on CPU runs in float32 too, with a warning pointing
to ``'bf16'``: CPUs rarely compute in float16 natively, and float16 training needs loss scaling that only the CUDA
path has. On CUDA both run as asked (float16 training with a GradScaler).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from densevision.registry import ConfigError

__all__ = [
    "PRECISIONS",
    "cpu_bf16_supported",
    "autocast_dtype",
    "add_autocast_hooks",
    "autocast_forward",
    "to_float32",
]

logger = logging.getLogger("densevision")

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CPU features that give bfloat16 matrix products (torch.cpu.get_capabilities() names; x86 then arm64).
_CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def cpu_bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively, so that autocast to bf16 is faster than float32."""
    capabilities = torch.cpu.get_capabilities()
    return torch.backends.mkldnn.is_available() and any(capabilities.get(f) for f in _CPU_BF16_FEATURES)


def autocast_dtype(precision: str | None, device: torch.device | str, *, what: str = "precision") -> torch.dtype | None:
    """The autocast dtype that ``precision`` (``None``/``'fp32'``, ``'bf16'``, ``'fp16'``) gets on ``device``, or
    ``None`` for float32; a precision the device does not accelerate falls back to float32 with one warning naming
    ``what`` (the config key or option that asked)."""
    if precision is None or precision == "fp32":
        return None
    if precision not in _DTYPES:
        raise ConfigError(f"{what} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    dtype = _DTYPES[precision]
    if device.type == "cuda":
        return dtype
    if device.type == "cpu" and dtype is torch.bfloat16:
        if cpu_bf16_supported():
            return dtype
        logger.warning(
            "%s=%r runs in float32: this CPU has no native bfloat16 (AVX512-BF16, AMX-BF16 or Arm BF16), and emulated "
            "bf16 is slower than float32",
            what,
            precision,
        )
        return None
    if device.type == "cpu":
        logger.warning(
            "%s=%r runs in float32 on CPU (float16 is not accelerated there); 'bf16' is the CPU's mixed precision",
            what,
            precision,
        )
        return None
    logger.warning("%s=%r runs in float32: no mixed precision on device %s", what, precision, device)
    return None


def to_float32(value: Any) -> Any:
    """bfloat16/float16 tensors (also inside tuples, lists and dicts) as float32; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        return {key: to_float32(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_float32(item) for item in value)
    return value


def add_autocast_hooks(module: nn.Module, dtype: torch.dtype, device_type: str) -> list[RemovableHandle]:
    """Make every call of ``module`` (a task: ``loss`` and ``predict`` call it for the network's outputs) run under
    autocast to ``dtype`` and return float32 tensors, so what follows the forward — the loss, the softmax, the
    metric — is float32. Returns the hooks' handles (``handle.remove()`` undoes it)."""
    contexts: list[torch.autocast] = []

    def enter(_module: nn.Module, _args: Any) -> None:
        context = torch.autocast(device_type, dtype=dtype)
        context.__enter__()
        contexts.append(context)

    def leave(_module: nn.Module, _args: Any, output: Any) -> Any:
        contexts.pop().__exit__(None, None, None)
        return to_float32(output)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]


@contextlib.contextmanager
def autocast_forward(module: nn.Module, dtype: torch.dtype | None, device_type: str) -> Iterator[None]:
    """``add_autocast_hooks`` while the context is open; ``dtype=None`` (float32) changes nothing."""
    handles = add_autocast_hooks(module, dtype, device_type) if dtype is not None else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

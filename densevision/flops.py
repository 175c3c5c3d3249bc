"""Multiply-adds per image, counted by forward hooks on a model's modules, with a running total at each exit.

The counting convention is MSDNet's authors' (kalviny/MSDNet-PyTorch ``op_counter.py``), which their FLOP figures and
budgets use: a convolution counts ``in/groups * kernel area`` per output value, a linear layer its weights and biases
per row, an element-wise activation one per input value, a pooling window its area per output value (global pooling:
one per input value); normalisation, dropout, functional calls and tensor arithmetic count nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FlopCount", "count_flops"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
_WINDOW_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_GLOBAL_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


@dataclass
class FlopCount:
    """``total`` multiply-adds per image of one forward; ``at_exits[k]``: those spent when exit module k returned
    (everything run before it, earlier exits included: the cost of answering from exit k)."""

    total: int
    at_exits: list[int] = field(default_factory=list)


def _module_flops(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> float:
    """Multiply-adds of one call for the whole batch (0 for modules the convention does not count)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        rows = output.numel() // module.out_features
        return rows * (module.weight.numel() + (0 if module.bias is None else module.bias.numel()))
    if isinstance(module, _ACTIVATIONS):
        return inputs[0].numel()
    if isinstance(module, _WINDOW_POOLS):
        kernel = module.kernel_size
        area = math.prod(kernel) if isinstance(kernel, tuple) else kernel ** (output.dim() - 2)
        return output.numel() * area
    if isinstance(module, _GLOBAL_POOLS):
        return inputs[0].numel()
    return 0


def count_flops(
    model: nn.Module,
    inputs: Tensor,
    *,
    exits: Sequence[nn.Module] = (),
) -> FlopCount:
    """Multiply-adds per image of ``model(inputs)``, run without autograd.

    ``exits`` are modules after whose call the running total is recorded, in call order (an MSDNet's
    ``classifiers``). Counts are per image: the batch's total divided by ``inputs``' first dimension.
    """
    batch = inputs.shape[0]
    spent = 0.0
    at_exits: list[int] = []
    exit_ids = {id(module) for module in exits}

    def count(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        nonlocal spent
        spent += _module_flops(module, args, output)

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        at_exits.append(round(spent / batch))

    handles = [module.register_forward_hook(count) for module in model.modules()]
    handles += [module.register_forward_hook(record) for module in model.modules() if id(module) in exit_ids]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(total=round(spent / batch), at_exits=at_exits)

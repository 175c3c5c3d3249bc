"""The memory-efficient dense layer's machinery (Pleiss et al. 2017): concatenation, BatchNorm and activation written
into shared scratch storage and recomputed in backward, so a block's training memory grows linearly with its depth.

``DenseLayer``/``DenseBlock`` (``models.blocks``) call these autograd Functions; float64 tests hold them equal to the
plain layer (outputs, gradients, BatchNorm statistics updated once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:
    from densevision.models.blocks import DenseLayer

__all__ = [
    "BatchNormReLU",
    "NormActConv",
    "SharedConcatenation",
    "SharedFeatures",
    "exporting",
    "is_batch_norm_relu",
    "parameters_of",
]


@contextmanager
def _running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers (BatchNorm running mean/var/count) on exit.

    Memory-efficient layers whose norm is not a plain BatchNorm2d run it twice per step (forward, then recomputation in
    backward); the recomputation must give the same output without counting the batch into the running statistics a
    second time.
    """
    saved = [(buf, buf.detach().clone()) for buf in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _no_saved_tensors_hooks() -> AbstractContextManager[None]:
    """Identity saved-tensor hooks: a graph built and consumed inside one backward call is nobody else's business."""
    return torch.autograd.graph.saved_tensors_hooks(_identity, _identity)


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def exporting() -> bool:
    """``torch.export``, ONNX export or TorchScript tracing: graphs hold the plain path, never the autograd function."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class SharedFeatures:
    """A memory-efficient dense block's feature maps, each written once into one buffer (Pleiss et al.'s shared
    storage), their per-channel batch statistics, computed once per map instead of once per layer reading it, and
    scratch storage the layers' temporaries share instead of each allocating its own.

    Layers read their input concatenation as a view of the buffer and keep that view for backward. The writes go
    through an alias autograd does not track: a region is written before any view covering it is saved and never
    again, so the saved views hold in backward what they held in forward.

    In a block (``chained``) backward mirrors this: the block's output gradient starts a gradient buffer shaped like
    the features' and each layer adds its whole input gradient into it with one kernel, instead of autograd summing
    every map's gradient from each later layer separately (quadratic in depth: 535 small additions per DenseNet-121
    step). Autograd then only links each layer to the previous layer's maps, whose gradient region is complete
    once that layer's backward has run, because every later layer's has run before it.
    """

    def __init__(self, first: Tensor, channels: int, *, chained: bool = False) -> None:
        n, _, h, w = first.shape
        self.buffer = first.new_empty((n, channels, h, w))
        self._writer = self.buffer.data
        self.chained = chained
        self.gradient: Tensor | None = None  # the chained block's gradient buffer, during its backward
        self.first_channels = first.shape[1]
        self.filled = 0
        self.count = n * h * w  # values per channel
        # Per-channel batch mean and biased variance, once a layer asks for them; channels measured so far.
        self._mean: Tensor | None = None
        self._var: Tensor | None = None
        self._measured = 0
        self._scratch: dict[int, Tensor] = {}
        self.append(first)

    def append(self, maps: Tensor) -> None:
        channels = maps.shape[1]
        self._writer[:, self.filled : self.filled + channels] = maps.detach()
        self.filled += channels
        if self._mean is not None:  # batch statistics are in use: measure the new maps while they are contiguous
            self._measure(maps.detach())

    def concat(self) -> Tensor:
        return self.buffer[:, : self.filled]

    def batch_statistics(self, channels: int) -> tuple[Tensor, Tensor]:
        """Per-channel batch mean and biased variance of the first ``channels`` maps, at least in float32 (as
        BatchNorm's). Kept here once for all layers, so backward reads them back instead of each layer saving its own.
        """
        if self._mean is None:
            dtype = torch.promote_types(self.buffer.dtype, torch.float32)
            self._mean, self._var = self.buffer.new_empty((2, self.buffer.shape[1]), dtype=dtype).unbind()
            self._measure(self.concat())
        return self._mean[:channels], self._var[:channels]

    def scratch(self, slot: int, like: Tensor) -> Tensor:
        """A contiguous tensor shaped and typed like ``like`` in reusable storage ``slot``: every layer of the block
        reuses one allocation per slot (fresh large allocations cost page faults on CPU)."""
        storage = self._scratch.get(slot)
        if storage is None or storage.dtype != like.dtype or storage.numel() < like.numel():
            storage = self._scratch[slot] = like.new_empty(self.buffer.numel())
        return storage[: like.numel()].view(like.shape)

    def release_scratch(self) -> None:
        self._scratch.clear()

    def _measure(self, maps: Tensor) -> None:
        end = self._measured + maps.shape[1]
        self._mean[self._measured : end], self._var[self._measured : end] = _mean_var(maps)
        self._measured = end


def _mean_var(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance in at least float32, as BatchNorm computes them, by two passes over the
    maps: on CPU several times faster than ``torch.var_mean`` or BatchNorm's own statistics kernel."""
    maps = maps.to(torch.promote_types(maps.dtype, torch.float32))
    mean = maps.mean((0, 2, 3), keepdim=True)
    centred = maps - mean
    return mean.flatten(), centred.mul_(centred).mean((0, 2, 3))


def is_batch_norm_relu(norm: nn.Module, act: nn.Module) -> bool:
    """A plain BatchNorm2d and ReLU: memory-efficient layers run them with explicit kernels."""
    return type(norm) is nn.BatchNorm2d and type(act) is nn.ReLU


def _fuses_batch_norm(x: Tensor) -> bool:
    """Whether memory-efficient layers run BatchNorm's own training kernel on ``x``'s device, which measures the batch
    statistics and updates the running ones itself: on GPUs, where launching kernels is the bottleneck, that is one
    call instead of ten (statistics measured once per block, running-statistics arithmetic); on CPU BatchNorm's
    statistics are 2-4x slower than ``_mean_var`` (DenseNet-121 shapes, one thread: 2.1 against 0.5 ms on 8x128x28x28).
    """
    return x.device.type != "cpu"


def _count_batch(norm: nn.BatchNorm2d, count: int) -> tuple[bool, float]:
    """Whether ``norm`` normalises by the batch's statistics and the momentum of its running statistics' update,
    counting the batch as ``nn.BatchNorm2d.forward`` does (``count`` values per channel)."""
    batch_statistics = norm.training or norm.running_mean is None
    if batch_statistics and count < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {count}")
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(norm.num_batches_tracked)
    return batch_statistics, momentum


def _batch_norm_statistics(
    norm: nn.BatchNorm2d, count: int, measure: Callable[[], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor, bool]:
    """The mean and biased variance ``norm`` normalises by (``measure()`` gives the batch's), and whether they are the
    batch's; counts the batch into the running statistics exactly as ``nn.BatchNorm2d.forward`` does."""
    batch_statistics, momentum = _count_batch(norm, count)
    if not batch_statistics:
        return norm.running_mean, norm.running_var, False
    mean, var = measure()
    if norm.training and norm.track_running_stats:
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), momentum)
        unbiased = momentum * count / (count - 1)
        norm.running_var.mul_(1 - momentum).add_(var.to(norm.running_var.dtype), alpha=unbiased)
    return mean, var, True


def _batch_norm_backward(
    norm: nn.BatchNorm2d,
    grad_norm: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    batch_statistics: bool,
    needs: Sequence[bool],
) -> tuple[Tensor | None, ...]:
    """Gradients of ``norm(x)`` for ``x`` and norm's parameters (``needs``): normalised by the batch's ``mean`` and
    1/std ``invstd`` when ``batch_statistics``, else by the running statistics."""
    affine = norm.weight is not None
    grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
        grad_norm,
        x,
        norm.weight,
        norm.running_mean,
        norm.running_var,
        mean,
        invstd,
        batch_statistics,
        norm.eps,
        [needs[0], *(needs[1:] if affine else (False, False))],
    )
    return (grad_x, grad_weight, grad_bias) if affine else (grad_x,)


class BatchNormReLU(torch.autograd.Function):
    """``relu(norm(x))`` for a memory-efficient layer's plain BatchNorm2d and ReLU in one function: BatchNorm's fused
    training kernel (``_fuses_batch_norm``) or, on CPU, statistics from ``_mean_var`` (BatchNorm's CPU kernel spends
    most of its time on them); it keeps what BatchNorm and ReLU keep."""

    @staticmethod
    def forward(ctx: Any, norm: nn.BatchNorm2d, x: Tensor, *params: Tensor) -> Tensor:
        count = x.numel() // x.shape[1]
        if _fuses_batch_norm(x):
            ctx.batch_statistics, momentum = _count_batch(norm, count)
            act, mean, invstd = torch.native_batch_norm(
                x, norm.weight, norm.bias, norm.running_mean, norm.running_var, ctx.batch_statistics, momentum, norm.eps
            )
        else:
            mean, var, ctx.batch_statistics = _batch_norm_statistics(norm, count, lambda: _mean_var(x))
            act = torch.batch_norm(x, norm.weight, norm.bias, mean, var, False, 0.0, norm.eps, False)
            invstd = torch.rsqrt(var + norm.eps) if ctx.batch_statistics else var  # unused without batch statistics
        act.relu_()
        ctx.norm = norm
        ctx.save_for_backward(x, act, mean, invstd)
        return act

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_act: Tensor) -> tuple[Tensor | None, ...]:
        x, act, mean, invstd = ctx.saved_tensors
        grad_norm = torch.ops.aten.threshold_backward(grad_act, act, 0)
        return None, *_batch_norm_backward(
            ctx.norm, grad_norm, x, mean, invstd, ctx.batch_statistics, ctx.needs_input_grad[1:]
        )


class NormActConv(torch.autograd.Function):
    """``conv1(act(norm1(concat)))`` keeping for backward only the concatenation, a view of shared storage (Pleiss et
    al. 2017): backward recomputes norm1 -> act from it and back-propagates through conv1 with that input, so the
    convolution never runs twice and the per-layer concatenation and norm output are never stored.
    """

    @staticmethod
    def forward(ctx: Any, layer: DenseLayer, shared: SharedFeatures, num_features: int, *tensors: Tensor) -> Tensor:
        # tensors: the input features (all of them, whose gradients are slices of the concatenation's, or in a chained
        # block only the newest), then norm1's and conv1's parameters, which backward reads from the layer as
        # checkpointing does
        ctx.layer, ctx.shared = layer, shared
        ctx.split = [feature.shape[1] for feature in tensors[:num_features]]
        concat = shared.concat()
        ctx.first = concat.shape[1] == shared.first_channels  # the block's first layer, the last to run backward
        ctx.save_for_backward(concat)
        ctx.fused = _fuses_batch_norm(concat)
        if is_batch_norm_relu(layer.norm1, layer.relu1):
            norm = layer.norm1
            if ctx.fused:
                ctx.batch_statistics, momentum = _count_batch(norm, shared.count)
                running = norm.running_mean, norm.running_var
                _, act, _, _ = _norm_act_into_scratch(norm, concat, shared, *running, ctx.batch_statistics, momentum)
            else:
                mean, var, ctx.batch_statistics = _batch_norm_statistics(
                    norm, shared.count, lambda: shared.batch_statistics(shared.filled)
                )
                _, act, _, _ = _norm_act_into_scratch(norm, concat, shared, mean, var, False, 0.0)
        else:
            act = layer.relu1(layer.norm1(concat))
        # conv1's weight in the precision it runs in, cast once and kept for backward (autocast's cache of the cast
        # ends with the forward; plain mode keeps its cast weight for backward the same way)
        ctx.weight = _autocast_weight(layer.conv1.weight)
        conv = layer.conv1
        out = F.conv2d(act, ctx.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        ctx.conv_dtype = out.dtype  # autocast may have run conv1 in lower precision
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        layer: DenseLayer = ctx.layer
        norm, conv = layer.norm1, layer.conv1
        (concat,) = ctx.saved_tensors
        num_features = len(ctx.split)
        norm_params = parameters_of(norm)
        needs = ctx.needs_input_grad[3:]
        needs_features, needs_norm, needs_conv = (
            any(needs[:num_features]),
            needs[num_features : num_features + len(norm_params)],
            needs[num_features + len(norm_params) :],
        )
        if is_batch_norm_relu(norm, layer.relu1):
            shared: SharedFeatures = ctx.shared
            if ctx.fused:  # the batch's statistics measured again, the running ones left alone
                running = (None, None) if ctx.batch_statistics else (norm.running_mean, norm.running_var)
                x, act, mean, invstd = _norm_act_into_scratch(norm, concat, shared, *running, ctx.batch_statistics, 0.0)
            elif ctx.batch_statistics:
                mean, var = shared.batch_statistics(concat.shape[1])
                x, act, _, _ = _norm_act_into_scratch(norm, concat, shared, mean, var, False, 0.0)
                invstd = torch.rsqrt(var + norm.eps)
            else:
                x, act, mean, invstd = _norm_act_into_scratch(
                    norm, concat, shared, norm.running_mean, norm.running_var, False, 0.0
                )
            grad_act, grad_weight, grad_bias = _conv_backward(
                conv, ctx.weight, grad_out, act, ctx.conv_dtype, needs_conv
            )
            grad_act = grad_act.to(act.dtype)
            grad_norm = torch.ops.aten.threshold_backward.grad_input(grad_act, act, 0, grad_input=grad_act)  # in place
            grad_x, *norm_grads = _batch_norm_backward(
                norm, grad_norm, x, mean, invstd, ctx.batch_statistics, [needs_features, *needs_norm]
            )
            if ctx.first:  # the block is done with its scratch storage
                shared.release_scratch()
        else:
            # norm1's backward reads the running statistics it was given: restore them only after it ran.
            with torch.enable_grad(), _running_stats_frozen(norm), _no_saved_tensors_hooks():
                x = concat.contiguous().requires_grad_(needs_features)
                act = layer.relu1(norm(x))
                grad_act, grad_weight, grad_bias = _conv_backward(
                    conv, ctx.weight, grad_out, act, ctx.conv_dtype, needs_conv
                )
                wrt = [x] * needs_features + [p for p, need in zip(norm_params, needs_norm, strict=True) if need]
                grads = list(torch.autograd.grad(act, wrt, grad_act.to(act.dtype))) if wrt else []
            grad_x = grads.pop(0) if needs_features else None
            norm_grads = [grads.pop(0) if need else None for need in needs_norm]
        conv_grads = (grad_weight, grad_bias)[: len(needs_conv)]
        return None, None, None, *_feature_gradients(ctx, grad_x), *norm_grads, *conv_grads


def _feature_gradients(ctx: Any, grad_x: Tensor | None) -> Sequence[Tensor | None]:
    """The gradients of a layer's input features from its concatenation's, ``grad_x``: slices of it, or in a chained
    block the newest maps' region of the gradient buffer once ``grad_x`` is added into it."""
    shared: SharedFeatures = ctx.shared
    if grad_x is None:
        return (None,) * len(ctx.split)
    if not shared.chained:
        return grad_x.split_with_sizes(ctx.split, 1)
    channels = grad_x.shape[1]
    region = shared.gradient[:, :channels]
    region.add_(grad_x)
    if ctx.first:
        shared.gradient = None  # the region returned is the block input's, and only the caller reads it now
    return (region[:, channels - ctx.split[0] :],)


def _norm_act_into_scratch(
    norm: nn.BatchNorm2d,
    concat: Tensor,
    shared: SharedFeatures,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``relu(norm(concat))`` by BatchNorm's kernel with the given arguments, in the block's scratch storage: the
    contiguous copy of ``concat`` (BatchNorm's kernels are several times slower on a strided view), the activation
    and the batch's mean and 1/std (when ``training``)."""
    x = shared.scratch(0, concat).copy_(concat)
    statistics_dtype = torch.promote_types(x.dtype, torch.float32)
    act, mean, invstd = torch.ops.aten.native_batch_norm.out(
        x,
        norm.weight,
        norm.bias,
        running_mean,
        running_var,
        training,
        momentum,
        norm.eps,
        out=shared.scratch(1, x),
        # two tensors: CUDA's kernel writes the mean into one and 1/std into the other, then normalises by them
        save_mean=x.new_empty(0, dtype=statistics_dtype),
        save_invstd=x.new_empty(0, dtype=statistics_dtype),
    )
    return x, act.relu_(), mean, invstd


def parameters_of(module: nn.Module) -> list[Tensor]:
    """``module.parameters()``, read directly for a module without children: the generator costs more host time than
    the kernels of a small layer, and memory-efficient layers ask three times per layer and step."""
    if module._modules:
        return list(module.parameters())
    return [param for param in module._parameters.values() if param is not None]


def _autocast_weight(weight: Tensor) -> Tensor:
    """``weight`` in the precision autocast runs convolutions in on its device, or as it is without autocast."""
    device = weight.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _conv_backward(
    conv: nn.Conv2d, weight: Tensor, grad_out: Tensor, act: Tensor, dtype: torch.dtype, needs: Sequence[bool]
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gradients of ``conv(act)`` for its input, ``weight`` (conv's, as the forward ran it) and bias, in the precision
    the forward convolution ran in."""
    grad_act, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_out,
        act.detach().to(dtype),
        weight.to(dtype),
        None if conv.bias is None else [conv.out_channels],
        conv.stride,
        conv.padding,
        conv.dilation,
        False,
        [0] * len(conv.stride),
        conv.groups,
        [True, needs[0], conv.bias is not None and needs[1]],
    )
    weight_grad = None if grad_weight is None else grad_weight.to(conv.weight.dtype)
    bias_grad = None if grad_bias is None else grad_bias.to(conv.bias.dtype)
    return grad_act, weight_grad, bias_grad


class SharedConcatenation(torch.autograd.Function):
    """A memory-efficient dense block's output: its buffer (from channel ``start`` on), which already holds every
    layer's maps; autograd links it to the last layer's only. Backward starts the block's gradient buffer with the
    output's gradient (zero for the block input when ``return_new_only``) and hands the last maps their region."""

    @staticmethod
    def forward(ctx: Any, buffer: Tensor, shared: SharedFeatures, start: int, last: Tensor) -> Tensor:
        ctx.shared, ctx.start, ctx.last_channels = shared, start, last.shape[1]
        return buffer[:, start:]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        shared: SharedFeatures = ctx.shared
        gradient = shared.gradient = grad.new_empty(shared.buffer.shape)
        gradient[:, : ctx.start].zero_()
        gradient[:, ctx.start :].copy_(grad)
        return None, None, None, gradient[:, -ctx.last_channels :]

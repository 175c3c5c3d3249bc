"""The only dense-block code in densevision: dense layer, dense block and transition.

ImageNet DenseNets, DenseNet-BC, the FC-DenseNet (Tiramisu) paths and the DSOD backbone are all these three modules
with different arguments. Module names follow torchvision (``denselayer{i}.norm1/conv1/norm2/conv2``,
``transition.norm/conv/pool``) because those state_dict keys are a public API other code loads.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from densevision.registry import ConfigError

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "dense_stage",
    "make_act",
    "resolve_act_layer",
    "resolve_norm_act",
    "resolve_norm_layer",
]

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[..., nn.Module]
# What a config may write for a norm or activation layer: a class or other callable, a name, or dict(type=name, ...).
NormSpec = NormLayer | str | Mapping[str, Any]
ActSpec = ActLayer | str | Mapping[str, Any]


def _group_norm(channels: int, *, num_groups: int = 32, **options: Any) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``num_groups`` that divides ``channels`` (any width builds)."""
    groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, **options)


# Names as timm writes them ('batchnorm', 'groupnorm'), matched without case or underscores, so 'BatchNorm2d',
# 'sync_batchnorm' and 'GroupNorm' name the same layers.
_NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "syncbatchnorm": nn.SyncBatchNorm,
    "groupnorm": _group_norm,
}
_ACT_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "prelu": nn.PReLU,
}


def _resolve_layer(spec: Any, table: Mapping[str, Callable[..., nn.Module]], argument: str) -> Callable[..., nn.Module]:
    if callable(spec):
        return spec
    if isinstance(spec, str):
        kind, options = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("type"), str):
        kind, options = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    else:
        raise ConfigError(f"{argument} must be a class, a callable, a name or dict(type=name, ...), got {spec!r}")
    layer = table.get(kind.lower().replace("_", ""))
    if layer is None:
        raise ConfigError(f"{argument} type must be one of {sorted(table)} (any case, '_' ignored), got {kind!r}")
    return functools.partial(layer, **options) if options else layer


def resolve_norm_layer(spec: NormSpec) -> NormLayer:
    """A ``channels -> module`` factory from a config value, so small-batch detectors can swap BatchNorm.

    ``spec`` is a class or callable (returned as is: ``nn.BatchNorm2d``, ``functools.partial(nn.GroupNorm, 8)``,
    torchvision's ``FrozenBatchNorm2d``), a name (``'batchnorm'``/``'BatchNorm2d'``, ``'syncbatchnorm'``,
    ``'groupnorm'``: 32 groups) or a dict such as ``dict(type='GroupNorm', num_groups=16)`` whose other keys go to the
    layer. GroupNorm takes the largest group count not above ``num_groups`` that divides each layer's channel count.
    """
    layer = _resolve_layer(spec, _NORM_LAYERS, "norm_layer")
    group_norm = isinstance(layer, functools.partial) and layer.func is _group_norm
    if group_norm and int(layer.keywords.get("num_groups", 32)) < 1:
        raise ConfigError(f"norm_layer GroupNorm needs num_groups >= 1, got {spec!r}")
    return layer


def resolve_act_layer(spec: ActSpec) -> ActLayer:
    """An activation factory from a config value: a class or callable (as is), a name (``'relu'``, ``'silu'``,
    ``'gelu'``, ``'leaky_relu'``, ...) or a dict such as ``dict(type='leaky_relu', negative_slope=0.1)``."""
    return _resolve_layer(spec, _ACT_LAYERS, "act_layer")


def resolve_norm_act(norm_layer: NormSpec, act_layer: ActSpec) -> tuple[NormLayer, ActLayer]:
    """Both factories every densevision network takes (``norm_layer``/``act_layer``, as timm's models do)."""
    return resolve_norm_layer(norm_layer), resolve_act_layer(act_layer)


def make_act(act_layer: ActLayer) -> nn.Module:
    """An activation module, in-place when the class supports it (ReLU after BN never needs its input kept)."""
    try:
        accepts_inplace = "inplace" in inspect.signature(act_layer).parameters
    except (TypeError, ValueError):
        accepts_inplace = False
    return act_layer(inplace=True) if accepts_inplace else act_layer()


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


def _exporting() -> bool:
    """``torch.export``, ONNX export or TorchScript tracing: graphs hold the plain path, never the autograd function."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class _SharedFeatures:
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


def _is_batch_norm_relu(norm: nn.Module, act: nn.Module) -> bool:
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


class _BatchNormReLU(torch.autograd.Function):
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


class _NormActConv(torch.autograd.Function):
    """``conv1(act(norm1(concat)))`` keeping for backward only the concatenation, a view of shared storage (Pleiss et
    al. 2017): backward recomputes norm1 -> act from it and back-propagates through conv1 with that input, so the
    convolution never runs twice and the per-layer concatenation and norm output are never stored.
    """

    @staticmethod
    def forward(ctx: Any, layer: DenseLayer, shared: _SharedFeatures, num_features: int, *tensors: Tensor) -> Tensor:
        # tensors: the input features (all of them, whose gradients are slices of the concatenation's, or in a chained
        # block only the newest), then norm1's and conv1's parameters, which backward reads from the layer as
        # checkpointing does
        ctx.layer, ctx.shared = layer, shared
        ctx.split = [feature.shape[1] for feature in tensors[:num_features]]
        concat = shared.concat()
        ctx.first = concat.shape[1] == shared.first_channels  # the block's first layer, the last to run backward
        ctx.save_for_backward(concat)
        ctx.fused = _fuses_batch_norm(concat)
        if _is_batch_norm_relu(layer.norm1, layer.relu1):
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
        out = layer.conv1(act)
        ctx.conv_dtype = out.dtype  # autocast may have run conv1 in lower precision
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        layer: DenseLayer = ctx.layer
        norm, conv = layer.norm1, layer.conv1
        (concat,) = ctx.saved_tensors
        num_features = len(ctx.split)
        norm_params = _parameters(norm)
        needs = ctx.needs_input_grad[3:]
        needs_features, needs_norm, needs_conv = (
            any(needs[:num_features]),
            needs[num_features : num_features + len(norm_params)],
            needs[num_features + len(norm_params) :],
        )
        if _is_batch_norm_relu(norm, layer.relu1):
            shared: _SharedFeatures = ctx.shared
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
            grad_act, grad_weight, grad_bias = _conv_backward(conv, grad_out, act, ctx.conv_dtype, needs_conv)
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
                grad_act, grad_weight, grad_bias = _conv_backward(conv, grad_out, act, ctx.conv_dtype, needs_conv)
                wrt = [x] * needs_features + [p for p, need in zip(norm_params, needs_norm, strict=True) if need]
                grads = list(torch.autograd.grad(act, wrt, grad_act.to(act.dtype))) if wrt else []
            grad_x = grads.pop(0) if needs_features else None
            norm_grads = [grads.pop(0) if need else None for need in needs_norm]
        conv_grads = (grad_weight, grad_bias)[: len(needs_conv)]
        return None, None, None, *_feature_gradients(ctx, grad_x), *norm_grads, *conv_grads


def _feature_gradients(ctx: Any, grad_x: Tensor | None) -> Sequence[Tensor | None]:
    """The gradients of a layer's input features from its concatenation's, ``grad_x``: slices of it, or in a chained
    block the newest maps' region of the gradient buffer once ``grad_x`` is added into it."""
    shared: _SharedFeatures = ctx.shared
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
    shared: _SharedFeatures,
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


def _parameters(module: nn.Module) -> list[Tensor]:
    """``module.parameters()``, read directly for a module without children: the generator costs more host time than
    the kernels of a small layer, and memory-efficient layers ask three times per layer and step."""
    if module._modules:
        return list(module.parameters())
    return [param for param in module._parameters.values() if param is not None]


def _conv_backward(
    conv: nn.Conv2d, grad_out: Tensor, act: Tensor, dtype: torch.dtype, needs: Sequence[bool]
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gradients of ``conv(act)`` for its input, weight and bias, in the precision the forward convolution ran in."""
    grad_act, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_out,
        act.detach().to(dtype),
        conv.weight.to(dtype),
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


class DenseLayer(nn.Module):
    """Pre-activation dense layer producing ``growth_rate`` new feature maps from all earlier ones.

    With ``bottleneck_width`` b (DenseNet-B, DSOD): BN-act-Conv1x1(b*k)-BN-act-Conv3x3(k); without (FC-DenseNet, plain
    DenseNet): BN-act-Conv3x3(k). Dropout is element-wise (``F.dropout``), as in both papers — not Dropout2d.

    ``memory_efficient`` (Pleiss et al. 2017) keeps neither the concatenation of the inputs nor norm1 -> act's output
    for backward, only conv1's output: backward recomputes norm1 -> act from the concatenation, which inside a dense
    block is shared storage (the block's output), so a block's training memory grows linearly, not quadratically, with
    its depth. conv1 runs once, and on CPU a plain BatchNorm2d norm1 takes each map's batch statistics, measured once
    per block, instead of reducing the whole concatenation again in every layer (elsewhere BatchNorm's fused kernel
    measures them: ``_fuses_batch_norm``). Under ``torch.compile`` the layer checkpoints concatenation -> norm1 -> act
    -> conv1 instead, which AOTAutograd backends (Inductor, aot_eager) recompute themselves.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        *,
        bottleneck_width: int | None = 4,
        drop_rate: float = 0.0,
        conv_bias: bool = False,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_channels)
        self.relu1 = make_act(act_layer)
        if bottleneck_width:
            width = bottleneck_width * growth_rate
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=conv_bias)
            self.norm2 = norm_layer(width)
            self.relu2 = make_act(act_layer)
            self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=conv_bias)
        else:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=conv_bias)
        self.has_bottleneck = bool(bottleneck_width)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def forward(self, features: Tensor | Sequence[Tensor], *, shared: _SharedFeatures | None = None) -> Tensor:
        """New feature maps from ``features``; a memory-efficient dense block passes its ``shared`` storage of them and
        as ``features`` only the newest maps (the storage holds the rest)."""
        inputs = [features] if isinstance(features, Tensor) else list(features)
        # Recompute whenever a backward pass may follow, in eval mode too (frozen-BN fine-tuning, detection backbones).
        efficient = self.memory_efficient and torch.is_grad_enabled() and not _exporting()
        compiling = torch.compiler.is_compiling()
        if not efficient:
            out = self._first_stage(*inputs)
        elif compiling:
            # Compiled (AOTAutograd): the compiler recomputes the checkpointed stage in backward and applies norm1's
            # running-statistics update once; it cannot trace the shared-storage function.
            out = checkpoint(self._first_stage, *inputs, use_reentrant=False)
        else:
            if shared is None:
                shared = _SharedFeatures(inputs[0], sum(t.shape[1] for t in inputs))
                for maps in inputs[1:]:
                    shared.append(maps)
            elif shared.chained:
                inputs = inputs[-1:]
            params = [*_parameters(self.norm1), *_parameters(self.conv1)]
            out = _NormActConv.apply(self, shared, len(inputs), *inputs, *params)
        if self.has_bottleneck:
            if efficient and not compiling and _is_batch_norm_relu(self.norm2, self.relu2):
                out = _BatchNormReLU.apply(self.norm2, out, *_parameters(self.norm2))
            else:
                out = self.relu2(self.norm2(out))
            out = self.conv2(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out

    def _first_stage(self, *inputs: Tensor) -> Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)
        return self.conv1(self.relu1(self.norm1(x)))

    def __prepare_scriptable__(self) -> DenseLayer:
        """``torch.jit.script`` calls this first: refuse with the reason instead of a frontend error deep inside."""
        raise RuntimeError(
            "densevision models are not TorchScript-scriptable: dense layers take a tensor or a list of tensors and "
            "memory-efficient training runs custom autograd functions; use torch.compile or torch.export instead"
        )


class _SharedConcatenation(torch.autograd.Function):
    """A memory-efficient dense block's output: its buffer (from channel ``start`` on), which already holds every
    layer's maps; autograd links it to the last layer's only. Backward starts the block's gradient buffer with the
    output's gradient (zero for the block input when ``return_new_only``) and hands the last maps their region."""

    @staticmethod
    def forward(ctx: Any, buffer: Tensor, shared: _SharedFeatures, start: int, last: Tensor) -> Tensor:
        ctx.shared, ctx.start, ctx.last_channels = shared, start, last.shape[1]
        return buffer[:, start:]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        shared: _SharedFeatures = ctx.shared
        gradient = shared.gradient = grad.new_empty(shared.buffer.shape)
        gradient[:, : ctx.start].zero_()
        gradient[:, ctx.start :].copy_(grad)
        return None, None, None, gradient[:, -ctx.last_channels :]


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed the concatenation of the block input and all earlier layers' outputs.

    Returns the full stack ``[input, new_1, ..., new_L]`` (``out_channels``), or only the new maps when
    ``return_new_only`` (the Tiramisu bottleneck and up path). Without autograd, and in memory-efficient training, the
    block writes each layer's maps into one preallocated buffer instead of concatenating a growing tensor at every
    layer; plain training concatenates, because autograd keeps every layer's input concatenation anyway, and so do
    exported graphs and channels-last inputs, where the buffer's slices are slower than the copies they save.
    """

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        *,
        bottleneck_width: int | None = 4,
        drop_rate: float = 0.0,
        conv_bias: bool = False,
        memory_efficient: bool = False,
        return_new_only: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a dense block needs at least one layer, got num_layers={num_layers}")
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(
                in_channels + i * growth_rate,
                growth_rate,
                bottleneck_width=bottleneck_width,
                drop_rate=drop_rate,
                conv_bias=conv_bias,
                memory_efficient=memory_efficient,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.return_new_only = return_new_only
        self.memory_efficient = memory_efficient
        self.out_channels = num_layers * growth_rate + (0 if return_new_only else in_channels)

    def forward(self, x: Tensor) -> Tensor:
        if _exporting():
            return self._forward_concat(x)  # onnxruntime runs exported slice writes 1.4x slower (densevision/export.py)
        if not torch.is_grad_enabled():
            return self._forward_concat(x) if _channels_last(x) else self._forward_buffer(x)
        if self.memory_efficient and not torch.compiler.is_compiling():
            return self._forward_shared(x)
        return self._forward_concat(x)

    def _forward_concat(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features[1:] if self.return_new_only else features, 1)

    def _forward_shared(self, x: Tensor) -> Tensor:
        """Memory-efficient training: every map is written once into one buffer, which is also the block's output."""
        shared = _SharedFeatures(x, self.in_channels + len(self) * self.growth_rate, chained=True)
        last = x
        for layer in self.values():
            last = layer(last, shared=shared)
            shared.append(last)
        shared.release_scratch()  # backward allocates its own once it runs
        start = self.in_channels if self.return_new_only else 0
        return _SharedConcatenation.apply(shared.buffer, shared, start, last)

    def _forward_buffer(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        total = c + len(self) * self.growth_rate
        buffer = x.new_empty((n, total, h, w))
        buffer[:, :c] = x
        for layer in self.values():
            buffer[:, c : c + self.growth_rate] = layer(buffer[:, :c])
            c += self.growth_rate
        return buffer[:, self.in_channels :] if self.return_new_only else buffer


def _channels_last(x: Tensor) -> bool:
    """Channels-last (NHWC) maps: a channel slice of such a buffer is strided, so every layer would read its input
    through a copy; concatenating is then faster (DenseNet-121 on CPU: 297 against 370 ms)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class Transition(nn.Sequential):
    """BN-act-Conv1x1(out_channels)[-Dropout][-Pool2x2]: compression (DenseNet-C) and downsampling between blocks.

    ``pool`` is ``'avg'`` (DenseNet), ``'max'`` (FC-DenseNet transition down, DSOD) or ``None`` (DSOD's transitions
    w/o pooling). Compression is the caller's choice of ``out_channels`` (theta * in_channels). ``ceil_mode`` rounds
    the pooled size up (Caffe's pooling, which DSOD needs for 75 -> 38).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        pool: str | None = "avg",
        drop_rate: float = 0.0,
        conv_bias: bool = False,
        ceil_mode: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        self.add_module("norm", norm_layer(in_channels))
        self.add_module("relu", make_act(act_layer))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=conv_bias))
        if drop_rate > 0:
            self.add_module("drop", nn.Dropout(drop_rate))
        if pool == "avg":
            self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
        elif pool == "max":
            self.add_module("pool", nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
        elif pool is not None:
            raise ValueError(f"Transition pool must be 'avg', 'max' or None, got {pool!r}")
        self.out_channels = out_channels


def dense_stage(
    num_layers: int,
    in_channels: int,
    growth_rate: int,
    *,
    transition: bool = True,
    compression: float = 1.0,
    transition_channels: int | None = None,
    pool: str | None = "avg",
    ceil_mode: bool = False,
    bottleneck_width: int | None = 4,
    drop_rate: float = 0.0,
    transition_drop_rate: float = 0.0,
    conv_bias: bool = False,
    memory_efficient: bool = False,
    norm_layer: NormSpec = nn.BatchNorm2d,
    act_layer: ActSpec = nn.ReLU,
) -> tuple[DenseBlock, Transition | None]:
    """One encoder stage: a dense block, then (``transition``) the transition that compresses and pools its output.

    The one stage loop of DenseNet, the FC-DenseNet down path and DSOD, which differ only in these arguments. The
    transition keeps ``transition_channels`` maps, by default ``floor(compression * block.out_channels)``; the block
    is built before the transition, so seeded initialisation does not depend on the caller. The caller names the two
    modules (``denseblock{i}``, ``transition{i}``: the state_dict keys torchvision and the checkpoints use).
    """
    norm, act = resolve_norm_act(norm_layer, act_layer)
    block = DenseBlock(
        num_layers,
        in_channels,
        growth_rate,
        bottleneck_width=bottleneck_width,
        drop_rate=drop_rate,
        conv_bias=conv_bias,
        memory_efficient=memory_efficient,
        norm_layer=norm,
        act_layer=act,
    )
    if not transition:
        return block, None
    if transition_channels is None:
        if not 0.0 < compression <= 1.0:
            raise ConfigError(f"a dense stage's compression must be in (0, 1], got {compression}")
        transition_channels = int(math.floor(compression * block.out_channels))
    down = Transition(
        block.out_channels,
        transition_channels,
        pool=pool,
        drop_rate=transition_drop_rate,
        conv_bias=conv_bias,
        ceil_mode=ceil_mode,
        norm_layer=norm,
        act_layer=act,
    )
    return block, down

"""The only dense-block code in densevision: dense layer, dense block and transition.

ImageNet DenseNets, DenseNet-BC, the FC-DenseNet (Tiramisu) paths and the DSOD backbone are all these three modules
with different arguments. Module names follow torchvision (``denselayer{i}.norm1/conv1/norm2/conv2``,
``transition.norm/conv/pool``) because those state_dict keys are a public API other code loads.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["DenseLayer", "DenseBlock", "Transition", "make_act", "resolve_norm_layer"]

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[..., nn.Module]
# What a config may write for a norm layer: a callable, a name, or dict(type=name, **options).
NormSpec = NormLayer | str | Mapping[str, Any]

_NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {"BatchNorm2d": nn.BatchNorm2d, "SyncBatchNorm": nn.SyncBatchNorm}


def _group_norm(channels: int, *, num_groups: int = 32, **options: Any) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``num_groups`` that divides ``channels`` (any width builds)."""
    groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, **options)


def resolve_norm_layer(spec: NormSpec) -> NormLayer:
    """A ``channels -> module`` factory from a config value, so small-batch detectors can swap BatchNorm.

    ``spec`` is a callable (returned as is), ``'BatchNorm2d'``, ``'SyncBatchNorm'``, ``'GroupNorm'`` (32 groups) or a
    dict such as ``dict(type='GroupNorm', num_groups=16)`` whose other keys go to the layer. GroupNorm takes the largest
    group count not above ``num_groups`` that divides each layer's channel count.
    """
    if callable(spec):
        return spec
    if isinstance(spec, str):
        kind, options = spec, {}
    elif isinstance(spec, Mapping) and "type" in spec:
        kind, options = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    else:
        raise ValueError(f"norm_layer must be a callable, a name or dict(type=name, ...), got {spec!r}")
    if kind == "GroupNorm":
        if int(options.get("num_groups", 32)) < 1:
            raise ValueError(f"norm_layer GroupNorm needs num_groups >= 1, got {spec!r}")
        return functools.partial(_group_norm, **options)
    if kind not in _NORM_LAYERS:
        raise ValueError(f"norm_layer type must be one of {sorted([*_NORM_LAYERS, 'GroupNorm'])}, got {kind!r}")
    return functools.partial(_NORM_LAYERS[kind], **options) if options else _NORM_LAYERS[kind]


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

    Memory-efficient layers run their first stage twice per step (forward, then recomputation in backward); the
    recomputation must give the same output without counting the batch into the running statistics a second time.
    """
    saved = [(buf, buf.detach().clone()) for buf in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class DenseLayer(nn.Module):
    """Pre-activation dense layer producing ``growth_rate`` new feature maps from all earlier ones.

    With ``bottleneck_width`` b (DenseNet-B, DSOD): BN-act-Conv1x1(b*k)-BN-act-Conv3x3(k); without (FC-DenseNet, plain
    DenseNet): BN-act-Conv3x3(k). Dropout is element-wise (``F.dropout``), as in both papers — not Dropout2d.

    ``memory_efficient`` (Pleiss et al. 2017) recomputes concatenation -> norm1 -> act -> conv1 in backward instead of
    storing it, so a block's training memory grows linearly, not quadratically, with its depth.
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

    def _first_stage(self, inputs: Sequence[Tensor]) -> Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), 1)
        return self.conv1(self.relu1(self.norm1(x)))

    def _first_stage_recomputed(self, inputs: Sequence[Tensor]) -> Tensor:
        calls = 0

        def run(*tensors: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            if calls == 1:
                return self._first_stage(tensors)
            with _running_stats_frozen(self.norm1):
                return self._first_stage(tensors)

        # Nothing random runs inside, so the RNG state need not be saved and restored.
        return checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=False)

    def forward(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        inputs = [features] if isinstance(features, Tensor) else list(features)
        # Recompute whenever a backward pass may follow, in eval mode too (frozen-BN fine-tuning, detection backbones).
        if self.memory_efficient and torch.is_grad_enabled():
            out = self._first_stage_recomputed(inputs)
        else:
            out = self._first_stage(inputs)
        if self.has_bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed the concatenation of the block input and all earlier layers' outputs.

    Returns the full stack ``[input, new_1, ..., new_L]`` (``out_channels``), or only the new maps when
    ``return_new_only`` (the Tiramisu bottleneck and up path). Without autograd the block writes each layer's maps into
    one preallocated buffer instead of concatenating a growing tensor at every layer.
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
        self.out_channels = num_layers * growth_rate + (0 if return_new_only else in_channels)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self._forward_concat(x)
        return self._forward_buffer(x)

    def _forward_concat(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features[1:] if self.return_new_only else features, 1)

    def _forward_buffer(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        total = c + len(self) * self.growth_rate
        buffer = x.new_empty((n, total, h, w))
        buffer[:, :c] = x
        for layer in self.values():
            buffer[:, c : c + self.growth_rate] = layer(buffer[:, :c])
            c += self.growth_rate
        return buffer[:, self.in_channels :] if self.return_new_only else buffer


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

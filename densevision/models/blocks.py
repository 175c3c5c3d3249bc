"""The only dense-block code in densevision: dense layer, dense block and transition.

ImageNet DenseNets, DenseNet-BC, the FC-DenseNet (Tiramisu) paths and the DSOD backbone are all these three modules
with different arguments. Module names follow torchvision (``denselayer{i}.norm1/conv1/norm2/conv2``,
``transition.norm/conv/pool``) because those state_dict keys are a public API other code loads.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from densevision.models.memory_efficient import (
    BatchNormReLU,
    NormActConv,
    SharedConcatenation,
    SharedFeatures,
    exporting,
    is_batch_norm_relu,
    parameters_of,
)
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

    def forward(self, features: Tensor | Sequence[Tensor], *, shared: SharedFeatures | None = None) -> Tensor:
        """New feature maps from ``features``; a memory-efficient dense block passes its ``shared`` storage of them and
        as ``features`` only the newest maps (the storage holds the rest)."""
        inputs = [features] if isinstance(features, Tensor) else list(features)
        # Recompute whenever a backward pass may follow, in eval mode too (frozen-BN fine-tuning, detection backbones).
        efficient = self.memory_efficient and torch.is_grad_enabled() and not exporting()
        compiling = torch.compiler.is_compiling()
        if not efficient:
            out = self._first_stage(*inputs)
        elif compiling:
            # Compiled (AOTAutograd): the compiler recomputes the checkpointed stage in backward and applies norm1's
            # running-statistics update once; it cannot trace the shared-storage function.
            out = checkpoint(self._first_stage, *inputs, use_reentrant=False)
        else:
            if shared is None:
                shared = SharedFeatures(inputs[0], sum(t.shape[1] for t in inputs))
                for maps in inputs[1:]:
                    shared.append(maps)
            elif shared.chained:
                inputs = inputs[-1:]
            params = [*parameters_of(self.norm1), *parameters_of(self.conv1)]
            out = NormActConv.apply(self, shared, len(inputs), *inputs, *params)
        if self.has_bottleneck:
            if efficient and not compiling and is_batch_norm_relu(self.norm2, self.relu2):
                out = BatchNormReLU.apply(self.norm2, out, *parameters_of(self.norm2))
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
        if exporting():
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
        shared = SharedFeatures(x, self.in_channels + len(self) * self.growth_rate, chained=True)
        last = x
        for layer in self.values():
            last = layer(last, shared=shared)
            shared.append(last)
        shared.release_scratch()  # backward allocates its own once it runs
        start = self.in_channels if self.return_new_only else 0
        return SharedConcatenation.apply(shared.buffer, shared, start, last)

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

"""Multi-Scale Dense Networks (Huang et al., ICLR 2018): dense connectivity on several scales at once, with a classifier
after every block, so an image can leave at the first exit confident enough about it (anytime prediction, budgeted
batch classification; densevision.early_exit).

The structure, channel arithmetic and scale pruning follow the authors' PyTorch implementation
(kalviny/MSDNet-PyTorch, ``prune='max'``, bottlenecks on), so parameter counts and per-exit FLOPs equal theirs for the
same arguments (pinned in tests/models/test_msdnet.py).

Why not ``blocks.DenseLayer``: an MSDNet layer is post-activation (conv-BN-ReLU, not BN-ReLU-conv), its bottleneck is
``min(in, factor * out)`` wide with a factor per scale, and at every scale but the finest it concatenates two new
convolutions, one from its own scale and one strided from the finer scale, each half the scale's growth; DenseLayer
has one input scale, pre-activation and a fixed ``factor * growth`` bottleneck. The norm-layer resolver and the
in-place activation are shared with blocks.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from densevision.models.blocks import NormLayer, NormSpec, make_act, resolve_norm_layer
from densevision.registry import MODELS

__all__ = ["MSDNet", "msdnet_cifar_anytime", "msdnet_cifar_budget", "msdnet_imagenet"]

_STEMS = ("cifar", "imagenet")
_STEP_MODES = ("even", "lin_grow")


class ConvNormAct(nn.Sequential):
    """Conv (no bias) - norm - ReLU: MSDNet's basic unit (the authors' ConvBasic)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1, norm_layer: NormLayer
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            norm_layer(out_channels),
            make_act(nn.ReLU),
        )


class ScaleConv(nn.Sequential):
    """Bottleneck 1x1 (``min(in, bottleneck_factor * out)`` wide) then a 3x3 convolution, stride 2 when it reads the
    next finer scale: the new maps one input scale adds to one output scale."""

    def __init__(
        self, in_channels: int, out_channels: int, *, bottleneck_factor: int, stride: int, norm_layer: NormLayer
    ) -> None:
        width = min(in_channels, bottleneck_factor * out_channels)
        super().__init__(
            ConvNormAct(in_channels, width, kernel_size=1, norm_layer=norm_layer),
            ConvNormAct(width, out_channels, stride=stride, norm_layer=norm_layer),
        )


class ScaleUnit(nn.Module):
    """One output scale of a multi-scale layer: ``[same-scale maps, strided conv of the finer scale, conv of the same
    scale]`` concatenated (the finer-scale branch only where a finer scale is kept; each branch then adds half of the
    scale's new maps)."""

    def __init__(
        self,
        same_channels: int,
        finer_channels: int | None,
        new_channels: int,
        *,
        same_bottleneck: int,
        finer_bottleneck: int,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        branch = new_channels if finer_channels is None else new_channels // 2
        self.down = (
            None
            if finer_channels is None
            else ScaleConv(finer_channels, branch, bottleneck_factor=finer_bottleneck, stride=2, norm_layer=norm_layer)
        )
        self.same = ScaleConv(same_channels, branch, bottleneck_factor=same_bottleneck, stride=1, norm_layer=norm_layer)

    def forward(self, same: Tensor, finer: Tensor | None) -> Tensor:
        if self.down is None:
            return torch.cat([same, self.same(same)], 1)
        return torch.cat([same, self.down(finer), self.same(same)], 1)


class MultiScaleLayer(nn.Module):
    """A dense layer on the scales ``first_scale..num_scales-1``: each output scale adds its new maps to its input;
    when the layer drops the finest input scale, that scale still feeds the strided branch of the next one."""

    def __init__(
        self,
        channels: int,
        growth_rate: int,
        *,
        in_scales: int,
        out_scales: int,
        growth_factors: Sequence[int],
        bottleneck_factors: Sequence[int],
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        num_scales = len(growth_factors)
        self.drops_scale = in_scales > out_scales
        first_scale = num_scales - out_scales
        self.units = nn.ModuleList()
        for scale in range(first_scale, num_scales):
            has_finer = self.drops_scale or scale > first_scale
            self.units.append(
                ScaleUnit(
                    channels * growth_factors[scale],
                    channels * growth_factors[scale - 1] if has_finer else None,
                    growth_rate * growth_factors[scale],
                    same_bottleneck=bottleneck_factors[scale],
                    finer_bottleneck=bottleneck_factors[scale - 1] if has_finer else 0,
                    norm_layer=norm_layer,
                )
            )

    def forward(self, scales: list[Tensor]) -> list[Tensor]:
        if self.drops_scale:
            return [unit(scales[i + 1], scales[i]) for i, unit in enumerate(self.units)]
        return [unit(scales[i], scales[i - 1] if i else None) for i, unit in enumerate(self.units)]


class ScaleTransition(nn.ModuleList):
    """A 1x1 ConvNormAct per kept scale compressing its channels (DenseNet-C), after a layer that dropped a scale."""

    def forward(self, scales: list[Tensor]) -> list[Tensor]:
        return [conv(x) for conv, x in zip(self, scales, strict=True)]


class MultiScaleStem(nn.ModuleList):
    """The first layer: the image stem at the finest scale, then a strided ConvNormAct per coarser scale."""

    def forward(self, x: Tensor) -> list[Tensor]:
        scales = []
        for module in self:
            x = module(x)
            scales.append(x)
        return scales


class ExitClassifier(nn.Module):
    """An exit on the coarsest scale: two strided 3x3 ConvNormActs, global average pooling, a linear layer.

    The authors pool with a fixed 2x2 window (their inputs are 32 or 224 px); global pooling gives the same result and
    FLOPs there and accepts other sizes.
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_classes: int, *, norm_layer: NormLayer) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvNormAct(in_channels, hidden_channels, stride=2, norm_layer=norm_layer),
            ConvNormAct(hidden_channels, hidden_channels, stride=2, norm_layer=norm_layer),
            nn.AdaptiveAvgPool2d(1),
        )
        self.linear = nn.Linear(hidden_channels, num_classes)

    def forward(self, scales: list[Tensor]) -> Tensor:
        return self.linear(self.features(scales[-1]).flatten(1))


@MODELS.register_module()
class MSDNet(nn.Module):
    """MSDNet: ``num_blocks`` blocks of multi-scale dense layers, each followed by an exit classifier.

    Block b has ``base`` layers when b = 0, else ``step`` (``step_mode='even'``) or ``step * b + 1`` (``'lin_grow'``).
    Scale s carries ``growth_factors[s]`` times the base channel count and bottlenecks ``bottleneck_factors[s]`` times
    its growth; the number of scales is ``len(growth_factors)``. Finest scales are dropped evenly along the depth
    (``ceil(layers / scales)`` layers apart), each drop followed by a transition compressing channels by
    ``reduction``. ``stem='cifar'`` is one 3x3 conv (32 px inputs), ``'imagenet'`` a 7x7/2 conv and a 3x3/2 max pool.
    Exit classifiers have ``classifier_channels`` hidden channels (``None``: as many as their input).

    ``forward`` returns every exit's N×num_classes logits, shallowest first; ``num_exits`` stops after that many
    exits without running the deeper blocks; ``iter_exits`` yields them one at a time, computing each only when asked.
    """

    def __init__(
        self,
        *,
        num_blocks: int,
        step_mode: str,
        step: int,
        base: int,
        stem_channels: int,
        growth_rate: int,
        growth_factors: Sequence[int],
        bottleneck_factors: Sequence[int],
        reduction: float = 0.5,
        stem: str = "cifar",
        classifier_channels: int | None = 128,
        num_classes: int = 100,
        in_chans: int = 3,
        norm_layer: NormSpec = "BatchNorm2d",
    ) -> None:
        super().__init__()
        growth_factors, bottleneck_factors = tuple(growth_factors), tuple(bottleneck_factors)
        if num_blocks < 1 or base < 1 or step < 1:
            raise ValueError(f"MSDNet needs num_blocks, base and step >= 1, got {num_blocks}, {base}, {step}")
        if step_mode not in _STEP_MODES:
            raise ValueError(f"MSDNet step_mode must be one of {_STEP_MODES}, got {step_mode!r}")
        if stem not in _STEMS:
            raise ValueError(f"MSDNet stem must be one of {_STEMS}, got {stem!r}")
        if not growth_factors or len(bottleneck_factors) != len(growth_factors):
            raise ValueError(
                "MSDNet needs one growth and one bottleneck factor per scale, got "
                f"growth_factors={growth_factors}, bottleneck_factors={bottleneck_factors}"
            )
        if not 0 < reduction <= 1:
            raise ValueError(f"MSDNet reduction must be in (0, 1], got {reduction}")
        if in_chans < 1:
            raise ValueError(f"MSDNet in_chans must be >= 1, got {in_chans}")
        norm = resolve_norm_layer(norm_layer)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.steps = [base] + [step if step_mode == "even" else step * b + 1 for b in range(1, num_blocks)]
        num_scales = len(growth_factors)
        total_layers = sum(self.steps)
        interval = math.ceil(total_layers / num_scales)

        self.blocks = nn.ModuleList()
        self.classifiers = nn.ModuleList()
        channels = stem_channels
        layer_index = 0
        for block_layers in self.steps:
            modules: list[nn.Module] = [] if layer_index else [self._stem(stem, stem_channels, growth_factors, norm)]
            for _ in range(block_layers):
                layer_index += 1
                in_scales = num_scales - max(0, layer_index - 2) // interval
                out_scales = num_scales - (layer_index - 1) // interval
                modules.append(
                    MultiScaleLayer(
                        channels,
                        growth_rate,
                        in_scales=in_scales,
                        out_scales=out_scales,
                        growth_factors=growth_factors,
                        bottleneck_factors=bottleneck_factors,
                        norm_layer=norm,
                    )
                )
                channels += growth_rate
                if in_scales > out_scales:
                    compressed = math.floor(reduction * channels)
                    modules.append(
                        ScaleTransition(
                            [
                                ConvNormAct(channels * factor, compressed * factor, kernel_size=1, norm_layer=norm)
                                for factor in growth_factors[num_scales - out_scales :]
                            ]
                        )
                    )
                    channels = compressed
            self.blocks.append(nn.Sequential(*modules))
            coarsest = channels * growth_factors[-1]
            self.classifiers.append(
                ExitClassifier(coarsest, classifier_channels or coarsest, num_classes, norm_layer=norm)
            )
        self._init_weights()

    def _stem(self, stem: str, channels: int, growth_factors: Sequence[int], norm: NormLayer) -> MultiScaleStem:
        first = channels * growth_factors[0]
        if stem == "cifar":
            image_stem: nn.Module = ConvNormAct(self.in_chans, first, norm_layer=norm)
        else:  # the authors' ImageNet stem keeps the conv bias (counted in their parameter total)
            image_stem = nn.Sequential(
                nn.Conv2d(self.in_chans, first, kernel_size=7, stride=2, padding=3),
                norm(first),
                make_act(nn.ReLU),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        coarser = [
            ConvNormAct(channels * finer, channels * factor, stride=2, norm_layer=norm)
            for finer, factor in zip(growth_factors, growth_factors[1:])
        ]
        return MultiScaleStem([image_stem, *coarser])

    def _init_weights(self) -> None:
        """He-normal convolutions (fan-out), zero linear biases: the authors' intended initialisation (their
        ``_init_weights`` is applied to containers and leaves PyTorch's defaults in place)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def iter_exits(self, x: Tensor) -> Iterator[Tensor]:
        """Each exit's logits in turn; block b runs only when exit b is asked for (adaptive inference stops early)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"MSDNet expects a 4-D N×{self.in_chans}×H×W tensor, got shape {tuple(x.shape)}")
        scales: Any = x
        for block, classifier in zip(self.blocks, self.classifiers):
            scales = block(scales)
            yield classifier(scales)

    def forward(self, x: Tensor, *, num_exits: int | None = None) -> list[Tensor]:
        if num_exits is not None and not 1 <= num_exits <= self.num_exits:
            raise ValueError(f"num_exits must be in 1..{self.num_exits}, got {num_exits}")
        return list(islice(self.iter_exits(x), num_exits))


def _msdnet(defaults: dict[str, Any], overrides: dict[str, Any]) -> MSDNet:
    return MSDNet(**{**defaults, **overrides})


# The authors' args.py defaults the CIFAR settings inherit: growth 6, factors 1-2-4 (three scales), reduction 0.5.
_CIFAR = dict(stem="cifar", stem_channels=16, growth_rate=6, growth_factors=(1, 2, 4), bottleneck_factors=(1, 2, 4))


@MODELS.register_module()
def msdnet_cifar_anytime(**kwargs: Any) -> MSDNet:
    """The paper's CIFAR anytime MSDNet: 7 blocks, 4 then 2 layers each; 3,067,960 parameters at 100 classes."""
    return _msdnet(dict(_CIFAR, num_blocks=7, step_mode="even", step=2, base=4), kwargs)


@MODELS.register_module()
def msdnet_cifar_budget(**kwargs: Any) -> MSDNet:
    """The paper's CIFAR budgeted-batch MSDNet: 5 blocks of 1-2-3-4-5 layers; 2,078,924 parameters at 100 classes."""
    return _msdnet(dict(_CIFAR, num_blocks=5, step_mode="lin_grow", step=1, base=1), kwargs)


@MODELS.register_module()
def msdnet_imagenet(**kwargs: Any) -> MSDNet:
    """The paper's ImageNet MSDNet: 5 blocks of 4 layers, 32 stem channels, growth 16, factors 1-2-4-4 (four
    scales), exits as wide as their input; 23,958,440 parameters at 1000 classes."""
    defaults = dict(
        stem="imagenet",
        num_blocks=5,
        step_mode="even",
        step=4,
        base=4,
        stem_channels=32,
        growth_rate=16,
        growth_factors=(1, 2, 4, 4),
        bottleneck_factors=(1, 2, 4, 4),
        classifier_channels=None,
        num_classes=1000,
    )
    return _msdnet(defaults, kwargs)

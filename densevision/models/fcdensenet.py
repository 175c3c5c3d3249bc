"""FC-DenseNet (Tiramisu, Jégou et al. 2017): a dense down path, a dense upsampling decoder, and the models they make.

Everything dense is ``blocks.DenseBlock`` / ``blocks.Transition`` with FC-DenseNet's arguments (no bottleneck, conv
bias, element-wise dropout 0.2, max-pool transitions). The decoder only needs an encoder's ``feature_info``, so the same
``TiramisuDecoder`` upsamples the FC-DenseNet down path and the ImageNet DenseNets (``EncoderDecoder``).

Any input size works without padding: pooling floors, and every transition up is centre-cropped (or zero-padded) to
its skip's size, so the decoder ends exactly at the first skip's resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.models.blocks import ActSpec, DenseBlock, NormSpec, dense_stage, resolve_norm_act
from densevision.registry import HEADS, MODELS

__all__ = [
    "FCDenseNetEncoder",
    "TransitionUp",
    "TiramisuDecoder",
    "EncoderDecoder",
    "FCDenseNet",
    "fcdensenet56",
    "fcdensenet67",
    "fcdensenet103",
]


def match_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """Centre-crop (or zero-pad, centred) the last two dimensions of ``x`` to ``size``.

    One ``F.pad`` whose negative amounts crop: no branch on the sizes, so ``torch.export`` handles dynamic shapes.
    """
    excess_h, excess_w = x.shape[-2] - size[0], x.shape[-1] - size[1]
    top, left = excess_h // 2, excess_w // 2
    return F.pad(x, [-left, left - excess_w, -top, top - excess_h])


def check_input(x: Tensor, in_chans: int, min_size: int, owner: str) -> None:
    """Raise ValueError unless ``x`` is ``N×in_chans×H×W`` with H and W at least ``min_size``."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects a 4-D input N×{in_chans}×H×W, got {shape}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{owner} expects {in_chans} input channels (N×{in_chans}×H×W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{owner} needs H and W of at least {min_size} (its deepest stride), got shape {tuple(x.shape)}"
        )


@MODELS.register_module()
class FCDenseNetEncoder(nn.Module):
    """FC-DenseNet down path: Conv3x3 stem (no activation), then per level a dense stage (``blocks.dense_stage``: a
    dense block and a transition down).

    Each down block's full output ``[input, new maps]`` is a skip; the transition down (BN-ReLU-Conv1x1(m→m)-Dropout-
    MaxPool2x2) keeps the channel count. ``forward`` returns the skips (strides 1, 2, 4, ...) and the last pooled map,
    described by ``feature_info`` (timm's convention).
    """

    def __init__(
        self,
        *,
        down_layers: Sequence[int] = (4, 5, 7, 10, 12),
        growth_rate: int = 16,
        stem_channels: int = 48,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        memory_efficient: bool = False,
        norm_layer: NormSpec = nn.BatchNorm2d,
        act_layer: ActSpec = nn.ReLU,
    ) -> None:
        super().__init__()
        if not down_layers:
            raise ValueError("FCDenseNetEncoder needs at least one down block, got down_layers=()")
        norm_layer, act_layer = resolve_norm_act(norm_layer, act_layer)
        self.in_chans = in_chans
        self.conv0 = nn.Conv2d(in_chans, stem_channels, kernel_size=3, padding=1, bias=True)
        self.feature_info: list[dict[str, Any]] = []
        channels = stem_channels
        for i, num_layers in enumerate(down_layers, start=1):
            block, transition = dense_stage(
                num_layers,
                channels,
                growth_rate,
                pool="max",
                bottleneck_width=None,
                drop_rate=drop_rate,
                transition_drop_rate=drop_rate,
                conv_bias=True,
                memory_efficient=memory_efficient,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            channels = block.out_channels
            self.add_module(f"denseblock{i}", block)
            self.add_module(f"transition{i}", transition)
            self.feature_info.append(dict(num_chs=channels, reduction=2 ** (i - 1), module=f"denseblock{i}"))
        self.feature_info.append(dict(num_chs=channels, reduction=2 ** len(down_layers), module=f"transition{i}"))
        self.num_levels = len(down_layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input(x, self.in_chans, self.feature_info[-1]["reduction"], type(self).__name__)
        x = self.conv0(x)
        features = []
        for i in range(1, self.num_levels + 1):
            x = getattr(self, f"denseblock{i}")(x)
            features.append(x)
            x = getattr(self, f"transition{i}")(x)
        features.append(x)
        return features


class TransitionUp(nn.Module):
    """ConvTranspose3x3 stride 2 on the previous block's new maps, matched to the skip's size, then ``[up, skip]``.

    No padding on the transposed convolution (``2n+1`` outputs, as the authors' code): with floor pooling it is never
    smaller than the skip, so matching is a centre crop; padding only covers encoders that shrink by more than 2.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=3, stride=2, bias=True)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([match_size(self.conv(x), skip.shape[-2:]), skip], 1)


@HEADS.register_module()
class TiramisuDecoder(nn.Module):
    """Dense upsampling path (FC-DenseNet) over any encoder's features, described by its ``feature_info``.

    The deepest feature map feeds a bottleneck dense block; the others are skips, deepest first. Per level: transition
    up of the previous block's *new* maps only, concatenated with the skip, then a dense block passing on its new maps
    only — except the last, whose full stack feeds the Conv1x1 classifier. Logits come out at the first skip's
    resolution (``output_reduction``); the model upsamples them when that is not the input's.
    """

    def __init__(
        self,
        *,
        feature_info: Sequence[Mapping[str, Any]],
        num_classes: int,
        bottleneck_layers: int = 15,
        up_layers: Sequence[int] = (12, 10, 7, 5, 4),
        growth_rate: int = 16,
        drop_rate: float = 0.2,
        memory_efficient: bool = False,
        norm_layer: NormSpec = nn.BatchNorm2d,
        act_layer: ActSpec = nn.ReLU,
    ) -> None:
        super().__init__()
        if len(feature_info) < 2:
            raise ValueError(
                f"TiramisuDecoder needs at least two encoder features (skips and the deepest map), got {feature_info}"
            )
        skips = [int(info["num_chs"]) for info in feature_info[-2::-1]]
        if len(up_layers) != len(skips):
            raise ValueError(
                f"TiramisuDecoder up_layers={tuple(up_layers)} must have one entry per skip feature "
                f"({len(skips)} from feature_info), deepest first"
            )

        norm_layer, act_layer = resolve_norm_act(norm_layer, act_layer)

        def dense(num_layers: int, in_channels: int, new_only: bool) -> DenseBlock:
            return DenseBlock(
                num_layers,
                in_channels,
                growth_rate,
                bottleneck_width=None,
                drop_rate=drop_rate,
                conv_bias=True,
                memory_efficient=memory_efficient,
                return_new_only=new_only,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )

        self.bottleneck = dense(bottleneck_layers, int(feature_info[-1]["num_chs"]), True)
        self.transitions_up = nn.ModuleList()
        self.blocks_up = nn.ModuleList()
        new_maps = self.bottleneck.out_channels
        for level, (num_layers, skip_channels) in enumerate(zip(up_layers, skips), start=1):
            self.transitions_up.append(TransitionUp(new_maps))
            block = dense(num_layers, new_maps + skip_channels, level < len(skips))
            self.blocks_up.append(block)
            new_maps = block.out_channels
        self.classifier = nn.Conv2d(new_maps, num_classes, kernel_size=1, bias=True)
        self.output_reduction = int(feature_info[0]["reduction"])

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.blocks_up) + 1:
            raise ValueError(
                f"TiramisuDecoder was built for {len(self.blocks_up) + 1} encoder features, got {len(features)}"
            )
        x = self.bottleneck(features[-1])
        for transition, block, skip in zip(self.transitions_up, self.blocks_up, features[-2::-1]):
            x = block(transition(x, skip))
        return self.classifier(x)


def _build(module: Mapping[str, Any] | nn.Module, registry_build: Any, **defaults: Any) -> nn.Module:
    return module if isinstance(module, nn.Module) else registry_build(module, **defaults)


@MODELS.register_module()
class EncoderDecoder(nn.Module):
    """Segmentation network: an encoder returning multi-scale features, a decoder turning them into logits.

    ``encoder`` is a MODELS config (``dict(type='densenet121', out_indices=(0, 1, 2, 3, 4))``) or a module exposing
    ``feature_info``; ``decoder`` a HEADS config (``dict(type='TiramisuDecoder', ...)``) or a module. ``in_chans`` and
    ``memory_efficient`` are passed to both configs as defaults, ``feature_info`` and ``num_classes`` to the decoder.

    When the encoder's shallowest feature is coarser than the input (ImageNet DenseNets: stride 2), the logits are
    upsampled bilinearly to the input size: with no finer features left to fuse, a learned upsampling would add
    parameters but no detail.
    """

    def __init__(
        self,
        *,
        encoder: Mapping[str, Any] | nn.Module,
        decoder: Mapping[str, Any] | nn.Module,
        num_classes: int,
        in_chans: int = 3,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = _build(encoder, MODELS.build, in_chans=in_chans, memory_efficient=memory_efficient)
        feature_info = getattr(self.encoder, "feature_info", None)
        if not isinstance(feature_info, Sequence) or not feature_info:
            raise ValueError(
                f"EncoderDecoder's encoder {type(self.encoder).__name__} has no feature_info list; "
                "build it as a feature extractor (e.g. out_indices=(0, 1, 2, 3, 4))"
            )
        self.decoder = _build(
            decoder,
            HEADS.build,
            feature_info=feature_info,
            num_classes=num_classes,
            memory_efficient=memory_efficient,
        )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.min_input_size = int(feature_info[-1]["reduction"])

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        logits = self.decoder(self.encoder(x))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


@MODELS.register_module()
class FCDenseNet(EncoderDecoder):
    """FC-DenseNet: ``FCDenseNetEncoder`` + ``TiramisuDecoder`` with one growth rate; the up path mirrors the down
    path unless ``up_layers`` is given."""

    def __init__(
        self,
        *,
        down_layers: Sequence[int],
        bottleneck_layers: int,
        up_layers: Sequence[int] | None = None,
        growth_rate: int,
        stem_channels: int = 48,
        num_classes: int = 11,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        memory_efficient: bool = False,
        norm_layer: NormSpec = nn.BatchNorm2d,
        act_layer: ActSpec = nn.ReLU,
    ) -> None:
        norm_act = dict(norm_layer=norm_layer, act_layer=act_layer)
        encoder = FCDenseNetEncoder(
            down_layers=down_layers,
            growth_rate=growth_rate,
            stem_channels=stem_channels,
            in_chans=in_chans,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
            **norm_act,
        )
        decoder = TiramisuDecoder(
            feature_info=encoder.feature_info,
            num_classes=num_classes,
            bottleneck_layers=bottleneck_layers,
            up_layers=tuple(reversed(down_layers)) if up_layers is None else up_layers,
            growth_rate=growth_rate,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
            **norm_act,
        )
        super().__init__(encoder=encoder, decoder=decoder, num_classes=num_classes, in_chans=in_chans)


# The paper's three Tiramisus: layers per down block (mirrored on the way up), bottleneck layers, growth rate.
FCDENSENET_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "fcdensenet56": dict(down_layers=(4,) * 5, bottleneck_layers=4, growth_rate=12),
    "fcdensenet67": dict(down_layers=(5,) * 5, bottleneck_layers=5, growth_rate=16),
    "fcdensenet103": dict(down_layers=(4, 5, 7, 10, 12), bottleneck_layers=15, growth_rate=16),
}


def _fcdensenet(
    name: str,
    *,
    num_classes: int = 11,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    memory_efficient: bool = False,
    norm_layer: NormSpec = nn.BatchNorm2d,
    act_layer: ActSpec = nn.ReLU,
) -> FCDenseNet:
    return FCDenseNet(
        **FCDENSENET_ARCHITECTURES[name],
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        norm_layer=norm_layer,
        act_layer=act_layer,
    )


@MODELS.register_module()
def fcdensenet56(**kwargs: Any) -> FCDenseNet:
    """FC-DenseNet56: 4 layers per block (5 down, bottleneck, 5 up), growth 12; 1,376,795 parameters at 11 classes.

    Keyword arguments: ``num_classes=11, in_chans=3, drop_rate=0.2, memory_efficient=False, norm_layer='batchnorm',
    act_layer='relu'`` (norm and activation of every dense layer and transition, see ``blocks.resolve_norm_act``).
    """
    return _fcdensenet("fcdensenet56", **kwargs)


@MODELS.register_module()
def fcdensenet67(**kwargs: Any) -> FCDenseNet:
    """FC-DenseNet67: 5 layers per block, growth 16; 3,463,243 parameters at 11 classes."""
    return _fcdensenet("fcdensenet67", **kwargs)


@MODELS.register_module()
def fcdensenet103(**kwargs: Any) -> FCDenseNet:
    """FC-DenseNet103: blocks of 4, 5, 7, 10, 12 layers, bottleneck 15, mirrored up path, growth 16; 9,322,091
    parameters at 11 classes (9,425,163 with BatchNorm statistics, the paper's 9.4 M)."""
    return _fcdensenet("fcdensenet103", **kwargs)

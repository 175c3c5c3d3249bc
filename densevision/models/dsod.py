"""Single-shot detectors: DSOD (Shen et al., ICCV 2017), trained from scratch, and SSD on any densevision encoder.

DSOD's backbone is four ``blocks.dense_stage`` (dense block + transition) with DSOD's arguments (k=48, bottleneck 4k, no
compression, Caffe's ceil-mode max pooling); its dense prediction structure joins, at each scale, a *learning half*
(new convolutions on the previous scale) and a *reusing half* (the previous scale max-pooled and compressed).

Both models return ``(loc N×P×4, conf N×P×(K+1))`` from ``forward`` and carry ``priors`` (P×4 ``(cx, cy, w, h)``
normalised) for their ``image_size``: the sources' sizes come from a dry run on the meta device at construction, so
the priors always match what the network computes. Heads, loss and decoding live in ``heads/ssd.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from densevision.models.blocks import (
    ActLayer,
    ActSpec,
    NormLayer,
    NormSpec,
    dense_stage,
    make_act,
    resolve_act_layer,
    resolve_norm_act,
    resolve_norm_layer,
)
from densevision.models.heads.ssd import default_aspect_ratios, default_boxes, feature_sizes, ssd_box_sizes
from densevision.registry import HEADS, MODELS

__all__ = ["SingleShotDetector", "DenseScale", "DSOD", "SSD", "dsod300", "ssd300_densenet121"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _bn_act_conv(
    in_channels: int,
    out_channels: int,
    norm_layer: NormLayer,
    act_layer: ActLayer,
    *,
    kernel_size: int = 1,
    stride: int = 1,
) -> nn.Sequential:
    """Pre-activation BN-ReLU-Conv (no bias), DSOD's unit outside the dense blocks."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(
        OrderedDict([("norm", norm_layer(in_channels)), ("relu", make_act(act_layer)), ("conv", conv)])
    )


def _conv_bn_act(
    in_channels: int,
    out_channels: int,
    norm_layer: NormLayer,
    act_layer: ActLayer,
    *,
    kernel_size: int,
    stride: int = 1,
) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return [conv, norm_layer(out_channels), make_act(act_layer)]


class SingleShotDetector(nn.Module):
    """Sources from ``extract_features``, an ``SSDHead`` on them, and the default boxes of those sources' sizes.

    Subclasses build their layers, then call ``_build_head``; ``num_classes`` counts the background.
    """

    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    priors: Tensor

    def extract_features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def _build_head(
        self,
        *,
        source_channels: Sequence[int],
        num_classes: int,
        aspect_ratios: Sequence[Sequence[float]] | None,
        min_sizes: Sequence[float] | None,
        max_sizes: Sequence[float] | None,
        steps: Sequence[float] | None,
        clip: bool,
        l2norm_scales: float | Sequence[float | None] | None,
        head_norm: NormLayer | None,
    ) -> None:
        num_scales = len(source_channels)
        if aspect_ratios is None:
            aspect_ratios = default_aspect_ratios(num_scales)
        if min_sizes is None and max_sizes is None:
            min_sizes, max_sizes = ssd_box_sizes(num_scales, min(self.image_size))
        elif min_sizes is None or max_sizes is None:
            raise ValueError(f"give both min_sizes and max_sizes or neither, got {min_sizes!r} and {max_sizes!r}")
        sizes = feature_sizes(self, type(self).extract_features, self.in_chans, self.image_size)
        priors = default_boxes(
            sizes,
            self.image_size,
            min_sizes=min_sizes,
            max_sizes=max_sizes,
            aspect_ratios=aspect_ratios,
            steps=steps,
            clip=clip,
        )
        self.feature_sizes = sizes
        self.num_classes = num_classes
        self.head = HEADS.build(
            dict(type="SSDHead"),
            in_channels=source_channels,
            num_anchors=[2 + 2 * len(r) for r in aspect_ratios],
            num_classes=num_classes,
            l2norm_scales=l2norm_scales,
            norm_layer=head_norm,
        )
        # Derived from the config, not learned: rebuilt with the model, so not saved in checkpoints.
        self.register_buffer("priors", priors, persistent=False)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"{type(self).__name__} expects N×{self.in_chans}×{self.image_size[0]}×{self.image_size[1]} images "
                f"(its priors are for image_size={self.image_size}), got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``loc`` N×P×4 offsets against ``priors`` and ``conf`` N×P×num_classes logits (channel 0 background)."""
        self._check_input(x)
        return self.head(self.extract_features(x))


class DenseScale(nn.Module):
    """One scale of DSOD's dense prediction structure: ``[learning half, reusing half]``, 2 × ``channels`` maps.

    Learning half BN-ReLU-Conv1x1(C)-BN-ReLU-Conv3x3/2(C); reusing half MaxPool2 (ceil)-BN-ReLU-Conv1x1(C).
    """

    def __init__(
        self, in_channels: int, channels: int, norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU
    ) -> None:
        super().__init__()
        self.learn = nn.Sequential(
            _bn_act_conv(in_channels, channels, norm_layer, act_layer),
            _bn_act_conv(channels, channels, norm_layer, act_layer, kernel_size=3, stride=2),
        )
        self.reuse = nn.Sequential(
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            _bn_act_conv(in_channels, channels, norm_layer, act_layer),
        )
        self.out_channels = 2 * channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.learn(x), self.reuse(x)], 1)


@MODELS.register_module()
class DSOD(SingleShotDetector):
    """DSOD: a dense stem and four dense stages, then the dense prediction structure and an ``SSDHead``.

    Stem: Conv3x3/2-BN-ReLU then Conv3x3-BN-ReLU per further ``stem_channels`` entry, MaxPool2 (300 → 150 → 75).
    Block 1, transition with max pooling (75 → 38); block 2, transition without pooling: the first source. Max pool
    (38 → 19), block 3, transition w/o pooling, block 4, transition w/o pooling to ``extra_channels[0]``: the learning
    half of the second source, whose reusing half is the first source pooled and compressed to ``extra_channels[0]``.
    Each further ``extra_channels`` entry C adds a ``DenseScale`` of 2C maps. Transitions do not compress (DSOD). The
    four stages are ``blocks.dense_stage``.

    Priors: ``aspect_ratios`` (default SSD's pattern), ``min_sizes``/``max_sizes`` in pixels (default SSD's Caffe rule
    at ``min(image_size)``), ``steps`` (default: even tiling) and ``clip`` (widths and heights clamped to the image).
    ``norm_layer`` (a name, dict or callable; see ``resolve_norm_layer``) replaces every BatchNorm, heads included, and
    ``act_layer`` (``resolve_act_layer``) every ReLU; ``head_norm=False`` gives biased head convs. The defaults are
    DSOD300's architecture; ``dsod300`` adds the paper's box sizes, steps and unclipped boxes.
    """

    def __init__(
        self,
        *,
        num_classes: int = 21,
        in_chans: int = 3,
        image_size: int | Sequence[int] = 300,
        stem_channels: Sequence[int] = (64, 64, 128),
        growth_rate: int = 48,
        block_config: Sequence[int] = (6, 8, 8, 8),
        bottleneck_width: int | None = 4,
        extra_channels: Sequence[int] = (256, 256, 128, 128, 128),
        aspect_ratios: Sequence[Sequence[float]] | None = None,
        min_sizes: Sequence[float] | None = None,
        max_sizes: Sequence[float] | None = None,
        steps: Sequence[float] | None = None,
        clip: bool = True,
        l2norm_scale: float | None = 20.0,
        head_norm: bool = True,
        memory_efficient: bool = False,
        norm_layer: NormSpec = "BatchNorm2d",
        act_layer: ActSpec = "relu",
    ) -> None:
        super().__init__()
        if len(block_config) != 4 or any(n < 1 for n in block_config):
            raise ValueError(f"DSOD block_config needs four dense blocks of >= 1 layers, got {tuple(block_config)!r}")
        if not stem_channels or not extra_channels:
            raise ValueError(
                f"DSOD needs stem_channels and extra_channels, got {tuple(stem_channels)!r} and "
                f"{tuple(extra_channels)!r}"
            )
        norm, act = resolve_norm_act(norm_layer, act_layer)
        self.in_chans = in_chans
        self.image_size = _pair(image_size)

        stem: list[tuple[str, nn.Module]] = []
        channels = in_chans
        for i, width in enumerate(stem_channels, start=1):
            conv, bn, relu = _conv_bn_act(channels, width, norm, act, kernel_size=3, stride=2 if i == 1 else 1)
            stem += [(f"conv{i}", conv), (f"norm{i}", bn), (f"relu{i}", relu)]
            channels = width
        stem.append(("pool", nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)))
        self.stem = nn.Sequential(OrderedDict(stem))

        for i, num_layers in enumerate(block_config, start=1):
            block, transition = dense_stage(
                num_layers,
                channels,
                growth_rate,
                transition_channels=extra_channels[0] if i == 4 else None,
                pool="max" if i == 1 else None,
                ceil_mode=True,
                bottleneck_width=bottleneck_width,
                memory_efficient=memory_efficient,
                norm_layer=norm,
                act_layer=act,
            )
            self.add_module(f"denseblock{i}", block)
            self.add_module(f"transition{i}", transition)
            if i == 2:
                first_channels = transition.out_channels
                self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
            channels = transition.out_channels
        self.reuse_first = nn.Sequential(
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            _bn_act_conv(first_channels, extra_channels[0], norm, act),
        )
        sources = [first_channels, 2 * extra_channels[0]]
        self.extras = nn.ModuleList()
        for width in extra_channels[1:]:
            self.extras.append(DenseScale(sources[-1], width, norm, act))
            sources.append(self.extras[-1].out_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

        self._build_head(
            source_channels=sources,
            num_classes=num_classes,
            aspect_ratios=aspect_ratios,
            min_sizes=min_sizes,
            max_sizes=max_sizes,
            steps=steps,
            clip=clip,
            l2norm_scales=l2norm_scale,
            head_norm=norm if head_norm else None,
        )

    def extract_features(self, x: Tensor) -> list[Tensor]:
        """The prediction sources, largest first (DSOD300: 800×38², 512×19², 512×10², 256×5², 256×3², 256×2²)."""
        x = self.transition1(self.denseblock1(self.stem(x)))
        first = self.transition2(self.denseblock2(x))
        x = self.transition3(self.denseblock3(self.pool2(first)))
        x = self.transition4(self.denseblock4(x))
        sources = [first, torch.cat([x, self.reuse_first(first)], 1)]
        for scale in self.extras:
            sources.append(scale(sources[-1]))
        return sources


@MODELS.register_module()
class SSD(SingleShotDetector):
    """SSD on any encoder that returns feature maps and describes them in ``feature_info`` (timm's convention).

    ``encoder``: a MODELS config (``dict(type='densenet121', out_indices=(2, 3, 4))``; ``in_chans``,
    ``memory_efficient`` and a given ``norm_layer``/``act_layer`` are passed as defaults) or a module. Each
    ``extra_channels`` entry C adds Conv1x1(C/2)-norm-act-Conv3x3/2(C)-norm-act on the previous source.
    ``l2norm_scales`` defaults to SSD's: L2Norm(20) on the first source only. Priors as ``DSOD``.
    """

    def __init__(
        self,
        *,
        encoder: Mapping[str, Any] | nn.Module,
        num_classes: int = 21,
        in_chans: int = 3,
        image_size: int | Sequence[int] = 300,
        extra_channels: Sequence[int] = (512, 256, 256),
        aspect_ratios: Sequence[Sequence[float]] | None = None,
        min_sizes: Sequence[float] | None = None,
        max_sizes: Sequence[float] | None = None,
        steps: Sequence[float] | None = None,
        clip: bool = True,
        l2norm_scales: float | Sequence[float | None] | None = None,
        head_norm: bool = True,
        memory_efficient: bool = False,
        norm_layer: NormSpec | None = None,
        act_layer: ActSpec | None = None,
    ) -> None:
        super().__init__()
        norm = resolve_norm_layer(norm_layer if norm_layer is not None else nn.BatchNorm2d)
        act = resolve_act_layer(act_layer if act_layer is not None else nn.ReLU)
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            defaults: dict[str, Any] = dict(in_chans=in_chans, memory_efficient=memory_efficient)
            if norm_layer is not None:
                defaults["norm_layer"] = norm
            if act_layer is not None:
                defaults["act_layer"] = act
            self.encoder = MODELS.build(encoder, **defaults)
        if getattr(self.encoder, "out_indices", ()) is None or not hasattr(self.encoder, "feature_info"):
            raise ValueError(
                f"SSD needs an encoder that returns feature maps and has feature_info, e.g. "
                f"dict(type='densenet121', out_indices=(2, 3, 4)); got {type(self.encoder).__name__} {encoder!r:.200}"
            )
        self.in_chans = in_chans
        self.image_size = _pair(image_size)
        sources = [int(info["num_chs"]) for info in self.encoder.feature_info]
        self.extras = nn.ModuleList()
        for width in extra_channels:
            layers = _conv_bn_act(sources[-1], width // 2, norm, act, kernel_size=1)
            layers += _conv_bn_act(width // 2, width, norm, act, kernel_size=3, stride=2)
            for layer in layers:
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight)
            self.extras.append(nn.Sequential(*layers))
            sources.append(width)
        self._build_head(
            source_channels=sources,
            num_classes=num_classes,
            aspect_ratios=aspect_ratios,
            min_sizes=min_sizes,
            max_sizes=max_sizes,
            steps=steps,
            clip=clip,
            l2norm_scales=[20.0] + [None] * (len(sources) - 1) if l2norm_scales is None else l2norm_scales,
            head_norm=norm if head_norm else None,
        )

    def extract_features(self, x: Tensor) -> list[Tensor]:
        sources = list(self.encoder(x))
        for extra in self.extras:
            sources.append(extra(sources[-1]))
        return sources


# DSOD300's box sizes and steps in pixels and its unclipped boxes (the authors' prototxt: PriorBox clip: false, so the
# large boxes of the 3x3 and 2x2 maps reach past the image); its architecture is DSOD's defaults.
_DSOD300 = dict(
    image_size=300,
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    steps=(8, 16, 32, 64, 100, 300),
    clip=False,
)


@MODELS.register_module()
def dsod300(**kwargs: Any) -> DSOD:
    """DSOD300: 8,744 default boxes at 300×300, unclipped as the authors' (``clip=True`` clamps 26 of them to the
    image), 14.7 M trainable parameters at 21 classes (VOC)."""
    return DSOD(**{**_DSOD300, **kwargs})


@MODELS.register_module()
def ssd300_densenet121(**kwargs: Any) -> SSD:
    """SSD300 on DenseNet-121's stride-8/16/32 features plus three extra scales (37², 18², 9², 5², 3², 2²)."""
    return SSD(**{"encoder": dict(type="densenet121", out_indices=(2, 3, 4)), **kwargs})

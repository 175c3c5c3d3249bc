"""DenseNet (Huang et al., CVPR 2017) as classifier and multi-scale encoder: ImageNet 121/161/169/201/264, CIFAR BC.

One ``DenseNet`` class; the named models are its arguments. Dense blocks and transitions come from ``blocks``; module
names follow torchvision exactly (``features.conv0``, ``features.denseblock{i}.denselayer{j}``,
``features.transition{i}``, ``features.norm5``, ``classifier``) so torchvision and smp checkpoints load as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from densevision.models.blocks import (
    ActLayer,
    ActSpec,
    NormLayer,
    NormSpec,
    Transition,
    dense_stage,
    make_act,
    resolve_norm_act,
)
from densevision.registry import HEADS, MODELS

__all__ = [
    "DenseNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "ARCHITECTURES",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet264",
    "densenet_bc",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# Architecture arguments of the named ImageNet models (the DenseNet paper's Table 1); smp encoders reuse them.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "densenet121": dict(growth_rate=32, block_config=(6, 12, 24, 16), stem_channels=64),
    "densenet161": dict(growth_rate=48, block_config=(6, 12, 36, 24), stem_channels=96),
    "densenet169": dict(growth_rate=32, block_config=(6, 12, 32, 32), stem_channels=64),
    "densenet201": dict(growth_rate=32, block_config=(6, 12, 48, 32), stem_channels=64),
    "densenet264": dict(growth_rate=32, block_config=(6, 12, 64, 48), stem_channels=64),
}

# Stem kinds -> (module whose output is stage 0's feature, its stride, the stride the first dense block sees).
_STEMS = {"imagenet": ("relu0", 2, 4), "cifar": ("conv0", 1, 1)}


@MODELS.register_module()
class DenseNet(nn.Module):
    """Stem, dense stages (``blocks.dense_stage``: block + compressing transition), final BN-act; then the registered
    ``ClassifierHead`` (built through ``HEADS``) or feature maps.

    ``stem='imagenet'``: Conv7x7/2-BN-act-MaxPool3x3/2 (features at strides 2, 4, 8, 16, 32); ``stem='cifar'``: one
    Conv3x3 (strides 1, 1, 2, 4 for three blocks). Transitions keep ``floor(compression * channels)``.

    Without ``out_indices`` the model is a classifier: ``forward`` returns N×num_classes logits. With ``out_indices``
    (indices into the stages above) it is an encoder without classifier: ``forward`` returns that list of feature maps
    and ``feature_info`` describes them (timm's convention). A stage's features are taken after its transition's BN-act,
    before the transition's conv and pool (as smp does), and the last after ``norm5`` and its activation.

    ``default_cfg`` names the first conv and the classifier, so loaders adapt input channels and swap classifiers
    without knowing the architecture; ``mean``/``std``/``image_size`` describe the data its weights expect.
    """

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        stem_channels: int = 64,
        stem: str = "imagenet",
        bottleneck_width: int | None = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        head_drop_rate: float = 0.0,
        global_pool: str = "avg",
        memory_efficient: bool = False,
        out_indices: Sequence[int] | None = None,
        norm_layer: NormSpec = nn.BatchNorm2d,
        act_layer: ActSpec = nn.ReLU,
        default_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if stem not in _STEMS:
            raise ValueError(f"DenseNet stem must be one of {sorted(_STEMS)}, got {stem!r}")
        if not block_config or any(n < 1 for n in block_config):
            raise ValueError(f"DenseNet block_config needs at least one block of >= 1 layers, got {block_config!r}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"DenseNet compression must be in (0, 1], got {compression}")
        if in_chans < 1:
            raise ValueError(f"DenseNet in_chans must be >= 1, got {in_chans}")

        norm_layer, act_layer = resolve_norm_act(norm_layer, act_layer)
        self.features = nn.Sequential(OrderedDict(self._stem(stem, in_chans, stem_channels, norm_layer, act_layer)))
        stem_tap, stem_reduction, reduction = _STEMS[stem]
        stages = [dict(num_chs=stem_channels, reduction=stem_reduction, module=f"features.{stem_tap}")]
        channels = stem_channels
        for i, num_layers in enumerate(block_config, start=1):
            last = i == len(block_config)
            block, transition = dense_stage(
                num_layers,
                channels,
                growth_rate,
                transition=not last,
                compression=compression,
                bottleneck_width=bottleneck_width,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            self.features.add_module(f"denseblock{i}", block)
            channels = block.out_channels
            if transition is not None:
                self.features.add_module(f"transition{i}", transition)
                stages.append(dict(num_chs=channels, reduction=reduction, module=f"features.transition{i}.relu"))
                channels = transition.out_channels
                reduction *= 2
            else:
                self.features.add_module("norm5", norm_layer(channels))
                self.features.add_module("relu5", make_act(act_layer))
                stages.append(dict(num_chs=channels, reduction=reduction, module="features.relu5"))
        self.num_features = channels
        self.default_cfg = {
            "first_conv": "features.conv0",
            "classifier": "classifier",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "image_size": (224, 224),
            **(default_cfg or {}),
        }

        if out_indices is None:
            self.out_indices: tuple[int, ...] | None = None
            self.feature_info = stages
            self.global_pool = global_pool
            self.head_drop_rate = head_drop_rate
            self.reset_classifier(num_classes)
        else:
            self.out_indices = _check_out_indices(out_indices, len(stages))
            self.feature_info = [stages[i] for i in self.out_indices]
            self.num_classes = 0
        self._init_weights()

    @staticmethod
    def _stem(
        stem: str, in_chans: int, channels: int, norm_layer: NormLayer, act_layer: ActLayer
    ) -> list[tuple[str, nn.Module]]:
        if stem == "cifar":
            return [("conv0", nn.Conv2d(in_chans, channels, kernel_size=3, padding=1, bias=False))]
        return [
            ("conv0", nn.Conv2d(in_chans, channels, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", norm_layer(channels)),
            ("relu0", make_act(act_layer)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]

    def _init_weights(self) -> None:
        """torchvision's initialisation: He-normal convs, zero classifier bias (norm layers start at 1 and 0)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def in_chans(self) -> int:
        return self.get_submodule(self.default_cfg["first_conv"]).in_channels

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (fine-tuning on another label set)."""
        if self.out_indices is not None:
            raise ValueError("this DenseNet was built as an encoder (out_indices set) and has no classifier")
        if global_pool is not None:
            self.global_pool = global_pool
        self.classifier = HEADS.build(
            dict(type="ClassifierHead", pool_type=self.global_pool, drop_rate=self.head_drop_rate),
            in_channels=self.num_features,
            num_classes=num_classes,
        )
        self.num_classes = num_classes

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects a 4-D N×{self.in_chans}×H×W tensor, got shape {tuple(x.shape)}"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map (after norm5 and its activation): N×num_features×H/32×W/32 for ImageNet stems."""
        self._check_input(x)
        return self.features(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.out_indices is None:
            return self.forward_head(self.forward_features(x))
        self._check_input(x)
        taps = {info["module"] for info in self.feature_info}
        outputs: list[Tensor] = []
        for name, module in self._execution_order():
            x = module(x)
            if name in taps:
                outputs.append(x)
                if len(outputs) == len(taps):
                    break
        return outputs

    def _execution_order(self) -> Iterator[tuple[str, nn.Module]]:
        """``features``' modules in the order they run, transitions opened up so features can be tapped inside."""
        for name, module in self.features.named_children():
            if isinstance(module, Transition):
                for child_name, child in module.named_children():
                    yield f"features.{name}.{child_name}", child
            else:
                yield f"features.{name}", module


def _check_out_indices(out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
    indices = tuple(int(i) for i in out_indices)
    if not indices or len(set(indices)) != len(indices) or any(not 0 <= i < num_stages for i in indices):
        raise ValueError(
            f"DenseNet out_indices must be distinct stage indices in 0..{num_stages - 1}, got {tuple(out_indices)!r}"
        )
    return tuple(sorted(indices))


def _densenet(architecture: str, *, early_exits: Sequence[int] | None = None, **kwargs: Any) -> DenseNet:
    """The named DenseNet; ``early_exits`` (transition indices) adds exit classifiers (models/early_exits.py)."""
    from densevision.models.early_exits import with_early_exits

    default_cfg = {"architecture": architecture, **kwargs.pop("default_cfg", {})}
    return with_early_exits(DenseNet(**{**ARCHITECTURES[architecture], **kwargs}, default_cfg=default_cfg), early_exits)


@MODELS.register_module()
def densenet121(**kwargs: Any) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16): 7,978,856 parameters at 1000 classes, as torchvision's."""
    return _densenet("densenet121", **kwargs)


@MODELS.register_module()
def densenet161(**kwargs: Any) -> DenseNet:
    """DenseNet-161 (k=48, blocks 6-12-36-24, stem 96): 28,681,000 parameters at 1000 classes."""
    return _densenet("densenet161", **kwargs)


@MODELS.register_module()
def densenet169(**kwargs: Any) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32): 14,149,480 parameters at 1000 classes."""
    return _densenet("densenet169", **kwargs)


@MODELS.register_module()
def densenet201(**kwargs: Any) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32): 20,013,928 parameters at 1000 classes."""
    return _densenet("densenet201", **kwargs)


@MODELS.register_module()
def densenet264(**kwargs: Any) -> DenseNet:
    """DenseNet-264 (k=32, blocks 6-12-64-48): the paper's deepest ImageNet model (not in torchvision)."""
    return _densenet("densenet264", **kwargs)


@MODELS.register_module()
def densenet_bc(
    *,
    depth: int = 100,
    growth_rate: int = 12,
    compression: float = 0.5,
    num_classes: int = 10,
    early_exits: Sequence[int] | None = None,
    **kwargs: Any,
) -> DenseNet:
    """DenseNet-BC for 32×32 images (CIFAR): Conv3x3(2k) stem, 3 blocks of (depth - 4) / 6 bottleneck layers.

    DenseNet-BC-100 with k=12 has 769,162 parameters at 10 classes (the paper's "0.8 M").
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"densenet_bc depth must be 6n + 4 with n >= 1 (e.g. 100, 190, 250), got {depth}")
    layers = (depth - 4) // 6
    options = dict(stem_channels=2 * growth_rate, stem="cifar", block_config=(layers,) * 3)
    options.update(kwargs)
    default_cfg = {
        "architecture": f"densenet_bc_{depth}_k{growth_rate}",
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "image_size": (32, 32),
        **options.pop("default_cfg", {}),
    }
    from densevision.models.early_exits import with_early_exits

    densenet = DenseNet(
        growth_rate=growth_rate, compression=compression, num_classes=num_classes, default_cfg=default_cfg, **options
    )
    return with_early_exits(densenet, early_exits)

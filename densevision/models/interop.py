"""densevision DenseNets meet the rest of the ecosystem: torchvision weights, torchvision detection, smp.

- ``load_torchvision_weights``: torchvision (or smp) DenseNet state_dicts or local files, legacy keys remapped, input
  channels adapted, a classifier of another size dropped on request. Never downloads.
- ``densenet_fpn_backbone``: a DenseNet encoder + torchvision FPN with ``out_channels``, ready for ``FasterRCNN`` and
  ``RetinaNet``; ``densenet_backbone``: one DenseNet feature map with its ``out_channels``, for the single-map case.
- ``register_smp_encoders``: ``densevision_densenet*`` encoder names for segmentation-models-pytorch
  (``smp.Unet(encoder_name='densevision_densenet121', encoder_weights=None)``).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from densevision.errors import DensevisionError
from densevision.models.densenet import ARCHITECTURES, DenseNet
from densevision.registry import BACKBONES, MODELS

__all__ = [
    "StateDictMismatchError",
    "adapt_input_conv",
    "set_input_channels",
    "remap_legacy_keys",
    "load_torchvision_weights",
    "DenseNetFPNBackbone",
    "densenet_fpn_backbone",
    "DenseNetBackbone",
    "densenet_backbone",
    "SmpDenseNetEncoder",
    "register_smp_encoders",
]

# torchvision's ``_load_state_dict`` pattern: checkpoints saved before 0.3 name ``norm1`` as ``norm.1`` and so on.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class StateDictMismatchError(DensevisionError, ValueError):
    """A state_dict does not fit a model; the message lists missing, unexpected and mis-shaped keys."""


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """First-conv weights (O×I×kh×kw) for ``in_chans`` inputs, keeping the response to "the same image" unchanged.

    One channel: the sum over the pretrained channels (a grey image seen as equal R, G and B). Otherwise the pretrained
    channels are repeated cyclically and scaled by I / in_chans (the idea of timm's ``adapt_input_conv``).
    """
    if weight.dim() != 4:
        raise ValueError(f"adapt_input_conv expects a 4-D conv weight, got shape {tuple(weight.shape)}")
    if in_chans < 1:
        raise ValueError(f"adapt_input_conv needs in_chans >= 1, got {in_chans}")
    pretrained_chans = weight.shape[1]
    if in_chans == pretrained_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_chans, device=weight.device) % pretrained_chans
    return weight[:, index] * (pretrained_chans / in_chans)


def set_input_channels(model: nn.Module, in_chans: int, *, keep_weights: bool = True) -> None:
    """Replace the first conv (``model.default_cfg['first_conv']``) by one reading ``in_chans`` channels.

    ``keep_weights`` adapts the current weights (``adapt_input_conv``); otherwise the new conv is freshly initialised.
    """
    name = model.default_cfg["first_conv"]
    old = model.get_submodule(name)
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    if keep_weights:
        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(old.weight, in_chans))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    else:
        nn.init.kaiming_normal_(new.weight)
    model.set_submodule(name, new)


def remap_legacy_keys(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight`` (old torchvision checkpoints); others unchanged."""
    remapped: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        match = _LEGACY_KEY.match(key)
        remapped[match.group(1) + match.group(2) if match else key] = value
    return remapped


def _read_state_dict(source: Mapping[str, Tensor] | str | os.PathLike) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, Mapping):
        state_dict, label = dict(source), "the given state_dict"
    else:
        path = os.fspath(source)
        if re.match(r"^[a-z][a-z0-9+.-]*://", path):
            raise ValueError(f"load_torchvision_weights reads local files only (never downloads), got {path!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no weights file at {path!r}")
        state_dict, label = torch.load(path, map_location="cpu", weights_only=True), path
    for wrapper in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = dict(state_dict[wrapper])
    if state_dict and all(key.startswith("module.") for key in state_dict):  # saved from DataParallel/DDP
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    if not all(isinstance(value, Tensor) for value in state_dict.values()):
        raise ValueError(f"{label} is not a state_dict of tensors (keys: {list(state_dict)[:5]}...)")
    return state_dict, label


def load_torchvision_weights(
    model: nn.Module,
    source: Mapping[str, Tensor] | str | os.PathLike,
    *,
    drop_mismatched_classifier: bool = False,
) -> nn.Module:
    """Load torchvision-layout DenseNet weights (a state_dict or a local file) into ``model``; returns ``model``.

    Legacy ``norm.1``-style keys are remapped; a first conv trained on another channel count is adapted to the model's
    (``adapt_input_conv``); classifier weights are dropped when the model has no classifier (an encoder) or, with
    ``drop_mismatched_classifier``, when their shape differs (the model keeps its fresh classifier). Anything else that
    does not fit raises ``StateDictMismatchError`` listing missing, unexpected and mis-shaped keys.
    """
    state_dict, label = _read_state_dict(source)
    state_dict = remap_legacy_keys(state_dict)
    own = model.state_dict()
    cfg = getattr(model, "default_cfg", {})

    first_conv = f"{cfg['first_conv']}.weight" if "first_conv" in cfg else None
    if first_conv in state_dict and first_conv in own and state_dict[first_conv].dim() == 4:
        state_dict[first_conv] = adapt_input_conv(state_dict[first_conv], own[first_conv].shape[1])

    dropped: set[str] = set()
    classifier = cfg.get("classifier")
    if classifier:
        prefix = f"{classifier}."
        keys = [key for key in state_dict if key.startswith(prefix)]
        has_classifier = any(key.startswith(prefix) for key in own)
        mismatched = any(key in own and own[key].shape != state_dict[key].shape for key in keys)
        if not has_classifier or (drop_mismatched_classifier and mismatched):
            dropped = {key for key in own if key.startswith(prefix)}
            for key in keys:
                del state_dict[key]

    mis_shaped = {
        key: (tuple(value.shape), tuple(own[key].shape))
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    }
    result = model.load_state_dict({k: v for k, v in state_dict.items() if k not in mis_shaped}, strict=False)
    missing = [key for key in result.missing_keys if key not in mis_shaped and key not in dropped]
    if missing or result.unexpected_keys or mis_shaped:
        shapes = [f"{key}: weights {got} vs model {want}" for key, (got, want) in mis_shaped.items()]
        raise StateDictMismatchError(
            f"weights from {label} do not fit {type(model).__name__}: "
            f"missing keys {missing}; unexpected keys {result.unexpected_keys}; mis-shaped keys {shapes}"
        )
    return model


class DenseNetFPNBackbone(nn.Module):
    """DenseNet encoder + torchvision ``FeaturePyramidNetwork``: the backbone contract of torchvision's detectors.

    ``forward`` returns an ordered dict of ``out_channels``-channel maps named '0', '1', ... (finest first) plus the
    extra blocks' maps ('pool' for ``LastLevelMaxPool``), which is what ``FasterRCNN``, ``MaskRCNN`` and
    ``RetinaNet`` expect.
    """

    def __init__(self, body: DenseNet, *, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None) -> None:
        super().__init__()
        if body.out_indices is None:
            raise ValueError("DenseNetFPNBackbone needs a DenseNet built with out_indices (an encoder)")
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            [info["num_chs"] for info in body.feature_info],
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), feature) for i, feature in enumerate(features)))


@BACKBONES.register_module()
def densenet_fpn_backbone(
    name: str = "densenet121",
    *,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    out_channels: int = 256,
    weights: Mapping[str, Tensor] | str | os.PathLike | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    **model_kwargs: Any,
) -> DenseNetFPNBackbone:
    """A registered DenseNet (``name``) as an FPN detection backbone; strides 4-32 by default, as torchvision's ResNets.

    For ``RetinaNet`` take strides 8-32 and P6/P7 as torchvision does: ``out_indices=(2, 3, 4)``,
    ``extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelP6P7(256, 256)``.

    ``weights`` (a state_dict or local file) are loaded into the encoder first; ``model_kwargs`` go to the DenseNet
    builder (``memory_efficient``, ``norm_layer=torchvision.ops.FrozenBatchNorm2d``, ``growth_rate``, ...).
    """
    body = MODELS.get(name)(out_indices=out_indices, **model_kwargs)
    if weights is not None:
        load_torchvision_weights(body, weights)
    return DenseNetFPNBackbone(body, out_channels=out_channels, extra_blocks=extra_blocks)


class DenseNetBackbone(nn.Module):
    """One DenseNet feature map as a torchvision detection backbone without FPN: ``forward`` returns the map and
    ``out_channels`` says its width (1024 for DenseNet-121's last stage), which ``FasterRCNN`` and ``RetinaNet`` read.
    """

    def __init__(self, body: DenseNet) -> None:
        super().__init__()
        if body.out_indices is None or len(body.out_indices) != 1:
            raise ValueError(
                f"DenseNetBackbone needs a DenseNet encoder with one out_index, got out_indices={body.out_indices}"
            )
        self.body = body
        self.out_channels = int(body.feature_info[0]["num_chs"])

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)[0]


@BACKBONES.register_module()
def densenet_backbone(
    name: str = "densenet121",
    *,
    out_index: int = 4,
    weights: Mapping[str, Tensor] | str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> DenseNetBackbone:
    """A registered DenseNet (``name``) as a single-map detection backbone: stage ``out_index`` (default 4, the last:
    after norm5 and its activation, stride 32), its width in ``out_channels``.

    ``weights`` (a state_dict or local file) are loaded into the encoder first; ``model_kwargs`` go to the DenseNet
    builder, as for ``densenet_fpn_backbone``.
    """
    body = MODELS.get(name)(out_indices=(out_index,), **model_kwargs)
    if weights is not None:
        load_torchvision_weights(body, weights)
    return DenseNetBackbone(body)


class SmpDenseNetEncoder(DenseNet):
    """A DenseNet as a segmentation-models-pytorch encoder: ``forward`` returns [input, stride 2, ..., 2**depth].

    A drop-in for smp's own ``densenet*`` encoders: the same state_dict (torchvision's minus the classifier) and the
    same outputs, so smp checkpoints load and predict unchanged. That includes smp's last feature, ``norm5``'s output
    before its activation (densevision's own encoders take it after). Like smp's, it cannot be dilated.

    The ``_is_torch_*`` flags are smp's ``EncoderMixin`` contract, which smp's encoder tests check: it compiles with
    ``fullgraph=True`` and exports with ``torch.export``; ``torch.jit.script`` refuses it with a ``RuntimeError`` saying
    why (see ``DenseLayer.__prepare_scriptable__``; TorchScript is deprecated in favour of the other two).
    """

    _is_torch_compilable = True
    _is_torch_exportable = True
    _is_torch_scriptable = False

    def __init__(self, *, depth: int = 5, output_stride: int = 32, **densenet_kwargs: Any) -> None:
        if not 1 <= depth <= 5:
            raise ValueError(f"SmpDenseNetEncoder depth must be in 1..5, got {depth}")
        if output_stride != 32:
            raise ValueError(f"DenseNet encoders cannot be dilated (output_stride={output_stride}); use 32")
        super().__init__(out_indices=tuple(range(depth)), **densenet_kwargs)
        if self.feature_info[-1]["module"] == "features.relu5":
            # forward stops at its last tap, so the in-place relu5 never runs over this feature.
            self.feature_info[-1] = {**self.feature_info[-1], "module": "features.norm5"}

    @property
    def out_channels(self) -> list[int]:
        return [self.in_chans] + [info["num_chs"] for info in self.feature_info]

    @property
    def output_stride(self) -> int:
        return self.feature_info[-1]["reduction"]

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """smp's hook for ``in_channels != 3``: adapt the pretrained first conv, or start it fresh."""
        if in_channels != self.in_chans:
            set_input_channels(self, in_channels, keep_weights=pretrained)

    def make_dilated(self, output_stride: int) -> None:
        raise ValueError(f"DenseNet encoders cannot be dilated (output_stride={output_stride}): pooling downsamples")

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, *super().forward(x)]


def register_smp_encoders(prefix: str = "densevision_", **densenet_kwargs: Any) -> list[str]:
    """Add ``{prefix}densenet121`` ... to smp's encoder table (no pretrained settings: nothing is downloaded).

    ``densenet_kwargs`` (``memory_efficient=True``, ``norm_layer``, ...) go to every encoder, since smp passes no
    options of its own. Returns the registered names; idempotent, so any module may call it before building a model.
    """
    import segmentation_models_pytorch as smp

    names = []
    for architecture, arch_kwargs in ARCHITECTURES.items():
        name = f"{prefix}{architecture}"
        smp.encoders.encoders[name] = {
            "encoder": SmpDenseNetEncoder,
            "params": {**arch_kwargs, **densenet_kwargs, "default_cfg": {"architecture": architecture}},
            "pretrained_settings": {},
        }
        names.append(name)
    return names

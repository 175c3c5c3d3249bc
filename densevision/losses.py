"""Segmentation losses, each called as ``loss(logits N×C×H×W, target N×H×W int64) -> scalar``.

``CrossEntropyLoss`` is the Tiramisu paper's loss (cross-entropy over non-void pixels), optionally class-weighted with
Eigen & Fergus median-frequency balancing. segmentation-models-pytorch's Dice, Focal and Lovasz losses are registered
under their own names in multiclass mode, and ``CombinedLoss`` sums any of them. A batch with no labelled pixel at
all (a crop that is entirely void) gives a zero loss with zero gradients, never NaN.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.registry import LOSSES, ConfigError

__all__ = [
    "build_loss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszLoss",
    "CombinedLoss",
    "median_frequency_weights",
]

MEDIAN_FREQUENCY = "median_frequency"


class MaskDataset(Protocol):
    """What class statistics need from a segmentation dataset."""

    num_classes: int

    def __len__(self) -> int: ...

    def read_mask(self, index: int) -> np.ndarray: ...


def _check_inputs(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"expected logits N×C×H×W, got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; expected "
            f"{(logits.shape[0], *logits.shape[2:])}"
        )


@LOSSES.register_module()
class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over pixels whose target is not ``ignore_index``, optionally class-weighted.

    ``class_weight``: ``None`` (unweighted, the Tiramisu recipe), a list of per-class weights, or
    ``'median_frequency'``: weights from the training masks, which ``prepare(train_dataset)`` (called by the task's
    ``on_train_start``) or ``set_class_weight`` must install before the first call. The weights are a buffer, so
    checkpoints carry them and a model rebuilt from the same config loads them back. With weights the mean is weighted
    like torch's: ``Σ w[y]·ce / Σ w[y]`` over non-void pixels.
    """

    def __init__(self, *, ignore_index: int = 255, class_weight: Sequence[float] | str | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.weight_mode = class_weight if isinstance(class_weight, str) else None
        if self.weight_mode is not None and self.weight_mode != MEDIAN_FREQUENCY:
            raise ConfigError(
                f"class_weight must be None, a list of floats or {MEDIAN_FREQUENCY!r}, got {class_weight!r}"
            )
        if class_weight is None:
            self.register_buffer("class_weight", None)
        elif self.weight_mode == MEDIAN_FREQUENCY:
            # Empty until set_class_weight; resized when a checkpoint is loaded (see _load_from_state_dict).
            self.register_buffer("class_weight", torch.empty(0))
        else:
            self.register_buffer("class_weight", torch.as_tensor(class_weight, dtype=torch.float32).reshape(-1))

    @property
    def needs_class_weight(self) -> bool:
        """True while median-frequency weights have not been set yet."""
        return self.weight_mode == MEDIAN_FREQUENCY and self.class_weight.numel() == 0

    def prepare(self, dataset: MaskDataset) -> None:
        """Compute median-frequency weights from ``dataset``'s masks if they are still missing; otherwise a no-op."""
        if self.needs_class_weight:
            self.set_class_weight(median_frequency_weights(dataset, dataset.num_classes, self.ignore_index))

    def set_class_weight(self, weight: Tensor) -> None:
        """Install per-class weights (e.g. from ``median_frequency_weights``), kept as the ``class_weight`` buffer."""
        if self.class_weight is None:
            raise ValueError("this CrossEntropyLoss was built with class_weight=None; configure 'median_frequency'")
        weight = torch.as_tensor(weight, dtype=torch.float32).reshape(-1)
        if (weight < 0).any() or not torch.isfinite(weight).all():
            raise ValueError(f"class weights must be finite and non-negative, got {weight.tolist()}")
        self.class_weight = weight.to(self.class_weight.device)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Median-frequency weights are computed at train start; a fresh model holds an empty buffer until then, so
        # take the checkpoint's shape rather than failing on a size mismatch.
        key = prefix + "class_weight"
        if self.weight_mode == MEDIAN_FREQUENCY and key in state_dict:
            self.class_weight = torch.empty_like(state_dict[key], device=self.class_weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_inputs(logits, target)
        weight = self.class_weight
        if weight is not None:
            if weight.numel() == 0:
                raise RuntimeError(
                    "CrossEntropyLoss(class_weight='median_frequency') was called before its weights were set; call "
                    "loss.prepare(train_dataset) or loss.set_class_weight(...) before training"
                )
            if weight.numel() != logits.shape[1]:
                raise ValueError(f"{weight.numel()} class weights for logits with {logits.shape[1]} classes")
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if weight is None:
            denominator = valid.sum().to(per_pixel.dtype)
        else:
            denominator = (weight[torch.where(valid, target, 0)] * valid).sum()
        # Dividing by a clamped denominator, not branching on it, keeps an all-void batch at 0 without a device sync.
        return per_pixel.sum() / denominator.clamp_min(torch.finfo(per_pixel.dtype).tiny)


def median_frequency_weights(dataset: MaskDataset, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """Eigen & Fergus (2015) class weights ``median(freq) / freq(c)`` from a dataset's raw masks.

    ``freq(c)`` = pixels of class c / labelled pixels of the images in which c appears. Void pixels are counted in
    neither (they are not part of any class's distribution, and the loss skips them). Classes that never appear get
    weight 0 and are left out of the median. Reads ``dataset.read_mask(i)`` for every i, unaugmented.
    """
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for index in range(len(dataset)):
        labels = np.asarray(dataset.read_mask(index)).reshape(-1).astype(np.int64)
        if ignore_index is not None:
            labels = labels[labels != ignore_index]
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f"mask {index} of {type(dataset).__name__} has label(s) {np.unique(labels[bad])[:5].tolist()} "
                f"outside [0, {num_classes}) and not the ignore index {ignore_index}"
            )
        counts = np.bincount(labels, minlength=num_classes)
        class_pixels += counts
        image_pixels[counts > 0] += labels.size
    present = class_pixels > 0
    if not present.any():
        raise ValueError(f"no labelled pixel in any of the {len(dataset)} masks of {type(dataset).__name__}")
    frequency = class_pixels[present] / image_pixels[present]
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = np.median(frequency) / frequency
    return torch.from_numpy(weights).float()


class _SmpLoss(nn.Module):
    """A segmentation-models-pytorch loss in multiclass mode behind the ``(logits, target)`` interface."""

    smp_name = ""

    def __init__(self, *, ignore_index: int | None = 255, **options: Any) -> None:
        super().__init__()
        # Imported here: segmentation_models_pytorch pulls in its encoders, seconds that plain CE users need not pay.
        from segmentation_models_pytorch import losses as smp_losses

        self.ignore_index = ignore_index
        self.loss = getattr(smp_losses, self.smp_name)(mode="multiclass", ignore_index=ignore_index, **options)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_inputs(logits, target)
        if self.ignore_index is not None and not (target != self.ignore_index).any():
            # smp's focal loss averages an empty set (NaN) and its Lovasz loss returns an empty tensor here.
            return logits.sum() * 0.0
        # float32 whatever the logits: smp's Lovasz builds float32 gradients and fails on float64 or float16 inputs.
        return self.loss(logits.float(), target)


@LOSSES.register_module()
class DiceLoss(_SmpLoss):
    """smp's soft Dice loss; ``options`` are smp's (``smooth``, ``log_loss``, ``classes``, ``class_weights``...)."""

    smp_name = "DiceLoss"


@LOSSES.register_module()
class FocalLoss(_SmpLoss):
    """smp's focal loss (one-vs-rest per class); ``options`` are smp's (``alpha``, ``gamma``, ``normalized``...)."""

    smp_name = "FocalLoss"


@LOSSES.register_module()
class LovaszLoss(_SmpLoss):
    """smp's Lovasz-softmax loss, a surrogate for IoU; ``options`` are smp's (``per_image``)."""

    smp_name = "LovaszLoss"


def build_loss(cfg: Mapping[str, Any] | nn.Module, *, ignore_index: int | None = None) -> nn.Module:
    """A loss from its config, with ``ignore_index`` as the default for losses that take one (so a config states the
    void label once, on the task, and not again in every loss)."""
    if isinstance(cfg, nn.Module):
        return cfg
    kind = cfg.get("type") if isinstance(cfg, Mapping) else None
    factory = LOSSES.get(kind) if isinstance(kind, str) and kind in LOSSES else kind
    accepts = callable(factory) and "ignore_index" in inspect.signature(factory).parameters
    return LOSSES.build(cfg, ignore_index=ignore_index) if accepts and ignore_index is not None else LOSSES.build(cfg)


@LOSSES.register_module()
class CombinedLoss(nn.Module):
    """A weighted sum of configured losses: ``CombinedLoss(losses=[dict(type='CrossEntropyLoss'),
    dict(type='DiceLoss')], weights=[1.0, 0.5])``.

    Calling it returns the total; ``terms(logits, target)`` returns the weighted parts by type name (a repeated type
    gets ``_1``, ``_2``...) for logging, and they sum to the total.
    """

    def __init__(
        self,
        *,
        losses: Sequence[Mapping[str, Any]],
        weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("CombinedLoss needs at least one entry in 'losses'")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ConfigError(f"CombinedLoss has {len(losses)} losses but {len(weights)} weights: {list(weights)}")
        self.losses = nn.ModuleList(build_loss(cfg, ignore_index=ignore_index) for cfg in losses)
        self.weights = weights
        types = [type(module).__name__ for module in self.losses]
        seen = [types[:i].count(name) for i, name in enumerate(types)]
        self.names = [f"{name}_{count}" if count else name for name, count in zip(types, seen)]

    def prepare(self, dataset: MaskDataset) -> None:
        """Let every part that needs dataset statistics (median-frequency weights) compute them."""
        for loss in self.losses:
            if hasattr(loss, "prepare"):
                loss.prepare(dataset)

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {
            name: weight * loss(logits, target) for name, weight, loss in zip(self.names, self.weights, self.losses)
        }

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sum(self.terms(logits, target).values())

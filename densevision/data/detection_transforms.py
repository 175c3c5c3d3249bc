"""SSD's training augmentation (Liu et al. 2016; DSOD trains with it) as transforms for detection pipelines::

    dict(type="PhotometricDistort"),                   # brightness, contrast, saturation, hue, channel swap
    dict(type="Expand", fill=(123.675, 116.28, 103.53), max_ratio=4.0, p=0.5),   # zoom out onto a mean canvas
    dict(type="MinIoURandomCrop"),                     # SSD's patch sampler
    dict(type="Resize", height=300, width=300), dict(type="HorizontalFlip", p=0.5),  # albumentations' own

Only what albumentations lacks is added, built on what it has: ``PhotometricDistort`` is torchvision's
``RandomPhotometricDistort`` recipe (SSD's) on ``ColorJitter``'s kernels, ``Expand`` is ``Pad`` and
``MinIoURandomCrop`` a crop, each with SSD's random parameters, so boxes and every label field travel through
albumentations' box processing and stay in step (a dropped box takes its label with it).

Randomness follows torch's seed: every draw comes from albumentations' per-transform RNG, which
``TorchSeededCompose`` seeds from torch on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.augmentations.pixel import functional as fpixel
from albumentations.core.bbox_utils import denormalize_bboxes

from densevision.registry import TRANSFORMS

__all__ = ["PhotometricDistort", "Expand", "MinIoURandomCrop"]

# ImageNet's mean in 0..255 pixels: albumentations' Normalize default, so Expand's canvas normalises to zero.
IMAGENET_MEAN_PIXELS = (123.675, 116.28, 103.53)
_COLOUR_KERNELS = {
    "brightness": fpixel.adjust_brightness_torchvision,
    "contrast": fpixel.adjust_contrast_torchvision,
    "saturation": fpixel.adjust_saturation_torchvision,
    "hue": fpixel.adjust_hue_torchvision,
}
_CONTRAST_FIRST = ("brightness", "contrast", "saturation", "hue")
_CONTRAST_LAST = ("brightness", "saturation", "hue", "contrast")


@TRANSFORMS.register_module()
class PhotometricDistort(A.ImageOnlyTransform):
    """SSD's photometric distortion of a uint8 RGB image, as torchvision's ``RandomPhotometricDistort`` does it.

    Brightness, contrast, saturation and hue factors are drawn from their ranges, each applied with probability
    ``p`` (contrast before or after saturation and hue, at random), then the channels are permuted with
    probability ``p``; ``p`` is per distortion (torchvision's meaning), the transform itself always runs. The
    kernels are albumentations' torchvision-equivalent ones (``ColorJitter``'s), which work on uint8 with OpenCV.
    Put it before ``Normalize``.
    """

    def __init__(
        self,
        brightness: Sequence[float] = (0.875, 1.125),
        contrast: Sequence[float] = (0.5, 1.5),
        saturation: Sequence[float] = (0.5, 1.5),
        hue: Sequence[float] = (-0.05, 0.05),
        p: float = 0.5,
    ) -> None:
        super().__init__(p=1.0)
        ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        for name, (low, high) in ranges.items():
            if not (-0.5 <= low <= high <= 0.5 if name == "hue" else 0 <= low <= high):
                raise ValueError(f"PhotometricDistort {name} must be a (low, high) range, got {(low, high)}")
        self.ranges = {name: (float(low), float(high)) for name, (low, high) in ranges.items()}
        if not 0 <= p <= 1:
            raise ValueError(f"PhotometricDistort p must be in [0, 1], got {p}")
        self.p_each = float(p)

    def get_params(self) -> dict[str, Any]:
        rng = self.py_random
        factors = {
            name: rng.uniform(*bounds) if rng.random() < self.p_each else None for name, bounds in self.ranges.items()
        }
        contrast_first = rng.random() < 0.5
        permutation = rng.sample(range(3), 3) if rng.random() < self.p_each else None
        return {"factors": factors, "contrast_first": contrast_first, "permutation": permutation}

    def apply(
        self,
        img: np.ndarray,
        factors: dict[str, float | None],
        contrast_first: bool,
        permutation: list[int] | None,
        **params: Any,
    ) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"PhotometricDistort expects an H×W×3 uint8 RGB image (place it before Normalize), "
                f"got {img.dtype} of shape {img.shape}"
            )
        for name in _CONTRAST_FIRST if contrast_first else _CONTRAST_LAST:
            if factors[name] is not None:
                img = _COLOUR_KERNELS[name](img, factors[name])
        return img if permutation is None else np.ascontiguousarray(img[..., permutation])


@TRANSFORMS.register_module()
class Expand(A.Pad):
    """SSD's zoom out: place the image at a random spot of a canvas ``r`` times its size, ``r ~ U(1, max_ratio)``,
    filled with ``fill`` (the mean pixel, so the canvas is neutral after ``Normalize``); boxes move with it."""

    def __init__(
        self, fill: float | Sequence[float] = IMAGENET_MEAN_PIXELS, max_ratio: float = 4.0, p: float = 0.5
    ) -> None:
        if max_ratio < 1:
            raise ValueError(f"Expand max_ratio must be >= 1, got {max_ratio}")
        fill = float(fill) if isinstance(fill, (int, float)) else tuple(float(v) for v in fill)
        super().__init__(padding=0, fill=fill, fill_mask=0, border_mode=cv2.BORDER_CONSTANT, p=p)
        self.max_ratio = float(max_ratio)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        canvas_height, canvas_width = int(height * ratio), int(width * ratio)
        top = int(self.py_random.uniform(0, canvas_height - height))
        left = int(self.py_random.uniform(0, canvas_width - width))
        return {
            "pad_top": top,
            "pad_bottom": canvas_height - height - top,
            "pad_left": left,
            "pad_right": canvas_width - width - left,
        }


def _centres_inside(boxes: np.ndarray, crop: Sequence[int]) -> np.ndarray:
    """Which pixel boxes (n×4+) have their centre strictly inside ``crop`` (x1, y1, x2, y2)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (crop[0] < cx) & (cx < crop[2]) & (crop[1] < cy) & (cy < crop[3])


def _iou_with(boxes: np.ndarray, crop: Sequence[int]) -> np.ndarray:
    """IoU of each pixel box (n×4+) with the one box ``crop``."""
    width = (np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0])).clip(0)
    height = (np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1])).clip(0)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (crop[2] - crop[0]) * (crop[3] - crop[1]) - inter)


# Rounds of MinIoURandomCrop before it keeps the whole image although "keep" was not drawn. The references loop
# until a round succeeds; a bound keeps a worker from spinning forever on boxes no patch can hold (a sliver on the
# image's edge) when ``min_ious`` has no "keep" value. With the default options, (6/7)**100 < 1e-6 of calls reach it.
_MAX_ROUNDS = 100


@TRANSFORMS.register_module()
class MinIoURandomCrop(BaseCrop):
    """SSD's patch sampler: crop a random patch that overlaps the objects, keep the boxes whose centre it holds.

    Each round draws a minimum IoU from ``min_ious`` (a value >= 1 keeps the whole image, 0 takes any patch that
    holds a box centre), then tries up to ``trials`` patches with sides ``U(min_crop_size, 1)`` of the image's and
    width/height within ``aspect_ratio_range``: the first that holds at least one box centre and overlaps one such
    box with IoU >= the minimum is taken. If none qualifies, the next round draws a new minimum IoU, as
    torchvision's ``RandomIoUCrop`` and ssd.pytorch's ``RandomSampleCrop`` do: the image stays whole only when the
    "keep" option is drawn first (1/7 of calls with the default ``min_ious`` when every minimum can be met), not
    whenever one hard minimum fails. Kept boxes are clipped to the patch. An image without boxes is cropped freely
    (its target stays empty).
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        min_crop_size: float = 0.3,
        aspect_ratio_range: Sequence[float] = (0.5, 2.0),
        trials: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not min_ious or any(not 0 <= v <= 1 for v in min_ious):
            raise ValueError(f"MinIoURandomCrop min_ious must be values in [0, 1], got {min_ious!r}")
        if not 0 < min_crop_size <= 1:
            raise ValueError(f"MinIoURandomCrop min_crop_size must be in (0, 1], got {min_crop_size}")
        if len(aspect_ratio_range) != 2 or not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
            raise ValueError(f"MinIoURandomCrop aspect_ratio_range must be (low, high), got {aspect_ratio_range!r}")
        if trials < 1:
            raise ValueError(f"MinIoURandomCrop trials must be >= 1, got {trials}")
        self.min_ious = tuple(float(v) for v in min_ious)
        self.min_crop_size = float(min_crop_size)
        self.aspect_ratio_range = (float(aspect_ratio_range[0]), float(aspect_ratio_range[1]))
        self.trials = int(trials)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        bboxes = data.get("bboxes")
        boxes = denormalize_bboxes(bboxes[:, :4], (height, width)) if bboxes is not None and len(bboxes) else None
        for _ in range(_MAX_ROUNDS):
            min_iou = self.py_random.choice(self.min_ious)
            if min_iou >= 1:
                break
            crop = self._patch(boxes, height, width, min_iou)
            if crop is not None:
                return {"crop_coords": crop}
        return {"crop_coords": (0, 0, width, height)}

    def _patch(self, boxes: np.ndarray | None, height: int, width: int, min_iou: float) -> tuple[int, ...] | None:
        """The first of ``trials`` random patches (x1, y1, x2, y2) that meets ``min_iou``, or ``None``."""
        low, high = self.aspect_ratio_range
        for _ in range(self.trials):
            crop_width = self.py_random.uniform(self.min_crop_size, 1.0) * width
            crop_height = self.py_random.uniform(self.min_crop_size, 1.0) * height
            if not low <= crop_width / crop_height <= high:
                continue
            left = self.py_random.uniform(0, width - crop_width)
            top = self.py_random.uniform(0, height - crop_height)
            crop = (int(left), int(top), int(left + crop_width), int(top + crop_height))
            if crop[2] <= crop[0] or crop[3] <= crop[1]:
                continue
            if boxes is not None:
                inside = _centres_inside(boxes, crop)
                if not inside.any() or _iou_with(boxes[inside], crop).max() < min_iou:
                    continue
            return crop
        return None

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        if len(bboxes):
            pixels = denormalize_bboxes(bboxes[:, :4], params["shape"][:2])
            bboxes = bboxes[_centres_inside(pixels, crop_coords)]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)

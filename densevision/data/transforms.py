"""Augmentation pipelines from config: albumentations transforms registered by their own names, not rewrapped.

``dict(type='RandomCrop', height=224, width=224)`` builds ``A.RandomCrop(height=224, width=224)``. Composition
wrappers (``OneOf``, ``SomeOf``, ``Sequential``, ...) take a nested ``transforms`` list of such dicts. A misspelt
argument is an error naming the closest real one, rather than albumentations' warning that ignores it.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from albumentations.augmentations.crops.transforms import CropSizeError
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform

from densevision.data.checks import DatasetError, crop_too_large, pipeline_crop
from densevision.registry import TRANSFORMS, ConfigError, close_matches

__all__ = ["apply_pipeline", "build_pipeline", "resolve_pipeline", "TorchSeededCompose", "TASKS_WITH_PIPELINES"]

TASKS_WITH_PIPELINES = ("segmentation", "classification", "detection")
_COMPOSITIONS = ("OneOf", "SomeOf", "OneOrOther", "Sequential", "SelectiveChannelTransform", "RandomOrder")


def _is_concrete_transform(obj: Any) -> bool:
    """Public transform classes; the interface bases (BasicTransform, DualTransform, ...) build nothing useful."""
    return (
        inspect.isclass(obj)
        and issubclass(obj, BasicTransform)
        and obj.__module__ != "albumentations.core.transforms_interface"
    )


def _register_albumentations() -> None:
    for name in dir(A):
        obj = getattr(A, name)
        if not name.startswith("_") and _is_concrete_transform(obj):
            TRANSFORMS.register_module(name=name, module=obj)
    for name in _COMPOSITIONS:
        if hasattr(A, name):
            TRANSFORMS.register_module(name=name, module=getattr(A, name))


_register_albumentations()


def _check_arguments(cls: type, cfg: Mapping[str, Any], where: str) -> None:
    """Unknown argument names are errors (albumentations would only warn and ignore them), with close matches."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in cfg:
        if key != "type" and key not in parameters:
            hint = close_matches(key, parameters)
            suggestion = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise ConfigError(
                f"{where}: {cls.__name__} has no argument {key!r} (it takes {', '.join(parameters)}){suggestion}"
            )


def _build_transform(cfg: Mapping[str, Any], where: str) -> BasicTransform | BaseCompose:
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: each pipeline step must be a dict with a 'type' key, got {cfg!r}")
    source = getattr(cfg, "filename", None)
    where = f"{where} (in {source})" if source else where
    cfg = dict(cfg)
    kind = cfg.get("type")
    if "transforms" in cfg:
        cfg["transforms"] = [
            _build_transform(child, f"{where}.transforms[{i}]") for i, child in enumerate(cfg["transforms"])
        ]
    cls = TRANSFORMS.get(kind) if isinstance(kind, str) and kind in TRANSFORMS else kind
    if inspect.isclass(cls):
        _check_arguments(cls, cfg, where)
    try:
        return TRANSFORMS.build(cfg)
    except ValueError as err:  # albumentations validates argument values with pydantic (a ValueError)
        if isinstance(err, ConfigError):
            raise ConfigError(f"{where}: {err}") from err
        raise ConfigError(f"{where}: bad arguments for transform {kind!r}: {err}") from err


class TorchSeededCompose(A.Compose):
    """``A.Compose`` whose randomness follows torch's generator: every call draws its seed from torch.

    albumentations keeps a private RNG that ignores global seeds; drawing from torch makes augmentations follow the
    runner's seed, the DataLoader's per-worker seeds and the RNG state restored on resume.
    """

    def __call__(self, *args: Any, **data: Any) -> dict[str, Any]:
        self.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        return super().__call__(*args, **data)


def build_pipeline(cfgs: Sequence[Mapping[str, Any]] | None, task: str = "segmentation") -> A.Compose:
    """A ``TorchSeededCompose`` from a list of transform dicts (``None`` or ``[]``: identity).

    ``task`` sets what travels with the image: segmentation masks follow geometric transforms automatically;
    detection adds ``bboxes`` in pascal_voc pixels (x1, y1, x2, y2) with their ``labels``.
    """
    if task not in TASKS_WITH_PIPELINES:
        raise ValueError(f"unknown task {task!r} for build_pipeline; expected one of {TASKS_WITH_PIPELINES}")
    if cfgs is not None and (isinstance(cfgs, (str, Mapping)) or not isinstance(cfgs, Sequence)):
        raise ConfigError(f"a pipeline is a list of transform dicts, got {cfgs!r}")
    transforms = [_build_transform(cfg, f"pipeline[{i}]") for i, cfg in enumerate(cfgs or [])]
    if task == "detection":
        with warnings.catch_warnings():  # an image-only (or empty) pipeline is fine: boxes pass through unchanged
            warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
            return TorchSeededCompose(
                transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"])
            )
    return TorchSeededCompose(transforms)


def resolve_pipeline(
    pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None, task: str
) -> Callable[..., dict]:
    """What datasets accept as ``pipeline``: a config list (built here), a ready callable, or ``None``."""
    if callable(pipeline):
        return pipeline
    return build_pipeline(pipeline, task=task)


def apply_pipeline(pipeline: Callable[..., dict], path: Path | str, **data: Any) -> dict[str, Any]:
    """``pipeline(**data)`` for the sample of image ``path`` (``data['image']`` H×W×C as read).

    A crop larger than the image (albumentations' ``CropSizeError``, wherever the pipeline raises it) becomes one
    ``DatasetError`` naming the file and both sizes: ``check()`` reports it before training, but runs with
    ``check_datasets=False`` (the VOC and COCO configs) meet it here, in a loader worker.
    """
    try:
        return pipeline(**data)
    except CropSizeError as err:
        height, width = data["image"].shape[:2]
        crop = pipeline_crop(pipeline)
        problem = None if crop is None else crop_too_large(path, height, width, crop)
        if problem is None:  # a crop further down the pipeline, after a resize or a pad: albumentations' sizes
            problem = f"image {path} ({height}x{width}, HxW) is too small for a crop of the pipeline: {err}"
        raise DatasetError(problem) from err

"""Prediction on image files at full resolution: the task model, the training pipeline's normalisation, tiling.

Training sees normalised crops; users have whole images, often larger than memory allows and not multiples of 32. A
predictor normalises exactly as the config's ``Normalize`` step, runs the task's ``forward`` (logits), and for large
images slides overlapping windows whose softmax probabilities are averaged, so the result has no seams: with a model
that looks at single pixels, tiled and whole-image predictions give the same mask and probabilities equal to float
rounding. Tiling is chosen automatically above ``max_pixels``: a whole 4000×3000 image through even a tiny FC-DenseNet
needs gigabytes of activations.
"""

from __future__ import annotations

import argparse
import csv
import glob
import inspect
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn

# Importing densevision.data and densevision.models (as these do) registers the datasets, architectures and tasks;
# densevision.engine.checkpoint does not load the training runner.
import densevision.models  # noqa: F401
from densevision.backends import CHECK_SIZE, onnx_cache_file, prepare_forward
from densevision.data.base import default_palette
from densevision.data.checks import DatasetError
from densevision.data.io import (
    IMAGE_EXTENSIONS,
    colourise_mask,
    list_files,
    read_image,
    write_colour_mask,
    write_mask_png,
)
from densevision.data.medical import NIFTI_SUFFIXES, nifti_stem
from densevision.engine.checkpoint import load_model_weights
from densevision.registry import DATASETS, PREDICTORS, TASKS, ConfigError

__all__ = [
    "Predictor",
    "SegmentationPredictor",
    "ClassificationPredictor",
    "DetectionPredictor",
    "InferenceReport",
    "load_task",
    "predictor_class",
    "window_starts",
    "find_images",
    "overlay_mask",
    "infer_files",
    "output_folder",
    "SEGMENTATION_OUTPUTS",
    "PREDICTIONS_CSV",
    "DETECTION_RESULTS",
    "AUTO_TILE_SIZE",
    "DEFAULT_MAX_PIXELS",
]

_SPLITS = ("test", "val", "train")  # where a config's pipeline (and, for old checkpoints, classes) are looked up
_TILE_WINDOWS = ("uniform", "hann")
SEGMENTATION_OUTPUTS = ("mask", "color", "overlay")  # <stem>_<kind>.png
PREDICTIONS_CSV = "predictions.csv"
DETECTION_RESULTS = "results.json"
INPUT_SUFFIXES = (*IMAGE_EXTENSIONS, *NIFTI_SUFFIXES)
MIN_DRAWN_SIZE = 256  # pixels on the short side of a drawn detection image
DEFAULT_MAX_PIXELS = 1024 * 1024  # larger images are predicted in tiles unless a tile size is given
AUTO_TILE_SIZE = 512  # the tile size chosen then: bounded activations, enough context for a 5-pooling FC-DenseNet

logger = logging.getLogger("densevision")


def _where(node: Any) -> str:
    """The config file a config node came from, for error messages."""
    return getattr(node, "filename", None) or "the config"


def _torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device this machine has: a misspelt name or CUDA without a GPU is a ConfigError."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available; use 'cpu'")
    return chosen


def load_task(
    cfg: Mapping[str, Any], checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """The task model of ``cfg.model`` with the checkpoint's weights, in eval mode on ``device``."""
    return _load_task(cfg, checkpoint, device)[0]


def _load_task(
    cfg: Mapping[str, Any], checkpoint: str | os.PathLike, device: str | torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The task with the checkpoint's weights, and the checkpoint's ``meta`` (epoch, the dataset's metainfo)."""
    if "model" not in cfg:
        raise ConfigError(f"{_where(cfg)} has no 'model' (the task to predict with)")
    device = _torch_device(device)
    task = TASKS.build(cfg["model"])
    meta = load_model_weights(task, checkpoint).get("meta", {})
    return task.to(device).eval(), meta if isinstance(meta, dict) else {}


def _dataset_cfg(cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for split in _SPLITS:
        dataset = cfg.get(f"{split}_dataset")
        if isinstance(dataset, Mapping):
            return dataset
    return None


def _dataset_attribute(cfg: Mapping[str, Any], name: str) -> Sequence | None:
    """``classes``/``palette`` as the config's dataset sets it, else as its registered class defines it: the fallback
    for checkpoints written before they carried the dataset's metainfo."""
    dataset = _dataset_cfg(cfg)
    if dataset is None:
        return None
    if dataset.get(name) is not None:
        return dataset[name]
    kind = dataset.get("type")
    if isinstance(kind, str):
        kind = DATASETS.get(kind) if kind in DATASETS else None
    value = inspect.getattr_static(kind, name, None) if inspect.isclass(kind) else None
    return value if isinstance(value, Sequence) and not isinstance(value, str) else None


def _dataset_prediction_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the config's dataset class says a predictor needs for whole files (``prediction_options``: a volume's
    slicing, a scene's bands), so the predictor prepares them as training did."""
    dataset = _dataset_cfg(cfg)
    kind = dataset.get("type") if dataset is not None else None
    kind = DATASETS.get(kind) if isinstance(kind, str) and kind in DATASETS else kind
    options = getattr(kind, "prediction_options", None)
    return dict(options(dataset)) if callable(options) else {}


def _metainfo(cfg: Mapping[str, Any], checkpoint_meta: Mapping[str, Any], name: str) -> Sequence | None:
    """A dataset metainfo entry (``classes``, ``palette``) as the checkpoint stored it (older checkpoints: the
    config's dataset)."""
    stored = checkpoint_meta.get("dataset_meta") or {}
    if stored.get(name) is not None:
        return stored[name]
    return _dataset_attribute(cfg, name)


def _pipeline_step(cfg: Mapping[str, Any], names: Sequence[str]) -> Mapping[str, Any] | None:
    """The last step of type ``names`` in the first split's pipeline (test, then val, then train) that has one."""
    for split in _SPLITS:
        dataset = cfg.get(f"{split}_dataset")
        pipeline = dataset.get("pipeline") if isinstance(dataset, Mapping) else None
        if not isinstance(pipeline, Sequence):
            continue
        steps = [
            step
            for step in pipeline
            if isinstance(step, Mapping) and getattr(step.get("type"), "__name__", step.get("type")) in names
        ]
        if steps:
            return steps[-1]
    return None


def _normalisation_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """mean, std and max_pixel_value of the pipeline's ``Normalize`` step, albumentations' defaults filling gaps."""
    step = _pipeline_step(cfg, ("Normalize",))
    if step is None:
        raise ConfigError(
            f"{_where(cfg)} has no Normalize step in the pipeline of "
            f"{' / '.join(f'{s}_dataset' for s in _SPLITS)}; the predictor normalises images as that step does"
        )
    if step.get("normalization", "standard") != "standard":
        raise ConfigError(
            f"Normalize(normalization={step['normalization']!r}) in {_where(step)}"
            " is not supported for prediction; use the standard (mean/std) normalisation"
        )
    defaults = inspect.signature(A.Normalize).parameters
    values = {key: step.get(key, defaults[key].default) for key in ("mean", "std", "max_pixel_value")}
    unset = [key for key, value in values.items() if value is None]
    if unset:
        raise ConfigError(
            f"Normalize in {_where(step)} leaves {', '.join(unset)} unset; prediction needs explicit values"
        )
    return values


def _num_classes(task: nn.Module, classes: Sequence[str] | None, where: str) -> int:
    value = getattr(task, "num_classes", None)
    if isinstance(value, int):
        return value
    if classes is not None:
        return len(classes)
    raise ConfigError(
        f"cannot tell the number of classes of {type(task).__name__} from {where}: "
        "set num_classes on the model or classes on the dataset"
    )


def _as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{name} must be a positive int or (height, width), got {value!r}")
    return pair


class Predictor:
    """A task model in eval mode on a device, and images normalised as the training pipeline's ``Normalize`` did.

    ``mean``/``std`` follow ``albumentations.Normalize``: ``(image - mean * max_pixel_value) / (std *
    max_pixel_value)``, one value per band (or one for all bands). ``classes`` default to the class indices as names.

    Each task's predictor owns its results: ``predict(image)`` returns them, ``write`` saves one image's files and
    ``finish`` the files that cover every image (a CSV, a results JSON); ``add_arguments``/``options_from_args`` are
    its command-line options in tools/infer.py. The tool and ``infer_files`` know no task.

    ``forward`` is the task's forward through the chosen backend (``backend``, ``precision``, ``compile``,
    ``channels_last``, ``onnx_file``: ``densevision.backends.prepare_forward``); predictions, tiles included, go
    through it, and the log says once what it runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int,
        classes: Sequence[str] | None = None,
        max_pixel_value: float = 255.0,
        device: str | torch.device = "cpu",
        backend: str = "torch",
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool | None = None,
        onnx_file: str | os.PathLike | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        self.classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(self.num_classes))
        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        mean_values = np.atleast_1d(np.asarray(mean, dtype=np.float64)) * max_pixel_value
        std_values = np.atleast_1d(np.asarray(std, dtype=np.float64)) * max_pixel_value
        if mean_values.ndim != 1 or std_values.ndim != 1 or len(mean_values) != len(std_values):
            raise ConfigError(f"mean and std need one value per band (the same number), got mean={mean}, std={std}")
        if np.any(std_values == 0):
            raise ConfigError(f"std must not be zero, got std={std}")
        self.mean = torch.as_tensor(mean_values, dtype=torch.float32, device=self.device)[:, None, None]
        self.std = torch.as_tensor(std_values, dtype=torch.float32, device=self.device)[:, None, None]
        self.forward, self.backend = prepare_forward(
            self.model,
            device=self.device,
            backend=backend,
            precision=precision,
            compile=compile,
            channels_last=channels_last,
            onnx_file=onnx_file,
            check_size=self.onnx_check_size(),
        )
        logger.info("inference: %s", self.backend)

    def onnx_check_size(self) -> tuple[int, int]:
        """The (odd) input size an ONNX export is checked at before onnxruntime stands in for the task."""
        return CHECK_SIZE

    def to_tensor(self, image: np.ndarray) -> Tensor:
        """An H×W (one band) or H×W×C image as a normalised C×H×W float32 tensor on the predictor's device."""
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or min(array.shape) == 0:
            raise DatasetError(f"expected an H×W or H×W×C image, got an array of shape {array.shape}")
        bands = array.shape[2]
        if len(self.mean) not in (1, bands):
            raise DatasetError(
                f"image has {bands} band(s) but the normalisation has {len(self.mean)} mean/std values "
                "(one per band expected)"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
        return (tensor.to(self.device) - self.mean) / self.std

    def predict(self, image: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """Save the results of one image (read from ``path``) under ``out_dir``; returns the files written."""
        raise NotImplementedError

    def finish(self, out_dir: Path) -> list[Path]:
        """Close what covers every image (a CSV written as results came, a results JSON); returns those files."""
        return []

    def predict_file(self, path: Path, out_dir: Path) -> list[Path] | None:
        """Predict a file that is not read as one image (a volume, a scene larger than memory) and write its results;
        ``None`` when ``path`` is an ordinary image, which ``infer_files`` reads and passes to ``predict``."""
        return None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """This predictor's options for tools/infer.py."""

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Constructor options from the parsed ``add_arguments`` options."""
        return {}

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu", **options
    ) -> Predictor:
        """The predictor the task of ``cfg.model`` names, with the checkpoint's weights.

        Normalisation comes from the test (else val, else train) pipeline's ``Normalize`` step; class names and
        palette from the dataset metainfo stored in the checkpoint. ``options`` override the predictor's other
        arguments (``tile_size=512``, ``top_k=3``...) and choose the backend (``backend='auto'``, ``precision``,
        ``compile``, ``channels_last``); an ONNX export is cached beside the checkpoint (``backends.onnx_cache_file``).
        """
        predictor_cls = predictor_class(cfg)
        if cls is not Predictor:
            if not issubclass(cls, predictor_cls):
                raise ConfigError(
                    f"model.type={cfg['model']['type']!r} in {_where(cfg)} needs a {predictor_cls.__name__}, "
                    f"not a {cls.__name__}"
                )
            predictor_cls = cls
        task, meta = _load_task(cfg, checkpoint, device)
        arguments = predictor_cls._config_arguments(cfg, task, meta)
        if options.get("backend", "torch") != "torch" and options.get("onnx_file") is None:
            options["onnx_file"] = onnx_cache_file(checkpoint, cfg["model"])  # reused while the checkpoint is unchanged
        # An option left unset (None) keeps what the config gives (a raster dataset's window as the tile size).
        arguments.update({key: value for key, value in options.items() if value is not None or key not in arguments})
        return predictor_cls(task, device=device, **arguments)

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        classes = _metainfo(cfg, meta, "classes")
        return {
            **_normalisation_from_config(cfg),
            "num_classes": _num_classes(task, classes, _where(cfg)),
            "classes": classes,
        }


def predictor_class(cfg: Mapping[str, Any]) -> type[Predictor]:
    """The predictor that the task ``cfg.model`` builds names (its ``predictor`` attribute), without building it."""
    where = _where(cfg)
    if not isinstance(cfg.get("model"), Mapping) or "type" not in cfg["model"]:
        raise ConfigError(f"{where} has no model=dict(type=...) (the task to predict with)")
    kind = cfg["model"]["type"]
    task_cls = TASKS.get(kind) if isinstance(kind, str) and kind in TASKS else kind
    name = getattr(task_cls, "predictor", None)
    if not isinstance(name, str):
        raise ConfigError(
            f"no predictor for model.type={kind!r} in {where}: a task names its predictor class in `predictor` "
            f"(registered predictors: {', '.join(PREDICTORS.names())})"
        )
    return PREDICTORS.get(name)


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` with at least ``overlap`` (a fraction) shared
    between neighbours; the last window ends at the border. A length within one window gives ``[0]``."""
    if not 0 <= overlap < 1:
        raise ConfigError(f"tile overlap must be in [0, 1), got {overlap}")
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    return [*range(0, length - window, stride), length - window]


def _window_weights(height: int, width: int, kind: str, device: torch.device) -> Tensor:
    """Per-pixel weights of one tile: uniform, or a Hann window (positive everywhere, so every pixel counts)."""
    if kind == "uniform":
        return torch.ones((height, width), dtype=torch.float32, device=device)

    def hann(n: int) -> Tensor:
        return torch.sin(torch.pi * (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n) ** 2

    return hann(height)[:, None] * hann(width)[None, :]


@PREDICTORS.register_module()
class SegmentationPredictor(Predictor):
    """Per-pixel class probabilities and mask of a whole image, in one pass or in overlapping tiles.

    ``tile_size`` (int or (h, w)) bounds the input the model sees; a larger image is covered by windows overlapping
    by ``tile_overlap`` whose probabilities are averaged with ``tile_window`` weights (``'uniform'`` or ``'hann'``,
    which favours tile centres where a network sees the most context). Without a ``tile_size``, an image of more than
    ``max_pixels`` pixels is tiled with ``AUTO_TILE_SIZE`` tiles (said once in the log) so that memory stays bounded;
    ``max_pixels=None`` always predicts whole images. ``size_divisor`` zero-pads (in normalised
    units) each input to a multiple of it and crops the logits back, for models that need it; FC-DenseNet does not.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int,
        max_pixel_value: float = 255.0,
        palette: Sequence[Sequence[int]] | None = None,
        classes: Sequence[str] | None = None,
        tile_size: int | Sequence[int] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        tile_overlap: float = 0.25,
        tile_window: str = "uniform",
        batch_size: int = 4,
        size_divisor: int | None = None,
        overlay_alpha: float = 0.5,
        volume_slicing: Any | None = None,
        georeferenced: bool = False,
        bands: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
        **backend_options: Any,
    ) -> None:
        if size_divisor is not None and size_divisor < 1:
            raise ConfigError(f"size_divisor must be a positive int or None, got {size_divisor}")
        self.size_divisor = size_divisor  # before the backend is chosen: an ONNX check pads to it (onnx_check_size)
        super().__init__(
            model,
            mean=mean,
            std=std,
            num_classes=num_classes,
            classes=classes,
            max_pixel_value=max_pixel_value,
            device=device,
            **backend_options,
        )
        self.volume_slicing = volume_slicing
        self.georeferenced = georeferenced
        self.bands = tuple(bands) if bands is not None else None
        palette = default_palette(self.num_classes) if palette is None else palette
        self.palette = [tuple(int(c) for c in colour) for colour in palette]
        if len(self.palette) < self.num_classes:
            raise ConfigError(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        self.tile_size = None if tile_size is None else _as_pair(tile_size, "tile_size")
        if max_pixels is not None and not (isinstance(max_pixels, (int, np.integer)) and max_pixels > 0):
            raise ConfigError(f"max_pixels must be a positive int or None (never tile by itself), got {max_pixels!r}")
        self.max_pixels = max_pixels
        self._said_auto_tiling = False
        window_starts(1, 1, tile_overlap)  # validates the overlap now rather than at the first large image
        self.tile_overlap = float(tile_overlap)
        if tile_window not in _TILE_WINDOWS:
            raise ConfigError(f"tile_window must be one of {_TILE_WINDOWS}, got {tile_window!r}")
        self.tile_window = tile_window
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        if not 0 <= overlay_alpha <= 1:
            raise ConfigError(f"overlay alpha must be in [0, 1], got {overlay_alpha}")
        self.overlay_alpha = float(overlay_alpha)

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **super()._config_arguments(cfg, task, meta),
            "palette": _metainfo(cfg, meta, "palette"),
            **_dataset_prediction_options(cfg),
        }

    def predict_file(self, path: Path, out_dir: Path) -> list[Path] | None:
        """Whole NIfTI volumes (slice by slice, as the config's dataset slices them; a label volume with the scan's
        affine and header) and, for a config trained on georeferenced scenes, GeoTIFF scenes of any size (streamed
        block by block; label and colour rasters with the scene's CRS and transform). Other files: ``None``."""
        name = path.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            from densevision.spatial import predict_nifti

            if self.volume_slicing is None:
                raise ConfigError(
                    f"{path} is a NIfTI volume but the config does not train on volumes (its dataset has no slicing)"
                )
            out = out_dir / f"{nifti_stem(path)}_mask.nii.gz"
            return [predict_nifti(path, self.predict_probs, out, slicing=self.volume_slicing, to_tensor=self.to_tensor)]
        if self.georeferenced and name.endswith((".tif", ".tiff")):
            from densevision.spatial import predict_geotiff

            return predict_geotiff(
                path,
                self.predict_probs,
                out_dir / f"{path.stem}_mask.tif",
                bands=self.bands,
                to_tensor=self.to_tensor,
                colour_path=out_dir / f"{path.stem}_color.tif",
                palette=self.palette,
            )
        return None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument("--tile-size", type=int, nargs="+", metavar="N", help="tile size N or H W for large images")
        parser.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            help=f"without --tile-size, tile images of more pixels in {AUTO_TILE_SIZE}-pixel tiles (0: never)",
        )
        parser.add_argument("--tile-overlap", type=float, default=0.25, help="fraction shared by neighbouring tiles")
        parser.add_argument("--tile-window", choices=_TILE_WINDOWS, default="uniform", help="tile blending weights")
        parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
        parser.add_argument("--size-divisor", type=int, help="pad inputs to a multiple of this (models that need it)")
        parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlays")

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        tile_size = args.tile_size[0] if args.tile_size and len(args.tile_size) == 1 else args.tile_size
        return dict(
            tile_size=tile_size,
            max_pixels=args.max_pixels or None,
            tile_overlap=args.tile_overlap,
            tile_window=args.tile_window,
            batch_size=args.batch_size,
            size_divisor=args.size_divisor,
            overlay_alpha=args.alpha,
        )

    def onnx_check_size(self) -> tuple[int, int]:
        """The odd check size, rounded up to ``size_divisor`` for models that need it."""
        divisor = self.size_divisor or 1
        return tuple(math.ceil(side / divisor) * divisor for side in CHECK_SIZE)

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """``<stem>_mask.png`` (class indices, palette PNG), ``<stem>_color.png`` and ``<stem>_overlay.png``."""
        mask = prediction["mask"]
        mask_path, colour_path, overlay_path = (out_dir / f"{path.stem}_{kind}.png" for kind in SEGMENTATION_OUTPUTS)
        write_mask_png(mask_path, mask, self.palette if self.num_classes <= 256 else None)
        write_colour_mask(colour_path, mask, self.palette)
        Image.fromarray(overlay_mask(image, mask, self.palette, self.overlay_alpha)).save(overlay_path)
        return [mask_path, colour_path, overlay_path]

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """``mask`` (H×W int64) and ``probs`` (num_classes×H×W float32) at the image's full resolution."""
        probs = self.predict_probs(self.to_tensor(image))
        return {"mask": probs.argmax(0).cpu().numpy().astype(np.int64), "probs": probs.cpu().numpy()}

    def tile_shape(self, height: int, width: int) -> tuple[int, int] | None:
        """The tile size an image of ``height``×``width`` is predicted with, or ``None`` for one whole-image pass:
        ``tile_size`` when the image exceeds it, else ``AUTO_TILE_SIZE`` when it has more than ``max_pixels``."""
        if self.tile_size is not None:
            return self.tile_size if height > self.tile_size[0] or width > self.tile_size[1] else None
        if self.max_pixels is None or height * width <= self.max_pixels:
            return None
        if not self._said_auto_tiling:
            self._said_auto_tiling = True
            logger.info(
                f"images of more than {self.max_pixels} pixels (this one is {height}×{width}) are predicted in "
                f"{AUTO_TILE_SIZE}×{AUTO_TILE_SIZE} tiles to bound memory; a tile size (--tile-size) chooses the "
                "tiles, max_pixels=None (--max-pixels 0) predicts whole images"
            )
        return AUTO_TILE_SIZE, AUTO_TILE_SIZE

    @torch.inference_mode()
    def predict_probs(self, image: Tensor) -> Tensor:
        """Softmax probabilities (num_classes×H×W) of a normalised C×H×W tensor, in tiles as ``tile_shape`` says."""
        height, width = image.shape[-2:]
        tile = self.tile_shape(height, width)
        if tile is None:
            return self._logits(image[None]).float().softmax(1)[0]
        tile_h, tile_w = min(tile[0], height), min(tile[1], width)
        windows = [
            (top, left)
            for top in window_starts(height, tile_h, self.tile_overlap)
            for left in window_starts(width, tile_w, self.tile_overlap)
        ]
        # float32 sums, the size of the result: a pixel averages a few tiles (4 at the default overlap), so rounding
        # stays within 1e-7 of the exact mean; float64 would double the largest buffer of a large image for nothing.
        total = torch.zeros((self.num_classes, height, width), dtype=torch.float32, device=self.device)
        weight_sum = torch.zeros((height, width), dtype=torch.float32, device=self.device)
        weights = _window_weights(tile_h, tile_w, self.tile_window, self.device)
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first : first + self.batch_size]
            tiles = torch.stack([image[:, top : top + tile_h, left : left + tile_w] for top, left in chunk])
            probs = self._logits(tiles).float().softmax(1)
            for (top, left), tile_probs in zip(chunk, probs):
                total[:, top : top + tile_h, left : left + tile_w].addcmul_(tile_probs, weights)
                weight_sum[top : top + tile_h, left : left + tile_w] += weights
        return total.div_(weight_sum)

    def _logits(self, images: Tensor) -> Tensor:
        """The model's N×num_classes×h×w logits for N×C×h×w inputs, padded to ``size_divisor`` and cropped back."""
        height, width = images.shape[-2:]
        if self.size_divisor:
            pad_h, pad_w = (-height) % self.size_divisor, (-width) % self.size_divisor
            images = F.pad(images, (0, pad_w, 0, pad_h))
        logits = self.forward(images)
        if not isinstance(logits, Tensor) or logits.dim() != 4 or logits.shape[1] != self.num_classes:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"{type(self.model).__name__} returned {shape}; expected N×{self.num_classes}×H×W segmentation logits"
            )
        if logits.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"{type(self.model).__name__} returned logits of size {tuple(logits.shape[-2:])} for an input of "
                f"{tuple(images.shape[-2:])}; segmentation logits must come at the input size"
            )
        return logits[..., :height, :width]


@PREDICTORS.register_module()
class ClassificationPredictor(Predictor):
    """Class scores of a whole image and its ``top_k`` classes.

    ``input_size`` (h, w) resizes the whole image first, to the size the network was trained at; ``from_config``
    takes it from the last Resize or CenterCrop step of the test pipeline.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int,
        max_pixel_value: float = 255.0,
        classes: Sequence[str] | None = None,
        top_k: int = 5,
        input_size: int | Sequence[int] | None = None,
        device: str | torch.device = "cpu",
        **backend_options: Any,
    ) -> None:
        super().__init__(
            model,
            mean=mean,
            std=std,
            num_classes=num_classes,
            classes=classes,
            max_pixel_value=max_pixel_value,
            device=device,
            **backend_options,
        )
        if len(self.classes) != self.num_classes:
            raise ConfigError(f"{len(self.classes)} class names for {self.num_classes} classes: {self.classes}")
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        self.top_k = min(top_k, self.num_classes)
        self.input_size = None if input_size is None else _as_pair(input_size, "input_size")
        self._csv: TextIO | None = None

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        resize = _pipeline_step(cfg, ("Resize", "CenterCrop"))
        input_size = None if resize is None else (resize["height"], resize["width"])
        return {**super()._config_arguments(cfg, task, meta), "input_size": input_size}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument("--top-k", type=int, default=5, help="classes listed per image")

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return dict(top_k=args.top_k)

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """One row of ``predictions.csv`` (label, class and score, then the other top-k), flushed as it comes so an
        interrupted run keeps what it predicted."""
        if self._csv is None:
            header = ["image", "label", "class", "score"]
            for rank in range(2, self.top_k + 1):
                header += [f"top{rank}_label", f"top{rank}_class", f"top{rank}_score"]
            self._csv = open(out_dir / PREDICTIONS_CSV, "w", newline="")
            csv.writer(self._csv).writerow(header)
        row: list = [
            str(path),
            prediction["label"],
            self.classes[prediction["label"]],
            f"{prediction['top_k'][0][1]:.6f}",
        ]
        for label, score in prediction["top_k"][1:]:
            row += [label, self.classes[label], f"{score:.6f}"]
        csv.writer(self._csv).writerow(row)
        self._csv.flush()
        return []

    def finish(self, out_dir: Path) -> list[Path]:
        if self._csv is None:
            return []
        self._csv.close()
        self._csv = None
        return [out_dir / PREDICTIONS_CSV]

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, Any]:
        """``label`` (int), ``scores`` (num_classes float32 softmax) and ``top_k`` [(label, score), ...] best first."""
        tensor = self.to_tensor(image)[None]
        if self.input_size is not None and tuple(tensor.shape[-2:]) != self.input_size:
            tensor = F.interpolate(tensor, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        logits = self.forward(tensor)
        if not isinstance(logits, Tensor) or tuple(logits.shape) != (1, self.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{type(self.model).__name__} returned {shape}; expected N×{self.num_classes} logits")
        scores = logits.float().softmax(1)[0]
        top = scores.topk(self.top_k)
        return {
            "label": int(top.indices[0]),
            "scores": scores.cpu().numpy(),
            "top_k": [(int(i), float(s)) for i, s in zip(top.indices, top.values)],
        }


@PREDICTORS.register_module()
class DetectionPredictor(Predictor):
    """Boxes, scores and class labels of a whole image, in its own pixels.

    The image is resized to the detector's input size as the test pipeline's ``Resize`` does (albumentations, before
    normalising), and the task's ``predict`` decodes and runs NMS with its post-processing settings. ``write`` draws the
    boxes scoring at least ``draw_threshold`` with class names and scores; ``finish`` writes every detection (all
    scores: mAP needs the low ones) as a COCO results JSON with the dataset's category ids.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int,
        max_pixel_value: float = 255.0,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        category_ids: Sequence[int] | None = None,
        draw_threshold: float = 0.3,
        device: str | torch.device = "cpu",
        **backend_options: Any,
    ) -> None:
        super().__init__(
            model, mean=mean, std=std, num_classes=num_classes, classes=classes, max_pixel_value=max_pixel_value,
            device=device, **backend_options,
        )  # fmt: skip
        size = getattr(model, "export_input_size", None)
        if size is None:
            raise ConfigError(f"{type(model).__name__} does not say its input size (export_input_size)")
        self.input_size = tuple(size)
        self._resize = A.Resize(height=self.input_size[0], width=self.input_size[1])
        palette = default_palette(self.num_classes + 1)[1:] if palette is None else palette
        self.palette = [tuple(int(c) for c in colour) for colour in palette]
        if len(self.palette) < self.num_classes:
            raise ConfigError(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        ids = list(category_ids) if category_ids is not None else list(range(1, self.num_classes + 1))
        if len(ids) != self.num_classes:
            raise ConfigError(f"{len(ids)} category ids for {self.num_classes} classes: {ids}")
        self.category_ids = ids
        if not 0 <= draw_threshold <= 1:
            raise ConfigError(f"draw threshold must be in [0, 1], got {draw_threshold}")
        self.draw_threshold = float(draw_threshold)
        self._results: list[dict[str, Any]] = []

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **super()._config_arguments(cfg, task, meta),
            "palette": _metainfo(cfg, meta, "palette"),
            "category_ids": _metainfo(cfg, meta, "category_ids"),
        }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument("--draw-threshold", type=float, default=0.3, help="lowest score drawn (JSON keeps all)")

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return dict(draw_threshold=args.draw_threshold)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """``boxes`` n×4 float32 (x1, y1, x2, y2) in the image's pixels, ``scores`` n and ``labels`` n (0..K-1),
        best first."""
        resized = self._resize(image=np.asarray(image))["image"]
        batch = {"image": self.to_tensor(resized)[None], "meta": [{"ori_shape": tuple(np.shape(image)[:2])}]}
        (detections,) = self.model.predict(batch)
        return {key: detections[key].cpu().numpy() for key in ("boxes", "scores", "labels")}

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """``<stem>_boxes.png``: the image with the boxes above ``draw_threshold``, class name and score on each (drawn
        at a whole multiple of the image's size when its short side is under ``MIN_DRAWN_SIZE`` pixels)."""
        stem_id = int(path.stem) if path.stem.isdigit() else path.stem  # COCO file names carry the image id
        for box, score, label in zip(prediction["boxes"], prediction["scores"], prediction["labels"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            self._results.append(
                {
                    "image_id": stem_id,
                    "file_name": str(path),
                    "category_id": int(self.category_ids[int(label)]),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(score), 5),
                }
            )
        canvas = Image.fromarray(_display_rgb(image))
        # Small images are drawn enlarged (nearest neighbour, a whole factor) so that class names stay readable.
        zoom = max(1, math.ceil(MIN_DRAWN_SIZE / min(canvas.size)))
        canvas = canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST)
        draw = ImageDraw.Draw(canvas)
        for box, score, label in zip(prediction["boxes"], prediction["scores"], prediction["labels"]):
            if score < self.draw_threshold:
                continue
            colour = self.palette[int(label)]
            x1, y1, x2, y2 = (float(v) * zoom for v in box)
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, round(min(canvas.size) / 150)))
            text = f"{self.classes[int(label)]} {score:.2f}"
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            draw.rectangle((left, top, right + 2, bottom), fill=colour)
            draw.text((x1 + 1, y1), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
        out = out_dir / f"{path.stem}_boxes.png"
        canvas.save(out)
        return [out]

    def finish(self, out_dir: Path) -> list[Path]:
        """``results.json``: every detection as ``{image_id, file_name, category_id, bbox: [x, y, w, h], score}``."""
        out = out_dir / DETECTION_RESULTS
        out.write_text(json.dumps(self._results))
        self._results = []
        return [out]


def find_images(pattern: str | os.PathLike) -> list[Path]:
    """A file, the image files of a folder, or the image files matching a glob (``**`` recursive), sorted; hidden
    files (macOS ``._*`` resource forks) are left out of folders and globs."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = list_files(path, INPUT_SUFFIXES)[0]
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(INPUT_SUFFIXES)}) in folder {path}")
        return found
    found = [Path(p) for p in glob.glob(str(pattern), recursive=True)]  # glob already skips names starting with "."
    found = [p for p in found if p.is_file() and p.name.lower().endswith(INPUT_SUFFIXES)]
    if not found:
        raise FileNotFoundError(f"no image file matched {str(pattern)!r} (a file, a folder or a glob pattern)")
    return sorted(found)


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """An image as H×W×3 uint8 for viewing: one band as grey, the first three of more; other dtypes min-max scaled."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    array = np.repeat(array[..., :1], 3, axis=2) if array.shape[2] < 3 else array[..., :3]
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.round(scaled * 255).astype(np.uint8)


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """The image (as ``_display_rgb``) blended with the mask's palette colours: ``(1 - alpha) * image + alpha *
    colour``, H×W×3 uint8."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    rgb = _display_rgb(image).astype(np.float32)
    if rgb.shape[:2] != np.shape(mask)[:2]:
        raise ValueError(f"image size {rgb.shape[:2]} and mask size {np.shape(mask)[:2]} differ")
    colours = colourise_mask(np.asarray(mask), [tuple(c) for c in palette]).astype(np.float32)
    return np.round((1 - alpha) * rgb + alpha * colours).astype(np.uint8)


@dataclass
class InferenceReport:
    """What ``infer_files`` did: the files written, and the inputs that could not be read, with the reason."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` created if needed; a file in the way or a folder that cannot be written is one OSError naming it,
    raised before any image is predicted."""
    out = Path(path)
    in_the_way = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise FileExistsError(f"cannot use {out} as the output folder: {in_the_way} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(f"cannot create the output folder {out}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {out} is not writable")
    return out


def infer_files(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[Iterable[Path]], Iterable[Path]] = iter,
) -> InferenceReport:
    """Predict every readable image in ``paths`` and let the predictor write its results under ``out_dir``.

    An image that cannot be read is skipped and listed in the report (a batch of thousands is not lost to one bad
    file); the predictor's ``finish`` runs however the loop ends. ``progress`` wraps the path iterator (``tqdm``), so
    the caller decides what is shown.
    """
    paths = [Path(p) for p in paths]
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise DatasetError(
                f"{stems[path.stem]} and {path} share the name {path.stem!r}; their outputs would collide"
            )
        stems[path.stem] = path
    out = output_folder(out_dir)
    report = InferenceReport()
    try:
        for path in progress(paths):
            try:
                files = predictor.predict_file(path, out)
                if files is None:
                    image = read_image(path)
            except DatasetError as err:
                report.failed.append((path, str(err)))
                continue
            if files is None:
                files = predictor.write(path, image, predictor.predict(image), out)
            report.written += files
    finally:
        report.written += predictor.finish(out)
    return report

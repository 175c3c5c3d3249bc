"""Segmentation of image files at full resolution: one pass or overlapping tiles, and whole volumes and scenes.

The predictor normalises as the config's ``Normalize`` step did, runs the task's logits on the chosen backend and,
for large images, blends tiles (``densevision.tiling.blend_tiles``): with a model that looks at single pixels,
tiled and whole-image predictions give the same mask. Tiling is chosen automatically above ``max_pixels``: a whole
4000×3000 image through even a tiny FC-DenseNet needs gigabytes of activations. NIfTI volumes and GeoTIFF scenes go
to their file formats (``densevision.formats``) when the config's dataset trains on them.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.backends import CHECK_SIZE
from densevision.data.base import default_palette
from densevision.formats import format_for
from densevision.formats.image import IMAGE
from densevision.inference import Predictor, as_pair, dataset_prediction_options, metainfo
from densevision.registry import PREDICTORS, ConfigError
from densevision.tasks.segmentation.writers import write_segmentation
from densevision.tiling import TILE_WINDOWS, blend_tiles, window_starts

__all__ = ["SegmentationPredictor", "DEFAULT_MAX_PIXELS", "AUTO_TILE_SIZE"]

DEFAULT_MAX_PIXELS = 1024 * 1024  # larger images are predicted in tiles unless a tile size is given
AUTO_TILE_SIZE = 512  # the tile size chosen then: bounded activations, enough context for a 5-pooling FC-DenseNet

logger = logging.getLogger("densevision")


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
        file_formats: Mapping[str, Mapping[str, Any]] | None = None,
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
        self.file_formats = {name: dict(options) for name, options in (file_formats or {}).items()}
        palette = default_palette(self.num_classes) if palette is None else palette
        self.palette = [tuple(int(c) for c in colour) for colour in palette]
        if len(self.palette) < self.num_classes:
            raise ConfigError(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        self.tile_size = None if tile_size is None else as_pair(tile_size, "tile_size")
        if max_pixels is not None and not (isinstance(max_pixels, (int, np.integer)) and max_pixels > 0):
            raise ConfigError(f"max_pixels must be a positive int or None (never tile by itself), got {max_pixels!r}")
        self.max_pixels = max_pixels
        self._said_auto_tiling = False
        window_starts(1, 1, tile_overlap)  # validates the overlap now rather than at the first large image
        self.tile_overlap = float(tile_overlap)
        if tile_window not in TILE_WINDOWS:
            raise ConfigError(f"tile_window must be one of {TILE_WINDOWS}, got {tile_window!r}")
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
            "palette": metainfo(cfg, meta, "palette"),
            **dataset_prediction_options(cfg),
        }

    def predict_file(self, path: Path, out_dir: Path) -> list[Path] | None:
        """Files a format predicts whole, as the config's dataset prepares them (``file_formats``, from its
        ``prediction_options``: a NIfTI volume slice by slice into a label volume, a GeoTIFF scene block by block into
        label and colour rasters); ``None`` for other files, which are read as one image."""
        file_format = format_for(path, prefer=self.file_formats)
        if file_format is None or file_format.name == IMAGE.name:
            return None
        if file_format.name not in self.file_formats:
            raise ConfigError(
                f"{path} is a {file_format.name} file but the config does not train on them (its dataset predicts "
                f"{', '.join(self.file_formats) or 'plain images'})"
            )
        return file_format.predict_labels(
            path,
            self.predict_probs,
            out_dir,
            to_tensor=self.to_tensor,
            palette=self.palette,
            options=self.file_formats[file_format.name],
        )

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
        parser.add_argument("--tile-window", choices=TILE_WINDOWS, default="uniform", help="tile blending weights")
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
        return write_segmentation(
            path.stem, image, prediction["mask"], out_dir, self.palette, num_classes=self.num_classes,
            overlay_alpha=self.overlay_alpha,
        )  # fmt: skip

    def finish(self, out_dir: Path) -> list[Path]:
        """Nothing covers every image: each has its own files."""
        return []

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
        return blend_tiles(
            lambda tiles: self._logits(tiles).float().softmax(1),
            image,
            tile,
            num_classes=self.num_classes,
            overlap=self.tile_overlap,
            window=self.tile_window,
            batch_size=self.batch_size,
        )

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

"""Detection of image files: boxes drawn on each image, every detection in a COCO results JSON."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch import nn

from densevision.data.base import default_palette
from densevision.inference import Predictor, metainfo
from densevision.registry import PREDICTORS, ConfigError
from densevision.tasks.detection.drawing import DRAW_THRESHOLD, draw_detections
from densevision.tasks.detection.results import CocoResultsStream, coco_results, image_id_of

__all__ = ["DetectionPredictor", "DETECTION_RESULTS"]

DETECTION_RESULTS = "results.json"


@PREDICTORS.register_module()
class DetectionPredictor(Predictor):
    """Boxes, scores and class labels of a whole image, in its own pixels.

    The image is resized to the detector's input size as the test pipeline's ``Resize`` does (albumentations, before
    normalising); the decoded network runs on the predictor's backend (``Detector.export_forward``: torch or
    onnxruntime) and the task's ``detections`` runs NMS in torch with its post-processing settings. ``write`` draws the
    boxes scoring at least ``draw_threshold`` with class names and scores, and adds every detection (all scores: mAP
    needs the low ones) to ``results.json`` (COCO results, the dataset's category ids) as it comes: the file is valid
    JSON after each image and no image's detections stay in memory; ``finish`` closes it.
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
        draw_threshold: float = DRAW_THRESHOLD,
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
        self._results_file: CocoResultsStream | None = None

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **super()._config_arguments(cfg, task, meta),
            "palette": metainfo(cfg, meta, "palette"),
            "category_ids": metainfo(cfg, meta, "category_ids"),
        }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument(
            "--draw-threshold", type=float, default=DRAW_THRESHOLD, help="lowest score drawn (JSON keeps all)"
        )

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return dict(draw_threshold=args.draw_threshold)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """``boxes`` n×4 float32 (x1, y1, x2, y2) in the image's pixels, ``scores`` n and ``labels`` n (0..K-1),
        best first: the decoded network on the predictor's backend, then the task's NMS in torch."""
        resized = self._resize(image=np.asarray(image))["image"]
        boxes, scores = self.forward(self.to_tensor(resized)[None])
        (detections,) = self.model.detections(boxes, scores, [tuple(np.shape(image)[:2])])
        return {key: detections[key].cpu().numpy() for key in ("boxes", "scores", "labels")}

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """``<stem>_boxes.png``: the image with the boxes scoring at least ``draw_threshold``, class name and score on
        each (``draw_detections``); the detections are added to ``results.json``."""
        if self._results_file is None:
            self._results_file = CocoResultsStream(out_dir / DETECTION_RESULTS)
        self._results_file.add(
            coco_results(
                image_id_of(path),
                prediction["boxes"],
                prediction["scores"],
                prediction["labels"],
                self.category_ids,
                file_name=str(path),
            )
        )
        drawn = draw_detections(
            image,
            prediction["boxes"],
            prediction["labels"],
            prediction["scores"],
            classes=self.classes,
            palette=self.palette,
            threshold=self.draw_threshold,
        )
        out = out_dir / f"{path.stem}_boxes.png"
        Image.fromarray(drawn).save(out)
        return [out]

    def finish(self, out_dir: Path) -> list[Path]:
        """``results.json``: every detection as ``{image_id, category_id, bbox: [x, y, w, h], score, file_name}``
        (an empty list when no image was predicted)."""
        if self._results_file is None:
            self._results_file = CocoResultsStream(out_dir / DETECTION_RESULTS)
        out = self._results_file.close()
        self._results_file = None
        return [out]

"""Classification of image files: the top-k classes of each, streamed into ``predictions.csv``."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.inference import Predictor, as_pair, pipeline_step
from densevision.registry import PREDICTORS, ConfigError

__all__ = ["ClassificationPredictor", "PREDICTIONS_CSV"]

PREDICTIONS_CSV = "predictions.csv"


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
        self.input_size = None if input_size is None else as_pair(input_size, "input_size")
        self._csv: TextIO | None = None

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        resize = pipeline_step(cfg, ("Resize", "CenterCrop"))
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
            self._csv = open(out_dir / PREDICTIONS_CSV, "w", newline="")
            csv.writer(self._csv).writerow(self.csv_columns())
        csv.writer(self._csv).writerow(self.csv_values(path, prediction))
        self._csv.flush()
        return []

    def csv_columns(self) -> list[str]:
        """The header of ``predictions.csv``; a subclass that records more per image appends its columns."""
        header = ["image", "label", "class", "score"]
        for rank in range(2, self.top_k + 1):
            header += [f"top{rank}_label", f"top{rank}_class", f"top{rank}_score"]
        return header

    def csv_values(self, path: Path, prediction: Mapping[str, Any]) -> list[Any]:
        """One image's row of ``predictions.csv``, in the order of ``csv_columns``."""
        row: list[Any] = [
            str(path),
            prediction["label"],
            self.classes[prediction["label"]],
            f"{prediction['top_k'][0][1]:.6f}",
        ]
        for label, score in prediction["top_k"][1:]:
            row += [label, self.classes[label], f"{score:.6f}"]
        return row

    def finish(self, out_dir: Path) -> list[Path]:
        if self._csv is None:
            return []
        self._csv.close()
        self._csv = None
        return [out_dir / PREDICTIONS_CSV]

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, Any]:
        """``label`` (int), ``scores`` (num_classes float32 softmax) and ``top_k`` [(label, score), ...] best first."""
        return self.classify(self.forward(self.input_tensor(image)))

    def input_tensor(self, image: np.ndarray) -> Tensor:
        """The image as the network's 1×C×H×W input: normalised, resized to ``input_size`` when set."""
        tensor = self.to_tensor(image)[None]
        if self.input_size is not None and tuple(tensor.shape[-2:]) != self.input_size:
            tensor = F.interpolate(tensor, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return tensor

    def classify(self, logits: Any) -> dict[str, Any]:
        """``predict``'s results from one image's 1×num_classes logits."""
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

"""A task densevision does not ship — image brightness regression — written only against the public contracts.

Its model, dataset, metric and file predictor register here, outside ``densevision/``; a config names this module in
``custom_imports``, and tools/train.py, tools/test.py and tools/infer.py run it like a built-in task
(tests/test_plugin_task.py). The brightness of an image is the mean of its pixels over 255; the dataset writes noisy
grey images of known brightness as PNG files, so inference reads the same files a user would have.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from densevision.contracts import DenseDataset, Task
from densevision.data.transforms import build_pipeline
from densevision.evaluation.base import Metric
from densevision.inference import Predictor
from densevision.registry import DATASETS, METRICS, PREDICTORS, TASKS

BRIGHTNESS_CSV = "brightness.csv"


@DATASETS.register_module(name="PluginBrightnessImages", force=True)
class BrightnessImages(DenseDataset):
    """``num_samples`` noisy grey ``size``² RGB PNGs per split under ``root/<split>/``, written once (seeded by the
    split) and read back like any image folder; the target is the image's mean pixel value over 255."""

    def __init__(
        self, root: str, split: str, *, num_samples: int = 16, size: int = 16, pipeline: Sequence[Mapping] = ()
    ) -> None:
        self.folder = Path(root) / split
        if not self.folder.is_dir():
            self._generate(num_samples, size, seed=("train", "val", "test").index(split))
        self.files = sorted(self.folder.glob("*.png"))
        self.pipeline = build_pipeline(pipeline, task="classification")

    def _generate(self, num_samples: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.folder.mkdir(parents=True)
        for index in range(num_samples):
            level = rng.uniform(20, 235)
            pixels = np.clip(level + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(self.folder / f"{index:04d}.png")

    @property
    def metainfo(self) -> dict[str, Any]:
        return {"classes": ("brightness",)}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels = np.asarray(Image.open(self.files[index]).convert("RGB"))
        image = self.pipeline(image=pixels)["image"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.tensor(pixels.mean() / 255.0, dtype=torch.float32),
            "meta": {"path": str(self.files[index])},
        }


@TASKS.register_module(name="PluginBrightnessRegressor", force=True)
class BrightnessRegressor(Task):
    """A 3×3 convolution, global average pooling and a linear layer to one value in (0, 1); squared-error loss."""

    predictor = "PluginBrightnessPredictor"
    num_classes = 1

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images)).sigmoid()

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"loss": nn.functional.mse_loss(self(batch["image"])[:, 0], batch["label"])}

    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"brightness": float(value)} for value in self(batch["image"])[:, 0]]


@METRICS.register_module(name="PluginMeanAbsoluteError", force=True)
class MeanAbsoluteError(Metric):
    """Mean absolute brightness error over the split; its two sums add up across processes."""

    sum_states = ("error_sum", "count")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.error_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        predicted = torch.tensor([p["brightness"] for p in preds], dtype=torch.float64)
        self.error_sum += (predicted - batch["label"].cpu().double()).abs().sum()
        self.count += len(preds)

    def compute(self) -> dict[str, float]:
        return {"mae": float(self.error_sum / self.count.clamp(min=1))}


@PREDICTORS.register_module(name="PluginBrightnessPredictor", force=True)
class BrightnessPredictor(Predictor):
    """The brightness of each image file, one row of ``brightness.csv`` per image."""

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(model, **options)
        self._csv: TextIO | None = None

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, Any]:
        return {"brightness": float(self.forward(self.to_tensor(image)[None])[0, 0])}

    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        if self._csv is None:
            self._csv = open(out_dir / BRIGHTNESS_CSV, "w", newline="")
            csv.writer(self._csv).writerow(["image", "brightness"])
        csv.writer(self._csv).writerow([str(path), f"{prediction['brightness']:.6f}"])
        return []

    def finish(self, out_dir: Path) -> list[Path]:
        if self._csv is None:
            return []
        self._csv.close()
        self._csv = None
        return [out_dir / BRIGHTNESS_CSV]

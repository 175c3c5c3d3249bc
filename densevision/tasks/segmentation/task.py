"""The segmentation task: a network mapping images to per-pixel logits, and its loss, behind the runner's interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densevision.contracts import Task
from densevision.data.base import default_palette
from densevision.registry import MODELS, TASKS
from densevision.tasks.base import build_part
from densevision.tasks.segmentation.drawing import blend_mask

__all__ = ["Segmentor"]


@TASKS.register_module()
class Segmentor(Task):
    """Semantic segmentation: ``model`` maps N×C×H×W images to N×K×H×W logits; ``loss`` compares them to masks."""

    predictor = "SegmentationPredictor"  # masks, colour masks and overlays of image files (densevision.tasks)

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        *,
        loss: Mapping[str, Any] | nn.Module | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        from densevision.losses import build_loss  # registers the losses too

        self.model = build_part(model, MODELS)
        self.ignore_index = ignore_index
        self.loss_fn = build_loss(loss or dict(type="CrossEntropyLoss"), ignore_index=ignore_index)

    @property
    def num_classes(self) -> int | None:
        """Classes the network predicts (``None`` when it does not say), checked against the dataset's."""
        return getattr(self.model, "num_classes", None)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits = self(batch["image"])
        terms = getattr(self.loss_fn, "terms", None)
        if terms is None:
            return {"loss": self.loss_fn(logits, batch["mask"])}
        parts = terms(logits, batch["mask"])  # a combined loss: log each part, back-propagate their sum
        return {"loss": sum(parts.values()), **parts}

    def example_batch(self, images: Tensor, generator: torch.Generator) -> dict[str, Any]:
        n, _, height, width = images.shape
        size = (n, height, width)
        return {
            "image": images,
            "mask": torch.randint(0, self.num_classes, size, device=images.device, generator=generator),
        }

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        probs = self(batch["image"]).float().softmax(dim=1)
        return [{"mask": p.argmax(dim=0), "probs": p} for p in probs]

    def on_train_start(self, train_dataset: Any) -> None:
        """Give a loss that asks for dataset statistics (median-frequency class weights) the training masks."""
        prepare = getattr(self.loss_fn, "prepare", None)
        if prepare is not None:
            prepare(train_dataset)

    def draw(
        self,
        image: np.ndarray,
        target: Mapping[str, Any],
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """A prediction's or ground truth's ``mask`` over the H×W×3 uint8 ``image`` (run samples); void stays
        uncoloured. Without a palette, the colours tools/infer.py uses."""
        if palette is None:
            palette = default_palette(len(classes) if classes is not None else 256)
        return blend_mask(image, np.asarray(torch.as_tensor(target["mask"]).cpu()), palette, alpha=0.5)

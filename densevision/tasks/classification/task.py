"""The classification task: a network mapping images to class logits, and its loss, behind the runner's interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densevision.contracts import Task
from densevision.registry import LOSSES, MODELS, TASKS
from densevision.tasks.base import build_part
from densevision.tasks.classification.drawing import caption

__all__ = ["Classifier"]


@TASKS.register_module()
class Classifier(Task):
    """Image classification: ``model`` maps N×C×H×W images to N×K logits."""

    predictor = "ClassificationPredictor"  # a predictions.csv of labels and scores (densevision.tasks)

    def __init__(self, model: Mapping[str, Any] | nn.Module, *, loss: Mapping[str, Any] | nn.Module | None = None):
        super().__init__()
        self.model = build_part(model, MODELS)
        self.loss_fn = build_part(loss, LOSSES) if loss is not None else nn.CrossEntropyLoss()

    @property
    def num_classes(self) -> int | None:
        """Classes the network predicts (``None`` when it does not say), checked against the dataset's."""
        return getattr(self.model, "num_classes", None)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(self(batch["image"]), batch["label"])}

    def example_batch(self, images: Tensor, generator: torch.Generator) -> dict[str, Any]:
        labels = torch.randint(0, self.num_classes, (len(images),), device=images.device, generator=generator)
        return {"image": images, "label": labels}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        scores = self(batch["image"]).float().softmax(dim=1)
        return [{"label": s.argmax(), "scores": s} for s in scores]

    def draw(
        self,
        image: np.ndarray,
        target: Mapping[str, Any],
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """The H×W×3 uint8 ``image`` with the class (and its score, when given) written on it (run samples)."""
        scores = target.get("scores")
        return caption(image, int(torch.as_tensor(target["label"])), classes, None if scores is None else scores)

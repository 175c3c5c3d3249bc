"""Task models: an architecture plus its loss behind the runner's small interface.

The runner only ever calls ``loss(batch)``, ``predict(batch)`` and (if present) ``on_train_start(dataset)``, so a new
task (detection) is a new class here and never an edit to the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from densevision.registry import LOSSES, MODELS, TASKS

__all__ = ["Segmentor", "Classifier"]


def _build(registry_cfg: Mapping[str, Any] | nn.Module, registry: Any) -> nn.Module:
    return registry_cfg if isinstance(registry_cfg, nn.Module) else registry.build(registry_cfg)


@TASKS.register_module()
class Segmentor(nn.Module):
    """Semantic segmentation: ``model`` maps N×C×H×W images to N×K×H×W logits; ``loss`` compares them to masks."""

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        *,
        loss: Mapping[str, Any] | nn.Module | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        import densevision.losses  # noqa: F401  (registers the losses)

        self.model = _build(model, MODELS)
        self.ignore_index = ignore_index
        self.loss_fn = _build(loss or dict(type="CrossEntropyLoss", ignore_index=ignore_index), LOSSES)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits = self(batch["image"])
        terms = getattr(self.loss_fn, "terms", None)
        if terms is None:
            return {"loss": self.loss_fn(logits, batch["mask"])}
        parts = terms(logits, batch["mask"])  # a combined loss: log each part, back-propagate their sum
        return {"loss": sum(parts.values()), **parts}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        probs = self(batch["image"]).float().softmax(dim=1)
        return [{"mask": p.argmax(dim=0), "probs": p} for p in probs]

    def on_train_start(self, train_dataset: Any) -> None:
        """Give a loss that asks for dataset statistics (median-frequency class weights) the training masks."""
        prepare = getattr(self.loss_fn, "prepare", None)
        if prepare is not None:
            prepare(train_dataset)


@TASKS.register_module()
class Classifier(nn.Module):
    """Image classification: ``model`` maps N×C×H×W images to N×K logits."""

    def __init__(self, model: Mapping[str, Any] | nn.Module, *, loss: Mapping[str, Any] | nn.Module | None = None):
        super().__init__()
        self.model = _build(model, MODELS)
        self.loss_fn = _build(loss, LOSSES) if loss is not None else nn.CrossEntropyLoss()

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(self(batch["image"]), batch["label"])}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        scores = self(batch["image"]).float().softmax(dim=1)
        return [{"label": s.argmax(), "scores": s} for s in scores]

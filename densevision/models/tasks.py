"""Task models: an architecture plus its loss behind the runner's small interface.

The runner only ever calls ``loss(batch)``, ``predict(batch)`` and (if present) ``on_train_start(dataset)``, so a new
task (detection) is a new class here and never an edit to the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from densevision.contracts import Task
from densevision.models.heads.ssd import decode, postprocess
from densevision.registry import LOSSES, MODELS, TASKS

__all__ = ["Segmentor", "Classifier", "Detector"]


def _build(registry_cfg: Mapping[str, Any] | nn.Module, registry: Any) -> nn.Module:
    return registry_cfg if isinstance(registry_cfg, nn.Module) else registry.build(registry_cfg)


@TASKS.register_module()
class Segmentor(Task):
    """Semantic segmentation: ``model`` maps N×C×H×W images to N×K×H×W logits; ``loss`` compares them to masks."""

    predictor = "SegmentationPredictor"  # densevision.inference: masks, colour masks and overlays of image files

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        *,
        loss: Mapping[str, Any] | nn.Module | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        from densevision.losses import build_loss  # registers the losses too

        self.model = _build(model, MODELS)
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
class Classifier(Task):
    """Image classification: ``model`` maps N×C×H×W images to N×K logits."""

    predictor = "ClassificationPredictor"  # densevision.inference: a predictions.csv of labels and scores

    def __init__(self, model: Mapping[str, Any] | nn.Module, *, loss: Mapping[str, Any] | nn.Module | None = None):
        super().__init__()
        self.model = _build(model, MODELS)
        self.loss_fn = _build(loss, LOSSES) if loss is not None else nn.CrossEntropyLoss()

    @property
    def num_classes(self) -> int | None:
        """Classes the network predicts (``None`` when it does not say), checked against the dataset's."""
        return getattr(self.model, "num_classes", None)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(self(batch["image"]), batch["label"])}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        scores = self(batch["image"]).float().softmax(dim=1)
        return [{"label": s.argmax(), "scores": s} for s in scores]


@TASKS.register_module()
class Detector(Task):
    """Object detection: ``model`` (DSOD, SSD) maps images to ``(loc, conf)`` against its ``priors``.

    Targets and predictions use the datasets' foreground labels ``0..K-1``; the model's conf has ``K + 1`` channels,
    0 the background. ``loss`` takes the batch's pixel boxes (normalised here by the input's size); ``predict`` decodes
    with the post-processing arguments and returns boxes in original-image pixels (``meta['ori_shape']``, the eval
    pipeline being a plain resize; the input's size when a batch has no meta).
    """

    predictor = "DetectionPredictor"  # densevision.inference: boxes drawn on images and a COCO results JSON
    # ONNX: every prior's decoded box (normalised x1 y1 x2 y2) and class probabilities; NMS is left to the runtime.
    export_outputs = ("boxes", "scores")

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        *,
        loss: Mapping[str, Any] | nn.Module | None = None,
        score_threshold: float = 0.01,
        nms_threshold: float = 0.45,
        pre_nms_top_k: int = 400,
        max_detections: int = 200,
    ) -> None:
        super().__init__()
        self.model = _build(model, MODELS)
        if not isinstance(getattr(self.model, "priors", None), Tensor):
            raise ValueError(f"Detector needs a model with default boxes (`priors`), got {type(self.model).__name__}")
        self.loss_fn = _build(loss or dict(type="MultiBoxLoss"), LOSSES)
        self.postprocess_options = dict(
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            pre_nms_top_k=pre_nms_top_k,
            max_detections=max_detections,
        )

    @property
    def num_classes(self) -> int:
        """Foreground classes K (the model also predicts the background)."""
        return self.model.num_classes - 1

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(images)

    def describe(self) -> str:
        """The post-processing settings, for the run log: a high score threshold is the usual cause of a low mAP."""
        options = self.postprocess_options
        return (
            f"detector: {type(self.model).__name__} at {tuple(self.model.image_size)}, "
            f"{len(self.model.priors)} priors; "
            f"post-processing: score threshold {options['score_threshold']}, NMS {options['nms_threshold']}, "
            f"top-k {options['pre_nms_top_k']} per class, keep {options['max_detections']}"
        )

    @property
    def export_input_size(self) -> tuple[int, int]:
        """The one input size the priors are laid out for; the exported graph keeps it (batch stays dynamic)."""
        return tuple(self.model.image_size)

    def export_forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return decode(*self(images), self.model.priors)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        images = batch["image"]
        height, width = images.shape[-2:]
        scale = images.new_tensor([width, height, width, height], dtype=torch.float32)
        boxes = [b.to(scale.device, torch.float32) / scale for b in batch["boxes"]]
        loc, conf = self(images)
        return self.loss_fn(loc, conf, self.model.priors, boxes, batch["labels"])

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        images = batch["image"]
        loc, conf = self(images)
        detections = postprocess(loc, conf, self.model.priors, **self.postprocess_options)
        metas = batch.get("meta") or [{}] * len(images)
        for detection, meta in zip(detections, metas):
            height, width = meta.get("ori_shape", images.shape[-2:])
            detection["boxes"] = detection["boxes"] * detection["boxes"].new_tensor([width, height, width, height])
            detection["image_size"] = (int(height), int(width))  # what the boxes' pixels refer to (for drawing)
        return detections

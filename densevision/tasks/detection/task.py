"""The detection task: a single-shot detector (DSOD, SSD) and its multibox loss behind the runner's interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densevision.contracts import Task
from densevision.models.heads.ssd import decode, select_detections
from densevision.registry import LOSSES, MODELS, TASKS, ConfigError
from densevision.tasks.base import build_part
from densevision.tasks.detection.drawing import draw_detections

__all__ = ["Detector"]


@TASKS.register_module()
class Detector(Task):
    """Object detection: ``model`` (DSOD, SSD) maps images to ``(loc, conf)`` against its ``priors``.

    Targets and predictions use the datasets' foreground labels ``0..K-1``; the model's conf has ``K + 1`` channels,
    0 the background. ``loss`` takes the batch's pixel boxes (normalised here by the input's size); ``predict`` decodes
    with the post-processing arguments and returns boxes in original-image pixels (``meta['ori_shape']``, the eval
    pipeline being a plain resize; the input's size when a batch has no meta).

    Prediction is two steps so that any backend can run the first: ``export_forward`` (the network and the box
    decoding, what ONNX exports) and ``detections`` (per-class NMS in torch, boxes scaled to each image's pixels).
    Decoding uses the loss's ``box_coder_weights``: targets are encoded and predictions decoded with one value.
    """

    predictor = "DetectionPredictor"  # boxes drawn on images and a COCO results JSON (densevision.tasks)
    # ONNX: every prior's decoded box (normalised x1 y1 x2 y2) and class probabilities; NMS follows in `detections`.
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
        self.model = build_part(model, MODELS)
        if not isinstance(getattr(self.model, "priors", None), Tensor):
            raise ValueError(f"Detector needs a model with default boxes (`priors`), got {type(self.model).__name__}")
        self.loss_fn = build_part(loss or dict(type="MultiBoxLoss"), LOSSES)
        weights = getattr(self.loss_fn, "box_coder_weights", None)
        if weights is None:
            raise ConfigError(
                f"Detector's loss {type(self.loss_fn).__name__} does not say its box_coder_weights (the box encoding "
                "that predictions are decoded with)"
            )
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

    @property
    def box_coder_weights(self) -> tuple[float, ...]:
        """The box encoding's weights, the loss's (which encodes the training targets with them)."""
        return tuple(self.loss_fn.box_coder_weights)

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
        """Every prior's decoded box (N×P×4, normalised x1 y1 x2 y2) and class probabilities (N×P×(K+1))."""
        return decode(*self(images), self.model.priors, box_coder_weights=self.box_coder_weights)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        images = batch["image"]
        height, width = images.shape[-2:]
        scale = images.new_tensor([width, height, width, height], dtype=torch.float32)
        boxes = [b.to(scale.device, torch.float32) / scale for b in batch["boxes"]]
        loc, conf = self(images)
        return self.loss_fn(loc, conf, self.model.priors, boxes, batch["labels"])

    def example_batch(self, images: Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Three random boxes (pixels, 20-50 % of the image's sides) and foreground labels per image."""
        n, _, height, width = images.shape
        device = images.device
        corners = torch.rand(n, 3, 2, device=device, generator=generator) * 0.5
        sizes = 0.2 + torch.rand(n, 3, 2, device=device, generator=generator) * 0.3
        boxes = torch.cat([corners, corners + sizes], dim=2) * images.new_tensor([width, height, width, height])
        labels = torch.randint(0, self.num_classes, (n, 3), device=device, generator=generator)
        return {"image": images, "boxes": list(boxes), "labels": list(labels)}

    @torch.no_grad()
    def detections(self, boxes: Tensor, scores: Tensor, image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """Per image ``boxes`` (n×4 in the pixels of its ``image_sizes`` entry, height and width), ``scores``,
        ``labels`` and ``image_size``, from ``export_forward``'s outputs, whichever backend computed them."""
        detections = select_detections(boxes, scores, **self.postprocess_options)
        for detection, (height, width) in zip(detections, image_sizes):
            detection["boxes"] = detection["boxes"] * detection["boxes"].new_tensor([width, height, width, height])
            detection["image_size"] = (int(height), int(width))  # what the boxes' pixels refer to (for drawing)
        return detections

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        images = batch["image"]
        metas = batch.get("meta") or [{}] * len(images)
        sizes = [tuple(meta.get("ori_shape", images.shape[-2:]))[:2] for meta in metas]
        return self.detections(*self.export_forward(images), sizes)

    def draw(
        self,
        image: np.ndarray,
        target: Mapping[str, Any],
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Ground-truth or predicted boxes on the H×W×3 uint8 ``image`` (run samples): boxes in another image's pixels
        (``image_size``, a prediction on the original image) are scaled to the image shown."""
        return draw_detections(
            image,
            np.asarray(torch.as_tensor(target["boxes"]).detach().cpu().float()).reshape(-1, 4),
            np.asarray(torch.as_tensor(target.get("labels", np.zeros(0))).cpu()).reshape(-1).astype(np.int64),
            None if target.get("scores") is None else np.asarray(torch.as_tensor(target["scores"]).cpu()).reshape(-1),
            classes=classes,
            palette=palette,
            boxes_size=target.get("image_size"),
        )

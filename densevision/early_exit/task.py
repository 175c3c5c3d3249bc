"""EarlyExitClassifier: a multi-exit network (MSDNet) trained on the weighted sum of its exits' losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import densevision.models  # noqa: F401  (registers the architectures a config names)
from densevision.contracts import Task
from densevision.flops import count_flops
from densevision.registry import LOSSES, MODELS, TASKS

__all__ = ["EarlyExitClassifier"]


@TASKS.register_module()
class EarlyExitClassifier(Task):
    """Image classification from every exit of ``model``, whose forward returns a list of N×K logits (one per exit,
    shallowest first) and which has ``num_exits`` and its exit modules as ``classifiers`` (for FLOP counting);
    ``forward(images, num_exits=k)`` stops after k exits.

    ``loss`` is ``sum_k exit_weights[k] * loss_fn(exit k)`` (the paper's equal weights of 1 by default), and each
    exit's own loss is logged as ``loss/exit{k}``. ``predict`` answers from exit ``predict_exit`` (default the last)
    and also returns every exit's scores (``exit_scores``, exits × K) for per-exit accuracy and budgeted evaluation.
    ``forward`` returns only the chosen exit's logits, computing no deeper block. The ONNX graph and every inference
    backend compute ``export_forward``: every exit's logits, outputs ``exit0`` … ``exit{K-1}`` (one graph serves
    each exit, and a caller that wants one reads its output); ``EarlyExitPredictor`` answers from them, or, for
    adaptive prediction, runs the exits one by one in torch (``model.iter_exits``).
    """

    predictor = "EarlyExitPredictor"  # densevision.early_exit.predictor: predictions.csv with the exit and its FLOPs

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        *,
        exit_weights: Sequence[float] | None = None,
        predict_exit: int = -1,
        loss: Mapping[str, Any] | nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model if isinstance(model, nn.Module) else MODELS.build(model)
        num_exits = getattr(self.model, "num_exits", None)
        if not isinstance(num_exits, int) or num_exits < 1:
            raise ValueError(
                "EarlyExitClassifier needs a model with exits (a `num_exits` attribute), "
                f"got {type(self.model).__name__}"
            )
        weights = (1.0,) * num_exits if exit_weights is None else tuple(float(w) for w in exit_weights)
        if len(weights) != num_exits or any(w < 0 for w in weights) or not any(weights):
            raise ValueError(
                f"exit_weights must be {num_exits} non-negative numbers (one per exit), not all zero, "
                f"got {exit_weights}"
            )
        if not -num_exits <= predict_exit < num_exits:
            raise ValueError(f"predict_exit must index one of the {num_exits} exits, got {predict_exit}")
        self.exit_weights = weights
        self.predict_exit = predict_exit % num_exits
        self.loss_fn = (
            nn.CrossEntropyLoss() if loss is None else loss if isinstance(loss, nn.Module) else LOSSES.build(loss)
        )

    @property
    def num_classes(self) -> int | None:
        """Classes the network predicts (``None`` when it does not say), checked against the dataset's."""
        return getattr(self.model, "num_classes", None)

    @property
    def num_exits(self) -> int:
        return self.model.num_exits

    def exit_flops(self, image_shape: Sequence[int]) -> list[int]:
        """Multiply-adds per image spent up to each exit (``densevision.flops``'s convention) for C×H×W images: the
        model's exit modules are its ``classifiers``, in the order they run."""
        parameter = next(self.model.parameters())
        images = torch.zeros(1, *image_shape, dtype=parameter.dtype, device=parameter.device)
        was_training = self.model.training
        self.model.eval()  # a forward in training mode would move the BatchNorm statistics
        try:
            return count_flops(self.model, images, exits=self.model.classifiers).at_exits
        finally:
            self.model.train(was_training)

    def describe(self) -> str:
        """The exits' loss weights and the exit that answers, for the run log."""
        weights = ", ".join(f"{w:g}" for w in self.exit_weights)
        return f"early exits: {self.num_exits}, loss weights ({weights}); predictions from exit {self.predict_exit}"

    def forward(self, images: Tensor, *, every_exit: bool = False) -> Tensor | tuple[Tensor, ...]:
        """The chosen exit's logits, deeper blocks not run; with ``every_exit``, every exit's logits (a call of the
        task, so the inference backends' hooks, autocast and channels_last, apply to it)."""
        if every_exit:
            return tuple(self.model(images))
        return self.model(images, num_exits=self.predict_exit + 1)[-1]

    @property
    def export_outputs(self) -> tuple[str, ...]:
        """ONNX output names: one per exit, shallowest first."""
        return tuple(f"exit{k}" for k in range(self.num_exits))

    def export_forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Every exit's logits, as the ONNX graph returns them."""
        return self(images, every_exit=True)

    def exit_logits(self, images: Tensor) -> list[Tensor]:
        """Every exit's N×K logits, shallowest first."""
        return self.model(images)

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        labels = batch["label"]
        exit_losses = [self.loss_fn(logits, labels) for logits in self.exit_logits(batch["image"])]
        total = sum(weight * loss for weight, loss in zip(self.exit_weights, exit_losses, strict=True))
        return {"loss": total, **{f"loss/exit{k}": loss.detach() for k, loss in enumerate(exit_losses)}}

    def example_batch(self, images: Tensor, generator: torch.Generator) -> dict[str, Any]:
        labels = torch.randint(0, self.num_classes, (len(images),), device=images.device, generator=generator)
        return {"image": images, "label": labels}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        """Per image: ``label`` and ``scores`` (softmax) of the chosen exit, ``exit_scores`` (exits × K) of all."""
        scores = torch.stack([logits.float().softmax(dim=1) for logits in self.exit_logits(batch["image"])], 1)
        chosen = self.predict_exit
        return [{"label": s[chosen].argmax(), "scores": s[chosen], "exit_scores": s} for s in scores]

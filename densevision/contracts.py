"""What the runner asks of a task and of a dataset, declared once: the required hooks and the optional ones with their
defaults, so the runner calls hooks instead of probing for them and a new task or dataset sees what it must provide.

A task derives from ``Task`` (an ``nn.Module``), a dataset from ``DenseDataset`` (a torch ``Dataset``); the runner
refuses other classes with one line naming the config key. File predictors follow ``densevision.inference.Predictor``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevision.registry import ConfigError

__all__ = ["Task", "DenseDataset", "require_task", "require_dataset"]


class Task(nn.Module, abc.ABC):
    """A task wrapper the runner trains and tests: the architecture, its loss and its post-processing.

    Required: ``forward(images)`` (raw outputs), ``loss(batch) -> dict`` whose ``loss`` entry is back-propagated (the
    others are logged), ``predict(batch) -> list[dict]`` (one dict per image), and ``num_classes`` when the network
    says how many classes it predicts (checked against the dataset's). Optional hooks below have defaults.
    """

    #: Classes the network predicts (detection: foreground classes); ``None`` when it does not say.
    num_classes: int | None = None
    #: The ``PREDICTORS`` name of the task's file predictor (tools/infer.py); ``None``: the task has none.
    predictor: str | None = None
    #: ONNX output names (tools/export.py).
    export_outputs: tuple[str, ...] = ("logits",)
    #: The fixed input size the task exports at, ``(height, width)``; ``None``: height and width stay dynamic.
    export_input_size: tuple[int, int] | None = None
    #: The training dataset's ``metainfo``, set by the runner once it has checked that the task agrees with it.
    dataset_meta: dict[str, Any]

    @abc.abstractmethod
    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]: ...

    @abc.abstractmethod
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def export_forward(self, images: Tensor) -> Any:
        """What the ONNX graph and every inference backend compute before the task's post-processing; default: the
        forward (detection overrides it to decode boxes, so NMS alone stays in torch)."""
        return self(images)

    def draw(self, image: Any, target: Mapping[str, Any], *, classes: Any = None, palette: Any = None) -> Any:
        """``image`` (H×W×3 uint8) with ``target`` (a prediction or a ground truth) drawn on it, for the run's sample
        figures and the predictors' pictures; default: the image as it is."""
        return image

    def example_batch(self, images: Tensor, generator: torch.Generator) -> dict[str, Any]:
        """A training batch of ``images`` with random targets (on their device, drawn with ``generator``): what
        tools/benchmark.py times ``loss`` on without data; default: none."""
        raise NotImplementedError(f"{type(self).__name__} has no example_batch: random targets to time its loss on")

    def on_train_start(self, train_dataset: Any) -> None:
        """Called once before training with the training dataset (e.g. to compute class weights); default: nothing."""

    def describe(self) -> str | None:
        """A line for the run log with the task's own settings (a detector's thresholds); default: none."""
        return None

    def input_channels(self) -> int | None:
        """Channels every image is checked against before training: the ``model``'s ``in_chans`` when it says."""
        value = getattr(getattr(self, "model", None), "in_chans", None)
        return value if isinstance(value, int) else None

    def void_labels(self) -> list[tuple[str, int]]:
        """``(where, label)`` for each void label the task and its loss skip, checked against the dataset's
        ``ignore_index``: the task's own ``ignore_index`` and that of every module of its ``loss_fn``."""
        owners: list[tuple[str, Any]] = [("model", self)]
        loss_fn = getattr(self, "loss_fn", None)
        if isinstance(loss_fn, nn.Module):
            owners += [("model.loss", module) for module in loss_fn.modules()]
        labels = [(where, getattr(owner, "ignore_index", None)) for where, owner in owners]
        return [(where, value) for where, value in labels if value is not None]


class DenseDataset(Dataset, abc.ABC):
    """A dataset the runner trains or evaluates on: ``__len__``, ``__getitem__`` (a sample dict of the batch
    contract) and ``metainfo`` are required; ``check`` and ``describe`` have defaults."""

    @property
    @abc.abstractmethod
    def metainfo(self) -> dict[str, Any]:
        """``classes`` (and, where they apply, ``palette``, ``ignore_index``, ``category_ids``): the one source of
        class names, handed by the runner to the task, the metric and every checkpoint."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def check(self, *, on_problem: Any = None, channels: int | None = None) -> Any:
        """Read every file before training; each problem goes to ``on_problem`` as one line, or, without it, the first
        raises a ``DatasetError`` naming the file. ``channels``: the model's input channels. Default: nothing to read
        ahead (samples are checked as they load)."""
        return None

    def describe(self) -> str:
        """What the run log says the data is (the runner adds the config's arguments, which name the split)."""
        return f"{len(self)} samples"


def require_task(task: Any, key: str) -> Task:
    """``task`` when it follows the task contract; otherwise a ConfigError naming the config key and the class."""
    if not isinstance(task, Task):
        raise ConfigError(
            f"{key} builds {type(task).__name__}, which is not a densevision.contracts.Task: derive it from Task "
            "(it declares loss, predict and the optional hooks with their defaults)"
        )
    return task


def require_dataset(dataset: Any, key: str) -> DenseDataset:
    """``dataset`` when it follows the dataset contract; otherwise a ConfigError naming the config key and the class."""
    if not isinstance(dataset, DenseDataset):
        raise ConfigError(
            f"{key} builds {type(dataset).__name__}, which is not a densevision.contracts.DenseDataset: derive it "
            "from DenseDataset (it declares metainfo and the optional check and describe with their defaults)"
        )
    return dataset

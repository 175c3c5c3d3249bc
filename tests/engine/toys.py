"""Tiny task, dataset and metric for the engine's tests, registered under names no real component uses.

They follow the contracts in ARCHITECTURE.md, so the engine is tested without depending on the real models or data.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densevision.contracts import DenseDataset, Task
from densevision.data.checks import DatasetError
from densevision.evaluation.base import Metric
from densevision.registry import DATASETS, METRICS, TASKS

NUM_CLASSES = 3


@DATASETS.register_module(name="EngineToySegmentation", force=True)
class ToySegmentation(DenseDataset):
    """Random 3×8×8 images whose mask is a function of the pixels; ``flip`` draws from torch's global generator, like
    an augmentation in the main process would. The samples at ``bad`` raise a DatasetError naming their file, as an
    unreadable file found during training does; with ``void`` every pixel is unlabelled."""

    checked: list[int] = []  # lengths of the instances whose check() ran

    def __init__(
        self,
        num_samples: int = 8,
        size: int = 8,
        seed: int = 0,
        flip: bool = False,
        bad: tuple[int, ...] = (),
        classes: tuple[str, ...] = ("low", "mid", "high"),
        void: bool = False,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(num_samples, 3, size, size, generator=generator)
        self.masks = (self.images[:, 0] > 0).long() + (self.images[:, 1] > 0.5).long()
        if void:  # every pixel unlabelled, as in a label raster that is all nodata
            self.masks.fill_(255)
        self.flip = flip
        self.bad = tuple(bad)
        self.classes = tuple(classes)
        self.palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
        self.ignore_index = 255
        self.num_classes = NUM_CLASSES

    @property
    def metainfo(self) -> dict[str, Any]:
        return {"classes": self.classes, "palette": self.palette, "ignore_index": self.ignore_index}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self.bad:
            raise DatasetError(f"cannot read image {bad_file(index)}: not an image file")
        image, mask = self.images[index], self.masks[index]
        if self.flip and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return {"image": image.clone(), "mask": mask.clone(), "meta": {"index": index}}

    def read_mask(self, index: int) -> Any:
        return self.masks[index].numpy()

    def check(self, *, on_problem: Any = None, channels: int | None = None) -> None:
        ToySegmentation.checked.append(len(self))


@TASKS.register_module(name="EngineToySegmentor", force=True)
class ToySegmentor(Task):
    """conv → GroupNorm → ReLU → dropout → 1×1 conv; per-class pixel counts from ``on_train_start`` as a buffer.

    ``nan_at_call``: the loss of that call (1-based) is NaN, to test how the runner stops; ``nan_above``: the loss is
    NaN once a weight's magnitude exceeds it, as in a run that diverges at too high a learning rate.
    """

    def __init__(
        self, width: int = 4, drop_rate: float = 0.0, nan_at_call: int | None = None, nan_above: float | None = None
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.GroupNorm(2, width),
            nn.ReLU(),
            nn.Dropout(drop_rate),
            nn.Conv2d(width, NUM_CLASSES, 1),
        )
        self.register_buffer("class_counts", torch.zeros(NUM_CLASSES, dtype=torch.int64))
        self.nan_at_call = nan_at_call
        self.nan_above = nan_above
        self.loss_calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.loss_calls += 1
        loss = nn.functional.cross_entropy(self(batch["image"]), batch["mask"])
        diverged = self.nan_above is not None and max(p.abs().max() for p in self.parameters()) > self.nan_above
        if self.loss_calls == self.nan_at_call or diverged:
            loss = loss * float("nan")
        return {"loss": loss, "loss_ce": loss.detach()}

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        probs = self(batch["image"]).softmax(dim=1)
        return [{"mask": p.argmax(dim=0), "probs": p} for p in probs]

    def on_train_start(self, dataset: Any) -> None:
        counts = torch.zeros(NUM_CLASSES, dtype=torch.int64)
        for index in range(len(dataset)):
            counts += torch.bincount(torch.as_tensor(dataset.read_mask(index)).flatten(), minlength=NUM_CLASSES)
        self.class_counts.copy_(counts)


@METRICS.register_module(name="EngineToyPixelAccuracy", force=True)
class ToyPixelAccuracy(Metric):
    """Pixel accuracy from correct/total counts, which ``sync`` sums across processes."""

    sum_states = ("correct", "total")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.int64)
        self.total = torch.zeros((), dtype=torch.int64)

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        predicted = torch.stack([p["mask"] for p in preds]).cpu()
        target = batch["mask"].cpu()
        self.correct += (predicted == target).sum()
        self.total += target.numel()

    def compute(self) -> dict[str, float]:
        return {"acc": float(self.correct) / max(int(self.total), 1), "pixels": float(self.total)}


def toy_config(work_dir: Any, **overrides: Any) -> dict[str, Any]:
    """A complete runner config over the toy components; ``overrides`` replace top-level keys."""
    dataset = dict(type="EngineToySegmentation", num_samples=8)
    cfg = dict(
        work_dir=str(work_dir),
        seed=0,
        device="cpu",
        model=dict(type="EngineToySegmentor"),
        train_dataloader=dict(batch_size=2, num_workers=0, shuffle=True, dataset=dataset),
        val_dataloader=dict(batch_size=4, num_workers=0, dataset=dataset),
        test_dataloader=dict(batch_size=4, num_workers=0, dataset=dataset),
        val_evaluator=dict(type="EngineToyPixelAccuracy"),
        test_evaluator=dict(type="EngineToyPixelAccuracy"),
        optim_wrapper=dict(
            optimizer=dict(type="RMSprop", lr=1e-2, weight_decay=1e-4),
            paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
        ),
        param_scheduler=[],
        train_cfg=dict(max_epochs=2, val_interval=1),
        checkpoint=dict(monitor="acc", mode="max"),
        early_stopping=None,
        log_interval=1,
        visualization=dict(num_samples=0),
    )
    cfg.update(overrides)
    return cfg


def bad_file(index: int) -> str:
    """The file name a bad ``EngineToySegmentation`` sample reports."""
    return f"toy_images/{index:03d}.png"


def write_toy_config(path: Path, extra: str = "") -> Path:
    """A top-level config file over the repository's default_runtime.py and the toy components, plus ``extra`` lines
    (e.g. ``train_cfg = dict(max_epochs=2)``), for tests that run the tools as a user would."""
    runtime = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "default_runtime.py"
    body = f"""
        _base_ = [{str(runtime)!r}]
        device = "cpu"
        model = dict(type="EngineToySegmentor")
        dataset = dict(type="EngineToySegmentation", num_samples=8)
        train_dataloader = dict(batch_size=2, num_workers=0, dataset=dataset)
        val_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
        test_dataloader = val_dataloader
        val_evaluator = dict(type="EngineToyPixelAccuracy")
        test_evaluator = val_evaluator
        train_cfg = dict(max_epochs=1)
        checkpoint = dict(monitor="acc")
        visualization = dict(num_samples=0)
        log_interval = 1
        """
    path.write_text(textwrap.dedent(body) + textwrap.dedent(extra))
    return path

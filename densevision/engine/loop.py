"""The training loop and evaluation: epochs of ``task.loss`` steps, validation, the best metric and early stopping.

``TrainLoop._loss_step`` is the one place where a batch's losses are computed; everything else in an iteration
(scheduling, backward, stepping, logging) is around it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from densevision.contracts import Task
from densevision.data.checks import DatasetError
from densevision.engine import distributed
from densevision.engine.acceleration import TrainingAcceleration
from densevision.engine.checkpoint import LAST_CHECKPOINT
from densevision.engine.distributed import DistContext
from densevision.engine.errors import NonFiniteLossError
from densevision.engine.loaders import source, to_device, unpack
from densevision.engine.logging import RunLogger, progress_bar
from densevision.engine.optim import OptimWrapper, ParamSchedulers
from densevision.engine.settings import RunSettings
from densevision.engine.visualize import plot_curves, save_prediction_samples
from densevision.precision import autocast_forward
from densevision.registry import ConfigError

__all__ = ["Progress", "TrainLoop", "evaluate", "save_picture"]

logger = logging.getLogger("densevision")

CURVES_FILE = "curves.png"
PREDICTIONS_DIR = "predictions"
SKIPPED_SHOWN = 3  # bad samples named in an epoch's log line; the rest are counted


@dataclass
class Progress:
    """How far a run has come; stored in checkpoints, so a resumed run continues where this one stopped."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # completed training iterations (batches)
    best: dict[str, Any] = field(default_factory=lambda: {"metric": None, "epoch": None})
    early_stopping: dict[str, Any] = field(default_factory=lambda: {"best": None, "bad_evaluations": 0})
    history: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"train": [], "val": []})

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        self.epoch = int(checkpoint["meta"]["epoch"])
        self.iteration = int(checkpoint["meta"]["iteration"])
        self.best = dict(checkpoint.get("best", self.best))
        self.early_stopping = dict(checkpoint.get("early_stopping", self.early_stopping))
        self.history = {k: list(v) for k, v in checkpoint.get("history", self.history).items()}


def save_picture(what: str, save: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Pictures are for people: a failure to draw one is a warning, never the end of a run."""
    try:
        save(*args, **kwargs)
    except Exception as err:
        logger.warning("could not draw %s: %s: %s", what, type(err).__name__, err)


def _sample_targets(batch: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Image ``index``'s ground truth from a batch: its slice of every batched tensor or list, except image/meta."""
    size = len(batch["image"])
    target = {}
    for key, value in batch.items():
        if key in ("image", "meta"):
            continue
        if isinstance(value, (torch.Tensor, list, tuple)) and len(value) == size:
            item = value[index]
            target[key] = item.detach().cpu() if isinstance(item, torch.Tensor) else item
    return target


@torch.no_grad()
def evaluate(
    task: Task,
    loader: DataLoader,
    evaluator: Any,
    *,
    dist: DistContext,
    num_samples: int = 0,
    samples_dir: Path | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Predict every batch, feed the metric, sum its state over processes and compute it.

    The first ``num_samples`` images are drawn into ``samples_dir`` (main process only). ``dtype``: the task's
    forward runs under autocast to it (validation follows the training precision), the metric in float32.
    """
    task.eval()
    evaluator.reset()
    wanted = num_samples if samples_dir is not None and dist.is_main else 0
    samples: list[tuple[torch.Tensor, dict[str, Any], dict[str, Any]]] = []
    bar = progress_bar(loader, total=len(loader), desc="evaluate", enabled=dist.is_main, leave=False)
    for loaded in bar:
        batch = to_device(unpack(loaded), dist.device)
        with autocast_forward(task, dtype, dist.device.type):
            predictions = task.predict(batch)
        evaluator.update(predictions, batch)
        for index in range(min(wanted - len(samples), len(predictions))):
            prediction = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in predictions[index].items()}
            samples.append((batch["image"][index].cpu(), prediction, _sample_targets(batch, index)))
    evaluator.sync()
    metrics = {k: float(v) for k, v in evaluator.compute().items()}
    if samples and samples_dir is not None:
        meta = source(loader).metainfo
        save_picture(
            f"sample predictions in {samples_dir}",
            save_prediction_samples,
            samples,
            samples_dir,
            palette=meta.get("palette"),
            classes=meta.get("classes"),
            drawer=task.draw,
        )
    return metrics


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _monitored(metrics: Mapping[str, float], key: str, section: str) -> float:
    if key not in metrics:
        raise ConfigError(f"{section}.monitor={key!r} is not among the evaluator's metrics {sorted(metrics)}")
    return float(metrics[key])


class TrainLoop:
    """Runs epochs from ``progress.epoch`` on: trains, validates every ``val_interval`` epochs and at the end, tracks
    the best metric and early stopping, and after each epoch has ``save(improved)`` write the checkpoints."""

    def __init__(
        self,
        *,
        task: Task,
        loss_model: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]],
        optim_wrapper: OptimWrapper,
        param_schedulers: ParamSchedulers,
        settings: RunSettings,
        dist: DistContext,
        run_logger: RunLogger,
        work_dir: Path,
        progress: Progress,
        loader_generator: torch.Generator,
        max_iters: int | None,
        fresh_start: bool,
        save: Callable[[bool], None],
        acceleration: TrainingAcceleration,
    ) -> None:
        self.task = task
        self.acceleration = acceleration
        self.loss_model = loss_model
        self.optim_wrapper = optim_wrapper
        self.param_schedulers = param_schedulers
        self.settings = settings
        self.dist = dist
        self.run_logger = run_logger
        self.work_dir = work_dir
        self.progress = progress
        self.loader_generator = loader_generator
        self.max_iters = max_iters
        self.fresh_start = fresh_start  # untrained weights: a first epoch of zero losses means no labelled target
        self.save = save
        self._skipped: list[str] = []  # bad samples replaced in the current epoch (train_cfg.skip_bad_samples)

    def run(
        self, train_loader: DataLoader, val_loader: DataLoader | None, val_evaluator: Any, max_epochs: int
    ) -> dict[str, float]:
        """Train to ``max_epochs`` (or ``max_iters``, or early stopping); returns the last validation metrics."""
        progress, val_interval = self.progress, self.settings.train_cfg["val_interval"]
        metrics: dict[str, float] = {}
        for epoch in range(progress.epoch, max_epochs):
            mean_loss = self._train_epoch(train_loader, epoch, max_epochs)
            progress.history["train"].append({"epoch": epoch + 1, "loss": mean_loss})
            last = epoch + 1 == max_epochs or (self.max_iters is not None and progress.iteration >= self.max_iters)
            evaluating = val_loader is not None and ((epoch + 1) % val_interval == 0 or last)
            improved = stop = False
            if evaluating:
                metrics = self._validate(val_loader, val_evaluator, epoch)
                improved, stop = self._track_progress(metrics, epoch)
            progress.epoch = epoch + 1
            self.save(improved)
            if self.dist.is_main:
                curves = self.work_dir / CURVES_FILE
                save_picture(CURVES_FILE, plot_curves, progress.history, curves, self.settings.monitored_names())
            if stop or last:
                break
        return metrics

    def _loss_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The task's losses for one batch, in the training precision: the one place a batch meets ``task.loss``."""
        with self.optim_wrapper.autocast(self.task):
            losses = self.loss_model(batch)
        if "loss" not in losses:
            raise TypeError(f"{type(self.task).__name__}.loss() must return a dict with a 'loss' entry")
        return losses

    def _train_epoch(self, loader: DataLoader, epoch: int, max_epochs: int) -> float:
        optim, schedulers, progress = self.optim_wrapper, self.param_schedulers, self.progress
        self.task.train()
        loader.sampler.set_epoch(epoch)
        self.loader_generator.manual_seed(self.settings.seed + epoch)
        schedulers.before_epoch(epoch)
        num_iters = len(loader)
        if self.max_iters is not None:  # the last epoch of an iteration-based run stops at max_iters
            num_iters = min(num_iters, self.max_iters - progress.iteration)
        if num_iters <= 0:
            raise ConfigError(
                f"train_dataloader yields no batches ({len(loader.dataset)} samples, batch_size {loader.batch_size}, "
                f"{self.dist.world_size} process(es), drop_last={loader.drop_last})"
            )
        started = time.perf_counter()
        bar = progress_bar(loader, total=num_iters, desc=f"epoch {epoch + 1}/{max_epochs}", enabled=self.dist.is_main)
        self._skipped = []
        # A step's losses are read on the host once the next step is queued (or the epoch ends): reading them at once
        # would make the host wait for the GPU mid-step, idling it while the host launches the backward.
        pending: _StepLosses | None = None
        step_losses: list[float] = []  # each step's loss, as read
        for index, loaded in enumerate(bar):
            if index == num_iters:
                break
            schedulers.before_iter(progress.iteration)
            lr = optim.lr
            batch = self.acceleration.prepare_batch(to_device(unpack(loaded, self._skipped), self.dist.device))
            stepping = optim.should_step(index, num_iters)
            no_sync = isinstance(self.loss_model, DistributedDataParallel) and not stepping
            try:
                with self.loss_model.no_sync() if no_sync else contextlib.nullcontext():
                    losses = self._loss_step(batch)
                    reduced = _reduce_losses(losses)
                    optim.backward(losses["loss"], group_size=optim.group_size(index, num_iters))
                grad_norm = optim.step() if stepping else None
            except BaseException:  # the step before is finished: report its non-finite loss first, or log it
                if pending is not None:
                    self._record_step(pending, bar)
                raise
            schedulers.after_iter(progress.iteration)
            progress.iteration += 1
            step = _StepLosses(epoch, index, num_iters, progress.iteration, lr, grad_norm, list(losses), reduced)
            finished, pending = pending, step
            if finished is not None:
                step_losses.append(self._record_step(finished, bar))
        if pending is not None:
            step_losses.append(self._record_step(pending, bar))
        if self.fresh_start and epoch == 0 and not any(step_losses):
            raise DatasetError(
                f"every one of the {num_iters} batches of epoch 1 had a loss of exactly 0, which untrained weights "
                "only give when there is nothing to learn: the training data has no labelled target (segmentation: "
                "every pixel is void/ignore_index or nodata); tools/check_dataset.py CONFIG --split train lists the "
                "files"
            )
        schedulers.after_epoch(epoch)
        mean_loss = sum(step_losses) / num_iters
        seconds = time.perf_counter() - started
        record = {"mode": "train_epoch", "epoch": epoch + 1, "step": progress.iteration, "loss": mean_loss}
        record["time"] = seconds
        if self.settings.train_cfg["skip_bad_samples"]:
            record["skipped"] = len(set(self._skipped))
        self.run_logger.log(record)
        logger.info("epoch %d/%d: mean loss %.4f, %.1f s", epoch + 1, max_epochs, mean_loss, seconds)
        self._report_skipped(epoch)
        return mean_loss

    def _record_step(self, step: _StepLosses, bar: Any) -> float:
        """A finished step's losses on the host: stop on a non-finite loss, show and log them; returns the loss."""
        logged = dict(zip(step.names, step.values.tolist(), strict=True))
        if not math.isfinite(logged["loss"]):
            raise NonFiniteLossError(
                f"loss is {logged['loss']} at epoch {step.epoch + 1}, iteration {step.index + 1}/{step.num_iters} "
                f"(global iteration {step.iteration}); training stopped{self._how_to_go_on()}"
            )
        bar.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{step.lr:.3g}", refresh=False)
        if step.iteration % self.settings.log_interval == 0:
            record = {"mode": "train", "epoch": step.epoch + 1, "iter": step.index + 1, "step": step.iteration}
            record.update(lr=step.lr, **logged)
            if step.grad_norm is not None:
                record["grad_norm"] = float(step.grad_norm)
            self.run_logger.log(record)
        return logged["loss"]

    def _report_skipped(self, epoch: int) -> None:
        """One warning per epoch with bad samples skipped by this process: how many, and the first few reasons."""
        skipped = list(dict.fromkeys(self._skipped))
        if not skipped:
            return
        more = f"; and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
        logger.warning(
            "epoch %d: skipped %d bad sample(s), each replaced by the next good one (train_cfg.skip_bad_samples): %s%s",
            epoch + 1,
            len(skipped),
            "; ".join(skipped[:SKIPPED_SHOWN]),
            more,
        )

    def _how_to_go_on(self) -> str:
        """After a NaN: what to change, and where to continue from when a checkpoint exists."""
        advice = "lower the learning rate or set optim_wrapper.clip_grad"
        last = self.work_dir / LAST_CHECKPOINT
        if not last.is_file():
            return f" ({advice})"
        return (
            f"; the last good checkpoint is {last} ({advice}, then continue with --resume: it applies the new values)"
        )

    def _validate(self, loader: DataLoader, evaluator: Any, epoch: int) -> dict[str, float]:
        metrics = evaluate(
            self.task,
            loader,
            evaluator,
            dist=self.dist,
            num_samples=int(self.settings.visualization["num_samples"]),
            samples_dir=self.work_dir / PREDICTIONS_DIR / f"epoch_{epoch + 1:03d}",
            dtype=self.optim_wrapper.amp_dtype,
        )
        self.progress.history["val"].append({"epoch": epoch + 1, **metrics})
        self.run_logger.log({"mode": "val", "epoch": epoch + 1, "step": self.progress.iteration, **metrics})
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
        logger.info("epoch %d validation: %s", epoch + 1, summary)
        return metrics

    def _track_progress(self, metrics: Mapping[str, float], epoch: int) -> tuple[bool, bool]:
        """Update the best metric and the early-stopping count; returns (new best, stop now)."""
        progress, improved = self.progress, False
        checkpoint = self.settings.checkpoint
        if checkpoint["monitor"] is not None:
            value = _monitored(metrics, checkpoint["monitor"], "checkpoint")
            if _better(value, progress.best["metric"], checkpoint["mode"]):
                progress.best = {"metric": value, "epoch": epoch + 1}
                improved = True
        stopping = self.settings.early_stopping
        if stopping is None:
            return improved, False
        value = _monitored(metrics, stopping["monitor"], "early_stopping")
        if _better(value, progress.early_stopping["best"], stopping["mode"], float(stopping["min_delta"])):
            progress.early_stopping = {"best": value, "bad_evaluations": 0}
            return improved, False
        progress.early_stopping["bad_evaluations"] += 1
        if progress.early_stopping["bad_evaluations"] < stopping["patience"]:
            return improved, False
        logger.info(
            "early stopping after epoch %d: %s has not improved on %.4f for %d evaluations",
            epoch + 1,
            stopping["monitor"],
            progress.early_stopping["best"],
            stopping["patience"],
        )
        return improved, True


class _StepLosses(NamedTuple):
    """What the log needs of a step whose losses may still be computing on the device."""

    epoch: int
    index: int
    num_iters: int
    iteration: int
    lr: float
    grad_norm: torch.Tensor | None
    names: list[str]
    values: torch.Tensor  # the losses averaged over processes, on the training device, one per name


def _reduce_losses(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All loss entries averaged over processes in one collective, left on the device (in the order of ``losses``);
    every rank then sees the same NaN."""
    device = losses["loss"].device
    values = torch.stack([torch.as_tensor(v, device=device).detach().float().mean() for v in losses.values()])
    return distributed.all_reduce_mean(values)

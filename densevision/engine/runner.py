"""The runner that knows no task: ``Runner(cfg)`` sets a run up (the config validated, the task built), ``train()``
resumes if asked and hands the loop (``engine.loop``) its loaders, optimizer and schedules, ``test()`` evaluates.

Config keys, with their defaults, are documented in configs/_base_/default_runtime.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from densevision.config import Config
from densevision.contracts import Task, require_task
from densevision.engine import acceleration, distributed
from densevision.engine.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    apply_model_weights,
    capture_rng_state,
    load_model_weights,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
)
from densevision.engine.errors import CheckpointError
from densevision.engine.loaders import (
    ShardSampler,
    apply_dataset_meta,
    build_dataloader,
    describe_dataset,
    source,
    to_device,
)
from densevision.engine.logging import METRICS_FILE, RunLogger
from densevision.engine.loop import PREDICTIONS_DIR, Progress, TrainLoop, evaluate
from densevision.engine.optim import OptimWrapper, ParamSchedulers, build_optim_wrapper
from densevision.engine.resume import (
    check_same_classes,
    config_changes,
    finished,
    plain,
    read_training_checkpoint,
)
from densevision.engine.settings import RunSettings
from densevision.engine.workdir import WorkDirLock, prepare_work_dir, refuse_to_overwrite, remove_stale_temp_files
from densevision.precision import autocast_dtype
from densevision.registry import METRICS, TASKS, ConfigError

__all__ = ["Runner", "seed_everything", "prepare_work_dir", "to_device", "ShardSampler"]

logger = logging.getLogger("densevision")

CONFIG_FILE = "config.py"


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); ``deterministic`` also asks torch for deterministic kernels.

    Kernels without a deterministic version warn instead of failing, so one missing kernel does not stop a run.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


class _LossForward(nn.Module):
    """Routes ``forward`` to ``task.loss``, so DistributedDataParallel's forward hooks (gradient sync) run for it."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.loss(batch)


class Runner:
    """Builds a task, its data, optimizer and schedules from a config; ``train()`` and ``test()`` run them.

    One process or many (torchrun + ``launcher='pytorch'``): the main process alone writes files; metrics are summed
    across processes by ``metric.sync()`` before ``compute()``.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        _register_components()
        self.cfg = cfg if isinstance(cfg, Config) else Config(cfg)
        if not self.cfg.get("work_dir"):
            raise ConfigError("config has no work_dir (tools/train.py derives one from the config file name)")
        self.settings = RunSettings.from_config(self.cfg)
        self.dist = distributed.init_distributed(self.cfg.get("launcher", "none"), self.cfg.get("device"))
        self.device = self.dist.device
        if not self.dist.is_main:
            logger.setLevel(logging.WARNING)  # one process reports progress; the others speak only of problems
        self.work_dir = Path(self.cfg["work_dir"])
        prepare_work_dir(self.work_dir)  # on every rank: a barrier would hang the others if rank 0 failed here
        self.seed = self.settings.seed
        seed_everything(self.seed, deterministic=bool(self.cfg.get("deterministic", False)))
        self.run_logger = RunLogger(self.work_dir, enabled=self.dist.is_main)
        if "model" not in self.cfg:
            raise ConfigError("config has no 'model' (a task from TASKS, e.g. dict(type='Segmentor', model=...))")
        self.task: Task = require_task(TASKS.build(self.cfg["model"]), "model").to(self.device)
        if self.cfg.get("sync_bn", False):
            self.task, converted = distributed.convert_sync_batchnorm(self.task, self.device)
            if not converted:
                logger.info("sync_bn ignored: SyncBatchNorm needs several CUDA processes (device: %s)", self.device)
        self.progress = Progress()
        self.optim_wrapper: OptimWrapper | None = None
        self.param_schedulers: ParamSchedulers | None = None
        self.test_evaluator: Any = None
        self.dataset_meta: dict[str, Any] = {}
        self._loader_generator = torch.Generator()

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> Runner:
        return cls(cfg)

    def build_dataloader(self, name: str, *, train: bool) -> DataLoader:
        """``cfg[name]`` -> DataLoader (see ``engine.loaders.build_dataloader``)."""
        skip = bool(self.settings.train_cfg["skip_bad_samples"])
        return build_dataloader(
            self.cfg, name, train=train, skip_bad_samples=skip, dist=self.dist, seed=self.seed,
            generator=self._loader_generator,
        )  # fmt: skip

    def build_evaluator(self, name: str) -> Any:
        section = self.cfg.get(name)
        if not isinstance(section, Mapping):
            raise ConfigError(f"config has no {name}, e.g. {name} = dict(type='SegmentationMetric', ...)")
        return METRICS.build(section)

    # ------------------------------------------------------------------------------------------------------ training

    def train(self) -> dict[str, float]:
        """Train for ``train_cfg.max_epochs`` or ``max_iters`` batches (or until early stopping); returns the last
        validation metrics.

        The work dir is locked for the run. Without ``resume``, a work dir that already holds a run is refused rather
        than overwritten. A resumed run restores the checkpoint's weights, optimizer moments, counters, RNG states and
        loader order, but follows the config it is given for optimizer hyper-parameters and schedules (each
        difference is logged); other classes or another class order are refused.
        """
        lock = WorkDirLock(self.work_dir) if self.dist.is_main else None
        with lock or contextlib.nullcontext():
            startup = [lock.taken_over] if lock is not None and lock.taken_over else []
            if self.dist.is_main:
                removed = remove_stale_temp_files(self.work_dir)
                if removed:
                    names = ", ".join(path.name for path in removed)
                    startup.append(f"removed {len(removed)} temporary file(s) left by a killed write: {names}")
            return self._train(startup)

    def _train(self, startup: list[str]) -> dict[str, float]:
        """``train()`` holding the work dir; ``startup``: what taking the work dir over did, for the log."""
        notes: list[str] = []  # what resuming changes
        train_cfg = self.settings.train_cfg
        resume = self.cfg.get("resume")
        if resume is None:
            refuse_to_overwrite(self.work_dir, self.run_logger)
        resume_from = resolve_resume(resume, self.work_dir)
        checkpoint = read_training_checkpoint(resume_from, self.device) if resume_from is not None else None
        if checkpoint is not None:
            done = finished(checkpoint, train_cfg, self.settings.early_stopping)
            if done:
                logger.info("%s: the run is already finished (%s); nothing to train", resume_from, done)
                last_val = (checkpoint.get("history") or {}).get("val") or [{}]
                return {k: float(v) for k, v in last_val[-1].items() if k != "epoch"}
        train_loader = self.build_dataloader("train_dataloader", train=True)
        max_epochs, max_iters = train_cfg["max_epochs"], train_cfg["max_iters"]
        if max_iters is not None:  # iteration-based recipes (DSOD): whole epochs, the last one cut at max_iters
            max_epochs = max(1, math.ceil(max_iters / max(1, len(train_loader))))
        has_val = self.settings.has_val
        if not has_val and self.settings.checkpoint["monitor"] is not None:
            monitor = self.settings.checkpoint["monitor"]
            logger.warning("no val_dataloader: checkpoint.monitor=%r is never evaluated", monitor)
        val_loader = self.build_dataloader("val_dataloader", train=False) if has_val else None
        val_evaluator = self.build_evaluator("val_evaluator") if has_val else None
        train_set, val_set = source(train_loader), source(val_loader) if val_loader is not None else None
        self.dataset_meta = apply_dataset_meta(self.task, train_set, val_set, val_evaluator)
        if self.cfg.get("check_datasets", True):
            for dataset in (train_set, val_set):
                if dataset is not None:
                    dataset.check(channels=self.task.input_channels())
        self.task.on_train_start(train_set)

        if resume_from is None and self.cfg.get("load_from"):
            self._load_initial_weights(Path(self.cfg["load_from"]))
        self.acceleration = acceleration.TrainingAcceleration.from_train_cfg(self.settings.train_cfg)
        startup += self.acceleration.apply(self.task)
        self.optim_wrapper = build_optim_wrapper(self.task, _section_or_fail(self.cfg, "optim_wrapper"), self.device)
        self.param_schedulers = ParamSchedulers(self.optim_wrapper.optimizer, self.cfg.get("param_scheduler"))
        if checkpoint is not None:
            notes += self._resume(checkpoint, resume_from, len(train_loader))
        loss_model: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]] = self.task.loss
        if distributed.is_distributed():
            loss_model = DistributedDataParallel(
                _LossForward(self.task), device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.dist.is_main:
            self._dump_config()
        if resume is not None:  # records after the checkpoint belong to the interrupted run that is now superseded
            dropped = self.run_logger.discard_after(self.progress.iteration)
            if dropped:
                notes.append(
                    f"dropped {dropped} record(s) after step {self.progress.iteration} from {METRICS_FILE}: they came "
                    "from the interrupted part of the run, which is trained again now"
                )
        loop = TrainLoop(
            task=self.task, loss_model=loss_model, optim_wrapper=self.optim_wrapper,
            param_schedulers=self.param_schedulers, settings=self.settings, dist=self.dist,
            run_logger=self.run_logger, work_dir=self.work_dir, progress=self.progress,
            loader_generator=self._loader_generator, max_iters=max_iters, save=self._save_checkpoints,
            fresh_start=checkpoint is None and not self.cfg.get("load_from"), acceleration=self.acceleration,
        )  # fmt: skip
        with self.run_logger:
            self._describe_run(train_loader, val_loader, max_epochs, max_iters)
            if checkpoint is not None:
                logger.info(
                    "resumed from %s at epoch %d, iteration %d",
                    resume_from, self.progress.epoch, self.progress.iteration,
                )  # fmt: skip
                restore_rng_state(checkpoint["rng"])  # last, so nothing after it draws numbers a straight run would not
            elif resume == "auto":
                logger.info("resume='auto': no %s in %s, starting from scratch", LAST_CHECKPOINT, self.work_dir)
            for note in startup:
                logger.info("%s", note)
            for note in notes:
                logger.info("resume: %s", note)
            return loop.run(train_loader, val_loader, val_evaluator, max_epochs)

    def _describe_run(
        self, train_loader: DataLoader, val_loader: DataLoader | None, max_epochs: int, max_iters: int | None
    ) -> None:
        """What a reader of the log needs to compare runs: data splits, the effective batch, the training length and
        the task's own settings (a detector's score threshold)."""
        assert self.optim_wrapper is not None
        per_process, accumulate = train_loader.batch_size or 1, self.optim_wrapper.accumulate_steps
        logger.info(
            "training on %s; effective batch %d = %d per process x %d process(es) x %d accumulation step(s)",
            describe_dataset(source(train_loader), self.cfg["train_dataloader"]["dataset"]),
            per_process * self.dist.world_size * accumulate,
            per_process,
            self.dist.world_size,
            accumulate,
        )
        length = f"{max_iters} iterations" if max_iters else f"{max_epochs} epochs"
        logger.info("training length: %s (%d batches per epoch)", length, len(train_loader))
        if val_loader is not None:
            val_cfg = self.cfg["val_dataloader"]["dataset"]
            logger.info("evaluating on %s", describe_dataset(source(val_loader), val_cfg))
        described = self.task.describe()
        if described:
            logger.info("%s", described)

    def _load_initial_weights(self, path: Path) -> None:
        """``load_from``: start from another run's weights (fine-tuning); optimizer, schedule and epochs start anew."""
        if not path.is_file():
            raise CheckpointError(
                f"load_from checkpoint not found: {path} (train the config it comes from first, or fix load_from)"
            )
        meta = load_model_weights(self.task, path).get("meta", {})
        logger.info("initial weights from %s (epoch %s)", path, meta.get("epoch", "?"))

    # --------------------------------------------------------------------------------------------------- evaluation

    def test(self, checkpoint: str | os.PathLike | None = None, *, precision: str = "fp32") -> dict[str, Any]:
        """Evaluate ``test_dataloader`` with ``test_evaluator`` (weights from ``checkpoint`` when given), the forward in
        ``precision`` (``'fp32'``, ``'bf16'``, ``'fp16'``; see ``densevision.precision``).

        Returns the metrics after a ``checkpoint`` entry naming the weights tested (``None``: the task as built). The
        evaluator stays on ``self.test_evaluator`` for its ``summary_table()``.
        """
        dtype = autocast_dtype(precision, self.device, what="precision")
        loader = self.build_dataloader("test_dataloader", train=False)
        self.test_evaluator = self.build_evaluator("test_evaluator")
        self.dataset_meta = apply_dataset_meta(self.task, source(loader), None, self.test_evaluator)
        with self.run_logger:
            logger.info("test output (run.log, %s, %s/test) goes to %s", METRICS_FILE, PREDICTIONS_DIR, self.work_dir)
            logger.info("testing on %s", describe_dataset(source(loader), self.cfg["test_dataloader"]["dataset"]))
            described = self.task.describe()
            if described:
                logger.info("%s", described)
            if checkpoint is not None:
                meta = load_model_weights(self.task, checkpoint).get("meta", {})
                logger.info("testing %s (epoch %s)", checkpoint, meta.get("epoch", "?"))
            if dtype is not None:
                logger.info("testing in %s autocast on %s (metrics in float32)", precision, self.device.type)
            for note in acceleration.TrainingAcceleration.from_train_cfg(self.settings.train_cfg).apply(self.task):
                logger.info("test: %s (train_cfg)", note)  # compiled in place: the weights loaded above stay
            metrics = evaluate(
                self.task,
                loader,
                self.test_evaluator,
                dist=self.dist,
                num_samples=int(self.settings.visualization["num_samples"]),
                samples_dir=self.work_dir / PREDICTIONS_DIR / "test",
                dtype=dtype,
            )
            self.run_logger.log({"mode": "test", "checkpoint": str(checkpoint), "precision": precision, **metrics})
        return {"checkpoint": None if checkpoint is None else str(checkpoint), **metrics}

    def evaluate(self, loader: DataLoader, evaluator: Any, *, dtype: torch.dtype | None = None) -> dict[str, float]:
        """The task's metrics on another loader, after ``test`` (an evaluator's report over more splits)."""
        return evaluate(self.task, loader, evaluator, dist=self.dist, dtype=dtype)

    # -------------------------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly as an uninterrupted one (tensors and primitives only)."""
        assert self.optim_wrapper is not None and self.param_schedulers is not None
        progress = self.progress
        return {
            "meta": {
                "epoch": progress.epoch,
                "iteration": progress.iteration,
                "world_size": self.dist.world_size,
                "dataset_meta": self.dataset_meta,  # predictors read classes and palette from here
            },
            "state_dict": self.task.state_dict(),
            "optim_wrapper": self.optim_wrapper.state_dict(),
            "config": plain(self.cfg),  # what the run was trained with: a resume logs what its config changes
            "best": dict(progress.best),
            "early_stopping": dict(progress.early_stopping),
            "history": {k: list(v) for k, v in progress.history.items()},
            "rng": capture_rng_state(),
        }

    def _save_checkpoints(self, improved: bool) -> None:
        if not self.dist.is_main:
            return
        state = self.state_dict()
        save_checkpoint(state, self.work_dir / LAST_CHECKPOINT)
        if improved:
            save_checkpoint(state, self.work_dir / BEST_CHECKPOINT)
            best = self.progress.best
            logger.info(
                "new best %s %.4f at epoch %d -> %s",
                self.settings.checkpoint["monitor"], best["metric"], best["epoch"], self.work_dir / BEST_CHECKPOINT,
            )  # fmt: skip

    def _resume(self, checkpoint: Mapping[str, Any], path: Path, iters_per_epoch: int) -> list[str]:
        """Restore model, optimizer moments and counters from ``checkpoint``, with the optimizer hyper-parameters and
        schedules of this config (the caller restores RNG states just before the loop). Returns what to log: each
        config value and hyper-parameter that differs from the checkpoint's."""
        assert self.optim_wrapper is not None and self.param_schedulers is not None
        check_same_classes(checkpoint, self.dataset_meta.get("classes"), path)
        apply_model_weights(self.task, checkpoint, path)
        saved = checkpoint.get("config") or {}
        kind = (saved.get("optim_wrapper") or {}).get("optimizer", {}).get("type")
        wanted = plain(self.cfg["optim_wrapper"]["optimizer"].get("type"))
        if kind is not None and kind != wanted:
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with optimizer {kind}, the config asks for {wanted}; "
                "resuming keeps the optimizer's state, so the type must stay (start from its weights with load_from)"
            )
        self.progress.restore(checkpoint)
        self.param_schedulers.fast_forward(
            epochs=self.progress.epoch, iterations=self.progress.iteration, iters_per_epoch=iters_per_epoch
        )
        try:
            changed = self.optim_wrapper.load_state_dict(checkpoint["optim_wrapper"])
        except ValueError as err:  # torch: another number or size of parameter groups
            raise CheckpointError(
                f"cannot resume from {path}: its optimizer state does not fit the model's parameter groups ({err}); "
                "was optim_wrapper.paramwise changed?"
            ) from err
        return config_changes(saved, plain(self.cfg)) + changed

    def _dump_config(self) -> None:
        try:
            self.cfg.dump(self.work_dir / CONFIG_FILE)
        except ConfigError as err:  # values built in code (classes) have no config-file spelling
            logger.warning("config not written to %s: %s", self.work_dir / CONFIG_FILE, err)


def _section_or_fail(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = cfg.get(name)
    if not isinstance(section, Mapping):
        raise ConfigError(f"config has no {name} dict (see configs/_base_/default_runtime.py)")
    return section


def _register_components() -> None:
    """Import the packages whose modules fill TASKS, DATASETS and METRICS."""
    import densevision.data  # noqa: F401
    import densevision.evaluation  # noqa: F401
    import densevision.models  # noqa: F401

"""The training loop that knows no task: it builds what the config names, feeds batches to ``task.loss`` and
``task.predict``, and leaves what a loss or a metric means to the task and the metric.

Config keys, with their defaults, are documented in configs/_base_/default_runtime.py.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from densevision.config import Config
from densevision.data.checks import DatasetError
from densevision.engine import acceleration, distributed
from densevision.engine.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    apply_model_weights,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
)
from densevision.engine.errors import CheckpointError, NonFiniteLossError, WorkDirError
from densevision.engine.logging import METRICS_FILE, RunLogger, progress_bar
from densevision.engine.optim import OptimWrapper, ParamSchedulers, build_optim_wrapper, check_keys
from densevision.engine.visualize import plot_curves, save_prediction_samples
from densevision.precision import autocast_dtype, autocast_forward
from densevision.registry import DATASETS, METRICS, TASKS, ConfigError

__all__ = ["Runner", "seed_everything", "prepare_work_dir", "to_device", "ShardSampler"]

logger = logging.getLogger("densevision")

LOADER_KEYS = ("batch_size", "num_workers", "shuffle", "pin_memory", "drop_last", "persistent_workers", "dataset")
TRAIN_CFG_DEFAULTS = {
    "max_epochs": None,
    "max_iters": None,
    "val_interval": 1,
    "skip_bad_samples": False,
    **acceleration.TRAIN_CFG_DEFAULTS,
}
CHECKPOINT_DEFAULTS = {"monitor": None, "mode": "max"}
EARLY_STOPPING_DEFAULTS = {"monitor": None, "patience": None, "mode": "max", "min_delta": 0.0}
VISUALIZATION_DEFAULTS = {"num_samples": 4}
CONFIG_FILE = "config.py"
CURVES_FILE = "curves.png"
PREDICTIONS_DIR = "predictions"
CHECKPOINT_KEYS = ("meta", "state_dict", "optim_wrapper", "rng")
SKIPPED_SHOWN = 3  # bad samples named in an epoch's log line; the rest are counted


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


def _seed_worker(worker_id: int, *, rank: int) -> None:
    """Per-worker and per-rank seeds for augmentations drawn from Python's and NumPy's generators.

    torch already gives each worker ``base_seed + worker_id``; mixing in the rank keeps two processes from drawing the
    same augmentations, and NumPy/Python follow torch instead of inheriting one state from the parent process.
    """
    seed = int(np.random.SeedSequence([torch.initial_seed(), rank]).generate_state(1)[0])
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def prepare_work_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and prove it writable now, rather than failing at the first checkpoint an epoch later."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise WorkDirError(f"work dir {path} is not writable: {err.strerror or err}") from err
    return path


def to_device(value: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (also inside lists and dicts, e.g. detection boxes) to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class ShardSampler(Sampler[int]):
    """Evaluation order split across processes without padding (``DistributedSampler`` repeats samples to even out
    the shards, which would count them twice in a metric); metrics sum their states across processes."""

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _LossForward(nn.Module):
    """Routes ``forward`` to ``task.loss``, so DistributedDataParallel's forward hooks (gradient sync) run for it."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.loss(batch)


class _Guarded(NamedTuple):
    """What a loader worker hands back: a sample (or a batch), the bad samples skipped for it, or the DatasetError
    message that stops the run."""

    data: Any
    skipped: list[str]
    error: str | None


class _GuardedDataset(Dataset):
    """Catches a sample's ``DatasetError`` where it is raised, often in a loader worker, so that the main process
    raises it with its own one-line message instead of torch's worker traceback; with ``skip``, a bad sample is
    replaced by the next good one in index order (the same replacement in every run)."""

    def __init__(self, dataset: Dataset, *, skip: bool) -> None:
        self.dataset = dataset
        self.skip = skip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> _Guarded:
        skipped: list[str] = []
        for offset in range(len(self.dataset)):
            try:
                return _Guarded(self.dataset[(index + offset) % len(self.dataset)], skipped, None)
            except DatasetError as err:
                message = " ".join(str(err).split())
                if not self.skip:
                    return _Guarded(None, [], message)
                skipped.append(message)
        return _Guarded(None, [], f"every sample of the dataset failed to load; the first: {skipped[0]}")


def _guarded_collate(items: list[_Guarded], *, collate: Callable[[list[Any]], Any]) -> _Guarded:
    """The batch of the samples, with the bad ones skipped for them; or the first sample's error."""
    for item in items:
        if item.error is not None:
            return item
    return _Guarded(collate([item.data for item in items]), [name for item in items for name in item.skipped], None)


def _source(loader: DataLoader) -> Any:
    """The config's dataset behind a loader built by ``Runner.build_dataloader``."""
    return loader.dataset.dataset


def _section(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg[name]`` over ``defaults``, rejecting keys the runner does not read."""
    given = cfg.get(name) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{name} must be a dict, got {given!r}")
    check_keys(given, list(defaults), name)
    return {**defaults, **given}


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _check_mode(section: Mapping[str, Any], name: str) -> None:
    if section["mode"] not in ("max", "min"):
        raise ConfigError(f"{name}.mode must be 'max' or 'min', got {section['mode']!r}")


def _monitored(metrics: Mapping[str, float], key: str, section: str) -> float:
    if key not in metrics:
        raise ConfigError(f"{section}.monitor={key!r} is not among the evaluator's metrics {sorted(metrics)}")
    return float(metrics[key])


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
        self.dist = distributed.init_distributed(self.cfg.get("launcher", "none"), self.cfg.get("device"))
        self.device = self.dist.device
        if not self.dist.is_main:
            logger.setLevel(logging.WARNING)  # one process reports progress; the others speak only of problems
        self.work_dir = Path(self.cfg["work_dir"])
        prepare_work_dir(self.work_dir)  # on every rank: a barrier would hang the others if rank 0 failed here
        self.seed = int(self.cfg.get("seed", 0))
        seed_everything(self.seed, deterministic=bool(self.cfg.get("deterministic", False)))
        self.run_logger = RunLogger(self.work_dir, enabled=self.dist.is_main)
        self.log_interval = int(self.cfg.get("log_interval", 10))
        self.train_cfg = _section(self.cfg, "train_cfg", TRAIN_CFG_DEFAULTS)
        self.checkpoint_cfg = _section(self.cfg, "checkpoint", CHECKPOINT_DEFAULTS)
        _check_mode(self.checkpoint_cfg, "checkpoint")
        self.early_stopping_cfg = (
            _section(self.cfg, "early_stopping", EARLY_STOPPING_DEFAULTS) if self.cfg.get("early_stopping") else None
        )
        if self.early_stopping_cfg is not None:
            _check_mode(self.early_stopping_cfg, "early_stopping")
            patience = self.early_stopping_cfg["patience"]
            if self.early_stopping_cfg["monitor"] is None or not isinstance(patience, int) or patience < 1:
                given = dict(self.cfg["early_stopping"])
                raise ConfigError(f"early_stopping needs a monitor and a patience >= 1, got {given}")
        self.visualization_cfg = _section(self.cfg, "visualization", VISUALIZATION_DEFAULTS)

        if "model" not in self.cfg:
            raise ConfigError("config has no 'model' (a task from TASKS, e.g. dict(type='Segmentor', model=...))")
        self.task: nn.Module = TASKS.build(self.cfg["model"]).to(self.device)
        if self.cfg.get("sync_bn", False):
            self.task, converted = distributed.convert_sync_batchnorm(self.task, self.device)
            if not converted:
                logger.info("sync_bn ignored: SyncBatchNorm needs several CUDA processes (device: %s)", self.device)

        self.epoch = 0  # completed epochs
        self.iteration = 0  # completed training iterations (batches)
        self.best: dict[str, Any] = {"metric": None, "epoch": None}
        self.early_stopping: dict[str, Any] = {"best": None, "bad_evaluations": 0}
        self.history: dict[str, list[dict[str, float]]] = {"train": [], "val": []}
        self.optim_wrapper: OptimWrapper | None = None
        self.param_schedulers: ParamSchedulers | None = None
        self.test_evaluator: Any = None
        self.dataset_meta: dict[str, Any] = {}
        self.max_iters: int | None = None
        self._loader_generator = torch.Generator()
        self._skipped: list[str] = []  # bad samples replaced in the current epoch (train_cfg.skip_bad_samples)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> Runner:
        return cls(cfg)

    # ----------------------------------------------------------------------------------------------------- building

    def build_dataloader(self, name: str, *, train: bool) -> DataLoader:
        """``cfg[name]`` -> DataLoader; ``batch_size`` is per process (the global batch is batch_size × processes).

        The loader yields ``_Guarded`` batches (``_unpack`` opens them): a sample's ``DatasetError`` stops the run
        with its own message, or, for training with ``train_cfg.skip_bad_samples``, the sample is replaced.
        """
        section = self.cfg.get(name)
        if not isinstance(section, Mapping) or "dataset" not in section:
            example = f"{name} = dict(batch_size=4, dataset=dict(type=...))"
            raise ConfigError(f"config has no {name} with a dataset, e.g. {example}")
        check_keys(section, LOADER_KEYS, name)
        dataset = _GuardedDataset(
            DATASETS.build(section["dataset"]), skip=train and bool(self.train_cfg["skip_bad_samples"])
        )
        rank, world_size = self.dist.rank, self.dist.world_size
        sampler: Sampler[int]
        if train:
            # Shuffled from seed + epoch (set_epoch), so a resumed run sees the order an uninterrupted one would.
            sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=bool(section.get("shuffle", True)), seed=self.seed
            )
        else:
            sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size)
        num_workers = int(section.get("num_workers", 0))
        from densevision.data import collate

        return DataLoader(
            dataset,
            batch_size=int(section.get("batch_size", 1)),
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=functools.partial(_guarded_collate, collate=collate),
            pin_memory=bool(section.get("pin_memory", True)) and self.device.type == "cuda",
            drop_last=bool(section.get("drop_last", False)) if train else False,
            persistent_workers=bool(section.get("persistent_workers", False)) and num_workers > 0,
            worker_init_fn=functools.partial(_seed_worker, rank=rank),
            generator=self._loader_generator,
        )

    def build_evaluator(self, name: str) -> Any:
        section = self.cfg.get(name)
        if not isinstance(section, Mapping):
            raise ConfigError(f"config has no {name}, e.g. {name} = dict(type='SegmentationMetric', ...)")
        return METRICS.build(section)

    # ------------------------------------------------------------------------------------------------------ training

    def train(self) -> dict[str, float]:
        """Train for ``train_cfg.max_epochs`` or ``max_iters`` batches (or until early stopping); returns the last
        validation metrics.

        Without ``resume``, a work dir that already holds a run is refused rather than overwritten. A resumed run
        restores the checkpoint's weights, optimizer moments, counters, RNG states and loader order, but follows the
        config it is given for optimizer hyper-parameters and schedules (each difference is logged).
        """
        max_epochs, max_iters = self.train_cfg["max_epochs"], self.train_cfg["max_iters"]
        if (max_epochs is None) == (max_iters is None):
            raise ConfigError(
                f"train_cfg needs exactly one of max_epochs and max_iters, got max_epochs={max_epochs!r}, "
                f"max_iters={max_iters!r} (set the other to None)"
            )
        for key, value in (("max_epochs", max_epochs), ("max_iters", max_iters)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"train_cfg.{key} must be a positive integer, got {value!r}")
        val_interval = self.train_cfg["val_interval"]
        if not isinstance(val_interval, int) or val_interval < 1:
            raise ConfigError(f"train_cfg.val_interval must be a positive integer, got {val_interval!r}")
        resume = self.cfg.get("resume")
        if resume is None:
            self._refuse_to_overwrite()
        resume_from = resolve_resume(resume, self.work_dir)
        checkpoint = self._read_training_checkpoint(resume_from) if resume_from is not None else None
        if checkpoint is not None:
            finished = self._finished(checkpoint)
            if finished:
                logger.info("%s: the run is already finished (%s); nothing to train", resume_from, finished)
                last_val = (checkpoint.get("history") or {}).get("val") or [{}]
                return {k: float(v) for k, v in last_val[-1].items() if k != "epoch"}
        train_loader = self.build_dataloader("train_dataloader", train=True)
        if max_iters is not None:  # iteration-based recipes (DSOD): whole epochs, the last one cut at max_iters
            self.max_iters = max_iters
            max_epochs = max(1, math.ceil(max_iters / max(1, len(train_loader))))
        has_val = self.cfg.get("val_dataloader") is not None
        if not has_val and self.early_stopping_cfg is not None:
            raise ConfigError("early_stopping needs validation: set val_dataloader and val_evaluator")
        if not has_val and self.checkpoint_cfg["monitor"] is not None:
            logger.warning(
                "no val_dataloader: checkpoint.monitor=%r is never evaluated", self.checkpoint_cfg["monitor"]
            )
        val_loader = self.build_dataloader("val_dataloader", train=False) if has_val else None
        val_evaluator = self.build_evaluator("val_evaluator") if has_val else None
        train_set, val_set = _source(train_loader), _source(val_loader) if val_loader is not None else None
        self.dataset_meta = self._apply_dataset_meta(train_set, val_set, val_evaluator)
        if self.cfg.get("check_datasets", True):
            in_chans = getattr(getattr(self.task, "model", None), "in_chans", None)
            for dataset in (train_set, val_set):
                if dataset is not None and hasattr(dataset, "check"):
                    accepts = "channels" in inspect.signature(dataset.check).parameters
                    dataset.check(channels=in_chans) if accepts and isinstance(in_chans, int) else dataset.check()
        if hasattr(self.task, "on_train_start"):
            self.task.on_train_start(train_set)

        if resume_from is None and self.cfg.get("load_from"):
            self._load_initial_weights(Path(self.cfg["load_from"]))
        self.acceleration = acceleration.TrainingAcceleration.from_train_cfg(self.train_cfg)
        self.acceleration.apply(self.task)
        self.optim_wrapper = build_optim_wrapper(self.task, _section_or_fail(self.cfg, "optim_wrapper"), self.device)
        self.param_schedulers = ParamSchedulers(self.optim_wrapper.optimizer, self.cfg.get("param_scheduler"))
        resume_notes = self._resume(checkpoint, resume_from, len(train_loader)) if checkpoint is not None else []
        loss_model: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]] = self.task.loss
        if distributed.is_distributed():
            loss_model = DistributedDataParallel(
                _LossForward(self.task), device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.dist.is_main:
            self._dump_config()
        if resume is not None:  # records after the checkpoint belong to the interrupted run that is now superseded
            dropped = self.run_logger.discard_after(self.iteration)
            if dropped:
                resume_notes.append(
                    f"dropped {dropped} record(s) after step {self.iteration} from {METRICS_FILE}: they came from the "
                    "interrupted part of the run, which is trained again now"
                )

        metrics: dict[str, float] = {}
        with self.run_logger:
            self._describe_run(train_loader, val_loader, max_epochs)
            if checkpoint is not None:
                logger.info("resumed from %s at epoch %d, iteration %d", resume_from, self.epoch, self.iteration)
                restore_rng_state(checkpoint["rng"])  # last, so nothing after it draws numbers a straight run would not
            elif resume == "auto":
                logger.info("resume='auto': no %s in %s, starting from scratch", LAST_CHECKPOINT, self.work_dir)
            for note in resume_notes:
                logger.info("resume: %s", note)
            for epoch in range(self.epoch, max_epochs):
                mean_loss = self._train_epoch(train_loader, loss_model, epoch, max_epochs)
                self.history["train"].append({"epoch": epoch + 1, "loss": mean_loss})
                last = epoch + 1 == max_epochs or (self.max_iters is not None and self.iteration >= self.max_iters)
                evaluate = val_loader is not None and ((epoch + 1) % val_interval == 0 or last)
                improved = stop = False
                if evaluate:
                    metrics = self._validate(val_loader, val_evaluator, epoch)
                    improved, stop = self._track_progress(metrics, epoch)
                self.epoch = epoch + 1
                self._save_checkpoints(improved)
                if self.dist.is_main:
                    _draw(CURVES_FILE, plot_curves, self.history, self.work_dir / CURVES_FILE, self._monitored_names())
                if stop or last:
                    break
        return metrics

    def _refuse_to_overwrite(self) -> None:
        """A fresh start in a work dir that holds a run would replace its checkpoints and mix its log: refuse."""
        found = [name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT) if (self.work_dir / name).is_file()]
        if self.run_logger.has_training_records():
            found.append(METRICS_FILE)
        if found:
            raise WorkDirError(
                f"{self.work_dir} already holds a run ({', '.join(found)}); nothing was overwritten: continue it with "
                "--resume (resume='auto'), or train from scratch into a new --work-dir (work_dir)"
            )

    def _read_training_checkpoint(self, path: Path) -> dict[str, Any]:
        checkpoint = load_checkpoint(path, map_location=self.device)
        missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
        if missing:
            raise CheckpointError(
                f"cannot resume from {path}: not a training checkpoint (no {', '.join(missing)}); "
                "start from its weights with load_from instead"
            )
        return checkpoint

    def _finished(self, checkpoint: Mapping[str, Any]) -> str:
        """Why the checkpoint's run needs no more training under this config ('' when it does)."""
        epoch, iteration = int(checkpoint["meta"]["epoch"]), int(checkpoint["meta"]["iteration"])
        max_epochs, max_iters = self.train_cfg["max_epochs"], self.train_cfg["max_iters"]
        if max_epochs is not None and epoch >= max_epochs:
            return f"epoch {epoch} of train_cfg.max_epochs={max_epochs}; raise max_epochs to train longer"
        if max_iters is not None and iteration >= max_iters:
            return f"iteration {iteration} of train_cfg.max_iters={max_iters}; raise max_iters to train longer"
        stopping, state = self.early_stopping_cfg, checkpoint.get("early_stopping") or {}
        if stopping is not None and int(state.get("bad_evaluations", 0)) >= stopping["patience"]:
            return (
                f"early stopping ended it at epoch {epoch}: {stopping['monitor']} did not improve for "
                f"{stopping['patience']} evaluations; raise early_stopping.patience to train longer"
            )
        return ""

    def _describe_run(self, train_loader: DataLoader, val_loader: DataLoader | None, max_epochs: int) -> None:
        """What a reader of the log needs to compare runs: data splits, the effective batch, the training length and
        the task's own settings (a detector's score threshold)."""
        assert self.optim_wrapper is not None
        per_process, accumulate = train_loader.batch_size or 1, self.optim_wrapper.accumulate_steps
        logger.info(
            "training on %s; effective batch %d = %d per process x %d process(es) x %d accumulation step(s)",
            _describe_dataset(_source(train_loader)),
            per_process * self.dist.world_size * accumulate,
            per_process,
            self.dist.world_size,
            accumulate,
        )
        length = f"{self.max_iters} iterations" if self.max_iters else f"{max_epochs} epochs"
        logger.info("training length: %s (%d batches per epoch)", length, len(train_loader))
        if val_loader is not None:
            logger.info("evaluating on %s", _describe_dataset(_source(val_loader)))
        describe = getattr(self.task, "describe", None)
        if callable(describe):
            logger.info("%s", describe())

    def _apply_dataset_meta(self, dataset: Any, other: Any, evaluator: Any) -> dict[str, Any]:
        """Hand the dataset's metainfo (classes, palette, void label) to the task and the metric, after checking that
        they agree with it: a 12-class model on 11-class data must fail here, not as a silent wrong metric."""
        meta = dict(getattr(dataset, "metainfo", None) or {})
        name = type(dataset).__name__
        if other is not None:
            other_meta = getattr(other, "metainfo", None) or {}
            if "classes" in meta and tuple(other_meta.get("classes", meta["classes"])) != tuple(meta["classes"]):
                raise ConfigError(
                    f"the training dataset ({name}) has classes {list(meta['classes'])} but the evaluation dataset "
                    f"({type(other).__name__}) has {list(other_meta['classes'])}"
                )
        classes = meta.get("classes")
        if classes is not None:
            predicted = getattr(self.task, "num_classes", None)
            if predicted is not None and predicted != len(classes):
                raise ConfigError(
                    f"the model predicts {predicted} classes but {name} has {len(classes)}: {list(classes)} "
                    f"(set the network's num_classes to {len(classes)})"
                )
        void = meta.get("ignore_index")
        if void is not None:
            loss = getattr(self.task, "loss_fn", None)
            owners = [("model", self.task)] + ([("model.loss", m) for m in loss.modules()] if loss is not None else [])
            for where, owner in owners:
                value = getattr(owner, "ignore_index", None)
                if value is not None and value != void:
                    raise ConfigError(
                        f"{where} ignores label {value} but {name} marks void pixels with {void} "
                        f"(set model.ignore_index={void} and drop ignore_index from the loss)"
                    )
        self.task.dataset_meta = meta
        if evaluator is not None:
            evaluator.dataset_meta = meta  # a metric fills unset class names and counts from it, or refuses it
            counted = getattr(evaluator, "num_classes", None)
            if classes is not None and counted is not None and counted != len(classes):
                raise ConfigError(
                    f"{type(evaluator).__name__} counts {counted} classes but {name} has {len(classes)}: "
                    f"{list(classes)} (drop num_classes from the evaluator: it follows the dataset)"
                )
        return meta

    def _load_initial_weights(self, path: Path) -> None:
        """``load_from``: start from another run's weights (fine-tuning); optimizer, schedule and epochs start anew."""
        if not path.is_file():
            raise CheckpointError(
                f"load_from checkpoint not found: {path} (train the config it comes from first, or fix load_from)"
            )
        meta = load_model_weights(self.task, path).get("meta", {})
        logger.info("initial weights from %s (epoch %s)", path, meta.get("epoch", "?"))

    def _train_epoch(
        self, loader: DataLoader, loss_model: Callable[..., dict[str, torch.Tensor]], epoch: int, max_epochs: int
    ) -> float:
        assert self.optim_wrapper is not None and self.param_schedulers is not None
        optim, schedulers = self.optim_wrapper, self.param_schedulers
        self.task.train()
        loader.sampler.set_epoch(epoch)
        self._loader_generator.manual_seed(self.seed + epoch)
        schedulers.before_epoch(epoch)
        num_iters = len(loader)
        if self.max_iters is not None:  # the last epoch of an iteration-based run stops at max_iters
            num_iters = min(num_iters, self.max_iters - self.iteration)
        if num_iters <= 0:
            raise ConfigError(
                f"train_dataloader yields no batches ({len(loader.dataset)} samples, batch_size {loader.batch_size}, "
                f"{self.dist.world_size} process(es), drop_last={loader.drop_last})"
            )
        total_loss = 0.0
        started = time.perf_counter()
        bar = progress_bar(loader, total=num_iters, desc=f"epoch {epoch + 1}/{max_epochs}", enabled=self.dist.is_main)
        self._skipped = []
        for index, loaded in enumerate(bar):
            if index == num_iters:
                break
            schedulers.before_iter(self.iteration)
            lr = optim.lr
            batch = self.acceleration.prepare_batch(to_device(self._unpack(loaded), self.device))
            stepping = optim.should_step(index, num_iters)
            no_sync = isinstance(loss_model, DistributedDataParallel) and not stepping
            with loss_model.no_sync() if no_sync else contextlib.nullcontext():
                with optim.autocast(self.task):
                    losses = loss_model(batch)
                if "loss" not in losses:
                    raise TypeError(f"{type(self.task).__name__}.loss() must return a dict with a 'loss' entry")
                logged = self._reduce_losses(losses)
                if not math.isfinite(logged["loss"]):
                    raise NonFiniteLossError(
                        f"loss is {logged['loss']} at epoch {epoch + 1}, iteration {index + 1}/{num_iters} "
                        f"(global iteration {self.iteration + 1}); training stopped{self._how_to_go_on()}"
                    )
                optim.backward(losses["loss"], group_size=optim.group_size(index, num_iters))
            grad_norm = optim.step() if stepping else None
            schedulers.after_iter(self.iteration)
            self.iteration += 1
            total_loss += logged["loss"]
            bar.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{lr:.3g}", refresh=False)
            if self.iteration % self.log_interval == 0:
                record = {"mode": "train", "epoch": epoch + 1, "iter": index + 1, "step": self.iteration, "lr": lr}
                record.update(logged)
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                self.run_logger.log(record)
        schedulers.after_epoch(epoch)
        mean_loss = total_loss / num_iters
        seconds = time.perf_counter() - started
        record = {"mode": "train_epoch", "epoch": epoch + 1, "step": self.iteration, "loss": mean_loss, "time": seconds}
        if self.train_cfg["skip_bad_samples"]:
            record["skipped"] = len(set(self._skipped))
        self.run_logger.log(record)
        logger.info("epoch %d/%d: mean loss %.4f, %.1f s", epoch + 1, max_epochs, mean_loss, seconds)
        self._report_skipped(epoch)
        return mean_loss

    def _unpack(self, loaded: _Guarded) -> Any:
        """A loader's batch; a sample's DatasetError is raised here, in the main process, with its own message."""
        if loaded.error is not None:
            raise DatasetError(loaded.error)
        self._skipped.extend(loaded.skipped)
        return loaded.data

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

    @staticmethod
    def _reduce_losses(losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """All loss entries averaged over processes in one collective; every rank then sees the same NaN."""
        device = losses["loss"].device
        values = torch.stack([torch.as_tensor(v, device=device).detach().float().mean() for v in losses.values()])
        return dict(zip(losses, distributed.all_reduce_mean(values).tolist()))

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
        samples_dir = self.work_dir / PREDICTIONS_DIR / f"epoch_{epoch + 1:03d}"
        assert self.optim_wrapper is not None
        metrics = self.evaluate(loader, evaluator, samples_dir=samples_dir, dtype=self.optim_wrapper.amp_dtype)
        self.history["val"].append({"epoch": epoch + 1, **metrics})
        self.run_logger.log({"mode": "val", "epoch": epoch + 1, "step": self.iteration, **metrics})
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
        logger.info("epoch %d validation: %s", epoch + 1, summary)
        return metrics

    def _monitored_names(self) -> list[str]:
        names = [self.checkpoint_cfg["monitor"]]
        if self.early_stopping_cfg is not None:
            names.append(self.early_stopping_cfg["monitor"])
        return list(dict.fromkeys(name for name in names if name is not None))

    def _track_progress(self, metrics: Mapping[str, float], epoch: int) -> tuple[bool, bool]:
        """Update the best metric and the early-stopping count; returns (new best, stop now)."""
        improved = False
        monitor = self.checkpoint_cfg["monitor"]
        if monitor is not None:
            value = _monitored(metrics, monitor, "checkpoint")
            if _better(value, self.best["metric"], self.checkpoint_cfg["mode"]):
                self.best = {"metric": value, "epoch": epoch + 1}
                improved = True
        stopping = self.early_stopping_cfg
        if stopping is None:
            return improved, False
        value = _monitored(metrics, stopping["monitor"], "early_stopping")
        if _better(value, self.early_stopping["best"], stopping["mode"], float(stopping["min_delta"])):
            self.early_stopping = {"best": value, "bad_evaluations": 0}
            return improved, False
        self.early_stopping["bad_evaluations"] += 1
        if self.early_stopping["bad_evaluations"] < stopping["patience"]:
            return improved, False
        logger.info(
            "early stopping after epoch %d: %s has not improved on %.4f for %d evaluations",
            epoch + 1,
            stopping["monitor"],
            self.early_stopping["best"],
            stopping["patience"],
        )
        return improved, True

    # --------------------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(
        self, loader: DataLoader, evaluator: Any, *, samples_dir: Path | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, float]:
        """Predict every batch, feed the metric, sum its state over processes and compute it.

        The first ``visualization.num_samples`` images are drawn into ``samples_dir`` (main process only). ``dtype``:
        the task's forward runs under autocast to it (validation follows the training precision), the metric in float32.
        """
        self.task.eval()
        evaluator.reset()
        wanted = int(self.visualization_cfg["num_samples"]) if samples_dir is not None and self.dist.is_main else 0
        samples: list[tuple[torch.Tensor, dict[str, Any], dict[str, Any]]] = []
        bar = progress_bar(loader, total=len(loader), desc="evaluate", enabled=self.dist.is_main, leave=False)
        for loaded in bar:
            batch = to_device(self._unpack(loaded), self.device)
            with autocast_forward(self.task, dtype, self.device.type):
                predictions = self.task.predict(batch)
            evaluator.update(predictions, batch)
            for index in range(min(wanted - len(samples), len(predictions))):
                prediction = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in predictions[index].items()}
                samples.append((batch["image"][index].cpu(), prediction, _sample_targets(batch, index)))
        evaluator.sync()
        metrics = {k: float(v) for k, v in evaluator.compute().items()}
        if samples and samples_dir is not None:
            meta = getattr(_source(loader), "metainfo", None) or {}
            _draw(
                f"sample predictions in {samples_dir}",
                save_prediction_samples,
                samples,
                samples_dir,
                drawer=getattr(self.task, "draw", None),  # each task draws its own samples
                palette=meta.get("palette"),
                classes=meta.get("classes"),
            )
        return metrics

    def test(self, checkpoint: str | os.PathLike | None = None, *, precision: str = "fp32") -> dict[str, float]:
        """Evaluate ``test_dataloader`` with ``test_evaluator`` (weights from ``checkpoint`` when given), the forward in
        ``precision`` (``'fp32'``, ``'bf16'``, ``'fp16'``; see ``densevision.precision``).

        The evaluator stays on ``self.test_evaluator`` for its ``summary_table()``.
        """
        dtype = autocast_dtype(precision, self.device, what="precision")
        loader = self.build_dataloader("test_dataloader", train=False)
        self.test_evaluator = self.build_evaluator("test_evaluator")
        self.dataset_meta = self._apply_dataset_meta(_source(loader), None, self.test_evaluator)
        with self.run_logger:
            logger.info("testing on %s", _describe_dataset(_source(loader)))
            describe = getattr(self.task, "describe", None)
            if callable(describe):
                logger.info("%s", describe())
            if checkpoint is not None:
                meta = load_model_weights(self.task, checkpoint).get("meta", {})
                logger.info("testing %s (epoch %s)", checkpoint, meta.get("epoch", "?"))
            if dtype is not None:
                logger.info("testing in %s autocast on %s (metrics in float32)", precision, self.device.type)
            samples_dir = self.work_dir / PREDICTIONS_DIR / "test"
            metrics = self.evaluate(loader, self.test_evaluator, samples_dir=samples_dir, dtype=dtype)
            self.run_logger.log({"mode": "test", "checkpoint": str(checkpoint), "precision": precision, **metrics})
        return metrics

    # -------------------------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly as an uninterrupted one (tensors and primitives only)."""
        assert self.optim_wrapper is not None and self.param_schedulers is not None
        return {
            "meta": {
                "epoch": self.epoch,
                "iteration": self.iteration,
                "world_size": self.dist.world_size,
                "dataset_meta": self.dataset_meta,  # predictors read classes and palette from here
            },
            "state_dict": self.task.state_dict(),
            "optim_wrapper": self.optim_wrapper.state_dict(),
            "config": _plain(self.cfg),  # what the run was trained with: a resume logs what its config changes
            "best": dict(self.best),
            "early_stopping": dict(self.early_stopping),
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": capture_rng_state(),
        }

    def _save_checkpoints(self, improved: bool) -> None:
        if not self.dist.is_main:
            return
        state = self.state_dict()
        save_checkpoint(state, self.work_dir / LAST_CHECKPOINT)
        if improved:
            save_checkpoint(state, self.work_dir / BEST_CHECKPOINT)
            logger.info(
                "new best %s %.4f at epoch %d -> %s",
                self.checkpoint_cfg["monitor"],
                self.best["metric"],
                self.best["epoch"],
                self.work_dir / BEST_CHECKPOINT,
            )

    def _resume(self, checkpoint: Mapping[str, Any], path: Path, iters_per_epoch: int) -> list[str]:
        """Restore model, optimizer moments and counters from ``checkpoint``, with the optimizer hyper-parameters and
        schedules of this config (the caller restores RNG states just before the loop). Returns what to log: each
        config value and hyper-parameter that differs from the checkpoint's."""
        assert self.optim_wrapper is not None and self.param_schedulers is not None
        apply_model_weights(self.task, checkpoint, path)
        saved = checkpoint.get("config") or {}
        kind = (saved.get("optim_wrapper") or {}).get("optimizer", {}).get("type")
        wanted = _plain(self.cfg["optim_wrapper"]["optimizer"].get("type"))
        if kind is not None and kind != wanted:
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with optimizer {kind}, the config asks for {wanted}; "
                "resuming keeps the optimizer's state, so the type must stay (start from its weights with load_from)"
            )
        self.epoch = int(checkpoint["meta"]["epoch"])
        self.iteration = int(checkpoint["meta"]["iteration"])
        self.param_schedulers.fast_forward(
            epochs=self.epoch, iterations=self.iteration, iters_per_epoch=iters_per_epoch
        )
        try:
            changed = self.optim_wrapper.load_state_dict(checkpoint["optim_wrapper"])
        except ValueError as err:  # torch: another number or size of parameter groups
            raise CheckpointError(
                f"cannot resume from {path}: its optimizer state does not fit the model's parameter groups ({err}); "
                "was optim_wrapper.paramwise changed?"
            ) from err
        self.best = dict(checkpoint.get("best", self.best))
        self.early_stopping = dict(checkpoint.get("early_stopping", self.early_stopping))
        self.history = {k: list(v) for k, v in checkpoint.get("history", self.history).items()}
        return _config_changes(saved, _plain(self.cfg)) + changed

    def _dump_config(self) -> None:
        try:
            self.cfg.dump(self.work_dir / CONFIG_FILE)
        except ConfigError as err:  # values built in code (classes) have no config-file spelling
            logger.warning("config not written to %s: %s", self.work_dir / CONFIG_FILE, err)


def _describe_dataset(dataset: Any) -> str:
    """A dataset's own description (split, years, size) when it offers one, else its type and size."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return str(describe())
    return f"{len(dataset)} samples ({type(dataset).__name__})"


def _draw(what: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Pictures are for people: a failure to draw one is a warning, never the end of a run."""
    try:
        draw(*args, **kwargs)
    except Exception as err:
        logger.warning("could not draw %s: %s: %s", what, type(err).__name__, err)


def _plain(value: Any) -> Any:
    """A config as dicts, lists, tuples and scalars (classes and functions by name): what ``weights_only`` loads."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if type(value) in (list, tuple) else [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    name = getattr(value, "__qualname__", None)
    return f"{value.__module__}.{name}" if name is not None else repr(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (``optim_wrapper.optimizer.lr``, ``param_scheduler.0.gamma``) of nested dicts and of lists that
    hold dicts; other lists are values."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
        items = list(enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


_UNSET = "unset"
_NOT_COMPARED = ("resume",)  # how this run was started, not what it trains with


def _config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per config value that differs from the checkpoint's (none for checkpoints without a config)."""
    if not saved:
        return []
    before, after = _flatten(saved), _flatten(current)
    changes = []
    for key in dict.fromkeys([*before, *after]):
        if key.split(".")[0] in _NOT_COMPARED:
            continue
        old, new = before.get(key, _UNSET), after.get(key, _UNSET)
        if old != new:
            changes.append(f"{key} is {new!r} now (the checkpoint ran with {old!r})")
    return changes


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

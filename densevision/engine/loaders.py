"""Data loaders for the runner: per-rank sampling and seeding, and bad samples caught where they are read.

A sample's ``DatasetError`` is caught in the loader worker and handed back as data, so the main process raises it
with its own one-line message (or, with ``train_cfg.skip_bad_samples``, replaces the sample) instead of torch's worker
traceback.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from densevision.contracts import DenseDataset, Task, require_dataset
from densevision.data.checks import DatasetError
from densevision.engine.distributed import DistContext
from densevision.engine.optim import check_keys
from densevision.registry import DATASETS, ConfigError

__all__ = [
    "ShardSampler",
    "apply_dataset_meta",
    "build_dataloader",
    "describe_dataset",
    "source",
    "to_device",
    "unpack",
    "Guarded",
    "GuardedDataset",
]

LOADER_KEYS = ("batch_size", "num_workers", "shuffle", "pin_memory", "drop_last", "persistent_workers", "dataset")


def seed_worker(worker_id: int, *, rank: int) -> None:
    """Per-worker and per-rank seeds for augmentations drawn from Python's and NumPy's generators.

    torch already gives each worker ``base_seed + worker_id``; mixing in the rank keeps two processes from drawing the
    same augmentations, and NumPy/Python follow torch instead of inheriting one state from the parent process.
    """
    seed = int(np.random.SeedSequence([torch.initial_seed(), rank]).generate_state(1)[0])
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


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


class Guarded(NamedTuple):
    """What a loader worker hands back: a sample (or a batch), the bad samples skipped for it, or the DatasetError
    message that stops the run."""

    data: Any
    skipped: list[str]
    error: str | None


class GuardedDataset(Dataset):
    """Catches a sample's ``DatasetError`` where it is raised, often in a loader worker; with ``skip``, a bad sample
    is replaced by the next good one in index order (the same replacement in every run)."""

    def __init__(self, dataset: DenseDataset, *, skip: bool) -> None:
        self.dataset = dataset
        self.skip = skip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Guarded:
        skipped: list[str] = []
        for offset in range(len(self.dataset)):
            try:
                return Guarded(self.dataset[(index + offset) % len(self.dataset)], skipped, None)
            except DatasetError as err:
                message = " ".join(str(err).split())
                if not self.skip:
                    return Guarded(None, [], message)
                skipped.append(message)
        return Guarded(None, [], f"every sample of the dataset failed to load; the first: {skipped[0]}")


def guarded_collate(items: list[Guarded], *, collate: Callable[[list[Any]], Any]) -> Guarded:
    """The batch of the samples, with the bad ones skipped for them; or the first sample's error."""
    for item in items:
        if item.error is not None:
            return item
    return Guarded(collate([item.data for item in items]), [name for item in items for name in item.skipped], None)


def unpack(loaded: Guarded, skipped: list[str] | None = None) -> Any:
    """A loader's batch; a sample's DatasetError is raised here, in the main process, with its own message. The
    samples skipped for the batch are added to ``skipped``."""
    if loaded.error is not None:
        raise DatasetError(loaded.error)
    if skipped is not None:
        skipped.extend(loaded.skipped)
    return loaded.data


def source(loader: DataLoader) -> DenseDataset:
    """The config's dataset behind a loader built by ``build_dataloader``."""
    return loader.dataset.dataset


def build_dataloader(
    cfg: Mapping[str, Any],
    name: str,
    *,
    train: bool,
    skip_bad_samples: bool,
    dist: DistContext,
    seed: int,
    generator: torch.Generator,
) -> DataLoader:
    """``cfg[name]`` -> DataLoader of ``Guarded`` batches; ``batch_size`` is per process (the global batch is
    batch_size × processes). Training shuffles from ``seed`` + epoch (``set_epoch``), so a resumed run sees the order
    an uninterrupted one would."""
    section = cfg.get(name)
    if not isinstance(section, Mapping) or "dataset" not in section:
        example = f"{name} = dict(batch_size=4, dataset=dict(type=...))"
        raise ConfigError(f"config has no {name} with a dataset, e.g. {example}")
    check_keys(section, LOADER_KEYS, name)
    built = require_dataset(DATASETS.build(section["dataset"]), f"{name}.dataset")
    dataset = GuardedDataset(built, skip=train and skip_bad_samples)
    sampler: Sampler[int]
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=bool(section.get("shuffle", True)), seed=seed
        )
    else:
        sampler = ShardSampler(len(dataset), rank=dist.rank, world_size=dist.world_size)
    num_workers = int(section.get("num_workers", 0))
    from densevision.data import collate

    return DataLoader(
        dataset,
        batch_size=int(section.get("batch_size", 1)),
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(guarded_collate, collate=collate),
        pin_memory=bool(section.get("pin_memory", True)) and dist.device.type == "cuda",
        drop_last=bool(section.get("drop_last", False)) if train else False,
        persistent_workers=bool(section.get("persistent_workers", False)) and num_workers > 0,
        worker_init_fn=functools.partial(seed_worker, rank=dist.rank),
        generator=generator,
    )


def describe_dataset(dataset: DenseDataset, dataset_cfg: Any) -> str:
    """The dataset's own description after its type and the config's arguments that say which files and split it
    reads (scalars and lists of scalars; pipelines and nested dicts are left out)."""
    arguments = []
    if isinstance(dataset_cfg, Mapping):
        for key, value in dataset_cfg.items():
            scalars = value if isinstance(value, (list, tuple)) else [value]
            if key != "type" and all(isinstance(v, (str, int, float, bool)) or v is None for v in scalars):
                arguments.append(f"{key}={value!r}")
    return f"{type(dataset).__name__}({', '.join(arguments)}): {dataset.describe()}"


def apply_dataset_meta(task: Task, dataset: DenseDataset, other: DenseDataset | None, evaluator: Any) -> dict[str, Any]:
    """Hand the dataset's metainfo (classes, palette, void label) to the task and the metric, after checking that
    they agree with it: a 12-class model on 11-class data must fail here, not as a silent wrong metric."""
    meta = dict(dataset.metainfo or {})
    name = type(dataset).__name__
    if other is not None:
        other_meta = other.metainfo or {}
        if "classes" in meta and tuple(other_meta.get("classes", meta["classes"])) != tuple(meta["classes"]):
            raise ConfigError(
                f"the training dataset ({name}) has classes {list(meta['classes'])} but the evaluation dataset "
                f"({type(other).__name__}) has {list(other_meta['classes'])}"
            )
    classes = meta.get("classes")
    predicted = task.num_classes
    if classes is not None and predicted is not None and predicted != len(classes):
        raise ConfigError(
            f"the model predicts {predicted} classes but {name} has {len(classes)}: {list(classes)} "
            f"(set the network's num_classes to {len(classes)})"
        )
    void = meta.get("ignore_index")
    for where, value in task.void_labels() if void is not None else []:
        if value != void:
            raise ConfigError(
                f"{where} ignores label {value} but {name} marks void pixels with {void} "
                f"(set model.ignore_index={void} and drop ignore_index from the loss)"
            )
    task.dataset_meta = meta
    if evaluator is not None:
        evaluator.dataset_meta = meta  # a metric fills unset class names and counts from it, or refuses it
        counted = getattr(evaluator, "num_classes", None)
        if classes is not None and counted is not None and counted != len(classes):
            raise ConfigError(
                f"{type(evaluator).__name__} counts {counted} classes but {name} has {len(classes)}: "
                f"{list(classes)} (drop num_classes from the evaluator: it follows the dataset)"
            )
    return meta

"""The metric interface every task's evaluator implements, and its cross-process reduction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from densevision.registry import ConfigError


class Metric:
    """Accumulates over a split, then reports: ``reset()``, ``update(preds, batch)``, ``compute() -> dict``.

    State that adds up across processes (confusion matrices, correct counts) lives in tensors named by
    ``sum_states``; the default ``sync`` all-reduces them, so most metrics never write distributed code. State that
    does not add up (per-image detections for a ranking metric) lives in lists named by ``gather_states``, one
    picklable record per image; ``sync`` gathers them onto every process in dataset order. A name may be a dotted path
    (``'confusion.matrix'``) when the state lives on a helper object the metric holds.

    ``dataset_meta`` is the evaluated dataset's ``metainfo`` (``{"classes": ..., "category_ids": ...}``), set by the
    runner before evaluation; metrics that need class names or dataset ids read them from it when their config does
    not name them.
    """

    sum_states: tuple[str, ...] = ()
    gather_states: tuple[str, ...] = ()
    dataset_meta: dict[str, Any] | None = None
    # Splits besides test that ``test_report`` needs, each evaluated (in every process) by a fresh test evaluator.
    report_splits: tuple[str, ...] = ()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def summary_table(self) -> str:
        """A human-readable table of the last ``compute`` (per-class where the metric has classes)."""
        return "\n".join(f"{key:>24s}  {value:.4f}" for key, value in self.compute().items())

    def test_report(self, *, task: Any, splits: dict[str, Metric], out_dir: Path) -> str | None:
        """tools/test.py's hook for a report beyond ``compute`` (an early-exit classifier's budget sweep), called on the
        main process after the test split, with the evaluated ``report_splits``: writes its files into ``out_dir``
        (the metrics JSON's folder) and returns text to show. None: nothing to add."""
        return None

    def sync(self) -> None:
        """Sum ``sum_states`` and gather ``gather_states`` over all processes (no-op with one process).

        Call it once per ``reset``: a second call would gather the already gathered records again.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        for name in self.sum_states:
            owner, leaf = self._state_owner(name)
            state = getattr(owner, leaf)
            reduced = state.to(device) if device is not None else state.clone()
            dist.all_reduce(reduced)
            setattr(owner, leaf, reduced.to(state.device))
        for name in self.gather_states:
            owner, leaf = self._state_owner(name)
            shards: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(shards, list(getattr(owner, leaf)))
            setattr(owner, leaf, interleave(shards))

    def _state_owner(self, name: str) -> tuple[Any, str]:
        """The object holding the state ``name`` (a dotted path from the metric) and the attribute's own name."""
        *parents, leaf = name.split(".")
        owner = self
        for parent in parents:
            owner = getattr(owner, parent)
        return owner, leaf


class PerClassMetric(Metric):
    """A metric over a dataset's label classes whose count, names and void label follow the dataset's ``metainfo``
    where the evaluator's config leaves them unset, so configs never repeat them. Subclasses extend ``_configure``
    for their own per-class state."""

    def __init__(self, num_classes: int | None, ignore_index: int | None, class_names: Sequence[str] | None) -> None:
        self._dataset_meta: dict[str, Any] | None = None
        self._configure(num_classes, ignore_index, class_names)

    def _configure(self, num_classes: int | None, ignore_index: int | None, class_names: Sequence[str] | None) -> None:
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names for num_classes={num_classes}: {class_names}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def dataset_meta(self) -> dict[str, Any] | None:
        """The dataset's metainfo (set by the runner): fills the class count, names and void label left unset."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta: dict[str, Any] | None) -> None:
        self._dataset_meta = meta
        if not meta or "classes" not in meta:
            return
        classes = list(meta["classes"])
        if self.num_classes is not None and self.num_classes != len(classes):
            raise ConfigError(
                f"{type(self).__name__} has num_classes={self.num_classes} but the dataset has {len(classes)} "
                f"classes {classes}; drop num_classes from the evaluator (it follows the dataset)"
            )
        names = self.class_names if self.class_names is not None else classes
        self._configure(len(classes), meta.get("ignore_index", self.ignore_index), names)


def interleave(shards: list[list[Any]]) -> list[Any]:
    """Per-process record lists merged back into dataset order: ``shards[0][0], shards[1][0], ..., shards[0][1], ...``.

    The runner's evaluation sampler (``ShardSampler``) gives rank r the dataset indices r, r + w, r + 2w, ..., so
    taking one record from each rank in turn restores the order a single process sees, and with it the tie-breaking of
    order-dependent metrics (equal detection scores), without requiring records to carry their dataset index.
    """
    merged: list[Any] = []
    for position in range(max((len(shard) for shard in shards), default=0)):
        merged.extend(shard[position] for shard in shards if position < len(shard))
    return merged

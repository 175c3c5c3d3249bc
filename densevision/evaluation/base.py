"""The metric interface every task's evaluator implements, and its cross-process reduction."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


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

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def summary_table(self) -> str:
        """A human-readable table of the last ``compute`` (per-class where the metric has classes)."""
        return "\n".join(f"{key:>24s}  {value:.4f}" for key, value in self.compute().items())

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

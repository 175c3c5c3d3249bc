"""The metric interface every task's evaluator implements, and its cross-process reduction."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class Metric:
    """Accumulates over a split, then reports: ``reset()``, ``update(preds, batch)``, ``compute() -> dict``.

    State that adds up across processes (confusion matrices, correct counts) lives in tensors named by
    ``sum_states``; the default ``sync`` all-reduces them, so most metrics never write distributed code. A name may be
    a dotted path (``'confusion.matrix'``) when the tensor lives on a helper object the metric holds.
    """

    sum_states: tuple[str, ...] = ()

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
        """Sum ``sum_states`` over all processes (no-op outside torch.distributed or with one process)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        for name in self.sum_states:
            *parents, leaf = name.split(".")
            owner = self
            for parent in parents:
                owner = getattr(owner, parent)
            state = getattr(owner, leaf)
            reduced = state.to(device) if device is not None else state.clone()
            dist.all_reduce(reduced)
            setattr(owner, leaf, reduced.to(state.device))

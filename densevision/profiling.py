"""Measuring what autograd keeps: the training-memory figure that is the same on every machine.

Peak CUDA memory needs a GPU and varies with the allocator; the bytes autograd saves for backward do not, so tests and
``tools/benchmark.py`` on CPU use them to compare plain and memory-efficient dense blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["saved_tensor_bytes"]


def saved_tensor_bytes(run: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``run()`` executes (views counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())

"""What a training step costs that is the same on every machine: the bytes autograd keeps, the operators it runs.

Peak CUDA memory needs a GPU and varies with the allocator; the bytes autograd saves for backward do not, so tests and
``tools/benchmark.py`` on CPU use them to compare plain and memory-efficient dense blocks. Likewise a step's GPU time
is bound by launches when its kernels are small, and the operators it dispatches, counted on the ``meta`` device (the
CUDA code path, no kernels run), say how many launches it asks for without a GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["dispatched_operators", "saved_tensor_bytes"]


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


# Operators that allocate without writing: no kernel runs for them (views are recognised by ``OpOverload.is_view``).
_ALLOCATIONS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})


class _OperatorCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        # operators that return no tensor (torch.promote_types) run on the host only
        if not func.is_view and name not in _ALLOCATIONS and any(map(_is_tensor, _pytree.tree_leaves(out))):
            self.counts[name] += 1
        return out


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def dispatched_operators(run: Callable[[], object]) -> Counter[str]:
    """The ATen operators that compute (not views, not bare allocations) ``run()`` dispatches, forward and backward,
    by name: about one kernel launch each on a GPU."""
    counter = _OperatorCounter()
    with counter:
        run()
    return counter.counts

"""Process groups from torchrun's environment, and the few collectives the runner needs.

Everything here is a no-op (or the identity) in a single process, so the runner calls it unconditionally and one code
path serves 1 and N processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from densevision.registry import ConfigError

__all__ = [
    "DistContext",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "all_reduce_mean",
    "convert_sync_batchnorm",
    "shutdown_distributed",
]

LAUNCHERS = ("none", "pytorch")
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` processes and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(launcher: str = "none", device: str | None = None) -> DistContext:
    """Join the process group that torchrun describes in the environment (``launcher='pytorch'``), or run alone.

    NCCL when the processes compute on CUDA, gloo on CPU. ``device`` (``'cpu'``, ``'cuda'``) overrides the automatic
    choice; with CUDA, each process takes the GPU of its local rank.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launcher == "pytorch" else 0
    try:
        chosen = _default_device(local_rank) if device is None else torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from err
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available")
        if chosen.index is None:
            chosen = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(chosen)
    if launcher == "none":
        return DistContext(rank=0, world_size=1, local_rank=0, device=chosen)
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ConfigError(
            f"launcher 'pytorch' expects torchrun's environment variables, missing {', '.join(missing)}; "
            "start with `torchrun --nproc_per_node N tools/train.py ...`"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=chosen)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Only the main process writes files (checkpoints, logs, plots)."""
    return get_rank() == 0


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """The mean of ``value`` over all processes, as a detached float64 CPU tensor (for logged losses)."""
    tensor = torch.as_tensor(value).detach().to(torch.float64)
    if not is_distributed():
        return tensor.cpu()
    reduced = tensor.to(_collective_device())
    dist.all_reduce(reduced)
    return (reduced / dist.get_world_size()).cpu()


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> tuple[nn.Module, bool]:
    """BatchNorm -> SyncBatchNorm when several CUDA processes train; returns the model and whether it converted.

    SyncBatchNorm has no CPU kernel, so on CPU the model is left as it is (the caller logs why).
    """
    if not is_distributed() or device.type != "cuda":
        return model, False
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), True


def shutdown_distributed() -> None:
    """Leave the process group (if one was joined), so torchrun sees a clean exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

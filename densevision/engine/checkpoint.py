"""Checkpoints that survive crashes and load with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file beside its target, flushed and fsynced, then renamed over it, so a crash
or a full disk mid-write leaves the previous checkpoint as it was. Everything stored is tensors and primitives (RNG
states included), so loading never unpickles code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densevision.engine.errors import CheckpointError

__all__ = [
    "LAST_CHECKPOINT",
    "BEST_CHECKPOINT",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_resume",
    "capture_rng_state",
    "restore_rng_state",
    "load_model_weights",
    "apply_model_weights",
]

LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); other systems have no directory handles to sync."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically; on any failure the old file is untouched and no temp file remains."""
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as file:
            torch.save(dict(state), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_directory(path.parent)
    except Exception as err:
        raise CheckpointError(f"could not write checkpoint {path}: {type(err).__name__}: {err}") from err
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive
_PICKLE_MAGIC = b"\x80"  # the legacy format (``_use_new_zipfile_serialization=False``) starts with a pickle


def _loads_safely(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _other_checkpoints(path: Path) -> str:
    """Where to go when ``path`` cannot be loaded: the checkpoints beside it that load safely (``weights_only``),
    best.pth first, then newest; at most three."""
    others = [p for p in path.parent.glob("*.pth") if p.name != path.name and p.is_file() and zipfile.is_zipfile(p)]
    others.sort(key=lambda p: (p.name != BEST_CHECKPOINT, -p.stat().st_mtime))
    safe = [p for p in others[:_CANDIDATES] if _loads_safely(p)][:3]
    if not safe:
        return ""
    return f"; checkpoints beside it that load safely: {', '.join(str(p) for p in safe)}"


_CANDIDATES = 6  # files beside a bad checkpoint tried as alternatives (each is read in full)
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(err: Exception) -> str:
    """The first line of a loading error, whole (torch's messages go on for paragraphs), without terminal colours."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, empty, truncated or foreign file is a CheckpointError
    naming it (and, for a damaged one, the other checkpoints beside it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as file:
        head = file.read(len(_ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes){_other_checkpoints(path)}")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r}; expected a .pth file written by torch.save, "
            "such as tools/train.py's last.pth or best.pth)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"checkpoint {path} is truncated ({path.stat().st_size} bytes, the end of the archive is missing)"
                f"{_other_checkpoints(path)}"
            ) from err
        unsafe = _UNSUPPORTED_GLOBAL.search(str(err)) if isinstance(err, pickle.UnpicklingError) else None
        if unsafe is not None:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that safe loading (torch.load with weights_only=True) "
                f"refuses, the first being {unsafe.group(1).rstrip('.')}; loading it could run code from the file, "
                "so it is not loaded (densevision checkpoints hold only tensors and plain values: re-save the "
                f"weights of a file you trust with torch.save(model.state_dict(), ...)){_other_checkpoints(path)}"
            ) from err
        raise CheckpointError(f"could not read checkpoint {path}: {_reason(err)}{_other_checkpoints(path)}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def resolve_resume(resume: str | os.PathLike | None, work_dir: str | os.PathLike) -> Path | None:
    """``None`` -> no resume; ``'auto'`` -> ``work_dir/last.pth`` if it exists (else a fresh start); a path -> that
    file, which must exist."""
    if resume is None:
        return None
    if str(resume) == "auto":
        last = Path(work_dir) / LAST_CHECKPOINT
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"checkpoint to resume from not found: {path}")
    return path


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch and CUDA generator states, as tensors and primitives."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng_state``. CUDA states are restored when the device count matches."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _model_state(checkpoint: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The model's weights from a training checkpoint (``state_dict`` key) or a bare state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no model weights (no 'state_dict' of tensors)")
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_model_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; mismatched keys raise a CheckpointError listing a few of them.

    Returns the whole checkpoint (its ``meta`` says which epoch the weights come from).
    """
    path = Path(path)
    checkpoint = load_checkpoint(path)
    apply_model_weights(model, checkpoint, path, strict=strict)
    return checkpoint


def apply_model_weights(
    model: nn.Module, checkpoint: Mapping[str, Any], path: str | os.PathLike, *, strict: bool = True
) -> None:
    """Put an already loaded checkpoint's weights into ``model``; a checkpoint of another architecture is a
    CheckpointError naming ``path`` and a few of the mismatched keys."""
    path = Path(path)
    weights = _model_state(checkpoint, path)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches raise even when not strict
        details = "; ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise CheckpointError(f"checkpoint {path} does not fit the model: {details}") from err
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} keys (e.g. {', '.join(result.unexpected_keys[:3])})")
    if strict and problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}")

"""How a predictor runs a task's forward: PyTorch (eager or compiled, channels_last, mixed precision) or onnxruntime.

``torch``: the task itself, prepared in place — its network compiled (``torch.compile``) when asked, its weights and
inputs in channels_last memory format (by default on CPU, where it measured faster for DenseNet-121 and FC-DenseNet;
``tools/benchmark.py``), and its forward under autocast for ``bf16``/``fp16`` (``densevision.precision``), outputs
float32. Because the task itself is prepared, ``task.predict`` takes the same path.

Both backends run what the task exports (``export.exported_forward``: logits, or a detector's decoded boxes and class
probabilities); the task's post-processing (a detector's per-class NMS) follows in torch on either.

``onnxruntime``: the task exported to ONNX by ``densevision.export`` (dynamic batch, height and width), checked against
PyTorch at another, odd size, and run by onnxruntime on the CPU in float32 with as many threads as torch uses. The
export is cached beside the checkpoint as ``<checkpoint name>.<key>.onnx``, the key being a SHA-256 of the
checkpoint's bytes, the model config and the torch version: an unchanged checkpoint is never exported twice, a
rewritten one (a new ``best.pth``) is exported again and its stale export removed. Where the checkpoint's folder is
not writable the export lives in a temporary file for the run.

``auto`` picks the fastest path that is exact in float32, as measured on CPU: onnxruntime when it is installed, the
device is the CPU, the precision is fp32, no compilation is asked for and the export check passes; otherwise torch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densevision.export import (
    INPUT_NAME,
    ExportError,
    export_and_check,
    exported_forward,
    output_names,
    trace_size,
)
from densevision.precision import PRECISIONS, add_autocast_hooks, autocast_dtype
from densevision.registry import ConfigError

__all__ = [
    "BACKENDS",
    "EXPORT_SIZE",
    "CHECK_SIZE",
    "OnnxRuntimeForward",
    "onnx_cache_file",
    "prepare_forward",
]

logger = logging.getLogger("densevision")

BACKENDS = ("auto", "torch", "onnxruntime")
EXPORT_SIZE = (64, 64)  # the size the ONNX export traces at (batch 2: torch.export specialises a batch of 1)
CHECK_SIZE = (83, 109)  # checked at another batch and an odd size: a graph that only holds at the export size fails
_CACHE_KEY = re.compile(r"\.[0-9a-f]{16}\.onnx$")

Forward = Callable[[Tensor], Any]


def onnx_cache_file(checkpoint: str | os.PathLike, model_cfg: Any) -> Path:
    """Where the onnxruntime backend keeps the export of ``checkpoint`` for ``model_cfg`` (the config's ``model``):
    beside the checkpoint, named after a SHA-256 of its bytes, the model config and the torch version."""
    path = Path(checkpoint)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(json.dumps(model_cfg, sort_keys=True, default=repr).encode())
    digest.update(torch.__version__.encode())
    return path.with_name(f"{path.name}.{digest.hexdigest()[:16]}.onnx")


class OnnxRuntimeForward:
    """A task's exported forward run by onnxruntime on the CPU: N×C×H×W float32 images in, the task's outputs out
    (float32 tensors on the images' device; one tensor when the task has one output)."""

    def __init__(self, path: str | os.PathLike, *, outputs: tuple[str, ...], threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # The session reads the whole file now, so a temporary export may be deleted afterwards.
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = outputs
        self.threads = options.intra_op_num_threads

    def __call__(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        results = self.session.run(list(self.outputs), {INPUT_NAME: array})
        tensors = tuple(torch.from_numpy(result).to(images.device) for result in results)
        return tensors[0] if len(tensors) == 1 else tensors


def _onnxruntime_missing() -> str | None:
    """Why onnxruntime cannot run here, or ``None`` when it can."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return f"onnxruntime is not installed ({err})"
    return None


def _store(exported: Path, target: Path) -> None:
    """Copy ``exported`` to ``target`` atomically and remove older exports of the same checkpoint beside it."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(exported, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    stem = target.name[: _CACHE_KEY.search(target.name).start()]
    for stale in target.parent.glob(f"{glob.escape(stem)}.*.onnx"):
        if stale != target and _CACHE_KEY.fullmatch(stale.name[len(stem) :]):
            stale.unlink(missing_ok=True)


def _onnxruntime(
    task: nn.Module, *, onnx_file: Path | None, check_size: tuple[int, int]
) -> tuple[OnnxRuntimeForward, str]:
    """The task's forward in onnxruntime, from the cached export or a new, checked one."""
    outputs = output_names(task)
    if onnx_file is not None and onnx_file.is_file():
        forward = OnnxRuntimeForward(onnx_file, outputs=outputs)
        return forward, f"onnxruntime ({forward.threads} threads), float32, cached export {onnx_file}"
    with tempfile.TemporaryDirectory(prefix="densevision-onnx-") as folder:
        exported = Path(folder) / "model.onnx"
        size = trace_size(task, EXPORT_SIZE)
        result = export_and_check(task, exported, input_size=size, batch_size=2, check_size=check_size)
        forward = OnnxRuntimeForward(exported, outputs=outputs)
        where = "a temporary file (no checkpoint to cache it beside)"
        if onnx_file is not None:
            try:
                _store(exported, onnx_file)
                where = str(onnx_file)
            except OSError as err:
                where = f"a temporary file (cannot cache it in {onnx_file.parent}: {err.strerror or err})"
    return forward, (
        f"onnxruntime ({forward.threads} threads), float32, exported ({result.exporter} exporter; max |onnxruntime - "
        f"torch| {result.max_abs_diff:.1g} at input {result.check_shape}) to {where}"
    )


def _prepare_torch(
    task: nn.Module, *, device: torch.device, dtype: torch.dtype | None, compile: bool, channels_last: bool
) -> str:
    """Prepare ``task`` in place for torch inference; returns what it runs, for the log."""
    parts = ["torch"]
    if channels_last:
        task.to(memory_format=torch.channels_last)

        def to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(
                a.contiguous(memory_format=torch.channels_last) if isinstance(a, Tensor) and a.dim() == 4 else a
                for a in args
            )

        task.register_forward_pre_hook(to_channels_last)
    if compile:
        network = getattr(task, "model", None)
        (network if isinstance(network, nn.Module) else task).compile()
    parts.append("compiled" if compile else "eager")
    parts.append("channels_last" if channels_last else "contiguous")
    if dtype is not None:
        add_autocast_hooks(task, dtype, device.type)
        parts.append(f"{str(dtype).removeprefix('torch.')} autocast (outputs float32)")
    else:
        parts.append("float32")
    return ", ".join(parts)


def prepare_forward(
    task: nn.Module,
    *,
    device: torch.device,
    backend: str = "torch",
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool | None = None,
    onnx_file: str | os.PathLike | None = None,
    check_size: tuple[int, int] = CHECK_SIZE,
) -> tuple[Forward, str]:
    """The task's forward through ``backend`` (``'auto'``, ``'torch'``, ``'onnxruntime'``; see the module's
    docstring) and a line saying what runs, for the log. ``channels_last=None``: on CPU only. ``onnx_file``: where
    the export is cached (``onnx_cache_file``); ``check_size``: the (odd) size the export is checked at.

    For torch the task is prepared in place and its exported computation (``exported_forward``: the task itself, or
    its ``export_forward``) returned, so its ``predict`` takes the same path.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    note = ""
    if backend != "torch":
        obstacle = _onnxruntime_obstacle(
            device=device, precision=precision, compile=compile, channels_last=channels_last
        )
        if backend == "onnxruntime":
            if obstacle is not None:
                raise ConfigError(f"backend 'onnxruntime': {obstacle}")
            return _onnxruntime(task, onnx_file=_path(onnx_file), check_size=check_size)
        if obstacle is None:
            try:
                forward, description = _onnxruntime(task, onnx_file=_path(onnx_file), check_size=check_size)
                return forward, f"{description} (auto: the fastest exact path on CPU)"
            except ExportError as err:
                obstacle = f"the ONNX export failed: {err}"
        note = f" (auto: not onnxruntime, as {obstacle})"
    dtype = autocast_dtype(precision, device, what="precision")
    use_channels_last = device.type == "cpu" if channels_last is None else channels_last
    description = _prepare_torch(task, device=device, dtype=dtype, compile=compile, channels_last=use_channels_last)
    return exported_forward(task), description + note


def _onnxruntime_obstacle(
    *, device: torch.device, precision: str, compile: bool, channels_last: bool | None
) -> str | None:
    """Why onnxruntime cannot stand in for the task's forward here, or ``None`` when it can."""
    if precision != "fp32":
        return f"precision {precision!r} is for torch (onnxruntime runs float32)"
    if compile:
        return "compile is a torch option"
    if channels_last:
        return "channels_last is a torch option"
    if device.type != "cpu":
        return f"device {device} is for torch (onnxruntime runs on the CPU here)"
    return _onnxruntime_missing()


def _path(value: str | os.PathLike | None) -> Path | None:
    return Path(value) if value is not None else None

"""ONNX export of a task model's forward with dynamic batch, height and width, checked against onnxruntime.

The torch.export-based exporter (``dynamo=True``) is tried first: it records symbolic shapes, so the graph is valid
at every size by construction. Models whose Python code branches on sizes in ways it cannot express symbolically
(FC-DenseNet's crop of each transposed convolution to its skip, for one) make it fail; the TorchScript exporter then
traces the model with ``dynamic_axes`` instead. A trace fixes each branch as taken at the export size, which is why
every export is run through onnxruntime at a *different* batch and size and compared with PyTorch.

``DenseBlock`` concatenates (rather than filling its preallocated no-grad buffer) while exporting: onnxruntime ran the
buffer's slice writes 1.4x slower (DenseNet-121, batch 8 at 224x224, 2 threads: 344 against 240 ms), and exporting them
took 52 s against 22.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densevision.errors import DensevisionError

__all__ = [
    "ExportError",
    "ExportResult",
    "export_onnx",
    "check_onnx",
    "export_and_check",
    "input_channels",
    "output_names",
    "export_size",
    "trace_size",
    "exported_forward",
]

INPUT_NAME = "images"
EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_INPUT_SIZE = (224, 224)  # the traced size of tasks that take any size
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter writes opset 18 or later
TORCHSCRIPT_OPSETS = range(7, 21)  # what the TorchScript exporter writes (torch.onnx's minimum and its maximum)


def exported_forward(task: nn.Module) -> Callable[[Tensor], Any]:
    """What a task's ONNX graph computes, as a call on the task itself: its ``export_forward`` when it has one
    (detection decodes boxes there), else its ``forward``. Predictors run this on every backend, so torch and
    onnxruntime give the same outputs to the task's post-processing."""
    return getattr(task, "export_forward", task)


class _ExportForward(nn.Module):
    """The graph a task exports: its ``export_forward`` when it has one (detection decodes boxes there), else its
    ``forward``; outputs named by its ``export_outputs`` (default ``('logits',)``)."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.output_names = tuple(getattr(task, "export_outputs", ("logits",)))
        # A task whose graph only holds at one input size (SSD priors) names it; others take any height and width.
        self.fixed_size = getattr(task, "export_input_size", None)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = exported_forward(self.task)(images)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The names of the ONNX outputs ``model`` (a task) exports."""
    return _ExportForward(model).output_names


class ExportError(DensevisionError, RuntimeError):
    """The model could not be exported, or the exported graph disagrees with PyTorch; the message says which."""


@dataclass(frozen=True)
class ExportResult:
    """What ``export_and_check`` did: the file, the exporter used (and why dynamo was not), and the comparison."""

    path: Path
    exporter: str
    opset: int
    check_shape: tuple[int, ...]
    max_abs_diff: float
    fallback_reason: str | None = None


def input_channels(model: nn.Module) -> int:
    """Input bands of ``model``: its (or its ``.model``'s) ``in_chans``, else the first Conv2d's in_channels."""
    for owner in (model, getattr(model, "model", None)):
        value = getattr(owner, "in_chans", None)
        if isinstance(value, int):
            return value
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ExportError(f"cannot tell the input channels of {type(model).__name__}; pass in_chans")
    return conv.in_channels


def _prepare_output(path: Path) -> None:
    """Create the folder of ``path``, or fail before the (slow) export when ``path`` cannot be written there."""
    if path.is_dir():
        raise ExportError(f"cannot write the ONNX file {path}: it is a folder; name a file, e.g. {path / 'model.onnx'}")
    in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise ExportError(f"cannot write the ONNX file {path}: {in_the_way} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the folder of the ONNX file {path}: {err.strerror or err}") from None
    # Written and removed for real: permission bits say nothing on a read-only mount or a special filesystem, or to
    # root, and a failure there would otherwise surface later as an exporter's error.
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        probe.open("wb").close()
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as err:
        raise ExportError(f"cannot write the ONNX file {path}: {err.strerror or err}") from None
    finally:
        probe.unlink(missing_ok=True)


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _reason(err: BaseException) -> str:
    """The innermost cause of ``err`` on one line (exporters wrap the real reason in a long generic message)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _export_dynamo(model: _ExportForward, example: Tensor, path: Path, opset: int | None) -> int:
    axes = {0: "batch"} if model.fixed_size else {0: "batch", 2: "height", 3: "width"}
    # torch.export prints the partial graph to stderr when it fails; the exception keeps the reason.
    with contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=(axes,),
            input_names=[INPUT_NAME],
            output_names=list(model.output_names),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(path, external_data=False)
    return program.model.opset_imports[""]


def _export_torchscript(
    model: _ExportForward, example: Tensor, path: Path, output_dims: Sequence[int], opset: int | None
) -> int:
    spatial = not model.fixed_size
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}}
    for name, dims in zip(model.output_names, output_dims):
        axes[name] = {0: "batch", 2: "height", 3: "width"} if spatial and dims == 4 else {0: "batch"}
    opset = opset or 17
    with warnings.catch_warnings():
        # Chosen knowingly (dynamo failed), and traced size-dependence is what check_onnx looks for.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*[Ii]n-place op on output of tensor.shape.*")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(model.output_names),
            dynamic_axes=axes,
            opset_version=opset,
        )
    return opset


def export_size(model: nn.Module, input_size: Sequence[int] | None = None) -> tuple[int, int]:
    """The (height, width) ``model`` (a task) is exported at: ``input_size`` (default ``DEFAULT_INPUT_SIZE``), or the
    size the task fixes (``export_input_size``: a detector's priors); asking a fixed-size task for another is an
    ExportError rather than an export at a size nobody asked for."""
    fixed = getattr(model, "export_input_size", None)
    if fixed is None:
        height, width = input_size or DEFAULT_INPUT_SIZE
        return int(height), int(width)
    if input_size is not None and tuple(input_size) != tuple(fixed):
        raise ExportError(
            f"input size {tuple(input_size)} cannot be exported: {type(model).__name__} takes only its fixed input "
            f"size {tuple(fixed)} (its graph holds at that size alone); leave the input size out"
        )
    return int(fixed[0]), int(fixed[1])


def trace_size(model: nn.Module, preferred: Sequence[int]) -> tuple[int, int] | None:
    """The input size to ask ``export_onnx`` for when any will do (a backend's export): ``preferred`` for tasks that
    take any size, ``None`` (their own) for tasks that fix theirs."""
    return None if getattr(model, "export_input_size", None) is not None else (int(preferred[0]), int(preferred[1]))


def _check_opset(opset: int | None, exporter: str) -> str:
    """The exporter that can write ``opset`` (``auto`` goes to TorchScript below the dynamo exporter's minimum); an
    opset neither writes is an ExportError naming the ranges."""
    if opset is None:
        return exporter
    writable = {"dynamo": opset >= DYNAMO_MIN_OPSET, "torchscript": opset in TORCHSCRIPT_OPSETS}
    ranges = (
        f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, TorchScript {TORCHSCRIPT_OPSETS.start}"
        f"-{TORCHSCRIPT_OPSETS.stop - 1}"
    )
    if exporter == "auto":
        if not any(writable.values()):
            raise ExportError(f"opset {opset} cannot be exported: {ranges}")
        return "auto" if writable["dynamo"] else "torchscript"
    if not writable[exporter]:
        raise ExportError(f"opset {opset} cannot be exported by the {exporter} exporter: {ranges}")
    return exporter


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    in_chans: int | None = None,
    opset: int | None = None,
    exporter: str = "auto",
) -> tuple[str, int, str | None]:
    """Write a task's graph (N×C×H×W ``images`` -> the outputs it names, ``export_outputs``: ``logits`` by default,
    a detector's ``boxes`` and ``scores``) as ONNX with a dynamic batch, and dynamic height and width unless the task
    fixes its input size (``export_input_size``; see ``export_size``).

    ``exporter`` is ``'dynamo'``, ``'torchscript'`` or ``'auto'`` (dynamo, then TorchScript if it fails; TorchScript
    for an opset below dynamo's minimum). ``opset`` ``None`` takes the dynamo exporter's default, 17 for TorchScript;
    an opset the exporter cannot write is refused before exporting. Returns the exporter used, the opset and why
    dynamo was not used (``None`` when it was).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    chosen = _check_opset(opset, exporter)
    graph = _ExportForward(model).eval()
    height, width = export_size(model, input_size)
    in_chans = in_chans or input_channels(model)
    generator = torch.Generator().manual_seed(0)  # the caller's random state is left alone
    # torch.export specialises a dimension of size 1 to a constant, so the traced batch is at least 2.
    example = torch.randn(max(batch_size, 2), in_chans, height, width, generator=generator).to(_device(model))
    path = Path(path)
    _prepare_output(path)
    with torch.no_grad():
        output_dims = [output.dim() for output in graph(example)]
        fallback_reason = None
        if chosen != exporter:
            fallback_reason = f"opset {opset} is below the dynamo exporter's minimum {DYNAMO_MIN_OPSET}"
        if chosen in ("auto", "dynamo"):
            try:
                used = _export_dynamo(graph, example, path, opset)
            except Exception as err:  # the exporter raises many types (export guards, decompositions, onnxscript)
                _blame_the_path(err, path)
                if chosen == "dynamo":
                    raise ExportError(f"torch.export-based ONNX export failed: {_reason(err)}") from err
                fallback_reason = _reason(err)
            else:
                _check_written_opset(used, opset, "dynamo", path)
                return "dynamo", used, None
        try:
            used = _export_torchscript(graph, example, path, output_dims, opset)
        except Exception as err:
            _blame_the_path(err, path)
            raise ExportError(f"TorchScript ONNX export failed: {_reason(err)}") from err
        _check_written_opset(used, opset, "torchscript", path)
        return "torchscript", used, fallback_reason


def _blame_the_path(err: BaseException, path: Path) -> None:
    """An exporter failing to write ``path`` is the path's fault: say so rather than quote the exporter."""
    while err.__cause__ is not None and not isinstance(err, OSError):
        err = err.__cause__
    if isinstance(err, OSError) and err.errno is not None:
        raise ExportError(f"cannot write the ONNX file {path}: {err.strerror or err}") from err


def _check_written_opset(written: int, asked: int | None, exporter: str, path: Path) -> None:
    if asked is not None and written != asked:
        path.unlink(missing_ok=True)
        raise ExportError(f"asked for opset {asked} but the {exporter} exporter wrote opset {written}")


def check_onnx(
    model: nn.Module, path: str | os.PathLike, *, input_shape: Sequence[int], atol: float = 1e-4, seed: int = 0
) -> float:
    """Run the ONNX file with onnxruntime and ``model`` (a task) with PyTorch on one random ``input_shape`` input;
    return the largest absolute difference over its outputs, raising ExportError when a shape differs or the
    difference exceeds ``atol``."""
    import onnxruntime

    graph = _ExportForward(model).eval()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(*input_shape, generator=generator)
    with torch.no_grad():
        expected = [output.float().cpu().numpy() for output in graph(images.to(_device(model)))]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        actual = session.run(list(graph.output_names), {INPUT_NAME: images.numpy()})
    except Exception as err:  # onnxruntime raises its own exception types for shape errors
        raise ExportError(f"onnxruntime could not run {path} on an input of shape {tuple(input_shape)}: {err}") from err
    diff = 0.0
    for name, got, want in zip(graph.output_names, actual, expected):
        if got.shape != want.shape:
            raise ExportError(
                f"{path} gives {name} of shape {got.shape} for input {tuple(input_shape)}; PyTorch gives {want.shape}"
            )
        diff = max(diff, float(np.abs(got - want).max()) if want.size else 0.0)
    if not diff <= atol:
        raise ExportError(
            f"{path} differs from PyTorch by up to {diff:.3g} (tolerance {atol:g}) at input shape {tuple(input_shape)}"
        )
    return diff


def export_and_check(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    check_size: Sequence[int] | None = None,
    check_batch_size: int | None = None,
    in_chans: int | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    atol: float = 1e-4,
) -> ExportResult:
    """``export_onnx``, then ``check_onnx`` at another batch and size (default: one image more than the traced batch,
    32 pixels more each way unless the task fixes its size), so a graph that only works at the export size is caught
    here rather than in deployment."""
    in_chans = in_chans or input_channels(model)
    used, opset_used, reason = export_onnx(
        model, path, input_size=input_size, batch_size=batch_size, in_chans=in_chans, opset=opset, exporter=exporter
    )
    fixed = getattr(model, "export_input_size", None)
    exported = export_size(model, input_size)
    height, width = fixed or check_size or (exported[0] + 32, exported[1] + 32)
    shape = (check_batch_size or max(batch_size, 2) + 1, in_chans, height, width)
    diff = check_onnx(model, path, input_shape=shape, atol=atol)
    return ExportResult(Path(path), used, opset_used, shape, diff, reason)

"""Time training steps and inference of densevision models against reference implementations, side by side.

    python tools/benchmark.py densenet121-train --batch-size 32 --image-size 224 --steps 20 --device cuda
    python tools/benchmark.py dsod300-train --batch-size 32 --device cuda --only "dsod300" "dsod300 bf16*"
    python tools/benchmark.py densenet121-infer --steps 5 --json densenet121-infer.json
    python tools/benchmark.py fcdensenet103-infer --steps 3 --warmup 1 --device cpu
    python tools/benchmark.py dsod300-infer --steps 10 --device cpu --only "*post-processing*"

Every variant runs in a process of its own (this tool again, with a hidden ``--variant``), so the memory it reports is
its own: on CPU the peak RSS (``resource.getrusage``) and what the variant added to the peak its process had after
importing torch and densevision ("added RSS"); on GPUs peak CUDA memory. ``--threads`` sets torch's and onnxruntime's
CPU threads. Each record notes the 1-minute load average when its process started and, beside wall-clock ms, the
process's CPU time per step: with ``--threads 1`` that is the figure other jobs on the machine skew least.

Training variants time forward + backward + SGD step on random data (ms/step): DenseNet-121 against a random
cross-entropy target, FC-DenseNet103 and DSOD300 through their task's ``loss`` (``Segmentor``, ``Detector``: prior
matching and hard-negative mining count). On CPU they also report the bytes autograd saves for backward in one step
(deterministic, so comparable across machines; not for compiled variants, whose graphs save what autograd does not
see). ``bf16`` variants run the forward under autocast with a float32 loss, as ``optim_wrapper.amp='bf16'`` does;
``channels_last``, ``compile`` and ``cuda-graphs`` (``compile=dict(mode='reduce-overhead')``) variants prepare the
model and batch as the runner's ``train_cfg.channels_last`` / ``train_cfg.compile`` do. ``--profile N`` adds a
``torch.profiler`` summary of N more steps to each record: host and kernel time, kernel launches, the costliest ops.

Inference variants time one prediction call without autograd (ms/batch) through ``densevision.backends`` — the path
tools/infer.py takes: eager, channels_last, compiled, onnxruntime (exported and checked first, in another process, so
its memory is the runtime's alone) and bf16 autocast — and report the largest absolute difference of their outputs
from the float32 eager variant's (same seeded weights and input; torchvision's DenseNet gets densevision's weights).
``--json PATH`` writes one record per variant.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import densevision  # noqa: E402
from densevision.backends import CHECK_SIZE, EXPORT_SIZE, OnnxRuntimeForward, prepare_forward  # noqa: E402
from densevision.engine.acceleration import TrainingAcceleration  # noqa: E402
from densevision.export import export_and_check, output_names  # noqa: E402
from densevision.models.blocks import DenseBlock  # noqa: E402
from densevision.precision import autocast_dtype, autocast_forward  # noqa: E402
from densevision.profiling import dispatched_operators, saved_tensor_bytes  # noqa: E402
from densevision.registry import TASKS  # noqa: E402
from densevision.tasks import Detector  # noqa: E402

RESULT_PREFIX = "BENCHMARK-RESULT "  # the line a variant's process prints its record on


# ------------------------------------------------------------------------------------------------------ training


class TrainVariant(NamedTuple):
    """A network (trained against a random cross-entropy target) or a task (trained through its own ``loss`` on a
    synthetic batch, so a detector's matching and hard-negative mining count), and how its step runs: precision and
    the runner's ``train_cfg.compile`` / ``train_cfg.channels_last`` (densevision.engine.acceleration)."""

    build: Callable[[], nn.Module]
    precision: str = "fp32"
    compile: bool | dict[str, Any] = False
    channels_last: bool = False


# The runner's accelerations, each added to a benchmark's first variant; "cuda-graphs" captures the compiled step.
ACCELERATIONS: dict[str, dict[str, Any]] = {
    "channels_last": dict(channels_last=True),
    "compile": dict(compile=True),
    "cuda-graphs": dict(compile=dict(mode="reduce-overhead")),
}


def _with_accelerations(variants: dict[str, TrainVariant]) -> dict[str, TrainVariant]:
    name, first = next(iter(variants.items()))
    return {**variants, **{f"{name} {acc}": first._replace(**opts) for acc, opts in ACCELERATIONS.items()}}


def densenet121_train() -> dict[str, TrainVariant]:
    densevision_121 = partial(densevision.create_model, "densenet121")
    efficient_121 = partial(densevision_121, memory_efficient=True)
    return _with_accelerations(
        {
            "densevision": TrainVariant(densevision_121),
            "densevision memory_efficient": TrainVariant(efficient_121),
            "densevision memory_efficient compile": TrainVariant(efficient_121, compile=True),
            "densevision bf16": TrainVariant(densevision_121, precision="bf16"),
            "densevision bf16 channels_last": TrainVariant(densevision_121, precision="bf16", channels_last=True),
            "densevision bf16 channels_last compile": TrainVariant(
                densevision_121, precision="bf16", channels_last=True, compile=True
            ),
            "densevision bf16 channels_last cuda-graphs": TrainVariant(
                densevision_121, precision="bf16", channels_last=True, compile=dict(mode="reduce-overhead")
            ),
            "torchvision": TrainVariant(partial(torchvision.models.densenet121, weights=None)),
            "torchvision memory_efficient": TrainVariant(
                partial(torchvision.models.densenet121, weights=None, memory_efficient=True)
            ),
        }
    )


def _task(kind: str, model: dict[str, Any], **kwargs: Any) -> nn.Module:
    return TASKS.build(dict(type=kind, model={**model, **kwargs}))


def _task_variants(name: str, kind: str, model: dict[str, Any]) -> dict[str, TrainVariant]:
    """A task's training step through its ``loss``: fp32, bf16, memory_efficient (both precisions), accelerations."""
    plain = partial(_task, kind, model)
    efficient = partial(plain, memory_efficient=True)
    return _with_accelerations(
        {
            name: TrainVariant(plain),
            f"{name} bf16": TrainVariant(plain, precision="bf16"),
            f"{name} memory_efficient": TrainVariant(efficient),
            f"{name} bf16 memory_efficient": TrainVariant(efficient, precision="bf16"),
            f"{name} bf16 channels_last": TrainVariant(plain, precision="bf16", channels_last=True),
            f"{name} bf16 channels_last compile": TrainVariant(
                plain, precision="bf16", channels_last=True, compile=True
            ),
        }
    )


def fcdensenet103_train() -> dict[str, TrainVariant]:
    """The Tiramisu through ``Segmentor.loss`` (CamVid's 11 classes)."""
    return _task_variants("fcdensenet103", "Segmentor", dict(type="fcdensenet103", num_classes=11))


def dsod300_train() -> dict[str, TrainVariant]:
    """DSOD300 through ``Detector.loss`` (VOC's 20 classes + background): prior matching and hard-negative mining."""
    return _task_variants("dsod300", "Detector", dict(type="dsod300", num_classes=21))


def tiny_train() -> dict[str, TrainVariant]:
    """A tiny FC-DenseNet through ``Segmentor.loss``: a quick check that every training path runs."""
    return _task_variants("tiny", "Segmentor", dict(type="FCDenseNet", **TINY_FCDENSENET))


def _stem_and_block(num_layers: int, memory_efficient: bool) -> nn.Module:
    stem = nn.Conv2d(3, 24, kernel_size=3, padding=1)
    return nn.Sequential(stem, DenseBlock(num_layers, 24, 12, memory_efficient=memory_efficient))


def dense_block_depth() -> dict[str, TrainVariant]:
    """One DenseNet-BC block (k=12, bottleneck 4k) of growing depth: quadratic vs linear training memory."""
    return {
        f"{depth} layers{' memory_efficient' if efficient else ''}": TrainVariant(
            partial(_stem_and_block, depth, efficient)
        )
        for depth in (6, 12, 24, 48)
        for efficient in (False, True)
    }


BENCHMARKS: dict[str, Callable[[], dict[str, TrainVariant]]] = {
    "densenet121-train": densenet121_train,
    "fcdensenet103-train": fcdensenet103_train,
    "dsod300-train": dsod300_train,
    "dense-block-depth": dense_block_depth,
    "tiny-train": tiny_train,
}
TRAIN_IMAGE_SIZES = {"dsod300-train": 300, "tiny-train": 48}  # else 224


def _training_step(
    variant: TrainVariant, device: torch.device, images: torch.Tensor, generator: torch.Generator
) -> Callable[[], None]:
    """A new model of ``variant`` on ``device`` and its training step (forward, loss, backward, SGD) on a fixed batch
    shaped like ``images``."""
    torch.manual_seed(0)
    model = variant.build().to(device).train()
    acceleration = TrainingAcceleration(compile=variant.compile, channels_last=variant.channels_last)
    acceleration.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = autocast_dtype(variant.precision, device, what="precision")
    task = hasattr(model, "loss")
    images = images.to(device)
    batch = acceleration.prepare_batch(model.example_batch(images, generator) if task else {"image": images})

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_forward(model, dtype, device.type):  # float32 outputs, so a float32 loss
            if task:
                loss = model.loss(batch)["loss"]
            else:  # N×K class scores or N×K×H×W logits: one random target of that shape
                logits = model(batch["image"])
                target = torch.randint(
                    0, logits.shape[1], (logits.shape[0], *logits.shape[2:]), device=device, generator=generator
                )
                loss = nn.functional.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()

    return step


def gpu_path_operators(variant: TrainVariant, images: torch.Tensor) -> float | None:
    """The operators one float32 eager training step dispatches on the CUDA code path, counted on the meta device (no
    kernels run, any machine): about one GPU launch each. ``None`` for compiled or mixed-precision variants (autocast
    and compiled graphs do not run on meta) and for steps that read tensor values
    (``float(t)``, ``t.item()``), which meta tensors do not have."""
    if variant.compile or variant.precision != "fp32":
        return None
    meta = torch.device("meta")
    try:
        step = _training_step(variant, meta, images.to(meta), torch.Generator().manual_seed(0))
        step()  # the first step creates the gradients and the momentum buffers
        return float(sum(dispatched_operators(step).values()))
    except (RuntimeError, NotImplementedError) as error:  # "Tensor.item() cannot be called on meta tensors"
        if "meta" not in str(error):
            raise
        return None


def time_training(variant: TrainVariant, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    size = args.image_size or TRAIN_IMAGE_SIZES.get(args.benchmark, 224)
    images = torch.randn(args.batch_size or 8, 3, size, size, generator=torch.Generator().manual_seed(0))
    dtype = autocast_dtype(variant.precision, device, what="precision")
    step = _training_step(variant, device, images, torch.Generator(device).manual_seed(0))
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    _synchronize(device)
    result: dict[str, Any] = {
        "ms/step": 1000 * (time.perf_counter() - start) / args.steps,
        "cpu ms/step": 1000 * (time.process_time() - cpu_start) / args.steps,
    }
    if device.type == "cuda":
        result["peak MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif not variant.compile:  # compiled graphs save what autograd's hooks do not see
        result["saved MiB"] = saved_tensor_bytes(step) / 2**20
    if args.profile:
        result["profile"] = profile_steps(step, device, args.profile)
    result["GPU-path ops/step"] = gpu_path_operators(variant, images)
    result["precision"] = variant.precision if dtype is not None else "fp32"
    result["input_size"] = [size, size]
    return result


def profile_steps(step: Callable[[], None], device: torch.device, steps: int) -> dict[str, Any]:
    """``torch.profiler`` over ``steps`` more steps: host (CPU) time, device-kernel time and kernel launches per step,
    and the operators that take the most host time — whether a step waits for Python and dispatch or for kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _synchronize(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    top_host = sorted((e for e in events if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)[:12]
    top_kernels = sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]
    return {
        "wall ms/step (profiled)": 1000 * wall / steps,
        "host self ms/step": sum(e.self_cpu_time_total for e in events) / 1000 / steps,
        "kernel ms/step": sum(e.self_device_time_total for e in kernels) / 1000 / steps,
        "kernel launches/step": sum(e.count for e in kernels) / steps,
        "top host ops (self ms/step, calls/step)": [
            [e.key, e.self_cpu_time_total / 1000 / steps, e.count / steps] for e in top_host
        ],
        "top kernels (ms/step, calls/step)": [
            [e.key[:120], e.self_device_time_total / 1000 / steps, e.count / steps] for e in top_kernels
        ],
    }


# ----------------------------------------------------------------------------------------------------- inference

Run = Callable[[Callable[[torch.Tensor], Any], torch.Tensor], Any]


def _call(forward: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Any:
    return forward(images)


class InferVariant(NamedTuple):
    """A module prepared as tools/infer.py prepares a task (``prepare_forward``), and what is timed with it."""

    build: Callable[[], tuple[nn.Module, Run]]
    input_size: tuple[int, int]
    batch_size: int
    backend: str = "torch"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False


PATHS = {  # the inference paths of tools/infer.py, by name
    "eager": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "onnxruntime": {"backend": "onnxruntime"},
    "bf16": {"precision": "bf16"},
}


def _network(name: str, **kwargs: Any) -> tuple[nn.Module, Run]:
    torch.manual_seed(0)
    return densevision.create_model(name, **kwargs), _call


def _torchvision_densenet121() -> tuple[nn.Module, Run]:
    """torchvision's DenseNet-121 with densevision's seeded weights (the same state_dict keys), so outputs compare."""
    model = torchvision.models.densenet121(weights=None)
    model.load_state_dict(_network("densenet121")[0].state_dict())
    return model, _call


def _variants(
    prefix: str, build: Callable[[], tuple[nn.Module, Run]], size: tuple[int, int], batch: int, paths=PATHS
) -> dict[str, InferVariant]:
    return {f"{prefix} {path}": InferVariant(build, size, batch, **PATHS[path]) for path in paths}


def densenet121_infer(args: argparse.Namespace) -> dict[str, InferVariant]:
    size, batch = _square(args.image_size, 224), args.batch_size or 8
    return {
        **_variants("densevision", partial(_network, "densenet121"), size, batch),
        **_variants("torchvision", _torchvision_densenet121, size, batch),
    }


def fcdensenet103_infer(args: argparse.Namespace) -> dict[str, InferVariant]:
    size = _square(args.image_size, None) or (360, 480)
    return _variants("fcdensenet103", partial(_network, "fcdensenet103", num_classes=11), size, args.batch_size or 1)


def _dsod300(post_processing: bool) -> tuple[nn.Module, Run]:
    """DSOD300 at 300x300: the network alone, or the Detector's whole predict (decode, score 0.01, class-wise NMS 0.45,
    top-k 400, keep 200). Untrained weights leave every class above the score threshold: NMS's worst case."""
    torch.manual_seed(0)
    task = Detector(model=dict(type="dsod300", num_classes=21)).eval()

    def predict(forward: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Any:
        return task.predict({"image": images})  # the task was prepared in place: its forward is the timed path

    return task, predict if post_processing else _call


def dsod300_infer(args: argparse.Namespace) -> dict[str, InferVariant]:
    batch, size = args.batch_size or 1, (300, 300)
    return {
        "dsod300 network": InferVariant(partial(_dsod300, False), size, batch),
        "dsod300 + post-processing": InferVariant(partial(_dsod300, True), size, batch),
        **_variants(
            "dsod300 + post-processing", partial(_dsod300, True), size, batch, ("channels_last", "compile", "bf16")
        ),
    }


TINY_FCDENSENET = dict(down_layers=(1, 2), bottleneck_layers=2, growth_rate=4, stem_channels=8, num_classes=3)


def tiny_infer(args: argparse.Namespace) -> dict[str, InferVariant]:
    """A tiny FC-DenseNet through every path but compilation: a quick check that each path runs and agrees."""
    build = partial(_network, "FCDenseNet", **TINY_FCDENSENET)
    size = _square(args.image_size, 48)
    return _variants("tiny", build, size, args.batch_size or 2, ("eager", "channels_last", "onnxruntime", "bf16"))


INFERENCE_BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, InferVariant]]] = {
    "densenet121-infer": densenet121_infer,
    "fcdensenet103-infer": fcdensenet103_infer,
    "dsod300-infer": dsod300_infer,
    "tiny-infer": tiny_infer,
}


def _square(size: int | None, default: int | None) -> tuple[int, int] | None:
    side = size or default
    return (side, side) if side else None


def _images(variant: InferVariant, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(variant.batch_size, 3, *variant.input_size, generator=generator).to(device)


def export_variant(variant: InferVariant, path: Path) -> None:
    """Export the variant's module to ``path`` and check it against PyTorch, as the onnxruntime backend does."""
    module, _ = variant.build()
    export_and_check(module.eval(), path, input_size=EXPORT_SIZE, batch_size=2, check_size=CHECK_SIZE)


def time_inference(variant: InferVariant, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The variant's timing and memory, and its outputs on the seeded input (for the comparison with fp32 eager)."""
    device = torch.device(args.device)
    module, run = variant.build()
    module = module.to(device).eval()
    if variant.backend == "onnxruntime":
        forward: Callable[[torch.Tensor], Any] = OnnxRuntimeForward(args.onnx, outputs=output_names(module))
        description = f"onnxruntime ({forward.threads} threads), float32"
        del module  # the runtime's memory, not PyTorch's
    else:
        forward, description = prepare_forward(
            module,
            device=device,
            backend="torch",
            precision=variant.precision,
            compile=variant.compile,
            channels_last=variant.channels_last,
        )
    images = _images(variant, device)
    with torch.inference_mode():
        for _ in range(args.warmup):
            run(forward, images)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            outputs = run(forward, images)
        _synchronize(device)
    result: dict[str, Any] = {
        "ms/batch": 1000 * (time.perf_counter() - start) / args.steps,
        "cpu ms/batch": 1000 * (time.process_time() - cpu_start) / args.steps,
    }
    if device.type == "cuda":
        result["peak MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["path"] = description
    result["input_size"] = list(variant.input_size)
    return result, outputs


def _tensors(outputs: Any) -> list[torch.Tensor] | None:
    """The outputs as a list of tensors, or ``None`` when they are not comparable (detections of varying count)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().float().cpu()]
    if isinstance(outputs, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in outputs):
        return [o.detach().float().cpu() for o in outputs]
    return None


def _max_abs_diff(outputs: Any, reference: list[torch.Tensor] | None) -> float | None:
    tensors = _tensors(outputs)
    if tensors is None or reference is None or [t.shape for t in tensors] != [r.shape for r in reference]:
        return None
    return max(float((t - r).abs().max()) for t, r in zip(tensors, reference))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------- processes


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Inside a variant's own process: time it and return its record."""
    device = torch.device(args.device)
    if device.type == "cuda":  # as train_cfg.cudnn_benchmark=True: the fastest algorithm for the one input shape
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's count too
    imported = _peak_rss_mib()  # the interpreter, torch and densevision: the same in every variant's process
    record: dict[str, Any] = {"benchmark": args.benchmark, "variant": args.variant}
    if args.benchmark in INFERENCE_BENCHMARKS:
        variant = INFERENCE_BENCHMARKS[args.benchmark](args)[args.variant]
        if args.export_only:
            export_variant(variant, Path(args.onnx))
            return record
        result, outputs = time_inference(variant, args)
        if args.save_reference:
            torch.save(_tensors(outputs), args.save_reference)
        reference = torch.load(args.reference) if args.reference else _tensors(outputs)
        record.update(result, batch_size=variant.batch_size, max_abs_diff=_max_abs_diff(outputs, reference))
    else:
        variant = BENCHMARKS[args.benchmark]()[args.variant]
        record.update(time_training(variant, args), batch_size=args.batch_size or 8)
    if device.type == "cpu":
        peak = _peak_rss_mib()
        record.update({"added RSS MiB": peak - imported, "peak RSS MiB": peak})
    record.update(
        device=str(device), device_name=device_name(device), threads=torch.get_num_threads(), torch=torch.__version__
    )
    return record


def device_name(device: torch.device) -> str:
    """The GPU's or CPU's model name: timings compare only on the same one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1].strip() for line in file if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _child(args: argparse.Namespace, variant: str, *extra: str) -> dict[str, Any]:
    """Run ``variant`` in a new process of this tool; its record, or ``{'error': ...}``."""
    command = [sys.executable, str(Path(__file__).resolve()), args.benchmark, "--variant", variant, *extra]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--image-size", args.image_size),
        ("--threads", args.threads),
        ("--profile", args.profile or None),
    ):
        if value is not None:
            command += [flag, str(value)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"benchmark": args.benchmark, "variant": variant, "error": reason}
    return {**json.loads(lines[-1][len(RESULT_PREFIX) :]), "load_1min": load}


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every selected variant in its own process. Inference variants are compared with the first one run (float32
    eager, unless ``--only`` leaves it out); an onnxruntime variant is exported in a process before its own."""
    inference = args.benchmark in INFERENCE_BENCHMARKS
    variants = INFERENCE_BENCHMARKS[args.benchmark](args) if inference else BENCHMARKS[args.benchmark]()
    selected = [n for n in variants if not args.only or any(fnmatch.fnmatchcase(n, p) for p in args.only)]
    records = []
    with tempfile.TemporaryDirectory(prefix="densevision-benchmark-") as folder:
        reference, onnx = Path(folder) / "reference.pt", Path(folder) / "model.onnx"
        for name in selected:
            extra: list[str] = []
            if inference:
                extra = ["--reference", str(reference)] if reference.is_file() else ["--save-reference", str(reference)]
            if inference and variants[name].backend == "onnxruntime":
                exported = _child(args, name, "--export-only", "--onnx", str(onnx))
                if "error" in exported:
                    records.append(exported)
                    continue
                extra += ["--onnx", str(onnx)]
            records.append(_child(args, name, *extra))
    return records


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """One line per variant; a column no variant has a value for is left out."""
    columns = [
        c
        for c in dict.fromkeys(c for row in rows.values() for c in row)
        if any(r.get(c) is not None for r in rows.values())
    ]
    width = max(len(name) for name in rows)
    lines = [f"{'variant':<{width}}  " + "  ".join(f"{column:>12}" for column in columns)]
    lines += [f"{name:<{width}}  " + "  ".join(_cell(row.get(c), c) for c in columns) for name, row in rows.items()]
    return "\n".join(lines)


def _cell(value: Any, column: str) -> str:
    width = max(12, len(column))
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.1e}" if "diff" in column else f"{value:>{width}.1f}"


TABLE_COLUMNS = (
    "ms/step",
    "ms/batch",
    "cpu ms/step",
    "cpu ms/batch",
    "max |diff|",
    "saved MiB",
    "GPU-path ops/step",
    "peak MiB",
    "added RSS MiB",
    "peak RSS MiB",
)


def _table_row(record: dict[str, Any]) -> dict[str, float | None]:
    values = {**record, "max |diff|": record.get("max_abs_diff")}
    return {column: values[column] for column in TABLE_COLUMNS if column in values}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("benchmark", choices=sorted([*BENCHMARKS, *INFERENCE_BENCHMARKS]))
    parser.add_argument("--batch-size", type=int, help="default: 8 (training, densenet121-infer), else 1 (2 tiny)")
    parser.add_argument(
        "--image-size", type=int, help="square input side; default: 224, fcdensenet103-infer 360x480, dsod300 300"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, autotuning, compile)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads of torch and onnxruntime (default: torch's)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these variants only (names or glob patterns)")
    parser.add_argument("--json", help="write one record per variant to this JSON file")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="STEPS", help="training: torch.profiler over this many more steps"
    )
    for hidden in ("--variant", "--onnx", "--reference", "--save-reference"):  # a variant's own process
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.batch_size or 1) < 1 or (args.image_size or 32) < 32:
        parser.error("need --steps >= 1, --warmup >= 0, --batch-size >= 1 and --image-size >= 32")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"unknown --device {args.device!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} was asked for but CUDA is not available; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant is not None:
        print(RESULT_PREFIX + json.dumps(run_variant(args)))
        return 0
    records = run_all(args)
    if not records:
        print(f"error: no variant of {args.benchmark} matches --only {' '.join(args.only)}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
    timed = [r for r in records if "error" not in r]
    first = timed[0] if timed else {}
    size = "x".join(map(str, first.get("input_size", []))) or "-"
    loads = [r["load_1min"] for r in timed]
    print(
        f"{args.benchmark}: batch {first.get('batch_size', '-')}, {size}, {args.steps} steps after {args.warmup} "
        f"warm-up, device {args.device} ({first.get('device_name', '-')}), torch {torch.__version__}, "
        f"{first.get('threads', '-')} threads, "
        f"load {min(loads, default=0):.1f}-{max(loads, default=0):.1f}, one process per variant"
    )
    if timed:
        print(format_table({r["variant"]: _table_row(r) for r in timed}))
    for record in records:
        if "error" in record:
            print(f"error: variant {record['variant']!r} failed: {record['error']}", file=sys.stderr)
    return 1 if len(timed) < len(records) else 0


if __name__ == "__main__":
    sys.exit(main())

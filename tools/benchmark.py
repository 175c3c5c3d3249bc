"""Time training steps and inference of densevision models against reference implementations, side by side.

    python tools/benchmark.py densenet121-train --batch-size 32 --image-size 224 --steps 20 --device cuda
    python tools/benchmark.py dsod300-infer --batch-size 1 --steps 10 --device cpu

Each entry of ``BENCHMARKS`` maps a name to a function returning ``{variant: model builder}``; every variant is timed
the same way (forward + backward + SGD step on random data) and reported as ms/step plus memory: peak CUDA memory on
GPUs, and on CPU the bytes autograd saves for backward in one step (deterministic, so comparable across machines).
``INFERENCE_BENCHMARKS`` time a prediction call without autograd (ms/batch), at the model's own input size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
import torchvision
from torch import nn

import densevision
from densevision.models.blocks import DenseBlock
from densevision.models.tasks import Detector
from densevision.profiling import saved_tensor_bytes

ModelBuilders = dict[str, Callable[[], nn.Module]]


def densenet121_train() -> ModelBuilders:
    return {
        "densevision": partial(densevision.create_model, "densenet121"),
        "densevision memory_efficient": partial(densevision.create_model, "densenet121", memory_efficient=True),
        "torchvision": partial(torchvision.models.densenet121, weights=None),
        "torchvision memory_efficient": partial(torchvision.models.densenet121, weights=None, memory_efficient=True),
    }


def fcdensenet103_train() -> ModelBuilders:
    return {
        "fcdensenet103": partial(densevision.create_model, "fcdensenet103"),
        "fcdensenet103 memory_efficient": partial(densevision.create_model, "fcdensenet103", memory_efficient=True),
    }


def _stem_and_block(num_layers: int, memory_efficient: bool) -> nn.Module:
    stem = nn.Conv2d(3, 24, kernel_size=3, padding=1)
    return nn.Sequential(stem, DenseBlock(num_layers, 24, 12, memory_efficient=memory_efficient))


def dense_block_depth() -> ModelBuilders:
    """One DenseNet-BC block (k=12, bottleneck 4k) of growing depth: quadratic vs linear training memory."""
    return {
        f"{depth} layers{' memory_efficient' if efficient else ''}": partial(_stem_and_block, depth, efficient)
        for depth in (6, 12, 24, 48)
        for efficient in (False, True)
    }


BENCHMARKS: dict[str, Callable[[], ModelBuilders]] = {
    "densenet121-train": densenet121_train,
    "fcdensenet103-train": fcdensenet103_train,
    "dense-block-depth": dense_block_depth,
}


Predict = Callable[[torch.Tensor], object]


def _dsod300(post_processing: bool) -> tuple[Predict, tuple[int, int]]:
    """DSOD300 at 300x300: the network alone, or the Detector's whole predict (decode, score 0.01, class-wise NMS 0.45,
    top-k 400, keep 200). Untrained weights leave every class above the score threshold: NMS's worst case."""
    task = Detector(model=dict(type="dsod300", num_classes=21)).eval()
    run = (lambda images: task.predict({"image": images})) if post_processing else task
    return run, task.export_input_size


def dsod300_infer() -> dict[str, Callable[[], tuple[Predict, tuple[int, int]]]]:
    return {
        "dsod300 network": partial(_dsod300, False),
        "dsod300 + post-processing": partial(_dsod300, True),
    }


INFERENCE_BENCHMARKS = {"dsod300-infer": dsod300_infer}


def time_inference(build: Callable[[], tuple[Predict, tuple[int, int]]], args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    run, (height, width) = build()
    for module in getattr(run, "__self__", None), run:  # move the task (bound or module) to the device
        if isinstance(module, nn.Module):
            module.to(device)
    images = torch.randn(args.batch_size, 3, height, width, device=device)
    with torch.inference_mode():
        for _ in range(args.warmup):
            run(images)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            run(images)
        _synchronize(device)
    result = {"ms/batch": 1000 * (time.perf_counter() - start) / args.steps}
    if device.type == "cuda":
        result["peak MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(build: Callable[[], nn.Module], args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)  # N×K class scores or N×K×H×W segmentation logits: one random target of that shape
        target = torch.randint(
            0, logits.shape[1], (logits.shape[0], *logits.shape[2:]), device=device, generator=generator
        )
        nn.functional.cross_entropy(logits, target).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _synchronize(device)
    result = {"ms/step": 1000 * (time.perf_counter() - start) / args.steps}
    if device.type == "cuda":
        result["peak MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["saved MiB"] = saved_tensor_bytes(step) / 2**20
    return result


def format_table(rows: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(rows.values())))
    width = max(len(name) for name in rows)
    lines = [f"{'variant':<{width}}  " + "  ".join(f"{column:>10}" for column in columns)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{row[c]:>10.1f}" for c in columns) for name, row in rows.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("benchmark", choices=sorted([*BENCHMARKS, *INFERENCE_BENCHMARKS]))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cudnn autotuning)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.image_size < 32:
        parser.error("need --steps >= 1, --warmup >= 0, --batch-size >= 1 and --image-size >= 32")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"unknown --device {args.device!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} was asked for but CUDA is not available; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    if args.benchmark in INFERENCE_BENCHMARKS:
        rows = {name: time_inference(build, args) for name, build in INFERENCE_BENCHMARKS[args.benchmark]().items()}
        size = "the model's input size"
    else:
        rows = {name: time_training(build, args) for name, build in BENCHMARKS[args.benchmark]().items()}
        size = f"{args.image_size}px"
    print(
        f"{args.benchmark}: batch {args.batch_size}, {size}, {args.steps} steps after {args.warmup} "
        f"warm-up, device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()

"""Predict images with a trained model: ``python tools/infer.py CONFIG CHECKPOINT INPUT [--out DIR]``.

INPUT is an image file, a folder of images or a glob pattern (quote it: ``'data/**/*.png'``). What is written depends
on the task the config trains: segmentation writes ``<stem>_mask.png`` (class indices), ``<stem>_color.png`` and
``<stem>_overlay.png`` per image (``--tile-size`` predicts large images in overlapping tiles, chosen by itself for
images of more than ``--max-pixels``); classification writes
``predictions.csv`` (early-exit models add the exit and FLOPs per image; ``--budget`` predicts adaptively, on torch
only); detection draws boxes into ``<stem>_boxes.png`` and writes ``results.json`` (COCO format).
``python tools/infer.py CONFIG CHECKPOINT INPUT --help`` lists the options of the config's task. Images are prepared
(normalised) as the dataset of the config's test loader does (else val's, else train's), ``--cfg-options`` included.

``--backend auto`` (the default) runs the fastest path that is exact in float32: on CPU the model exported to ONNX
and run by onnxruntime (exported once and cached beside the checkpoint as ``CHECKPOINT.<key>.onnx``, checked against
PyTorch first), else PyTorch in channels_last on CPU; a detector's network and box decoding take the same path, its
NMS runs in PyTorch. ``--precision bf16`` (CPUs with native bf16, CUDA) and ``--compile`` (torch.compile) choose
PyTorch. The log says which path runs.

Images are prepared as the training images were (the checkpoint's ``image_format``): another unsigned bit depth is
scaled to the training one (16-bit for a model trained on 8-bit images: ÷257), detection makes grey and RGBA images
RGB as its datasets do. Images that cannot be read or predicted (another band count, a bit depth that cannot be scaled)
are skipped and listed at the end with the reason; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tqdm import tqdm  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from densevision.backends import BACKENDS  # noqa: E402
from densevision.cli import entry_point  # noqa: E402
from densevision.config import load_config  # noqa: E402
from densevision.inference import find_images, infer_files, output_folder, predictor_class  # noqa: E402
from densevision.precision import PRECISIONS  # noqa: E402


def _common_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help
    )
    parser.add_argument("config", help="config file the model was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (.pth) with the trained weights")
    parser.add_argument("input", help="image file, folder of images, or glob pattern")
    parser.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu", help="torch device")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: onnxruntime on CPU when it is exact and works, else torch",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="forward precision (torch); outputs are float32"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (torch backend)")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format for torch (default: on CPU, where it is faster)",
    )
    return parser


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@entry_point
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # says when large images are tiled
    arguments = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(arguments) and not any(os.path.isfile(a) for a in arguments[:1]):
        _common_parser(add_help=True).parse_args(arguments)  # help before a config names the task's options
    known, _ = _common_parser(add_help=False).parse_known_args(arguments)
    cfg = load_config(known.config, known.cfg_options)
    predictor_cls = predictor_class(cfg)
    parser = _common_parser(add_help=True)
    predictor_cls.add_arguments(parser.add_argument_group(f"{predictor_cls.__name__} options"))
    args = parser.parse_args(arguments)
    paths = find_images(args.input)
    output_folder(args.out)  # an unusable --out fails now, not after loading (and perhaps exporting) the model
    predictor = predictor_cls.from_config(
        cfg,
        args.checkpoint,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        compile=args.compile,
        channels_last=args.channels_last,
        **predictor_cls.options_from_args(args),
    )
    with logging_redirect_tqdm():  # log lines (tiling) above the progress bar, not inside it
        report = infer_files(predictor, paths, args.out, progress=lambda it: tqdm(it, unit="img"))
    done = len(paths) - len(report.failed)
    print(f"{done} image(s) -> {len(report.written)} file(s) in {args.out}")
    for path, reason in report.failed:
        print(f"failed: {path}: {' '.join(reason.split())}", file=sys.stderr)
    if report.failed:
        print(f"error: {len(report.failed)} of {len(paths)} image(s) could not be predicted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a trained model to ONNX and check it: ``python tools/export.py CONFIG CHECKPOINT --out model.onnx``.

The graph takes ``images`` (N×C×H×W, normalised as in training) with a dynamic batch; its outputs are named by the task
the config trains:
  segmentation (Segmentor)     ``logits`` N×K×H×W, dynamic height and width (traced at --input-size, default 224 224)
  classification (Classifier)  ``logits`` N×K, dynamic height and width (traced at --input-size, default 224 224)
  detection (Detector)         ``boxes`` N×P×4 (x1, y1, x2, y2 normalised to the input) and ``scores`` N×P×(K+1)
                               (softmax, column 0 the background) for every default box, at the detector's fixed
                               input size (--input-size may only repeat it); NMS is left to the runtime
After export, onnxruntime runs it on a random input of another batch (and, where the size is dynamic, another size)
and the largest absolute difference from PyTorch is printed; above ``--atol`` the export counts as failed (exit
status 1). An --opset the exporter cannot write is refused before exporting.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from densevision.cli import entry_point  # noqa: E402
from densevision.config import load_config  # noqa: E402
from densevision.export import EXPORTERS, export_and_check, output_names  # noqa: E402
from densevision.inference import load_task  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file the model was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (.pth) with the trained weights")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="traced size (default 224 224; a detector exports at its own fixed size)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the export example")
    parser.add_argument(
        "--opset", type=int, help="ONNX opset (default: the exporter's; dynamo writes 18 or later, TorchScript 7-20)"
    )
    parser.add_argument("--exporter", choices=EXPORTERS, default="auto", help="auto: dynamo, else TorchScript")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted |ONNX - PyTorch| difference")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # says what --cfg-options overrode
    cfg = load_config(args.config, args.cfg_options)
    task = load_task(cfg, args.checkpoint, device="cpu")
    result = export_and_check(
        task,
        args.out,
        input_size=args.input_size,
        batch_size=args.batch_size,
        opset=args.opset,
        exporter=args.exporter,
        atol=args.atol,
    )
    if result.fallback_reason:
        print(f"used the TorchScript exporter: {result.fallback_reason}")
    outputs = ", ".join(output_names(task))
    print(f"wrote {result.path} ({result.exporter} exporter, opset {result.opset}; outputs {outputs})")
    print(f"onnxruntime vs PyTorch at input {result.check_shape}: max abs diff {result.max_abs_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

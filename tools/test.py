"""Evaluate a checkpoint on the test split: ``python tools/test.py CONFIG CHECKPOINT [--out metrics.json]``.

Prints the metric's summary table and writes the metrics as JSON (default: WORK_DIR/test_metrics.json); the table
comes first, so a JSON file that cannot be written (one error line, exit status 1) loses no result. An evaluator that
declares a report writes it beside the JSON (EarlyExitAccuracy: each exit's accuracy and FLOPs and the budget sweep
calibrated on val, in early_exit.json, early_exit.png and exit_thresholds.json).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from densevision.cli import entry_point  # noqa: E402
from densevision.config import load_config  # noqa: E402
from densevision.engine.launch import run_test  # noqa: E402
from densevision.precision import PRECISIONS  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (Python)")
    parser.add_argument("checkpoint", help="checkpoint to evaluate (e.g. WORK_DIR/best.pth)")
    parser.add_argument("--out", help="metrics JSON to write (default: WORK_DIR/test_metrics.json)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--work-dir", help="where logs and sample predictions go")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="forward precision: bf16 autocast on CUDA and on CPUs with native bf16, else float32 (metrics: float32)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile the task's network (train_cfg.compile=True) for the test"
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ["train_cfg.compile=True", *args.cfg_options] if args.compile else args.cfg_options
    cfg = load_config(args.config, options, work_dir=args.work_dir, launcher=args.launcher)
    run_test(cfg, args.checkpoint, args.out, show=print, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())

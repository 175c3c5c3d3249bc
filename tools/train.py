"""Train a model from a config: ``python tools/train.py CONFIG [--cfg-options k=v ...] [--resume [PATH|auto]]``.

A work dir that already holds a run is never overwritten: continue it with ``--resume`` (which takes the optimizer
settings and schedules of the config given now, so ``--cfg-options optim_wrapper.optimizer.lr=...`` applies) or choose
a new ``--work-dir``. Several processes: ``torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from densevision.cli import entry_point  # noqa: E402
from densevision.config import load_config  # noqa: E402
from densevision.engine.launch import run_training  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (Python)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--work-dir", help="where checkpoints and logs go (default: the config's, else work_dirs/NAME)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH|auto",
        help="continue from a checkpoint (bare: auto, the work dir's last.pth) with this config's optimizer settings",
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile the task's network and loss (train_cfg.compile=True)"
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ["train_cfg.compile=True", *args.cfg_options] if args.compile else args.cfg_options
    cfg = load_config(args.config, options, work_dir=args.work_dir, resume=args.resume, launcher=args.launcher)
    try:
        run_training(cfg)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume auto", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

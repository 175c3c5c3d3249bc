"""Build a config's dataset and read every file once: ``python tools/check_dataset.py CONFIG [--split train]``.

Lists every problem, one line each naming the file (up to ``--max-errors``, the rest counted): unreadable files,
image/mask size mismatches, label values outside the classes, images whose channel count or bit depth differs from
most images' or from the model's ``in_chans``, images smaller than the training crop. Hidden files (macOS ``._*``)
are skipped and listed. Then the per-class pixel, image or box counts of the readable files; exit status 1 if any
problem was found.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import densevision.data  # noqa: E402,F401  (registers the datasets)
from densevision.cli import entry_point, one_line  # noqa: E402
from densevision.config import Config, load_config  # noqa: E402
from densevision.data.checks import DatasetError  # noqa: E402
from densevision.registry import DATASETS  # noqa: E402
from densevision.splits import split_dataset_cfg, split_dataset_key  # noqa: E402

DEFAULT_IN_CHANS = 3  # what every densevision architecture takes unless its config says in_chans


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file defining <split>_dataloader.dataset or <split>_dataset")
    parser.add_argument("--split", default="train", help="which split's dataset to check (default: train)")
    parser.add_argument(
        "--max-errors",
        type=non_negative,
        default=50,
        metavar="N",
        help="list at most N problems (and N skipped files); the rest are counted (default: 50)",
    )
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


def model_in_chans(cfg: Config) -> tuple[int, str] | None:
    """The input channels of the config's model and where they come from: the first ``in_chans`` found in ``model``
    (breadth first: the task, then its network dict, ...), else the architectures' default; ``None`` without a model.
    """
    if not isinstance(cfg.get("model"), Mapping):
        return None
    level: list[tuple[str, Any]] = [("model", cfg["model"])]
    while level:
        for key, node in level:
            if isinstance(node, Mapping) and isinstance(node.get("in_chans"), int):
                return node["in_chans"], f"{key}.in_chans"
        level = [
            (f"{key}.{child}", value)
            for key, node in level
            if isinstance(node, Mapping)
            for child, value in node.items()
            if isinstance(value, Mapping)
        ]
    return DEFAULT_IN_CHANS, "the default in_chans"


class Listing:
    """Prints the first ``limit`` lines it is given and counts the rest."""

    def __init__(self, limit: int, prefix: str = "") -> None:
        self.limit, self.prefix, self.count = limit, prefix, 0

    def __call__(self, line: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            print(f"{self.prefix}{one_line(line)}", flush=True)

    def more(self, what: str) -> None:
        if self.count > self.limit:
            print(f"... and {self.count - self.limit} more {what} (--max-errors {self.limit})")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # says what --cfg-options overrode
    cfg = load_config(args.config, args.cfg_options)
    dataset_cfg = split_dataset_cfg(cfg, args.split)
    key = split_dataset_key(cfg, args.split)
    try:
        dataset = DATASETS.build(dataset_cfg)
    except DatasetError as err:
        raise DatasetError(f"{key} of {args.config}: {err}") from err
    in_chans = model_in_chans(cfg)
    model = f"; the model takes {in_chans[0]} channels ({in_chans[1]})" if in_chans else ""
    name = f"{key} of {args.config}: {type(dataset).__name__}"
    print(f"checking {name}, {len(dataset)} samples{model}", flush=True)
    problems = Listing(args.max_errors)
    summary = dataset.check(on_problem=problems, channels=in_chans[0] if in_chans else None)
    problems.more("problem(s)")
    skipped = Listing(args.max_errors, prefix="skipped hidden file ")
    for path in summary.skipped:
        skipped(str(path))
    skipped.more("hidden file(s) skipped")
    print(summary.table())
    if summary.num_problems:
        print(f"{name}, FAILED: {summary.num_problems} problem(s) in {summary.num_images} images", file=sys.stderr)
        return 1
    print(f"{name}, OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

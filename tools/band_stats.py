"""Per-band normalisation statistics of a config's training data: ``python tools/band_stats.py CONFIG``.

Reads every training raster (valid pixels only: nodata is left out), volume (after the CT window or MR z-scoring,
what ``Normalize`` sees) or image file of the split's dataset twice, block by block, and prints per band the mean,
standard deviation, 2nd/98th percentiles and extremes as comments, then a ``Normalize`` step to paste into the
config (mean and std in units of ``max_pixel_value``: 65535 for uint16 data, 255 for uint8, 1 otherwise).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import densevision.data  # noqa: E402,F401  (registers the datasets)
from densevision.cli import entry_point  # noqa: E402
from densevision.config import load_config  # noqa: E402
from densevision.data.raster import BandStatistics, band_values  # noqa: E402
from densevision.registry import DATASETS, ConfigError  # noqa: E402
from densevision.splits import split_dataset_cfg, split_dataset_key  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file defining <split>_dataloader.dataset or <split>_dataset")
    parser.add_argument("--split", default="train", help="which split's data to measure (default: train)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # on stderr: says what --cfg-options overrode
    cfg = load_config(args.config, args.cfg_options)
    dataset_cfg = split_dataset_cfg(cfg, args.split)
    key = split_dataset_key(cfg, args.split)
    dataset = DATASETS.build({**dataset_cfg, "pipeline": None})  # the values as read, before any augmentation
    stats = BandStatistics()
    for chunk in band_values(dataset):
        stats.add(chunk)
    if stats.count == 0:
        raise ConfigError(f"{key} of {args.config} ({type(dataset).__name__}) has no valid pixel to measure")
    for chunk in band_values(dataset):
        stats.add_to_histogram(chunk)
    repeat = getattr(dataset, "channels_per_band", 1)
    print(f"# {key} of {args.config} ({type(dataset).__name__}): {stats.count:,} values per band, {stats.dtype}")
    print(stats.table())
    if repeat > 1:
        print(f"# each band's values repeated {repeat} times: the slice and its context slices are channels")
    print(stats.normalize_config(repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())

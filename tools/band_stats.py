"""Per-band normalisation statistics of a config's training data: ``python tools/band_stats.py CONFIG``.

Reads every training raster (valid pixels only: nodata is left out), volume (after the CT window or MR z-scoring,
what ``Normalize`` sees) or image file of the split's dataset twice, block by block, and prints per band the mean,
standard deviation, 2nd/98th percentiles and extremes as comments, then a ``Normalize`` step to paste into the
config (mean and std in units of ``max_pixel_value``: 65535 for uint16 data, 255 for uint8, 1 otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import densevision.data  # noqa: E402,F401  (registers the datasets)
from densevision.cli import entry_point  # noqa: E402
from densevision.config import Config, parse_cfg_options  # noqa: E402
from densevision.data.raster import BandStatistics, band_values  # noqa: E402
from densevision.registry import DATASETS, ConfigError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file defining <split>_dataloader.dataset or <split>_dataset")
    parser.add_argument("--split", default="train", help="which split's data to measure (default: train)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(parse_cfg_options(args.cfg_options))
    loader = cfg.get(f"{args.split}_dataloader")
    key, dataset_cfg = f"{args.split}_dataloader.dataset", loader.get("dataset") if isinstance(loader, dict) else None
    if dataset_cfg is None:
        key, dataset_cfg = f"{args.split}_dataset", cfg.get(f"{args.split}_dataset")
    if dataset_cfg is None:
        raise ConfigError(f"{args.config} defines neither {args.split}_dataloader.dataset nor {args.split}_dataset")
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

"""Build a config's dataset and read every file once: ``python tools/check_dataset.py CONFIG [--split train]``.

Prints the number of images and the per-class pixel (or image) counts, or the file at fault and exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import densevision.data  # noqa: E402,F401  (registers the datasets)
from densevision.cli import entry_point  # noqa: E402
from densevision.config import Config, parse_cfg_options  # noqa: E402
from densevision.data.checks import DatasetError  # noqa: E402
from densevision.registry import DATASETS, ConfigError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file defining <split>_dataloader.dataset or <split>_dataset")
    parser.add_argument("--split", default="train", help="which split's dataset to check (default: train)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


def dataset_config(cfg: Config, split: str, source: str) -> tuple[str, dict]:
    """What the runner would load (``<split>_dataloader.dataset``), else the base configs' ``<split>_dataset``."""
    loader = cfg.get(f"{split}_dataloader")
    if isinstance(loader, dict) and loader.get("dataset") is not None:
        return f"{split}_dataloader.dataset", loader["dataset"]
    if cfg.get(f"{split}_dataset") is not None:
        return f"{split}_dataset", cfg[f"{split}_dataset"]
    defined = sorted(k for k in cfg if k.endswith(("_dataset", "_dataloader")) and cfg[k] is not None)
    raise ConfigError(f"{source} defines neither {split}_dataloader.dataset nor {split}_dataset; it defines {defined}")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(parse_cfg_options(args.cfg_options))
    key, dataset_cfg = dataset_config(cfg, args.split, args.config)
    try:
        dataset = DATASETS.build(dataset_cfg)
        summary = dataset.check()
    except DatasetError as err:
        print(f"{key} of {args.config}: FAILED\n{err}", file=sys.stderr)
        return 1
    print(f"{key} of {args.config}: {type(dataset).__name__}, OK")
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())

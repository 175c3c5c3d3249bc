"""Predict images with a trained model: ``python tools/infer.py CONFIG CHECKPOINT INPUT [--out DIR]``.

INPUT is an image file, a folder of images or a glob pattern (quote it: ``'data/**/*.png'``). Segmentation writes
``<stem>_mask.png`` (class indices), ``<stem>_color.png`` and ``<stem>_overlay.png`` per image at full resolution;
``--tile-size`` predicts large images in overlapping tiles. Classification writes ``predictions.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tqdm import tqdm  # noqa: E402

from densevision.config import Config, parse_cfg_options  # noqa: E402
from densevision.data.checks import DatasetError  # noqa: E402
from densevision.engine.errors import EngineError  # noqa: E402
from densevision.inference import SegmentationPredictor, find_images, infer_files, predictor_class  # noqa: E402
from densevision.registry import ConfigError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file the model was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (.pth) with the trained weights")
    parser.add_argument("input", help="image file, folder of images, or glob pattern")
    parser.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    parser.add_argument("--tile-size", type=int, nargs="+", metavar="N", help="tile size N or H W for large images")
    parser.add_argument("--tile-overlap", type=float, default=0.25, help="fraction shared by neighbouring tiles")
    parser.add_argument("--tile-window", choices=("uniform", "hann"), default="uniform", help="tile blending weights")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--size-divisor", type=int, help="pad inputs to a multiple of this (models that need it)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image (classification)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlays")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu", help="torch device")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    return parser.parse_args(argv)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = find_images(args.input)
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(parse_cfg_options(args.cfg_options))
        predictor_cls = predictor_class(cfg)
        if issubclass(predictor_cls, SegmentationPredictor):
            tile_size = args.tile_size[0] if args.tile_size and len(args.tile_size) == 1 else args.tile_size
            options = dict(
                tile_size=tile_size,
                tile_overlap=args.tile_overlap,
                tile_window=args.tile_window,
                batch_size=args.batch_size,
                size_divisor=args.size_divisor,
            )
        else:
            options = dict(top_k=args.top_k)
        predictor = predictor_cls.from_config(cfg, args.checkpoint, device=args.device, **options)
        written = infer_files(predictor, paths, args.out, alpha=args.alpha, progress=lambda it: tqdm(it, unit="img"))
    except (FileNotFoundError, DatasetError, ConfigError, EngineError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(paths)} image(s) -> {len(written)} file(s) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

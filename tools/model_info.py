"""Print parameter counts (and feature pyramids) of registered architectures — the README's figures come from here.

python tools/model_info.py densenet121 densenet169 densenet201 densenet161 --num-classes 1000
python tools/model_info.py fcdensenet56 fcdensenet67 fcdensenet103 --num-classes 11
"""

from __future__ import annotations

import argparse
import sys

import torch

import densevision
from densevision.cli import entry_point
from densevision.registry import MODELS, ConfigError


def describe(name: str, num_classes: int | None) -> dict[str, object]:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = densevision.create_model(name, **kwargs)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # BatchNorm running statistics only: detectors also keep their default boxes as a buffer.
    buffers = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return {"model": name, "trainable": trainable, "with BN statistics": trainable + buffers}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="registered names (python -c 'import densevision; ...list_models()')")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the builder's)")
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        parser.error(f"--num-classes must be at least 1, got {args.num_classes}")
    unknown = [name for name in args.models if name not in densevision.list_models()]
    if unknown:
        raise ConfigError(MODELS.unknown_message(unknown[0]))
    rows = [describe(name, args.num_classes) for name in args.models]
    print(f"{'model':<20}{'trainable params':>18}{'with BN statistics':>20}")
    for row in rows:
        print(f"{row['model']:<20}{row['trainable']:>18,}{row['with BN statistics']:>20,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

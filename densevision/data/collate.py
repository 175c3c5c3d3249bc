"""Batching for the sample dicts every dataset yields (the batch contract in ARCHITECTURE.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["collate", "STACKED_KEYS"]

# Tensors of the same shape in every sample: stacked along a new batch dimension. Everything else (meta, per-image
# boxes and labels of detection) varies per image and stays a list.
STACKED_KEYS = ("image", "mask", "label")


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``[{'image': C×H×W, 'mask': H×W, 'meta': {..}}, ..]`` -> ``{'image': N×C×H×W, 'mask': N×H×W, 'meta': [..]}``."""
    if not samples:
        raise ValueError("collate got an empty list of samples")
    keys = list(samples[0])
    for position, sample in enumerate(samples[1:], start=1):
        if list(sample) != keys:
            raise ValueError(f"sample {position} has keys {sorted(sample)}, sample 0 has {sorted(keys)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if key in STACKED_KEYS:
            shapes = {tuple(value.shape) for value in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"cannot stack {key!r} of different shapes {sorted(shapes)}: crop or resize to one size in the "
                    "pipeline, or use batch_size=1 for full-size images"
                )
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch

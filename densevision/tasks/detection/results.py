"""The one COCO results-JSON writer: what CocoMetric evaluates and what tools/infer.py writes.

Entries are ``{image_id, category_id, bbox: [x, y, w, h], score}`` in the image's pixels, values as predicted (no
rounding: the file CocoMetric writes is the one it scores, and pycocotools reads full floats). The image id is the
caller's: a dataset's own id in evaluation; for files on disk, the number a COCO file name carries, else its stem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["coco_results", "image_id_of", "write_coco_results"]


def image_id_of(path: str | os.PathLike) -> int | str:
    """The image id of a file: COCO names files by their id (``000000397133.jpg`` -> 397133), others keep the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else stem


def coco_results(
    image_id: Any,
    boxes: Iterable[Sequence[float]],
    scores: Iterable[float],
    labels: Iterable[int],
    category_ids: Sequence[int],
    **extra: Any,
) -> list[dict[str, Any]]:
    """One image's detections (boxes x1, y1, x2, y2 in pixels; foreground labels ``0..K-1`` mapped through
    ``category_ids``) as COCO results entries; ``extra`` keys (``file_name``) are added to each."""
    entries = []
    for box, score, label in zip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4).tolist(), scores, labels):
        x1, y1, x2, y2 = box
        entries.append(
            {
                "image_id": image_id,
                "category_id": int(category_ids[int(label)]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
                **extra,
            }
        )
    return entries


def write_coco_results(path: str | os.PathLike, entries: Iterable[Mapping[str, Any]]) -> Path:
    """``entries`` as a COCO results JSON list at ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(entries)))
    return path

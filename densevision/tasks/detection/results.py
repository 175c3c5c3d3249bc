"""The one COCO results-JSON writer: what CocoMetric evaluates and what tools/infer.py writes.

Entries are ``{image_id, category_id, bbox: [x, y, w, h], score}`` in the image's pixels, values as predicted (no
rounding: the file CocoMetric writes is the one it scores, and pycocotools reads full floats). The image id is the
caller's: a dataset's own id in evaluation; for files on disk, the number a COCO file name carries, else its stem.
``CocoResultsStream`` writes the file image by image (tools/infer.py: memory does not grow with the images, and the
file is valid JSON after every image, so a run that stops midway leaves the images it finished).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["coco_results", "image_id_of", "write_coco_results", "CocoResultsStream"]


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


class CocoResultsStream:
    """A COCO results JSON list at ``path`` (its folder created), written as entries come: the file always ends in
    ``]`` (each ``add`` writes over it and closes the list again), so it is valid JSON after every ``add`` and no entry
    stays in memory. The bytes are those of ``json.dumps`` of the whole list."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(self.path, "wb")
        self._file.write(b"[]")
        self._file.flush()
        self._empty = True

    def add(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append ``entries`` (one image's detections) and flush, the list closed again."""
        if self._file is None:
            raise ValueError(f"{self.path} is already closed")
        text = ", ".join(json.dumps(entry) for entry in entries)
        if not text:
            return
        self._file.seek(-1, os.SEEK_END)  # over the closing "]"
        self._file.write(("" if self._empty else ", ").encode() + text.encode() + b"]")
        self._file.flush()
        self._empty = False

    def close(self) -> Path:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.path


def write_coco_results(path: str | os.PathLike, entries: Iterable[Mapping[str, Any]]) -> Path:
    """``entries`` as a COCO results JSON list at ``path`` (its folder created)."""
    stream = CocoResultsStream(path)
    try:
        stream.add(entries)
    finally:
        stream.close()
    return stream.path

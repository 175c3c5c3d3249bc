"""The one box drawer: detections (or ground truth) on an image, for tools/infer.py and for a run's sample pictures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from densevision.data.base import default_palette
from densevision.formats.image import display_rgb

__all__ = ["DRAW_THRESHOLD", "MIN_DRAWN_SIZE", "draw_detections"]

DRAW_THRESHOLD = 0.3  # lowest score drawn: below it a picture fills with a detector's many low-scoring boxes
MIN_DRAWN_SIZE = 256  # pixels on the short side of a drawn image: smaller ones are enlarged so names stay readable


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    *,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    threshold: float = DRAW_THRESHOLD,
    boxes_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """``image`` (any bands and dtype, shown as ``display_rgb``) with ``boxes`` (n×4 x1, y1, x2, y2 pixels) drawn in
    their label's palette colour with the class name (and score); boxes scoring under ``threshold`` are left out.

    ``boxes_size`` (height, width): the image the boxes' pixels refer to, when not ``image`` (a prediction on the
    original image drawn on the network's input). Images whose short side is under ``MIN_DRAWN_SIZE`` are drawn
    enlarged by a whole factor (nearest neighbour). Returns an H'×W'×3 uint8 array.
    """
    canvas = Image.fromarray(display_rgb(image))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
    if boxes_size is not None:
        height, width = boxes_size
        boxes = boxes * np.array([canvas.width / width, canvas.height / height] * 2)
    zoom = max(1, math.ceil(MIN_DRAWN_SIZE / min(canvas.size)))
    canvas = canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST)
    colours = palette if palette is not None else default_palette(int(labels.max(initial=0)) + 2)[1:]
    draw = ImageDraw.Draw(canvas)
    for index, (box, label) in enumerate(zip(boxes, labels)):
        score = None if scores is None else float(scores[index])
        if score is not None and score < threshold:
            continue
        colour = tuple(int(c) for c in colours[int(label) % len(colours)])
        x1, y1, x2, y2 = (float(v) * zoom for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, round(min(canvas.size) / 150)))
        name = classes[int(label)] if classes is not None and 0 <= label < len(classes) else str(int(label))
        text = name if score is None else f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        draw.rectangle((left, top, right + 2, bottom), fill=colour)
        draw.text((x1 + 1, y1), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
    return np.asarray(canvas)

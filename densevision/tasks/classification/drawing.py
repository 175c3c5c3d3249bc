"""A class label written on an image: a run's sample pictures of a classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from densevision.formats.image import display_rgb

__all__ = ["caption"]


def caption(image: np.ndarray, label: int, classes: Sequence[str] | None = None, scores: Any = None) -> np.ndarray:
    """``image`` (as ``display_rgb``) with the class name of ``label`` (and its score from ``scores``, a per-class
    sequence) on a black band along the top. H×W×3 uint8."""
    name = classes[label] if classes is not None and 0 <= label < len(classes) else str(label)
    text = name if scores is None else f"{name} ({float(np.asarray(scores)[label]):.2f})"
    canvas = Image.fromarray(display_rgb(image))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((1, 0), text)
    draw.rectangle((0, top, right + 1, bottom), fill=(0, 0, 0))
    draw.text((1, 0), text, fill=(255, 255, 255))
    return np.asarray(canvas)

"""Pictures of a run: loss/metric curves and sample predictions, drawn without knowing the task.

A sample's ground truth and prediction are drawn by the task itself (its ``draw(image, target, classes=...,
palette=...)``, the drawer its predictor's outputs use too); this module lays them out side by side. Matplotlib's
object-oriented API with the Agg canvas: no display, no pyplot global state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["plot_curves", "save_prediction_samples", "image_for_display", "SampleDrawer"]

SampleDrawer = Callable[..., np.ndarray]
"""A task's ``draw(image H×W×3 uint8, target, *, classes, palette) -> H'×W'×3 uint8``."""


def plot_curves(
    history: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, metrics: Sequence[str] | None = None
) -> Figure:
    """``history['train']`` (epoch, loss) and ``history['val']`` (epoch, metrics) -> a two-panel PNG (the figure is
    returned too).

    The right panel shows ``metrics`` (the monitored ones), or else every summary metric (keys without ``/``;
    per-class entries such as ``IoU/Sky`` are left out).
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axis, metric_axis = figure.subplots(1, 2)
    train = history.get("train", [])
    loss_axis.plot([r["epoch"] for r in train], [r["loss"] for r in train], marker=".", label="train loss")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="training loss")
    val = history.get("val", [])
    names = list(metrics) if metrics else sorted({k for r in val for k in r if k != "epoch" and "/" not in k})
    plotted = False
    for name in names:
        points = [(r["epoch"], r[name]) for r in val if name in r]
        if points:
            metric_axis.plot(*zip(*points), marker=".", label=name)
            plotted = True
    metric_axis.set(xlabel="epoch", title="validation")
    if plotted:
        metric_axis.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=100)
    return figure


def image_for_display(image: torch.Tensor) -> np.ndarray:
    """A normalised C×H×W tensor -> H×W×3 float in [0, 1], stretched per image (the runner knows no mean/std)."""
    array = image.detach().float().cpu()
    array = array[:3] if array.shape[0] >= 3 else array[:1].expand(3, -1, -1)
    low, high = array.min(), array.max()
    array = (array - low) / (high - low) if high > low else torch.zeros_like(array)
    return array.permute(1, 2, 0).numpy()


def save_prediction_samples(
    samples: Sequence[tuple[torch.Tensor, Mapping[str, Any], Mapping[str, Any]]],
    directory: str | Path,
    *,
    drawer: SampleDrawer | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """One PNG per ``(image, prediction, ground truth)``: the ground truth beside the prediction, each drawn by
    ``drawer`` (the task's ``draw``); without it, or for an empty target (no ground truth), the image alone."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (image, prediction, target) in enumerate(samples):
        picture = np.round(image_for_display(image) * 255).astype(np.uint8)
        figure = Figure(figsize=(8, 4), layout="constrained")
        for axis, title, drawn in zip(figure.subplots(1, 2), ("ground truth", "prediction"), (target, prediction)):
            axis.set_title(title, fontsize=9)
            axis.set_axis_off()
            axis.imshow(_drawn(drawer, picture, drawn, palette, classes), interpolation="nearest")
        path = directory / f"sample_{index:02d}.png"
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths


def _drawn(
    drawer: SampleDrawer | None,
    picture: np.ndarray,
    target: Mapping[str, Any],
    palette: Sequence[Sequence[int]] | None,
    classes: Sequence[str] | None,
) -> np.ndarray:
    if drawer is None or not target:
        return picture
    return drawer(picture, target, classes=classes, palette=palette)

"""Pictures of a run: loss/metric curves and sample predictions, drawn without knowing the task.

A prediction is drawn by the drawers whose key it has (``mask`` -> colour overlay, ``boxes`` -> rectangles,
``label`` -> title text), so a new task with the usual prediction keys needs no change here. Matplotlib's
object-oriented API with the Agg canvas: no display, no pyplot global state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from densevision.data.base import default_palette

__all__ = ["plot_curves", "save_prediction_samples", "image_for_display", "DRAWERS"]


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


def _class_name(index: int, classes: Sequence[str] | None) -> str:
    return classes[index] if classes is not None and 0 <= index < len(classes) else str(index)


def draw_mask(axis: Any, image: np.ndarray, target: Mapping[str, Any], palette: np.ndarray, classes: Any) -> None:
    """Blend class colours over the image; indices outside the palette (void/ignore) stay uncoloured."""
    mask = torch.as_tensor(target["mask"]).cpu().numpy().astype(np.int64)
    known = (mask >= 0) & (mask < len(palette))
    colours = np.zeros_like(image)
    colours[known] = palette[mask[known]] / 255.0
    blended = np.where(known[..., None], 0.5 * image + 0.5 * colours, image)
    axis.imshow(blended, interpolation="nearest")


def draw_boxes(axis: Any, image: np.ndarray, target: Mapping[str, Any], palette: np.ndarray, classes: Any) -> None:
    """Rectangles (x1, y1, x2, y2 in pixels) coloured by label; with scores, only boxes scoring at least 0.3.

    Boxes given in another image's pixels (``image_size``: a detector's predictions in the original image, drawn on the
    resized network input) are scaled to the image shown."""
    axis.imshow(image)
    boxes = torch.as_tensor(target["boxes"]).detach().cpu().reshape(-1, 4).float()
    if target.get("image_size") is not None:
        (height, width), (shown_h, shown_w) = target["image_size"], image.shape[:2]
        boxes = boxes * torch.tensor([shown_w / width, shown_h / height] * 2)
    labels = torch.as_tensor(target.get("labels", torch.zeros(len(boxes)))).cpu().long().reshape(-1)
    scores = target.get("scores")
    scores = torch.as_tensor(scores).cpu().reshape(-1) if scores is not None else None
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if scores is not None and scores[i] < 0.3:
            continue
        label = int(labels[i])
        colour = palette[label % len(palette)] / 255.0
        axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        text = _class_name(label, classes) + (f" {float(scores[i]):.2f}" if scores is not None else "")
        axis.text(x1, y1, text, color="white", fontsize=7, backgroundcolor=colour, va="bottom")


def draw_label(axis: Any, image: np.ndarray, target: Mapping[str, Any], palette: np.ndarray, classes: Any) -> None:
    """Show the image with the class (and its score, when given) as the title."""
    axis.imshow(image)
    label = int(torch.as_tensor(target["label"]))
    scores = target.get("scores")
    score = f" ({float(torch.as_tensor(scores)[label]):.2f})" if scores is not None else ""
    axis.set_title(f"{axis.get_title()}: {_class_name(label, classes)}{score}", fontsize=9)


Drawer = Callable[[Any, np.ndarray, Mapping[str, Any], np.ndarray, Any], None]
# Checked in order; a sample is drawn by every drawer whose key it has.
DRAWERS: dict[str, Drawer] = {"mask": draw_mask, "boxes": draw_boxes, "label": draw_label}


def _draw_panel(
    axis: Any, title: str, image: np.ndarray, target: Mapping[str, Any], palette: np.ndarray, classes: Any
) -> bool:
    axis.set_title(title, fontsize=9)
    axis.set_axis_off()
    drawers = [drawer for key, drawer in DRAWERS.items() if key in target]
    for drawer in drawers:
        drawer(axis, image, target, palette, classes)
    return bool(drawers)


def save_prediction_samples(
    samples: Sequence[tuple[torch.Tensor, Mapping[str, Any], Mapping[str, Any]]],
    directory: str | Path,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """One PNG per ``(image, prediction, ground truth)``: the ground truth beside the prediction.

    Panels appear only for what a drawer understands; a prediction with none of the known keys still shows the image.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if palette is not None:
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    else:
        # The colours tools/infer.py uses too, so a run's samples and its predictions look alike.
        colours = np.asarray(default_palette(len(classes) if classes is not None else 256), dtype=np.uint8)
    paths = []
    for index, (image, prediction, target) in enumerate(samples):
        picture = image_for_display(image)
        figure = Figure(figsize=(8, 4), layout="constrained")
        truth_axis, prediction_axis = figure.subplots(1, 2)
        if not _draw_panel(truth_axis, "ground truth", picture, target, colours, classes):
            truth_axis.imshow(picture)
        if not _draw_panel(prediction_axis, "prediction", picture, prediction, colours, classes):
            prediction_axis.imshow(picture)
        path = directory / f"sample_{index:02d}.png"
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths

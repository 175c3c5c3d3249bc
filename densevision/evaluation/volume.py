"""Per-volume segmentation metrics: Dice and the 95th-percentile Hausdorff distance, the medical imaging protocol.

A 2D model predicts slices; medical results are reported per volume (the Medical Segmentation Decathlon, nnU-Net,
MONAI): the slices of each volume are stacked back, every class is scored on the whole volume in physical units
(the voxel spacing the dataset puts in each slice's ``meta``), and the per-volume scores are averaged.

HD95 follows MONAI's ``compute_hausdorff_distance(percentile=95)``: surface voxels are those a 6-connected erosion
removes; the distances from each surface to the other (Euclidean, in mm) are taken in both directions and the larger
of the two 95th percentiles is the score. A class absent from both the ground truth and the prediction of a volume
is left out of that volume's means (NaN); absent from exactly one of them, it scores Dice 0 and an HD95 of the
volume's diagonal (the largest distance it holds), so a missed or invented structure is penalised and means stay
finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densevision.data.checks import DatasetError
from densevision.evaluation.base import PerClassMetric
from densevision.registry import METRICS, ConfigError

__all__ = ["VolumeSegmentationMetric", "dice_score", "hausdorff_distance_95", "surface_distances", "VOLUME_META_KEYS"]

VOLUME_META_KEYS = ("volume", "slice", "num_slices", "spacing")


def dice_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """``2|P ∩ T| / (|P| + |T|)`` of two boolean arrays; NaN when both are empty."""
    total = int(prediction.sum()) + int(target.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(prediction, target).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that a 6-connected (face) erosion removes; voxels on the array's border count."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (in the units of ``spacing``) from each surface voxel of ``source`` to the nearest surface voxel of
    ``target``; both non-empty boolean arrays of the same shape."""
    target_surface = _surface(target)
    distance = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
    return distance[_surface(source)]


def hausdorff_distance_95(prediction: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> float:
    """The symmetric 95th-percentile Hausdorff distance of two boolean arrays (MONAI's definition); NaN when both
    are empty, the array's diagonal when exactly one is."""
    has_prediction, has_target = bool(prediction.any()), bool(target.any())
    if not has_prediction and not has_target:
        return math.nan
    if not has_prediction or not has_target:
        return float(np.linalg.norm(np.asarray(prediction.shape) * np.asarray(spacing, dtype=np.float64)))
    # Both surfaces lie in the bounding box of the two masks: compute there (with a one-voxel margin) only.
    coords = np.argwhere(prediction | target)
    low = np.maximum(coords.min(axis=0) - 1, 0)
    high = np.minimum(coords.max(axis=0) + 2, prediction.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    pred, true = prediction[box], target[box]
    forward = surface_distances(pred, true, spacing)
    backward = surface_distances(true, pred, spacing)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


@METRICS.register_module()
class VolumeSegmentationMetric(PerClassMetric):
    """Mean over volumes of each class's Dice and HD95, from slice predictions carrying volume meta.

    Slices arrive in any order; each needs ``meta`` with ``volume``, ``slice``, ``num_slices`` and ``spacing``
    (what the NIfTI datasets give). A volume is scored as soon as all its slices are in, and its slices dropped; in a
    distributed run the slices are gathered (``gather_states``) and the volumes scored in ``compute``. A volume
    still missing slices in ``compute`` is an error naming it (an evaluation dataset must keep every slice).

    ``compute()``: ``mDice`` and ``mHD95`` (means over classes of the per-class means over volumes), ``Dice/<class>``
    and ``HD95/<class>``. The background class (index 0) is left out unless ``include_background``. Voxels whose
    ground truth is ``ignore_index`` count for no class.
    """

    gather_states = ("slices", "volumes")

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
        include_background: bool = False,
    ) -> None:
        self.include_background = include_background
        super().__init__(num_classes, ignore_index, class_names)
        self.reset()

    def _configure(self, num_classes: int | None, ignore_index: int | None, class_names: Sequence[str] | None) -> None:
        super()._configure(num_classes, ignore_index, class_names)
        if self.num_classes is not None and self.num_classes < (1 if self.include_background else 2):
            raise ConfigError(f"VolumeSegmentationMetric needs a foreground class, got num_classes={self.num_classes}")

    @property
    def scored_classes(self) -> list[int]:
        """The class indices reported: all, or all but the background."""
        return self._require_classes()

    def _require_classes(self) -> list[int]:
        if self.num_classes is None:
            raise ConfigError("VolumeSegmentationMetric needs num_classes (or class_names, or a dataset's metainfo)")
        return list(range(0 if self.include_background else 1, self.num_classes))

    def reset(self) -> None:
        self.slices: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []
        self._received: dict[str, int] = {}

    def update(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
        targets = batch["mask"]
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for a batch of {len(targets)} masks")
        metas = batch.get("meta") or [{}] * len(preds)
        self._require_classes()  # fails now, not after a whole split, when the classes are unknown
        for index, (pred, target, meta) in enumerate(zip(preds, targets, metas)):
            missing = [key for key in VOLUME_META_KEYS if key not in meta]
            if missing:
                where = meta.get("path", f"image {index} of the batch")
                raise DatasetError(
                    f"{where}: VolumeSegmentationMetric needs slice meta {list(VOLUME_META_KEYS)}, missing {missing} "
                    "(use a NIfTI volume dataset, or SegmentationMetric for 2D images)"
                )
            key = str(meta.get("path", meta["volume"]))
            self.slices.append(
                {
                    "key": key,
                    "volume": str(meta["volume"]),
                    "slice": int(meta["slice"]),
                    "num_slices": int(meta["num_slices"]),
                    "spacing": tuple(float(s) for s in meta["spacing"]),
                    "pred": _compact(pred["mask"]),
                    "target": _compact(target),
                }
            )
            self._received[key] = self._received.get(key, 0) + 1
            if self._received[key] == int(meta["num_slices"]):
                self._score_volume(key)

    def _score_volume(self, key: str) -> None:
        """Stack the slices of volume ``key``, score it, and drop its slices."""
        records = [record for record in self.slices if record["key"] == key]
        self.slices = [record for record in self.slices if record["key"] != key]
        by_index = {record["slice"]: record for record in records}
        first = records[0]
        missing = sorted(set(range(first["num_slices"])) - set(by_index))
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DatasetError(
                f"volume {first['volume']} ({key}): {len(missing)} of its {first['num_slices']} slices were not "
                f"evaluated (slice {shown}); an evaluation dataset must keep every slice (empty_slice_rate=1)"
            )
        order = range(first["num_slices"])
        prediction = np.stack([np.asarray(by_index[i]["pred"]) for i in order], axis=-1)
        target = np.stack([np.asarray(by_index[i]["target"]) for i in order], axis=-1)
        self.volumes.append(
            {"volume": first["volume"], **self.score(prediction, target, first["spacing"])}  # H×W×slices
        )

    def score(self, prediction: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, list[float]]:
        """``{'dice': [...], 'hd95': [...]}`` per scored class of one volume (class-index arrays of one shape)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {prediction.shape} does not match target shape {target.shape}")
        valid = target != self.ignore_index if self.ignore_index is not None else np.ones(target.shape, dtype=bool)
        dice, hd95 = [], []
        for label in self.scored_classes:
            pred, true = (prediction == label) & valid, target == label
            dice.append(dice_score(pred, true))
            hd95.append(hausdorff_distance_95(pred, true, spacing))
        return {"dice": dice, "hd95": hd95}

    def compute(self) -> dict[str, float]:
        for key in dict.fromkeys(record["key"] for record in self.slices):
            self._score_volume(key)
        names = self.class_names or [str(i) for i in range(self.num_classes or 0)]
        results: dict[str, float] = {}
        dice_means, hd_means = [], []
        for position, label in enumerate(self.scored_classes):
            dice = _nanmean([volume["dice"][position] for volume in self.volumes])
            hd95 = _nanmean([volume["hd95"][position] for volume in self.volumes])
            results[f"Dice/{names[label]}"], results[f"HD95/{names[label]}"] = dice, hd95
            dice_means.append(dice)
            hd_means.append(hd95)
        return {"mDice": _nanmean(dice_means), "mHD95": _nanmean(hd_means), **results}

    def per_volume(self) -> list[dict[str, Any]]:
        """Each scored volume's name and per-class ``dice`` and ``hd95`` lists (in ``scored_classes`` order)."""
        return [dict(volume) for volume in self.volumes]

    def summary_table(self) -> str:
        """Per-class Dice (%) and HD95 (mm) averaged over volumes, with the number of volumes each is defined on."""
        results = self.compute()
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        scored = [names[label] for label in self.scored_classes]
        width = max(len("class"), *(len(name) for name in scored))
        header = f"{'class':<{width}}  {'Dice %':>7}  {'HD95 mm':>8}  {'volumes':>7}"
        lines = [header, "-" * len(header)]
        for position, name in enumerate(scored):
            defined = sum(not math.isnan(volume["dice"][position]) for volume in self.volumes)
            dice, hd95 = results[f"Dice/{name}"], results[f"HD95/{name}"]
            lines.append(f"{name:<{width}}  {_format(100 * dice, 7)}  {_format(hd95, 8)}  {defined:>7}")
        lines.append("-" * len(header))
        mean = f"{'mean':<{width}}  {_format(100 * results['mDice'], 7)}  {_format(results['mHD95'], 8)}"
        lines.append(f"{mean}  {len(self.volumes):>7}")
        return "\n".join(lines)


def _compact(mask: Any) -> np.ndarray:
    """A slice's class indices as a small numpy array (records are kept, and gathered, until the volume is done)."""
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"class indices outside 0..65535: {array.min()}..{array.max()}")
    return array.astype(np.uint8 if not array.size or array.max() < 256 else np.uint16)


def _nanmean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def _format(value: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width}.2f}"

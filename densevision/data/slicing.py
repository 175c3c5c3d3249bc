"""How 2D networks see a volume: slices along one axis, neighbouring slices as channels (2.5D), CT intensities clipped
to a window and scaled, MR z-scored per volume over non-zero voxels. Training (``data.medical``) and whole-volume
prediction (``formats.nifti``, ``spatial``) share this one definition, so a prediction is prepared as training was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densevision.formats.nifti import read_volume
from densevision.registry import ConfigError

__all__ = ["MODALITIES", "STATS_CHUNK", "VolumeSlicing", "voxel_spacing"]

MODALITIES = ("CT", "MR", "none")
STATS_CHUNK = 16  # slices per read when a volume's statistics are computed through its proxy


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Physical size of a voxel along the array's three axes (mm in NIfTI): the lengths of the affine's columns."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


@dataclass(frozen=True)
class VolumeSlicing:
    """How a volume becomes 2D network inputs: the slicing axis, the 2.5D context and the intensity handling.

    Shared by the datasets and the volume prediction writer, so that inference sees slices exactly as training did.
    ``modality``: ``'CT'`` clips to ``window`` (Hounsfield units) and scales to [0, 1]; ``'MR'`` z-scores each
    volume (each modality of a 4-D volume) over its non-zero voxels; ``'none'`` passes values through as float32.
    """

    axis: int = -1
    context: int = 0
    modality: str = "CT"
    window: tuple[float, float] = (-1000.0, 400.0)

    def __post_init__(self) -> None:
        if self.axis not in (-3, -2, -1, 0, 1, 2):
            raise ConfigError(f"axis must be one of the volume's three spatial axes (0, 1, 2 or -1), got {self.axis!r}")
        if not isinstance(self.context, int) or self.context < 0:
            raise ConfigError(f"context (neighbouring slices on each side) must be an int >= 0, got {self.context!r}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        low, high = (float(v) for v in self.window)
        if not low < high:
            raise ConfigError(f"window must be (low, high) with low < high, got {self.window!r}")
        object.__setattr__(self, "window", (low, high))

    @property
    def spatial_axis(self) -> int:
        """The slicing axis as 0, 1 or 2."""
        return self.axis % 3

    def in_plane_axes(self) -> tuple[int, int]:
        """The two array axes a slice spans, in order: its height and width."""
        first, second = (a for a in range(3) if a != self.spatial_axis)
        return first, second

    def channels(self, modalities: int = 1) -> int:
        """Input channels of the network: ``modalities × (2 × context + 1)``."""
        return modalities * (2 * self.context + 1)

    def statistics(self, data: Any) -> np.ndarray | None:
        """Per-modality (mean, std) of the non-zero voxels (``MR``), an M×2 array; ``None`` for other modalities.

        ``data`` is a volume (array or nibabel proxy, X×Y×Z or X×Y×Z×M), read in chunks of slices.
        """
        if self.modality != "MR":
            return None
        modalities = data.shape[3] if len(data.shape) == 4 else 1
        count, total, squares = np.zeros(modalities), np.zeros(modalities), np.zeros(modalities)
        for start in range(0, data.shape[2], STATS_CHUNK):
            chunk = np.asarray(data[:, :, start : start + STATS_CHUNK], dtype=np.float64)
            chunk = chunk.reshape(-1, modalities)
            nonzero = chunk != 0
            count += nonzero.sum(axis=0)
            total += np.where(nonzero, chunk, 0).sum(axis=0)
            squares += np.where(nonzero, chunk * chunk, 0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros(modalities), where=count > 0)
        variance = np.divide(squares, count, out=np.ones(modalities), where=count > 0) - mean**2
        std = np.sqrt(np.clip(variance, 0, None))
        return np.stack([mean, np.where(std > 0, std, 1.0)], axis=1)

    def indices(self, index: int, num_slices: int) -> np.ndarray:
        """The slice indices of sample ``index`` and its neighbours, edge slices repeated past the ends."""
        return np.clip(np.arange(index - self.context, index + self.context + 1), 0, num_slices - 1)

    def stack(self, data: Any, index: int, stats: np.ndarray | None = None, *, path: Path | None = None) -> np.ndarray:
        """Slice ``index`` of ``data`` with its context slices and intensity handling: H×W×C float32, channels
        ordered by slice offset, then modality."""
        num_slices = data.shape[self.spatial_axis]
        if not 0 <= index < num_slices:
            raise IndexError(f"slice {index} outside the volume's {num_slices} slices along axis {self.spatial_axis}")
        wanted = self.indices(index, num_slices)
        slicer = [slice(None)] * len(data.shape)
        slicer[self.spatial_axis] = slice(int(wanted.min()), int(wanted.max()) + 1)
        slab = read_volume(data, tuple(slicer), path or Path("<volume>"), "image")
        slab = np.take(slab, wanted - wanted.min(), axis=self.spatial_axis)
        slab = np.moveaxis(slab, self.spatial_axis, 2)  # H×W×offsets(×M)
        if slab.ndim == 3:
            slab = slab[..., None]
        return self.normalise(slab, stats).reshape(*slab.shape[:2], -1)

    def normalise(self, values: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
        """The modality's intensity handling of voxel values whose last axis holds the modalities (float32)."""
        values = np.asarray(values, dtype=np.float32)
        if self.modality == "CT":
            low, high = self.window
            return (np.clip(values, low, high) - np.float32(low)) / np.float32(high - low)
        if self.modality == "MR":
            if stats is None:
                raise ValueError("MR intensity handling needs the volume's statistics (VolumeSlicing.statistics)")
            mean, std = stats[:, 0].astype(np.float32), stats[:, 1].astype(np.float32)
            return np.where(values != 0, (values - mean) / std, np.float32(0)).astype(np.float32)
        return values

    def label_slice(self, data: Any, index: int, *, path: Path | None = None) -> np.ndarray:
        """Slice ``index`` of a label volume as H×W, in the same orientation as ``stack``."""
        slicer = [slice(None)] * len(data.shape)
        slicer[self.spatial_axis] = index
        return read_volume(data, tuple(slicer), path or Path("<label volume>"), "label")

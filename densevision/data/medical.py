"""NIfTI volumes trained slice by slice (the models are 2D), as MONAI and nnU-Net users keep them.

A sample is one 2D slice of a volume along ``axis`` (the last by default), with ``context`` neighbouring slices on
each side as extra channels (2.5D: ``in_chans = modalities × (2 × context + 1)``; slices past the volume's ends repeat
the edge slice). Intensities follow the modality: CT is clipped to a Hounsfield window and scaled to [0, 1]; MR is
z-scored per volume over its non-zero voxels (zeros, the background of skull-stripped scans, stay 0). Slices without
foreground can be kept at a lower rate during training (``empty_slice_rate``).

Volumes are read lazily and one at a time: an uncompressed ``.nii`` through nibabel's array proxy (only the slices
asked for are read), a ``.nii.gz`` decompressed once into the dataset's one-volume cache (gzip cannot seek, so
slice-wise reads would decompress the file over and over). A dataset larger than memory trains; reading is fastest
with uncompressed ``.nii`` files or when samples of one volume come together (evaluation order).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densevision.data.base import SegmentationDataset, image_to_tensor, mask_to_tensor
from densevision.data.checks import DatasetError, DatasetSummary, FileChecker, ProblemHandler, check_label_values
from densevision.data.io import Colour, list_files
from densevision.data.slicing import STATS_CHUNK, VolumeSlicing, voxel_spacing
from densevision.formats.nifti import (
    NIFTI_SUFFIXES,
    compressed,
    load_nifti,
    nifti_stem,
    read_volume,
    volume_data,
)
from densevision.registry import DATASETS, ConfigError

logger = logging.getLogger("densevision")

__all__ = [
    "NiftiSliceDataset",
    "NiftiFolderDataset",
    "read_decathlon_json",
    "slicing_from_config",
]


def _label_indices(values: np.ndarray, path: Path) -> np.ndarray:
    """Label voxels as integers; non-integral values (a resampled label map) are an error naming the file."""
    if np.issubdtype(values.dtype, np.integer):
        return values
    if values.dtype == bool:
        return values.astype(np.uint8)
    rounded = np.rint(values)
    if not np.array_equal(rounded, values):
        bad = np.unique(values[rounded != values])[:5]
        raise DatasetError(f"label volume {path} holds non-integer values {[float(v) for v in bad]}")
    return rounded.astype(np.int64)


def _compact(mask: np.ndarray) -> np.ndarray:
    """Valid class indices in the smallest unsigned dtype (OpenCV-based transforms take uint8/uint16)."""
    return mask.astype(np.uint8 if not mask.size or mask.max() < 256 else np.uint16)


@dataclass(frozen=True)
class _Volume:
    image: Path
    label: Path
    name: str
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]


class NiftiSliceDataset(SegmentationDataset):
    """Image/label volume pairs served as 2D slices: ``{'image': C×H×W float32, 'mask': H×W int64, 'meta'}``.

    ``samples`` are ``(image volume, label volume)`` paths. ``meta`` has ``path``/``mask_path`` (the volumes),
    ``volume`` (the case name), ``slice``, ``num_slices``, ``axis`` and ``spacing`` (the physical size of a pixel's
    height and width and of the slice step): what ``VolumeSegmentationMetric`` reassembles volumes from.

    ``empty_slice_rate`` < 1 (training) keeps every slice with foreground (a class other than 0) and, per epoch,
    that fraction of the slices without, drawn at random; the label volumes are read once at construction to find
    them. Evaluation keeps every slice (the default, 1.0) in volume order.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        *,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        axis: int = -1,
        context: int = 0,
        modality: str = "CT",
        window: Sequence[float] = (-1000.0, 400.0),
        empty_slice_rate: float = 1.0,
        affine_tolerance: float = 1e-3,
    ) -> None:
        super().__init__(samples, classes=classes, palette=palette, ignore_index=ignore_index, pipeline=pipeline)
        self.slicing = VolumeSlicing(axis=axis, context=context, modality=modality, window=tuple(window))
        if not 0 <= empty_slice_rate <= 1:
            raise ConfigError(f"empty_slice_rate must be in [0, 1], got {empty_slice_rate}")
        self.empty_slice_rate = float(empty_slice_rate)
        self.affine_tolerance = float(affine_tolerance)
        if not self.samples:
            raise DatasetError("no image/label volume pairs")
        self.volumes = [self._header(image, label) for image, label in self.samples]
        self._unusable: dict[int, str] = {}  # volume index -> why its slices are left out (see _split_by_foreground)
        self._cached: tuple[int, Any, Any] | None = None
        self._stats: dict[int, np.ndarray | None] = {}
        axis_ = self.slicing.spatial_axis
        if self.empty_slice_rate == 1.0:
            self._slices = [(v, s) for v, volume in enumerate(self.volumes) for s in range(volume.shape[axis_])]
            self._empty: list[tuple[int, int]] = []
        else:
            self._slices, self._empty = self._split_by_foreground()
            if self._unusable:
                logger.warning(
                    "%d of %d volume(s) left out (tools/check_dataset.py names each): %s",
                    len(self._unusable), len(self.volumes), next(iter(self._unusable.values())),
                )  # fmt: skip
        self._num_empty = round(self.empty_slice_rate * len(self._empty))

    def _header(self, image_path: Path, label_path: Path) -> _Volume:
        image = load_nifti(image_path)
        spacing = voxel_spacing(image.affine)
        first, second = self.slicing.in_plane_axes()
        step = spacing[self.slicing.spatial_axis]
        return _Volume(
            image_path, label_path, nifti_stem(image_path), image.shape, (spacing[first], spacing[second], step)
        )

    def _split_by_foreground(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Slices with a foreground voxel, and slices without, reading each label volume once. A label volume that
        cannot be read or does not fit its image is left out and kept in ``_unusable``: ``check()`` names each one
        (with every other problem) instead of the first stopping the dataset's construction."""
        full, empty = [], []
        others = self.slicing.in_plane_axes()
        for v, volume in enumerate(self.volumes):
            try:
                label = load_nifti(volume.label, "label")
                self._check_shapes(volume, label)
                values = _label_indices(np.asarray(volume_data(label, volume.label, "label")), volume.label)
            except DatasetError as err:
                self._unusable[v] = str(err)
                continue
            if values.ndim == 4:
                values = values[..., 0]
            has_foreground = ((values != 0) & (values != self.ignore_index)).any(axis=others)
            for s, flag in enumerate(has_foreground):
                (full if flag else empty).append((v, s))
        return full, empty

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cached"] = None  # a decoded volume is not shipped to data-loader workers
        return state

    def __len__(self) -> int:
        return len(self._slices) + self._num_empty

    @property
    def modalities(self) -> int:
        """Channels per slice in the image volumes (4-D volumes hold several MR sequences)."""
        shape = self.volumes[0].shape
        return shape[3] if len(shape) == 4 else 1

    @property
    def channels_per_band(self) -> int:
        """Input channels per modality: the slice and its context slices (per-band statistics repeat this often)."""
        return self.slicing.channels(1)

    def describe(self) -> str:
        """A line for the run log: volumes, slices and channels."""
        slices = f"{len(self)} slices"
        if self._num_empty or self._empty:
            slices += f" ({len(self._slices)} with foreground + {self._num_empty} of {len(self._empty)} without)"
        return (
            f"{type(self).__name__}: {len(self.volumes)} volumes, {slices} along axis {self.slicing.spatial_axis}, "
            f"{self.slicing.channels(self.modalities)} channels ({self.slicing.modality})"
        )

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        if index < len(self._slices):
            return self._slices[index]
        return self._empty[int(torch.randint(len(self._empty), ()).item())]

    def _check_shapes(self, volume: _Volume, label: Any) -> None:
        spatial = tuple(label.shape[:3])
        if label.ndim == 4 and label.shape[3] != 1:
            raise DatasetError(f"label volume {volume.label} is 4-D {label.shape}; expected one label map")
        if spatial != tuple(volume.shape[:3]):
            raise DatasetError(
                f"label volume {volume.label} has shape {spatial} but its image {volume.image} has "
                f"{tuple(volume.shape[:3])}"
            )

    def _volume(self, v: int) -> tuple[Any, Any]:
        """Image and label data of volume ``v``: the one cached volume, or loaded in its place."""
        if self._cached is None or self._cached[0] != v:
            volume = self.volumes[v]
            self._cached = None
            image = load_nifti(volume.image)
            label = load_nifti(volume.label, "label")
            self._check_shapes(volume, label)
            self._cached = (v, volume_data(image, volume.image), volume_data(label, volume.label, "label"))
        return self._cached[1], self._cached[2]

    def _statistics(self, v: int, data: Any) -> np.ndarray | None:
        if v not in self._stats:
            self._stats[v] = self.slicing.statistics(data)
        return self._stats[v]

    def _mask(self, v: int, s: int, label_data: Any) -> np.ndarray:
        volume = self.volumes[v]
        values = self.slicing.label_slice(label_data, s, path=volume.label)
        if values.ndim == 3:
            values = values[..., 0]
        values = _label_indices(values, volume.label)
        check_label_values(values, self.num_classes, self.ignore_index, volume.label)
        return _compact(values)

    def read_mask(self, index: int) -> np.ndarray:
        """Class indices of slice ``index`` as H×W int64, unaugmented (for class statistics)."""
        v, s = self._locate(index)
        return self._mask(v, s, self._volume(v)[1]).astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, s = self._locate(index)
        volume = self.volumes[v]
        image_data, label_data = self._volume(v)
        image = self.slicing.stack(image_data, s, self._statistics(v, image_data), path=volume.image)
        mask = self._mask(v, s, label_data)
        out = self.pipeline(image=image, mask=mask)
        return {
            "image": image_to_tensor(out["image"]),
            "mask": mask_to_tensor(out["mask"]),
            "meta": {
                "path": str(volume.image),
                "mask_path": str(volume.label),
                "volume": volume.name,
                "slice": s,
                "num_slices": volume.shape[self.slicing.spatial_axis],
                "axis": self.slicing.spatial_axis,
                "spacing": volume.spacing,
                "ori_shape": tuple(image.shape[:2]),
            },
        }

    def iter_volumes(self) -> Iterator[tuple[_Volume, Any, np.ndarray | None]]:
        """Each image volume's data and statistics in turn (one in memory at a time)."""
        for v, volume in enumerate(self.volumes):
            data = volume_data(load_nifti(volume.image), volume.image)
            yield volume, data, self._statistics(v, data)

    def band_values(self) -> Iterator[np.ndarray]:
        """N×M arrays of every voxel's values after the intensity handling (M modalities), for per-band statistics
        of what the pipeline's ``Normalize`` sees."""
        for _, data, stats in self.iter_volumes():
            for start in range(0, data.shape[2], STATS_CHUNK):
                chunk = np.asarray(data[:, :, start : start + STATS_CHUNK])
                modalities = chunk.shape[3] if chunk.ndim == 4 else 1
                yield self.slicing.normalise(chunk.reshape(-1, modalities), stats)

    def _check_affine(self, volume: _Volume, image: Any, label: Any) -> None:
        difference = np.abs(np.asarray(image.affine) - np.asarray(label.affine))
        if difference.max() > self.affine_tolerance:
            row, col = np.unravel_index(int(difference.argmax()), difference.shape)
            raise DatasetError(
                f"label volume {volume.label} is not aligned with its image {volume.image}: their affines differ by "
                f"{difference.max():.4g} (tolerance {self.affine_tolerance:g}) at [{row}, {col}]: "
                f"{label.affine[row, col]:.6g} vs {image.affine[row, col]:.6g}"
            )

    @classmethod
    def prediction_options(cls, dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What a predictor needs to prepare whole volumes as this config trains on them (tools/infer.py)."""
        return {"file_formats": {"nifti": {"slicing": slicing_from_config(dataset_cfg)}}}

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Read every volume pair: unreadable or truncated files, a label volume whose shape or affine differs from
        its image's (beyond ``affine_tolerance``), label values outside the classes, and slices (as the pipeline
        gets them) whose channels are not ``channels`` or that are smaller than the pipeline's crop."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        for v, volume in enumerate(self.volumes):
            with checker.sample(volume.image):
                if v in self._unusable:
                    raise DatasetError(self._unusable[v])
                image = load_nifti(volume.image)
                label = load_nifti(volume.label, "label")
                self._check_shapes(volume, label)
                self._check_affine(volume, image, label)
                values = _label_indices(np.asarray(volume_data(label, volume.label, "label")), volume.label)
                counts += check_label_values(values, self.num_classes, self.ignore_index, volume.label)
                ignored += int(np.count_nonzero(values == self.ignore_index))
                data = volume_data(image, volume.image)
                if not compressed(volume.image):  # read it all: a truncated file fails here, not in training
                    for start in range(0, volume.shape[2], STATS_CHUNK):
                        read_volume(
                            data, (slice(None), slice(None), slice(start, start + STATS_CHUNK)), volume.image, "image"
                        )
                middle = volume.shape[self.slicing.spatial_axis] // 2
                checker.image(
                    volume.image, self.slicing.stack(data, middle, self._statistics(v, data), path=volume.image)
                )
        return checker.summary(len(self.volumes), self.classes, counts, unit="voxels", ignored=ignored)


def _pair_volumes(
    img_dir: Path, label_dir: Path, img_suffix: str | None, label_suffix: str | None
) -> list[tuple[Path, Path]]:
    """Image and label volumes matched by name (without ``img_suffix``/``label_suffix``; default ``.nii.gz`` or
    ``.nii``); an image without a label is an error naming it."""

    def by_name(folder: Path, suffix: str | None, what: str) -> dict[str, Path]:
        if not folder.is_dir():
            raise DatasetError(f"{what} folder {folder} not found")
        suffixes = NIFTI_SUFFIXES if suffix is None else (suffix,)
        files, _ = list_files(folder, suffixes)
        found: dict[str, Path] = {}
        for path in files:
            name = path.name[: -len(suffix)] if suffix is not None else nifti_stem(path)
            if name in found:
                raise DatasetError(f"two volumes in {folder} share the name {name!r}: {found[name].name}, {path.name}")
            found[name] = path
        return found

    images = by_name(img_dir, img_suffix, "image")
    if not images:
        raise DatasetError(f"no NIfTI volumes ({img_suffix or ', '.join(NIFTI_SUFFIXES)}) in {img_dir}")
    labels = by_name(label_dir, label_suffix, "label")
    unmatched = [str(path) for name, path in images.items() if name not in labels]
    if unmatched:
        raise DatasetError(
            f"{len(unmatched)} image volume(s) have no label volume of the same name in {label_dir}: "
            f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
        )
    return [(images[name], labels[name]) for name in images]


@DATASETS.register_module()
class NiftiFolderDataset(NiftiSliceDataset):
    """Image volumes in ``img_dir`` with label volumes of the same name in ``label_dir`` (``img_suffix`` e.g.
    ``'_0000.nii.gz'`` for nnU-Net's image names); see ``NiftiSliceDataset`` for the slicing arguments."""

    def __init__(
        self,
        img_dir: str | Path,
        label_dir: str | Path,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        img_suffix: str | None = None,
        label_suffix: str | None = None,
        modality: str = "CT",
        **slicing: Any,
    ) -> None:
        samples = _pair_volumes(Path(img_dir), Path(label_dir), img_suffix, label_suffix)
        super().__init__(
            samples,
            classes=classes,
            palette=palette,
            ignore_index=ignore_index,
            pipeline=pipeline,
            modality=modality,
            **slicing,
        )


def _decathlon_modality(modality: Any, path: Path) -> str:
    """``'CT'`` when every channel is CT, ``'MR'`` when none is (nnU-Net's rule: z-score all but CT)."""
    names = [str(v) for v in modality.values()] if isinstance(modality, Mapping) else []
    if not names:
        raise DatasetError(f"{path} has no 'modality'; set modality='CT' or 'MR' in the dataset config")
    is_ct = [name.upper() == "CT" for name in names]
    if all(is_ct):
        return "CT"
    if not any(is_ct):
        return "MR"
    raise ConfigError(f"{path} mixes CT with other modalities {names}; set modality in the dataset config")


def read_decathlon_json(root: str | Path) -> dict[str, Any]:
    """``root/dataset.json`` of a Decathlon task; missing or unreadable, a ``DatasetError`` saying what is expected."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"Decathlon task not found: {path} is missing (expected {root}/dataset.json, imagesTr/ and labelsTr/ "
            "as extracted from a Medical Segmentation Decathlon Task*.tar)"
        )
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
    if not isinstance(description, dict):
        raise DatasetError(f"{path} does not hold a JSON object")
    return description


def slicing_from_config(dataset_cfg: Mapping[str, Any]) -> VolumeSlicing:
    """The ``VolumeSlicing`` a NIfTI dataset config trains with (its ``axis``, ``context``, ``modality`` and
    ``window``; a Decathlon config without ``modality`` takes it from its ``dataset.json``), for prediction."""
    keys = ("axis", "context", "window")
    options = {key: dataset_cfg[key] for key in keys if dataset_cfg.get(key) is not None}
    modality = dataset_cfg.get("modality")
    if modality is None and dataset_cfg.get("root") is not None:
        root = Path(dataset_cfg["root"])
        modality = _decathlon_modality(read_decathlon_json(root).get("modality"), root / "dataset.json")
    if "window" in options:
        options["window"] = tuple(options["window"])
    return VolumeSlicing(modality=modality or "CT", **options)

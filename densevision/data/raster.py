"""Georeferenced scenes (GeoTIFF and whatever else GDAL reads) trained on windows, without cutting tiles first.

A scene raster (any band count and dtype; ``bands`` picks and orders them, 1-based as in GDAL) pairs with a
single-band label raster of class indices covering the same pixels: the same size, coordinate reference system and
geotransform, or the pair is refused. Training samples random windows (``mode='random'``), evaluation a fixed grid of
windows that covers every pixel once (``mode='grid'``); every read is a windowed read of the window alone, so a scene
larger than memory trains. Pixels a scene marks as nodata (its nodata value or mask, in any selected band) are the
ignore index in the label and 0 in the image; windows past a scene's edge are padded the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densevision.data.base import SegmentationDataset, image_to_tensor, mask_to_tensor
from densevision.data.checks import DatasetError, DatasetSummary, FileChecker, ProblemHandler, check_label_values
from densevision.data.io import Colour
from densevision.data.mask_folder import pair_by_stem
from densevision.formats.geotiff import (
    check_alignment,
    grid_windows,
    open_raster,
    read_label_window,
    read_scene_window,
    scene_info,
)
from densevision.registry import DATASETS, ConfigError

__all__ = [
    "RASTER_MODES",
    "RasterWindowDataset",
    "BandStatistics",
    "band_values",
]

RASTER_MODES = ("random", "grid")
CHECK_BLOCK = 1024  # pixels per side of the windows check() and band statistics read a scene in


def _as_size(value: int | Sequence[int], name: str) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ConfigError(f"{name} must be a positive int or (height, width), got {value!r}")
    return size


@DATASETS.register_module()
class RasterWindowDataset(SegmentationDataset):
    """Scene and label rasters in ``img_dir`` and ``label_dir`` matched by file stem, served as windows.

    ``mode='random'``: ``samples_per_epoch`` windows of ``window_size`` per epoch, each from a scene drawn in
    proportion to its area at a uniform position (torch's generator: seeded runs repeat). ``mode='grid'``: every
    window of a grid covering each scene once (edge windows padded with the ignore index), in scene order.
    Samples: ``image`` C×H×W float32 after the pipeline (stored values as float: ``Normalize(max_pixel_value=...)``
    scales them), ``mask`` H×W int64, ``meta`` with the scene, the window (row, col, height, width) in it, the
    window's geotransform, the CRS and the scene's nodata value.
    """

    def __init__(
        self,
        img_dir: str | Path,
        label_dir: str | Path,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        window_size: int | Sequence[int] = 256,
        mode: str = "random",
        samples_per_epoch: int | None = None,
        bands: Sequence[int] | None = None,
        img_suffix: str | Sequence[str] = (".tif", ".tiff"),
        label_suffix: str = ".tif",
        transform_tolerance: float = 0.01,
    ) -> None:
        if mode not in RASTER_MODES:
            raise ConfigError(f"mode must be one of {RASTER_MODES}, got {mode!r}")
        samples, self.skipped_files = pair_by_stem(Path(img_dir), Path(label_dir), img_suffix, label_suffix)
        super().__init__(samples, classes=classes, palette=palette, ignore_index=ignore_index, pipeline=pipeline)
        self.mode = mode
        self.window_size = _as_size(window_size, "window_size")
        self.scenes = [scene_info(image) for image, _ in self.samples]
        self.labels = [scene_info(label, "label") for _, label in self.samples]
        self.bands = [scene.bands(bands) for scene in self.scenes]
        counts = {len(chosen) for chosen in self.bands}
        if len(counts) > 1:
            found = ", ".join(f"{scene.path.name}: {len(b)}" for scene, b in zip(self.scenes, self.bands))
            raise DatasetError(f"scenes in {img_dir} give different band counts ({found}); select bands= in common")
        self.problems = [check_alignment(s, lab, transform_tolerance) for s, lab in zip(self.scenes, self.labels)]
        self.grid = [
            (index, window)
            for index, scene in enumerate(self.scenes)
            for window in grid_windows(scene.height, scene.width, self.window_size)
        ]
        if samples_per_epoch is not None and (not isinstance(samples_per_epoch, int) or samples_per_epoch < 1):
            raise ConfigError(f"samples_per_epoch must be a positive int, got {samples_per_epoch!r}")
        self.samples_per_epoch = samples_per_epoch or len(self.grid)
        areas = torch.tensor([float(scene.height * scene.width) for scene in self.scenes], dtype=torch.float64)
        self._scene_weights = areas / areas.sum()

    @property
    def num_bands(self) -> int:
        return len(self.bands[0])

    def __len__(self) -> int:
        return self.samples_per_epoch if self.mode == "random" else len(self.grid)

    def describe(self) -> str:
        """A line for the run log."""
        height, width = self.window_size
        what = f"{len(self)} random" if self.mode == "random" else f"a grid of {len(self)}"
        return (
            f"{type(self).__name__}: {what} {height}x{width} windows from {len(self.scenes)} scene(s), "
            f"{self.num_bands} band(s)"
        )

    def _window(self, index: int) -> tuple[int, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        if self.mode == "grid":
            return self.grid[index]
        scene_index = int(torch.multinomial(self._scene_weights, 1).item())
        scene = self.scenes[scene_index]
        height, width = self.window_size
        top = int(torch.randint(max(scene.height - height, 0) + 1, ()).item())
        left = int(torch.randint(max(scene.width - width, 0) + 1, ()).item())
        from rasterio.windows import Window

        return scene_index, Window(left, top, width, height)

    def _read(self, scene_index: int, window: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, valid mask and labels of ``window`` in scene ``scene_index``."""
        if self.problems[scene_index]:
            raise DatasetError(self.problems[scene_index])
        scene, label = self.scenes[scene_index], self.labels[scene_index]
        with open_raster(scene.path) as src:
            image, valid = read_scene_window(src, window, self.bands[scene_index], path=scene.path)
        with open_raster(label.path, "label") as src:
            labels = read_label_window(
                src, window, num_classes=self.num_classes, ignore_index=self.ignore_index, path=label.path
            )
        labels[~valid] = self.ignore_index
        return image, valid, labels

    def read_mask(self, index: int) -> np.ndarray:
        """Class indices (H×W int64) of grid window ``index`` (modulo the grid), unaugmented: class statistics see
        the same pixels in either mode."""
        scene_index, window = self.grid[index % len(self.grid)]
        return self._read(scene_index, window)[2]

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene_index, window = self._window(index)
        scene = self.scenes[scene_index]
        image, _, labels = self._read(scene_index, window)
        check_label_values(labels, self.num_classes, self.ignore_index, self.labels[scene_index].path)
        compact = labels.astype(np.uint8 if max(self.num_classes, self.ignore_index) < 256 else np.uint16)
        out = self.pipeline(image=image.astype(np.float32), mask=compact)
        a, b, c, d, e, f = scene.transform
        row, col = window.row_off, window.col_off
        transform = (a, b, c + a * col + b * row, d, e, f + d * col + e * row)  # the window's own geotransform
        return {
            "image": image_to_tensor(out["image"]),
            "mask": mask_to_tensor(out["mask"]),
            "meta": {
                "path": str(scene.path),
                "mask_path": str(self.labels[scene_index].path),
                "window": (int(window.row_off), int(window.col_off), int(window.height), int(window.width)),
                "transform": transform,
                "crs": scene.crs,
                "nodata": scene.nodata,
                "ori_shape": tuple(image.shape[:2]),
            },
        }

    def band_values(self) -> Iterator[np.ndarray]:
        """N×C arrays (stored dtype) of the valid pixels of every scene, block by block: per-band statistics."""
        for scene, bands in zip(self.scenes, self.bands):
            with open_raster(scene.path) as src:
                for window in grid_windows(scene.height, scene.width, (CHECK_BLOCK, CHECK_BLOCK)):
                    image, valid = read_scene_window(src, window, bands, path=scene.path)
                    yield image[valid]

    @classmethod
    def prediction_options(cls, dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What a predictor needs for whole scenes as this config trains on them (tools/infer.py): the bands, in order,
        and tiles of the training window's size."""
        bands = dataset_cfg.get("bands")
        return {
            "file_formats": {"geotiff": {"bands": tuple(bands) if bands is not None else None}},
            "tile_size": _as_size(dataset_cfg.get("window_size", 256), "window_size"),
        }

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Read every scene and label raster block by block: unreadable or truncated files, pairs that differ in
        size, CRS or geotransform, label values outside the classes; windows (as the pipeline gets them) whose
        channels are not ``channels`` or that are smaller than the pipeline's crop."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        for index, (scene, label) in enumerate(zip(self.scenes, self.labels)):
            with checker.sample(scene.path):
                if self.problems[index]:
                    raise DatasetError(self.problems[index])
                for window in grid_windows(scene.height, scene.width, (CHECK_BLOCK, CHECK_BLOCK)):
                    window = window.intersection(type(window)(0, 0, scene.width, scene.height))
                    _, _, labels = self._read(index, window)
                    counts += check_label_values(labels, self.num_classes, self.ignore_index, label.path)
                    ignored += int(np.count_nonzero(labels == self.ignore_index))
                first = self.grid[next(i for i, (s, _) in enumerate(self.grid) if s == index)][1]
                with open_raster(scene.path) as src:
                    checker.image(scene.path, read_scene_window(src, first, self.bands[index], path=scene.path)[0])
        return checker.summary(
            len(self.scenes), self.classes, counts, unit="pixels", ignored=ignored, skipped=list(self.skipped_files)
        )


class BandStatistics:
    """Per-band count, mean, standard deviation, extremes and percentiles of values fed in chunks (N×C arrays).

    Two passes over the data: ``add`` every chunk (moments and extremes), then ``add_to_histogram`` every chunk again
    for the percentiles, from a histogram between the extremes: exact for integer data spanning up to ``bins``
    values, within one bin (range / ``bins``) otherwise.
    """

    def __init__(self, bins: int = 65536) -> None:
        self.bins = bins
        self.count = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None
        self.dtype: np.dtype | None = None
        self.histograms: list[np.ndarray] | None = None

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if values.ndim != 2:
            raise ValueError(f"band statistics take N×C chunks, got shape {values.shape}")
        if self.dtype is None:
            self.dtype = values.dtype
            channels = values.shape[1]
            self.total, self.squares = np.zeros(channels), np.zeros(channels)
            self.low, self.high = np.full(channels, np.inf), np.full(channels, -np.inf)
        if not len(values):
            return
        data = values.astype(np.float64)
        self.count += len(data)
        self.total += data.sum(axis=0)
        self.squares += (data * data).sum(axis=0)
        self.low = np.minimum(self.low, data.min(axis=0))
        self.high = np.maximum(self.high, data.max(axis=0))

    def _edges(self, band: int) -> tuple[float, float, int]:
        low, high = float(self.low[band]), float(self.high[band])
        integral = self.dtype is not None and np.issubdtype(self.dtype, np.integer)
        bins = int(min(self.bins, high - low + 1)) if integral else self.bins
        return low, high if high > low else low + 1, max(bins, 1)

    def add_to_histogram(self, values: np.ndarray) -> None:
        if self.count == 0:
            raise ValueError("add every chunk before the histogram pass")
        if self.histograms is None:
            self.histograms = [np.zeros(self._edges(b)[2], dtype=np.int64) for b in range(len(self.total))]
        data = np.asarray(values, dtype=np.float64)
        for band, histogram in enumerate(self.histograms):
            low, high, bins = self._edges(band)
            if self.dtype is not None and np.issubdtype(self.dtype, np.integer) and bins == high - low + 1:
                positions = (data[:, band] - low).astype(np.int64)
            else:
                positions = ((data[:, band] - low) / (high - low) * bins).astype(np.int64)
            histogram += np.bincount(np.clip(positions, 0, bins - 1), minlength=bins)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.clip(self.squares / max(self.count, 1) - self.mean**2, 0, None))

    def percentile(self, q: float) -> np.ndarray:
        """The ``q``-th percentile of each band (lower edge of the bin where the cumulative count reaches it)."""
        if self.histograms is None:
            raise ValueError("percentiles need the histogram pass (add_to_histogram)")
        result = []
        for band, histogram in enumerate(self.histograms):
            low, high, bins = self._edges(band)
            position = int(np.searchsorted(np.cumsum(histogram), q / 100 * histogram.sum(), side="left"))
            width = 1.0 if np.issubdtype(self.dtype, np.integer) and bins == high - low + 1 else (high - low) / bins
            result.append(low + min(position, bins - 1) * width)
        return np.array(result)

    @property
    def max_pixel_value(self) -> float:
        """What ``Normalize`` divides by: the dtype's maximum for 8- and 16-bit unsigned data, else 1."""
        if self.dtype == np.uint8:
            return 255.0
        if self.dtype == np.uint16:
            return 65535.0
        return 1.0

    def normalize_config(self, repeat: int = 1) -> str:
        """A ``Normalize`` step with these statistics, as a config line: mean and std in units of
        ``max_pixel_value``, each band's values ``repeat`` times (2.5D inputs stack several slices of each band)."""
        scale = self.max_pixel_value

        def values(per_band: np.ndarray) -> str:
            items = [f"{v / scale:.6g}" for v in np.tile(per_band, repeat)]
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"

        std = np.where(self.std > 0, self.std, scale)  # a constant band: divide by 1 in its units
        return (
            f'normalize = dict(type="Normalize", mean={values(self.mean)}, std={values(std)}, max_pixel_value={scale})'
        )

    def table(self) -> str:
        """Per-band count, mean, std, 2nd and 98th percentiles and extremes, as config comment lines."""
        header = f"# {'band':>4}  {'mean':>12}  {'std':>12}  {'p2':>12}  {'p98':>12}  {'min':>12}  {'max':>12}"
        rows = zip(self.mean, self.std, self.percentile(2), self.percentile(98), self.low, self.high)
        lines = [header]
        for band, row in enumerate(rows, start=1):
            lines.append(f"# {band:>4}  " + "  ".join(f"{v:>12.6g}" for v in row))
        return "\n".join(lines)


def band_values(dataset: Any) -> Iterable[np.ndarray]:
    """N×C value chunks of a dataset's images: its own ``band_values()`` (rasters: valid pixels; volumes: voxels
    after intensity handling), else each image file of its ``samples`` (image/mask folder datasets)."""
    own = getattr(dataset, "band_values", None)
    if callable(own):
        return own()
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, Sequence) or not samples:
        raise ConfigError(f"{type(dataset).__name__} offers neither band_values() nor image file samples")
    from densevision.data.io import read_image

    def images() -> Iterator[np.ndarray]:
        for sample in samples:
            image = read_image(sample[0] if isinstance(sample, tuple) else sample)
            yield image.reshape(-1, image.shape[2])

    return images()

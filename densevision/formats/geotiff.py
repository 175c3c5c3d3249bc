"""GeoTIFF scenes (and whatever else GDAL reads): the file-format plug-in behind raster datasets and scene prediction.

rasterio is imported when a raster is first opened, never by importing this module, so a project that reads no
rasters never loads GDAL. Reads are windowed (a scene larger than memory is read a block at a time); windows past a
raster's edge are padded here. Predicting a whole scene block by block into label rasters is ``predict_labels``
(``densevision.spatial``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densevision.data.checks import DatasetError
from densevision.formats.registry import FileFormat, register_format

__all__ = [
    "GEOTIFF",
    "GeoTiffFormat",
    "SceneInfo",
    "rasterio",
    "open_raster",
    "scene_info",
    "read_scene_window",
    "read_label_window",
    "check_alignment",
    "grid_windows",
]


def rasterio() -> Any:
    """The rasterio module, imported on first use (it loads GDAL)."""
    import rasterio as module

    return module


def _rasterio_error() -> type[Exception]:
    from rasterio.errors import RasterioError

    return RasterioError


def _window(col_off: int, row_off: int, width: int, height: int) -> Any:
    from rasterio.windows import Window

    return Window(col_off, row_off, width, height)


def open_raster(path: str | Path, what: str = "scene") -> Any:
    """``rasterio.open(path)``; a missing or unreadable file is a ``DatasetError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} raster not found: {path}")
    try:
        return rasterio().open(path)
    except (_rasterio_error(), OSError) as err:
        raise DatasetError(f"cannot read {what} raster {path}: {err}") from err


@dataclass(frozen=True)
class SceneInfo:
    """What a raster's header says: size, bands, dtype, georeferencing and nodata."""

    path: Path
    height: int
    width: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None

    def bands(self, bands: Sequence[int] | None) -> list[int]:
        """The 1-based band indices to read (all, in order, when ``bands`` is ``None``); a band the raster does not
        have is an error naming it and the raster's band count."""
        if bands is None:
            return list(range(1, self.count + 1))
        chosen = [int(b) for b in bands]
        bad = [b for b in chosen if not 1 <= b <= self.count]
        if bad:
            raise DatasetError(f"bands {bad} requested from {self.path}, which has {self.count} band(s) (1-based)")
        return chosen


def scene_info(path: str | Path, what: str = "scene") -> SceneInfo:
    """The header of the raster at ``path``."""
    with open_raster(path, what) as src:
        return SceneInfo(
            path=Path(path),
            height=src.height,
            width=src.width,
            count=src.count,
            dtype=src.dtypes[0],
            crs=src.crs.to_string() if src.crs else None,
            transform=tuple(src.transform)[:6],
            nodata=src.nodata,
        )


def check_alignment(scene: SceneInfo, label: SceneInfo, tolerance: float = 0.01) -> str | None:
    """Why ``label`` does not cover the pixels of ``scene`` (size, CRS, or geotransform differing by more than
    ``tolerance`` of a pixel), naming both files and values; ``None`` when it does."""
    files = f"label raster {label.path} and scene {scene.path}"
    if label.count != 1:
        return f"label raster {label.path} has {label.count} bands; expected one band of class indices"
    if (label.height, label.width) != (scene.height, scene.width):
        return f"{files} differ in size: {label.height}x{label.width} vs {scene.height}x{scene.width} (HxW)"
    if label.crs != scene.crs:
        return f"{files} have different coordinate reference systems: {label.crs} vs {scene.crs}"
    pixel = min(abs(scene.transform[0]), abs(scene.transform[4])) or 1.0
    difference = np.abs(np.subtract(label.transform, scene.transform))
    if difference.max() > tolerance * pixel:
        return (
            f"{files} have different geotransforms: {_affine(label.transform)} vs {_affine(scene.transform)} "
            f"(tolerance {tolerance:g} pixel)"
        )
    return None


def _affine(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in values) + ")"


def _read(path: Path, what: str, read: Callable[[], np.ndarray]) -> np.ndarray:
    try:
        return read()
    except (_rasterio_error(), OSError) as err:
        raise DatasetError(f"cannot read {what} raster {path}: {err}") from err


def _inside(src: Any, window: Any) -> tuple[Any, tuple[slice, slice]]:
    """The part of ``window`` inside the raster, and where it lies in the window's array. Windows past the edges are
    padded here rather than read ``boundless`` (GDAL would build a virtual raster for every such read)."""
    top, left = max(int(window.row_off), 0), max(int(window.col_off), 0)
    bottom = min(int(window.row_off + window.height), src.height)
    right = min(int(window.col_off + window.width), src.width)
    height, width = max(bottom - top, 0), max(right - left, 0)
    row, col = top - int(window.row_off), left - int(window.col_off)
    return _window(left, top, width, height), (slice(row, row + height), slice(col, col + width))


def read_scene_window(
    src: Any, window: Any, bands: Sequence[int], *, path: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(image H×W×C in the stored dtype, valid H×W bool)`` of ``window``; pixels outside the scene or nodata in a
    selected band are invalid and 0 in the image."""
    path = path or Path(src.name)
    inner, place = _inside(src, window)
    image = np.zeros((int(window.height), int(window.width), len(bands)), dtype=src.dtypes[bands[0] - 1])
    valid = np.zeros((int(window.height), int(window.width)), dtype=bool)
    if inner.width and inner.height:
        data = _read(path, "scene", lambda: src.read(list(bands), window=inner))
        masks = _read(path, "scene", lambda: src.read_masks(list(bands), window=inner))
        inside = masks.min(axis=0) > 0
        image[place] = np.where(inside[None], data, 0).transpose(1, 2, 0)
        valid[place] = inside
    return image, valid


def read_label_window(
    src: Any, window: Any, *, num_classes: int, ignore_index: int, path: Path | None = None
) -> np.ndarray:
    """Class indices (H×W int64) of ``window``: ``ignore_index`` outside the raster and at its nodata value, unless
    that value is a class index (label rasters exported with nodata=0 keep class 0)."""
    path = path or Path(src.name)
    inner, place = _inside(src, window)
    labels = np.full((int(window.height), int(window.width)), ignore_index, dtype=np.int64)
    if not (inner.width and inner.height):
        return labels
    raw = _read(path, "label", lambda: src.read(1, window=inner))
    nodata = src.nodata
    invalid = np.zeros(raw.shape, dtype=bool)
    if nodata is not None and not (float(nodata).is_integer() and 0 <= nodata < num_classes):
        invalid = np.isnan(raw) if np.isnan(nodata) else raw == nodata
    if not np.issubdtype(raw.dtype, np.integer):
        values = raw[~invalid]
        if not np.array_equal(np.rint(values), values):
            bad = np.unique(values[np.rint(values) != values])[:5]
            raise DatasetError(f"label raster {path} holds non-integer values {[float(v) for v in bad]}")
        raw = np.where(invalid, 0, np.rint(raw))
    labels[place] = np.where(invalid, ignore_index, raw.astype(np.int64))
    return labels


def grid_windows(height: int, width: int, size: tuple[int, int]) -> list[Any]:
    """Windows of ``size`` (h, w) tiling a raster without overlap; the last row and column reach past the edge
    (padded when read), so every pixel is in exactly one window."""
    return [
        _window(left, top, size[1], size[0]) for top in range(0, height, size[0]) for left in range(0, width, size[1])
    ]


class GeoTiffFormat(FileFormat):
    """Georeferenced scenes: predicted whole, block by block, into label and colour rasters with the scene's CRS and
    geotransform. Chosen for ``.tif``/``.tiff`` only where a config trains on scenes (its dataset's
    ``prediction_options`` name this format); elsewhere a TIFF is a plain image."""

    name = "geotiff"
    suffixes = (".tif", ".tiff")
    by_default = False

    def predict_labels(
        self,
        path: Path,
        predict_probs: Callable[[Any], Any],
        out_dir: Path,
        *,
        to_tensor: Callable[[np.ndarray], Any],
        palette: Sequence[Sequence[int]],
        options: Mapping[str, Any],
    ) -> list[Path]:
        """``<stem>_mask.tif`` (class indices) and ``<stem>_color.tif`` (with ``palette`` as colour table)."""
        from densevision.spatial import predict_geotiff

        return predict_geotiff(
            path,
            predict_probs,
            out_dir / f"{self.stem(path)}_mask.tif",
            bands=options.get("bands"),
            to_tensor=to_tensor,
            colour_path=out_dir / f"{self.stem(path)}_color.tif",
            palette=palette,
        )


GEOTIFF = register_format(GeoTiffFormat())

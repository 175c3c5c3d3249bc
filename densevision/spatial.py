"""Prediction files that keep their place in space: NIfTI label volumes and GeoTIFF label rasters.

A label volume gets its scan's affine and header (qform and sform with their codes, units), so it opens aligned with
the scan in ITK-SNAP or 3D Slicer; a label raster gets its scene's CRS, geotransform and nodata, so it overlays the
scene in QGIS. Both call a ``predict_probs(C×H×W tensor) -> K×H×W probabilities`` callable (a
``SegmentationPredictor``'s, which tiles and blends large inputs) on inputs prepared exactly as the training datasets
prepare theirs (``VolumeSlicing``; the scene's selected bands with nodata zeroed).

A scene of any size is predicted block by block: each output block is read with a ``halo`` of context on every side,
predicted, cropped and written, so memory holds one block and its probabilities, never the scene. With a model that
looks at single pixels, the result equals a whole-scene prediction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from torch import Tensor

from densevision.data.base import default_palette
from densevision.data.checks import DatasetError
from densevision.data.io import Colour
from densevision.data.slicing import VolumeSlicing
from densevision.formats.geotiff import grid_windows, open_raster, read_scene_window, scene_info
from densevision.formats.nifti import NIFTI_SUFFIXES, load_nifti, volume_data
from densevision.registry import ConfigError

__all__ = [
    "LABEL_NODATA",
    "OUTPUT_TILE",
    "ProbabilityFn",
    "predict_nifti",
    "predict_geotiff",
    "label_raster_profile",
    "label_volume",
]

LABEL_NODATA = 255  # the label raster's nodata value: scene nodata and pixels outside the scene
OUTPUT_TILE = 256  # tile size of written label rasters (GDAL's default block for tiled GeoTIFF)

ProbabilityFn = Callable[[Tensor], Any]
"""``predict_probs(image C×H×W) -> K×H×W`` class probabilities (tensor or array) at the input's size."""


def _plain_tensor(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def _argmax(probs: Any, shape: tuple[int, int], where: str) -> tuple[np.ndarray, int]:
    """Class indices of ``probs`` (K×H×W, checked against ``shape``) and K."""
    probs = torch.as_tensor(probs)
    if probs.dim() != 3 or tuple(probs.shape[1:]) != tuple(shape):
        raise ValueError(
            f"predict_probs returned shape {tuple(probs.shape)} for {where}; expected K×{shape[0]}×{shape[1]}"
        )
    return probs.argmax(0).cpu().numpy(), int(probs.shape[0])


def _temporary(path: Path) -> Path:
    """A hidden sibling of ``path`` with the same name ending (writers infer the format from it)."""
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def label_volume(image: nib.Nifti1Image, labels: np.ndarray, num_classes: int) -> nib.Nifti1Image:
    """``labels`` (the image's spatial shape) as a NIfTI image with ``image``'s affine and header: qform and sform
    with their codes, units and description kept; data type, scaling, intent and display range those of a label
    map."""
    header = image.header.copy()
    header.set_data_dtype(labels.dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("label")
    header["cal_min"], header["cal_max"] = 0, max(num_classes - 1, 0)
    volume = type(image)(labels, image.affine, header)
    volume.set_qform(image.get_qform(), code=int(image.header["qform_code"]))
    volume.set_sform(image.get_sform(), code=int(image.header["sform_code"]))
    return volume


def predict_nifti(
    path: str | Path,
    predict_probs: ProbabilityFn,
    out_path: str | Path,
    *,
    slicing: VolumeSlicing,
    to_tensor: Callable[[np.ndarray], Tensor] | None = None,
) -> Path:
    """Predict every slice of the NIfTI volume ``path`` and write the label volume ``out_path`` (``.nii.gz`` or
    ``.nii``) with the input's affine and header.

    Slices are prepared as the training dataset did (``slicing``: axis, 2.5D context, intensity handling);
    ``to_tensor`` turns each H×W×C float32 slice into the model's input (a predictor's ``to_tensor`` adds the
    config's ``Normalize``; default: the values as they are). Returns ``out_path``.
    """
    path, out_path = Path(path), Path(out_path)
    if not out_path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ConfigError(f"a label volume is written as .nii.gz or .nii, not {out_path.name}")
    convert = to_tensor or _plain_tensor
    image = load_nifti(path)
    data = volume_data(image, path)
    stats = slicing.statistics(data)
    spatial = tuple(image.shape[:3])
    axis = slicing.spatial_axis
    labels: np.ndarray | None = None
    num_classes = 0
    for index in range(spatial[axis]):
        stack = slicing.stack(data, index, stats, path=path)
        predicted, num_classes = _argmax(predict_probs(convert(stack)), stack.shape[:2], f"slice {index} of {path}")
        if labels is None:
            labels = np.zeros(spatial, dtype=np.uint8 if num_classes <= 256 else np.uint16)
        where: list[Any] = [slice(None)] * 3
        where[axis] = index
        labels[tuple(where)] = predicted
    assert labels is not None  # a NIfTI volume has at least one slice
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(out_path)
    try:
        nib.save(label_volume(image, labels, num_classes), tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def label_raster_profile(src: Any) -> dict[str, Any]:
    """The profile of a label raster for the scene open in ``src``: its size, CRS and geotransform; one uint8 band
    with nodata 255, tiled and deflate-compressed (BigTIFF when it could exceed 4 GB)."""
    return dict(
        driver="GTiff",
        width=src.width,
        height=src.height,
        count=1,
        dtype="uint8",
        crs=src.crs,
        transform=src.transform,
        nodata=LABEL_NODATA,
        tiled=True,
        blockxsize=OUTPUT_TILE,
        blockysize=OUTPUT_TILE,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    )


def _colour_table(palette: Sequence[Colour] | None, num_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """A label raster's colour table: class i in ``palette[i]`` (default: ``default_palette``), nodata transparent."""
    colours = list(palette) if palette is not None else default_palette(num_classes)
    if len(colours) < num_classes:
        raise ConfigError(f"palette has {len(colours)} colours for {num_classes} classes")
    table = {index: (*(int(c) for c in colours[index]), 255) for index in range(num_classes)}
    return {**table, LABEL_NODATA: (0, 0, 0, 0)}


def predict_geotiff(
    path: str | Path,
    predict_probs: ProbabilityFn,
    out_path: str | Path,
    *,
    bands: Sequence[int] | None = None,
    to_tensor: Callable[[np.ndarray], Tensor] | None = None,
    block_size: int = 1024,
    halo: int = 128,
    colour_path: str | Path | None = None,
    palette: Sequence[Colour] | None = None,
) -> list[Path]:
    """Predict the scene raster ``path`` block by block and write its label raster ``out_path`` (class indices,
    ``label_raster_profile``: the scene's CRS, transform; nodata 255 where the scene has nodata).

    ``bands`` (1-based) and ``to_tensor`` prepare the input as training did (see ``predict_nifti``); each
    ``block_size`` block is predicted with ``halo`` pixels of context around it. ``colour_path`` also writes the
    labels with ``palette`` as the raster's colour table (QGIS and GDAL show it in colour). Returns the files
    written.
    """
    path, out_path = Path(path), Path(out_path)
    if not isinstance(block_size, int) or block_size < 1 or not isinstance(halo, int) or halo < 0:
        raise ConfigError(f"block_size must be a positive int and halo an int >= 0, got {block_size} and {halo}")
    info = scene_info(path)
    chosen = info.bands(bands)
    convert = to_tensor or _plain_tensor
    outputs = [out_path] + ([Path(colour_path)] if colour_path is not None else [])
    temporaries = [_temporary(output) for output in outputs]
    scene = Window(0, 0, info.width, info.height)
    try:
        with ExitStack() as stack:
            src = stack.enter_context(open_raster(path))
            profile = label_raster_profile(src)
            for output in outputs:
                output.parent.mkdir(parents=True, exist_ok=True)
            targets = [stack.enter_context(rasterio.open(tmp, "w", **profile)) for tmp in temporaries[:1]]
            for block in grid_windows(info.height, info.width, (block_size, block_size)):
                block = block.intersection(scene)
                context = Window(
                    block.col_off - halo, block.row_off - halo, block.width + 2 * halo, block.height + 2 * halo
                ).intersection(scene)
                image, valid = read_scene_window(src, context, chosen, path=path)
                where = f"block (row {block.row_off}, col {block.col_off}) of {path}"
                predicted, num_classes = _argmax(
                    predict_probs(convert(image.astype(np.float32))), image.shape[:2], where
                )
                if num_classes > LABEL_NODATA:
                    raise ConfigError(
                        f"a label raster holds up to {LABEL_NODATA} classes (255 is nodata), not {num_classes}"
                    )
                if colour_path is not None and len(targets) == 1:
                    # The colour table goes in before any pixel: GTiff cannot change a palette raster's photometric
                    # tag once data is written (GDAL then logs "Cannot modify tag PhotometricInterpretation").
                    colour = stack.enter_context(rasterio.open(temporaries[1], "w", photometric="palette", **profile))
                    colour.write_colormap(1, _colour_table(palette, num_classes))
                    targets.append(colour)
                top, left = block.row_off - context.row_off, block.col_off - context.col_off
                crop = (slice(top, top + block.height), slice(left, left + block.width))
                labels = np.where(valid[crop], predicted[crop], LABEL_NODATA).astype(np.uint8)
                for target in targets:
                    target.write(labels[None], window=block)
        for tmp, output in zip(temporaries, outputs):
            os.replace(tmp, output)
    except RasterioError as err:
        raise DatasetError(f"cannot write the label raster of {path}: {err}") from err
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
    return outputs

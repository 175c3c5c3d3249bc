"""Generated quick-start data in the formats medical and remote-sensing users keep: NIfTI volumes and GeoTIFF scenes.

Written on first use, deterministically (seeded), and atomically (into a temporary folder renamed into place, with a
marker file of the parameters), like ``densevision.data.shapes``: a run never sees half a dataset, and changed
parameters regenerate it.

- ``generate_ellipsoid_volumes``: a Medical Segmentation Decathlon task folder (``dataset.json``, ``imagesTr/``,
  ``labelsTr/``, ``imagesTs/`` and ``labelsTs/``) of small CT-like volumes: an "organ" (a rotated ellipsoid, ~60 HU)
  holding 1-2 "lesions" (spheres, ~150 HU) in soft-tissue noise, with anisotropic voxels and a rotated affine.
- ``generate_scenes``: 4-band (blue, green, red, near-infrared) uint16 reflectance scenes in EPSG:32633 at 10 m with
  a label raster each: bare soil, water and vegetation patches, rectangular buildings, and a nodata corner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from densevision.data.decathlon import DecathlonDataset
from densevision.data.generated import generate_once
from densevision.data.io import Colour
from densevision.data.raster import RasterWindowDataset
from densevision.formats.geotiff import rasterio
from densevision.formats.nifti import nibabel
from densevision.registry import DATASETS

__all__ = [
    "VOLUME_CLASSES",
    "SCENE_CLASSES",
    "SCENE_PALETTE",
    "SCENE_BANDS",
    "generate_ellipsoid_volumes",
    "generate_scenes",
    "EllipsoidVolumes",
    "GeneratedScenes",
]

MARKER = "generated.json"
VOLUME_CLASSES = ("background", "organ", "lesion")
VOLUME_PALETTE: list[Colour] = [(0, 0, 0), (220, 120, 60), (255, 255, 0)]
SCENE_CLASSES = ("soil", "water", "vegetation", "building")
SCENE_PALETTE: list[Colour] = [(190, 160, 110), (30, 90, 200), (40, 160, 60), (220, 40, 40)]
SCENE_BANDS = ("blue", "green", "red", "nir")
# Mean surface reflectance x 10,000 per class and band (blue, green, red, NIR), roughly Sentinel-2 L2A's.
_REFLECTANCE = np.array(
    [[1200, 1400, 1700, 2500], [900, 700, 400, 200], [500, 900, 500, 4000], [2000, 2000, 2100, 2200]]
)
SCENE_NODATA = 0
LABEL_NODATA = 255
SCENE_SIZES = {"train": 512, "val": 256, "test": 256}  # pixels per side of each split's scene


def _rotation(angles: np.ndarray) -> np.ndarray:
    """A 3-D rotation from three angles (about z, then y, then x)."""
    cz, sz = np.cos(angles[0]), np.sin(angles[0])
    cy, sy = np.cos(angles[1]), np.sin(angles[1])
    cx, sx = np.cos(angles[2]), np.sin(angles[2])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def _volume(
    shape: tuple[int, int, int], spacing: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like int16 volume (HU) and its uint8 label volume."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), axis=-1)  # mm
    extent = np.array(shape) * spacing
    centre = extent * rng.uniform(0.4, 0.6, 3)
    semi_axes = extent * rng.uniform([0.18, 0.18, 0.2], [0.3, 0.3, 0.35])
    rotation = _rotation(rng.uniform(0, np.pi, 3) * np.array([1.0, 0.15, 0.15]))
    local = (grid - centre) @ rotation
    labels = (((local / semi_axes) ** 2).sum(axis=-1) <= 1).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        radius = rng.uniform(3.5, 6.0)  # mm
        offset = rng.uniform(-0.5, 0.5, 3) * semi_axes
        lesion_centre = centre + rotation @ offset
        inside = ((grid - lesion_centre) ** 2).sum(axis=-1) <= radius**2
        labels[inside & (labels == 1)] = 2
    intensity = np.array([0.0, 60.0, 150.0])[labels]
    image = intensity - 20 + rng.normal(0, 25, shape)
    return np.round(image).astype(np.int16), labels


def _affine(spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxel -> world (mm) with the voxel sizes, a small in-plane rotation and an origin, as scanners write them."""
    angle = rng.uniform(-0.2, 0.2)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(np.array([angle, 0.0, 0.0])) @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-200, 200, 3)
    return affine


def generate_ellipsoid_volumes(
    root: str | Path,
    *,
    num_train: int = 8,
    num_val: int = 2,
    num_test: int = 2,
    shape: Sequence[int] = (48, 48, 24),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
    seed: int = 0,
) -> Path:
    """A Decathlon-layout task of ``num_train + num_val`` training and ``num_test`` test volumes under ``root``
    (a no-op when it is already there with these parameters). Returns ``root``."""
    counts = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    for key, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"{key} must be a non-negative int, got {count!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {shape}")
    params = {"kind": "ellipsoid_volumes", "version": 1, **counts, "shape": list(shape), "spacing": list(spacing),
              "seed": seed}  # fmt: skip

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        voxel = np.asarray(spacing, dtype=np.float64)
        training, test = [], []
        for number in range(num_train + num_val + num_test):
            image, labels = _volume(shape, voxel, rng)
            affine = _affine(voxel, rng)
            is_test = number >= num_train + num_val
            images, label_dir = ("imagesTs", "labelsTs") if is_test else ("imagesTr", "labelsTr")
            name = f"ellipsoid_{number:03d}.nii.gz"
            for sub, data in ((images, image), (label_dir, labels)):
                (folder / sub).mkdir(exist_ok=True)
                volume = nibabel().Nifti1Image(data, affine)
                volume.set_qform(affine, code=1)  # scanner coordinates, as DICOM converters write them
                volume.set_sform(affine, code=1)
                volume.header.set_xyzt_units("mm", "sec")
                nibabel().save(volume, folder / sub / name)
            if is_test:
                test.append(f"./imagesTs/{name}")
            else:
                training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        description = {
            "name": "Ellipsoids",
            "description": "densevision generated CT-like volumes: an organ with lesions in noise",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {str(i): name for i, name in enumerate(VOLUME_CLASSES)},
            "numTraining": len(training),
            "numTest": len(test),
            "training": training,
            "test": test,
        }
        (folder / "dataset.json").write_text(json.dumps(description, indent=2))

    return generate_once(root, params, write, marker=MARKER, made_by="generate_ellipsoid_volumes")


def _smooth_field(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid resized (bicubic) to ``size`` × ``size``."""
    coarse = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    return (field - field.min()) / (np.ptp(field) + 1e-6)


def _scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One 4-band uint16 scene (bands first) and its uint8 labels, nodata in a corner."""
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[_smooth_field(size, 6, rng) > 0.72] = 2  # vegetation
    labels[_smooth_field(size, 5, rng) < 0.18] = 1  # water
    for _ in range(size * size // 4000):
        height, width = rng.integers(6, 18, 2)
        top, left = rng.integers(0, size - height), rng.integers(0, size - width)
        if not (labels[top : top + height, left : left + width] == 1).any():
            labels[top : top + height, left : left + width] = 3
    brightness = 0.85 + 0.3 * _smooth_field(size, 4, rng)
    scene = _REFLECTANCE[labels].transpose(2, 0, 1) * brightness + rng.normal(0, 180, (4, size, size))
    scene = np.clip(np.round(scene), 1, 10000).astype(np.uint16)
    rows, cols = np.mgrid[0:size, 0:size]
    corner = rows + cols < size * rng.uniform(0.1, 0.25)  # outside the sensor's swath
    scene[:, corner] = SCENE_NODATA
    labels[corner] = LABEL_NODATA
    return scene, labels


def generate_scenes(
    root: str | Path,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """One scene and label raster per split under ``root/{scenes,labels}/<split>/scene_<split>.tif`` (``sizes``:
    pixels per side per split, default ``SCENE_SIZES``). Returns ``root``."""
    sizes = dict(sizes or SCENE_SIZES)
    for split, size in sizes.items():
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"scene size of split {split!r} must be an int >= 32, got {size!r}")
    params = {"kind": "geotiff_scenes", "version": 1, "sizes": sizes, "seed": seed}

    def write(folder: Path) -> None:
        for index, (split, size) in enumerate(sizes.items()):
            rng = np.random.default_rng([seed, index])
            scene, labels = _scene(size, rng)
            # 10 m pixels
            transform = rasterio().transform.Affine(10.0, 0.0, 500_000 + 20_000 * index, 0.0, -10.0, 5_000_000)
            common = dict(driver="GTiff", height=size, width=size, crs="EPSG:32633", transform=transform,
                          tiled=True, blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip
            for kind, data, nodata in (("scenes", scene, SCENE_NODATA), ("labels", labels[None], LABEL_NODATA)):
                path = folder / kind / split / f"scene_{split}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                profile = dict(common, count=len(data), dtype=data.dtype.name, nodata=nodata)
                with rasterio().open(path, "w", **profile) as dst:
                    dst.write(data)
                    if kind == "scenes":
                        dst.descriptions = SCENE_BANDS

    return generate_once(root, params, write, marker=MARKER, made_by="generate_scenes")


@DATASETS.register_module()
class EllipsoidVolumes(DecathlonDataset):
    """``generate_ellipsoid_volumes`` (if not done yet), then a split of it as a ``DecathlonDataset`` (CT, 3 classes:
    background, organ, lesion): ``num_val`` of the training volumes are held out as ``'val'``."""

    classes = VOLUME_CLASSES
    palette = VOLUME_PALETTE

    def __init__(
        self,
        root: str | Path = "data/ellipsoids",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        num_train: int = 8,
        num_val: int = 2,
        num_test: int = 2,
        shape: Sequence[int] = (48, 48, 24),
        seed: int = 0,
        **options: Any,
    ) -> None:
        root = generate_ellipsoid_volumes(
            root, num_train=num_train, num_val=num_val, num_test=num_test, shape=shape, seed=seed
        )
        fraction = num_val / max(num_train + num_val, 1)
        super().__init__(
            root, split, pipeline, val_fraction=fraction, palette=options.pop("palette", VOLUME_PALETTE), **options
        )


@DATASETS.register_module()
class GeneratedScenes(RasterWindowDataset):
    """``generate_scenes`` (if not done yet), then one split's scene as a ``RasterWindowDataset`` (4 bands,
    4 classes, nodata masked)."""

    classes = SCENE_CLASSES
    palette = SCENE_PALETTE

    def __init__(
        self,
        root: str | Path = "data/scenes",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        seed: int = 0,
        **options: Any,
    ) -> None:
        root = generate_scenes(root, sizes=sizes, seed=seed)
        if not (root / "scenes" / split).is_dir():
            raise ValueError(
                f"no generated split {split!r} under {root}; the splits are {sorted(sizes or SCENE_SIZES)}"
            )
        super().__init__(
            root / "scenes" / split,
            root / "labels" / split,
            classes=SCENE_CLASSES,
            palette=options.pop("palette", SCENE_PALETTE),
            pipeline=pipeline,
            **options,
        )

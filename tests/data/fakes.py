"""Tiny on-disk datasets in the real layouts, written into pytest's tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from densevision.data.io import write_mask_png

# A few rows of the real class_dict.csv, plus one class outside the 32->11 grouping.
CLASS_DICT = {
    "Sky": (128, 128, 128),
    "LaneMkgsDriv": (128, 0, 192),
    "SUVPickupTruck": (64, 128, 192),
    "Wall": (64, 192, 0),
    "MotorcycleScooter": (192, 0, 192),
    "Void": (0, 0, 0),
    "SomethingNew": (1, 2, 3),
}
# Their 11-class indices: Sky 0, Road 3, Car 8, Building 1, Bicyclist 10, void 11, void 11.
CLASS_DICT_INDEX = [0, 3, 8, 1, 10, 11, 11]


def random_image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_camvid(root: Path, layout: str, *, num_images: int = 2, size: tuple[int, int] = (24, 32), seed: int = 0):
    """A CamVid tree in the ``segnet`` or ``rgb32`` layout; returns ``{split: [(image_path, label_path, indices)]}``."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "val", "test"):
        written[split] = []
        for i in range(num_images):
            stem = f"0001TP_{split}{i:03d}"
            image_path = root / split / f"{stem}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(random_image(rng, *size)).save(image_path)
            if layout == "segnet":
                indices = rng.integers(0, 12, size).astype(np.uint8)
                label_path = root / f"{split}annot" / f"{stem}.png"
                write_mask_png(label_path, indices)
            else:
                rows = rng.integers(0, len(CLASS_DICT), size)
                colours = np.array(list(CLASS_DICT.values()), dtype=np.uint8)[rows]
                indices = np.array(CLASS_DICT_INDEX, dtype=np.uint8)[rows]
                label_path = root / f"{split}_labels" / f"{stem}_L.png"
                label_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(colours).save(label_path)
            written[split].append((image_path, label_path, indices))
    if layout == "rgb32":
        with open(root / "class_dict.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "r", "g", "b"])
            for name, (r, g, b) in CLASS_DICT.items():
                writer.writerow([name, r, g, b])
    return written

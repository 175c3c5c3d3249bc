"""Pascal VOC detection in the VOCdevkit layout, several years concatenated (SSD/DSOD train on 07+12 trainval).

::

    root/VOC2007/Annotations/000005.xml     root/VOC2007/JPEGImages/000005.jpg
    root/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt   (one image id per line)
    root/VOC2012/...                        (same layout)

Coordinates: VOC XML boxes are 1-based and inclusive (``xmin=1, xmax=10`` covers the first ten pixel columns).
They become continuous 0-based coordinates ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``, so
``x2 - x1 = xmax - xmin + 1``: plain IoU of converted boxes equals the devkit's IoU with its ``+1`` on widths and
heights, and no ``+1`` appears anywhere else in the code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.data.base import default_palette
from densevision.data.checks import DatasetError
from densevision.data.detection import DetectionAnnotation, DetectionDataset
from densevision.data.io import Colour
from densevision.registry import DATASETS

__all__ = ["VOCDetection", "VOC_CLASSES", "VOC_PALETTE", "parse_voc_xml"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# The VOC segmentation colours of the 20 object classes (index 0, black, is background there).
VOC_PALETTE: list[Colour] = default_palette(len(VOC_CLASSES) + 1)[1:]
_LAYOUT = "VOC<year>/Annotations/*.xml, VOC<year>/JPEGImages/*.jpg and VOC<year>/ImageSets/Main/<split>.txt"


def _number(element: ET.Element, tag: str, path: Path, what: str) -> float:
    text = element.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DatasetError(f"{what} in {path} has no numeric <{tag}> (got {text!r})") from None


def parse_voc_xml(path: Path, class_index: Mapping[str, int], image_id: str) -> DetectionAnnotation:
    """One VOC annotation file. What cannot be read (a missing or malformed file, an unknown class name, a box
    without numbers) is kept in the record's ``problems``, one line per object naming the file and value, so one
    ``check()`` lists every problem of every file instead of stopping at the first."""
    path = Path(path)
    if not path.is_file():
        return DetectionAnnotation.unreadable(image_id, path, [f"annotation file not found: {path}"])
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return DetectionAnnotation.unreadable(image_id, path, [f"cannot parse annotation {path}: {err}"])
    problems = []
    size = root.find("size")
    shape = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        try:
            shape = (int(_number(size, "height", path, "<size>")), int(_number(size, "width", path, "<size>")))
        except DatasetError as err:
            problems.append(str(err))
        shape = shape if shape is not None and min(shape) > 0 else None  # some tools write 0: as good as not given
    boxes, labels, difficult, names = [], [], [], []
    for position, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        what = f"object {position} ({name})"
        try:
            if name not in class_index:
                raise DatasetError(
                    f"unknown class {name!r} in {path} (object {position}); expected one of {VOC_CLASSES}"
                )
            box = obj.find("bndbox")
            if box is None:
                raise DatasetError(f"{what} in {path} has no <bndbox>")
            xmin, ymin, xmax, ymax = (_number(box, tag, path, what) for tag in ("xmin", "ymin", "xmax", "ymax"))
            hard = obj.find("difficult") is not None and int(_number(obj, "difficult", path, what)) == 1
        except DatasetError as err:
            problems.append(str(err))
            continue
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        labels.append(class_index[name])
        difficult.append(hard)
        names.append(what)
    if problems:
        return DetectionAnnotation.unreadable(image_id, path, problems)
    return DetectionAnnotation(image_id, boxes, labels, difficult, source=path, size=shape, object_names=names)


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        main = path.parent
        found = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise DatasetError(f"split list {path} not found (split lists there: {found or 'none'})")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split list {path} holds no image ids")
    return ids


@DATASETS.register_module()
class VOCDetection(DetectionDataset):
    """Pascal VOC ``split`` of each of ``years`` under the VOCdevkit folder ``root``, concatenated in that order.

    ``skip_difficult=True`` (training) leaves difficult objects out of ``boxes``/``labels``; they stay in
    ``meta['gt_*']`` with ``gt_ignore=True`` either way, for the devkit's evaluation rule.
    """

    # Fixed by the dataset, so predictors can read them from the class without building a split.
    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(
        self,
        root: str | Path,
        years: str | Sequence[str] = ("2007", "2012"),
        split: str = "trainval",
        *,
        skip_difficult: bool = True,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
    ) -> None:
        self.root = Path(root)
        self.years = (str(years),) if isinstance(years, (str, int)) else tuple(str(y) for y in years)
        if not self.years:
            raise ValueError("VOCDetection needs at least one year, e.g. years=('2007', '2012')")
        self.split = split
        class_index = {name: i for i, name in enumerate(VOC_CLASSES)}
        samples = []
        for year in self.years:
            folder = self.root / f"VOC{year}"
            if not folder.is_dir():
                raise DatasetError(f"VOC{year} not found: expected {folder} (VOCdevkit layout: {_LAYOUT})")
            for image_id in _read_ids(folder / "ImageSets" / "Main" / f"{split}.txt"):
                annotation = parse_voc_xml(folder / "Annotations" / f"{image_id}.xml", class_index, image_id)
                samples.append((folder / "JPEGImages" / f"{image_id}.jpg", annotation))
        super().__init__(
            samples, classes=VOC_CLASSES, palette=VOC_PALETTE, pipeline=pipeline, skip_ignored=skip_difficult
        )

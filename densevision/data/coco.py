"""COCO-format detection: an instances JSON (read by pycocotools) and a folder of the images it names.

Category ids need not be contiguous (COCO's 80 classes use ids 1..90): label ``k`` is the ``k``-th category by id,
and ``metainfo['category_ids'][k]`` is its id again, for writing results in COCO's own terms. A bbox
``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)`` (COCO boxes are already continuous pixel coordinates). Crowd
annotations (``iscrowd=1``) are not trained on; they stay in ``meta['gt_*']`` with ``gt_ignore=True``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.data.checks import DatasetError
from densevision.data.detection import DetectionAnnotation, DetectionDataset
from densevision.data.io import Colour
from densevision.registry import DATASETS

__all__ = ["CocoDetection", "load_coco"]

# How many annotations of unknown images the error names (the rest are counted).
_ORPHANS_SHOWN = 5


def load_coco(ann_file: str | Path) -> Any:
    """A ``pycocotools.coco.COCO`` of ``ann_file``, without its progress prints; a missing or malformed file raises
    ``DatasetError`` naming it."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(f"annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (OSError, ValueError, AssertionError, KeyError, TypeError) as err:
        raise DatasetError(f"cannot read COCO annotations {ann_file}: {type(err).__name__}: {err}") from err


def _bbox(ann: Mapping[str, Any], ann_file: Path) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(
            f"annotation {ann.get('id')} in {ann_file} has no bbox [x, y, w, h] (got {ann.get('bbox')!r})"
        ) from None
    return x, y, x + w, y + h


@DATASETS.register_module()
class CocoDetection(DetectionDataset):
    """The images of ``ann_file`` (under ``img_dir``, by ``file_name``) with their boxes, in the file's order.

    Images without annotations are valid samples (no objects); ``skip_empty=True`` drops images with nothing to
    train on (no annotation, or only crowd ones).
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path,
        *,
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        skip_empty: bool = False,
        palette: Sequence[Colour] | None = None,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        if not self.img_dir.is_dir():
            raise DatasetError(f"image folder {self.img_dir} not found (the images of {self.ann_file})")
        self.coco = load_coco(self.ann_file)
        categories = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        if not categories or not self.coco.imgs:
            raise DatasetError(f"{self.ann_file} lists no {'categories' if not categories else 'images'}")
        label_of = {c["id"]: label for label, c in enumerate(categories)}
        objects: dict[Any, list[tuple[tuple[float, ...], int, bool, str]]] = {
            image_id: [] for image_id in self.coco.imgs
        }
        problems: dict[Any, list[str]] = {image_id: [] for image_id in self.coco.imgs}
        orphans = []
        for ann in self.coco.dataset.get("annotations", []):
            if ann.get("image_id") not in objects:
                orphans.append(f"{ann.get('id')} (image_id {ann.get('image_id')!r})")
                continue
            try:
                if ann.get("category_id") not in label_of:
                    raise DatasetError(
                        f"annotation {ann.get('id')} in {self.ann_file} has category_id {ann.get('category_id')!r}, "
                        f"not one of its categories {sorted(label_of)}"
                    )
                box = _bbox(ann, self.ann_file)
            except DatasetError as err:  # the image's sample is bad; check() lists every such annotation
                problems[ann["image_id"]].append(str(err))
                continue
            name = f"annotation {ann.get('id')}"
            objects[ann["image_id"]].append((box, label_of[ann["category_id"]], bool(ann.get("iscrowd", 0)), name))
        if orphans:
            shown = ", ".join(orphans[:_ORPHANS_SHOWN]) + (" ..." if len(orphans) > _ORPHANS_SHOWN else "")
            raise DatasetError(
                f"{len(orphans)} annotation(s) in {self.ann_file} refer to an image_id not in its images: {shown}"
            )
        samples = []
        for image_id, info in self.coco.imgs.items():
            found = objects[image_id]
            if skip_empty and not problems[image_id] and all(crowd for _, _, crowd, _ in found):
                continue
            if "file_name" not in info:
                raise DatasetError(f"image {image_id} in {self.ann_file} has no file_name")
            size = (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else None
            if problems[image_id]:
                annotation = DetectionAnnotation.unreadable(image_id, self.ann_file, problems[image_id])
            else:
                annotation = DetectionAnnotation(
                    image_id,
                    [box for box, _, _, _ in found],
                    [label for _, label, _, _ in found],
                    [crowd for _, _, crowd, _ in found],
                    source=self.ann_file,
                    size=size,
                    object_names=[name for _, _, _, name in found],
                )
            samples.append((self.img_dir / info["file_name"], annotation))
        super().__init__(
            samples,
            classes=[c["name"] for c in categories],
            palette=palette,
            category_ids=[c["id"] for c in categories],
            pipeline=pipeline,
        )

import json
import logging

import numpy as np
import pytest
from PIL import Image

from densevision.data import DatasetError, collate
from densevision.data.coco import CocoDetection
from densevision.registry import DATASETS

# Non-contiguous ids, listed out of order: labels follow the ids (1 cat, 5 dog, 90 zebra).
CATEGORIES = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}]
IMAGES = [
    {"id": 10, "file_name": "a.jpg", "width": 30, "height": 20},
    {"id": 3, "file_name": "b.png", "width": 16, "height": 12},  # no annotations
    {"id": 7, "file_name": "sub/c.png", "width": 30, "height": 20},  # only a crowd annotation
]
ANNOTATIONS = [
    {"id": 1, "image_id": 10, "category_id": 90, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
    {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0.5, 1.5, 4, 6], "area": 24, "iscrowd": 0},
    {"id": 3, "image_id": 10, "category_id": 5, "bbox": [10, 10, 8, 8], "area": 64, "iscrowd": 1},
    {"id": 4, "image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 1},
]


def make_coco(root, images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES):
    """Write the images the JSON names (under root/images) and root/instances.json; returns (ann_file, img_dir)."""
    for info in images:
        path = root / "images" / info["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (info["width"], info["height"]), (200, 10, 10)).save(path)
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_file, root / "images"


@pytest.fixture
def coco(tmp_path):
    return make_coco(tmp_path)


def test_category_ids_map_to_contiguous_labels_and_back(coco):
    dataset = CocoDetection(*coco)
    assert dataset.classes == ("cat", "dog", "zebra") and dataset.metainfo["category_ids"] == [1, 5, 90]
    by_id = {ann["id"]: ann for ann in ANNOTATIONS}
    meta = dataset[0]["meta"]
    ids = [dataset.metainfo["category_ids"][label] for label in meta["gt_labels"]]
    assert ids == [by_id[i]["category_id"] for i in (1, 2, 3)]  # label -> original id round trip


def test_bbox_xywh_becomes_x1y1x2y2_and_crowd_is_ignored(coco):
    sample = CocoDetection(*coco)[0]
    np.testing.assert_allclose(sample["meta"]["gt_boxes"], [[2, 3, 12, 8], [0.5, 1.5, 4.5, 7.5], [10, 10, 18, 18]])
    assert sample["meta"]["gt_ignore"].tolist() == [False, False, True]
    np.testing.assert_allclose(sample["boxes"].numpy(), [[2, 3, 12, 8], [0.5, 1.5, 4.5, 7.5]])  # crowd not trained
    assert sample["labels"].tolist() == [2, 0] and sample["meta"]["image_id"] == 10


def test_images_without_annotations_are_samples_unless_skip_empty(coco):
    dataset = CocoDetection(*coco)
    assert [a.image_id for _, a in dataset.samples] == [10, 3, 7]  # the file's order
    empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["image"].shape == (3, 12, 16)
    crowd_only = dataset[2]
    assert crowd_only["boxes"].shape == (0, 4) and crowd_only["meta"]["gt_ignore"].tolist() == [True]
    assert [a.image_id for _, a in CocoDetection(*coco, skip_empty=True).samples] == [10]


def test_collate_batch_with_zero_and_two_boxes(coco):
    dataset = CocoDetection(*coco, pipeline=[dict(type="Resize", height=24, width=24)])
    batch = collate([dataset[1], dataset[0]])
    assert batch["image"].shape == (2, 3, 24, 24)
    assert [tuple(b.shape) for b in batch["boxes"]] == [(0, 4), (2, 4)]
    assert [lab.tolist() for lab in batch["labels"]] == [[], [2, 0]]
    assert [m["image_id"] for m in batch["meta"]] == [3, 10]


def test_registered_and_check_summary(coco):
    ann_file, img_dir = coco
    dataset = DATASETS.build(dict(type="CocoDetection", ann_file=str(ann_file), img_dir=str(img_dir)))
    summary = dataset.check()
    assert (summary.num_images, summary.counts, summary.ignored) == (3, [1, 0, 1], 2)


def test_boxes_outside_the_image_clipped_with_one_warning(tmp_path, caplog):
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [25, -2, 10, 5], "iscrowd": 0},  # clipped
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [3, 3, 0, 5], "iscrowd": 0},  # zero width: dropped
        {"id": 3, "image_id": 7, "category_id": 5, "bbox": [40, 1, 5, 5], "iscrowd": 0},  # outside: dropped
    ]
    ann_file, img_dir = make_coco(tmp_path, annotations=annotations)
    with caplog.at_level(logging.WARNING, logger="densevision"):
        dataset = CocoDetection(ann_file, img_dir)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "clipped 1 box(es)" in message and "dropped 2 box(es)" in message and f"in {ann_file}" in message
    np.testing.assert_array_equal(dataset[0]["boxes"].numpy(), [[25, 0, 30, 3]])
    assert len(dataset[2]["meta"]["gt_boxes"]) == 0
    problems = []  # check() names each box by annotation id: dropped ones are problems, clipped ones warnings
    summary = dataset.check(on_problem=problems.append)
    image = "the 20x30 (HxW) image"
    assert problems == [
        f"{ann_file}: annotation 2 (x1, y1, x2, y2 = 3, 3, 3, 8) has x2 <= x1 or y2 <= y1: dropped",
        f"{ann_file}: annotation 3 (x1, y1, x2, y2 = 40, 1, 45, 6) lies outside {image}: dropped",
    ]
    assert summary.warnings == [
        f"{ann_file}: annotation 1 (x1, y1, x2, y2 = 25, -2, 35, 3) reaches outside {image}: clipped"
    ]


def test_negative_width_is_named_by_annotation_id(tmp_path):
    annotations = [{"id": 41, "image_id": 10, "category_id": 1, "bbox": [9, 3, -4, 5], "iscrowd": 0}]
    ann_file, img_dir = make_coco(tmp_path, annotations=annotations)
    with pytest.raises(DatasetError, match=r"annotation 41 \(x1, y1, x2, y2 = 9, 3, 5, 8\) has x2 <= x1 or y2 <= y1"):
        CocoDetection(ann_file, img_dir).check()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(annotations=[{"id": 8, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}]), r"image_id 99"),
        (dict(categories=[]), r"lists no categories"),
    ],
)
def test_bad_annotation_files_name_the_file_and_value(tmp_path, change, match):
    ann_file, img_dir = make_coco(tmp_path, **change)
    with pytest.raises(DatasetError, match=match) as info:
        CocoDetection(ann_file, img_dir)
    assert str(ann_file) in str(info.value)


def test_check_lists_every_bad_annotation_and_reading_its_image_raises(tmp_path):
    annotations = [
        {"id": 8, "image_id": 10, "category_id": 2, "bbox": [1, 1, 2, 2]},
        {"id": 9, "image_id": 10, "category_id": 1, "bbox": [1, 1]},
        {"id": 5, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2]},
        {"id": 6, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, "x"]},
    ]
    ann_file, img_dir = make_coco(tmp_path, annotations=annotations)
    dataset = CocoDetection(ann_file, img_dir)
    problems = []
    summary = dataset.check(on_problem=problems.append)
    assert problems == [
        f"annotation 8 in {ann_file} has category_id 2, not one of its categories [1, 5, 90]",
        f"annotation 9 in {ann_file} has no bbox [x, y, w, h] (got [1, 1])",
        f"annotation 6 in {ann_file} has no bbox [x, y, w, h] (got [1, 1, 2, 'x'])",
    ]
    assert (summary.num_bad, summary.counts) == (2, [1, 0, 0])
    with pytest.raises(
        DatasetError,
        match=r"annotation 8 .*category_id 2.* \(and 1 more problem\(s\) in the annotation of this image\)",
    ):
        dataset[0]


def test_orphan_annotations_are_listed_in_one_error(tmp_path):
    annotations = [{"id": i, "image_id": 90 + i, "category_id": 1, "bbox": [1, 1, 2, 2]} for i in range(7)]
    ann_file, img_dir = make_coco(tmp_path, annotations=annotations)
    with pytest.raises(
        DatasetError,
        match=r"^7 annotation\(s\) in .* not in its images: 0 \(image_id 90\), 1 .*, 4 \(image_id 94\) \.\.\.$",
    ):
        CocoDetection(ann_file, img_dir)


def test_missing_or_malformed_annotation_file(coco, tmp_path):
    _, img_dir = coco
    with pytest.raises(DatasetError, match=r"annotation file not found: .*nope\.json"):
        CocoDetection(tmp_path / "nope.json", img_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"cannot read COCO annotations .*bad\.json"):
        CocoDetection(bad, img_dir)
    with pytest.raises(DatasetError, match=r"image folder .*missing not found"):
        CocoDetection(coco[0], tmp_path / "missing")


def test_unreadable_image_names_the_file(coco):
    ann_file, img_dir = coco
    (img_dir / "sub" / "c.png").unlink()
    dataset = CocoDetection(ann_file, img_dir)
    with pytest.raises(DatasetError, match=r"image file not found: .*sub/c\.png"):
        dataset.check()


def test_grayscale_images_become_rgb(tmp_path):
    images = [{"id": 1, "file_name": "g.png", "width": 8, "height": 6}]
    ann_file, img_dir = make_coco(tmp_path, images=images, annotations=[])
    Image.new("L", (8, 6), 50).save(img_dir / "g.png")
    assert CocoDetection(ann_file, img_dir)[0]["image"].shape == (3, 6, 8)

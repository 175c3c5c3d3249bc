import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from densevision.data import DatasetError, collate
from densevision.data.detection import DetectionAnnotation, DetectionDataset, clip_boxes
from densevision.data.shapes import SHAPE_CLASSES, SHAPES_PALETTE, ShapesDetection
from tests.tool_loader import load_tool

CLASSES = ("cat", "dog")


def _image(path, height=20, width=30, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128 if mode == "L" else (10, 200, 30)).save(path)
    return path


def _annotation(boxes, labels, ignore=None, size=(20, 30), image_id=1, source="ann.json", object_names=()):
    ignore = [False] * len(labels) if ignore is None else ignore
    return DetectionAnnotation(image_id, boxes, labels, ignore, source=source, size=size, object_names=object_names)


@pytest.fixture
def two_images(tmp_path):
    """Image 0 has two objects (one ignored); image 1 has none."""
    return [
        (_image(tmp_path / "a.png"), _annotation([[1, 2, 11, 12], [5, 5, 9, 9]], [1, 0], [False, True], image_id=1)),
        (_image(tmp_path / "b.png"), _annotation([], [], image_id=2)),
    ]


def test_sample_follows_the_contract(two_images):
    dataset = DetectionDataset(two_images, classes=CLASSES)
    sample = dataset[0]
    assert sample["image"].shape == (3, 20, 30) and sample["image"].dtype == torch.float32
    assert sample["boxes"].dtype == torch.float32 and sample["labels"].dtype == torch.int64
    assert sample["boxes"].tolist() == [[1, 2, 11, 12]] and sample["labels"].tolist() == [1]  # ignored one left out
    meta = sample["meta"]
    assert (meta["index"], meta["image_id"], meta["ori_shape"], meta["img_shape"]) == (0, 1, (20, 30), (20, 30))
    np.testing.assert_array_equal(meta["gt_boxes"], [[1, 2, 11, 12], [5, 5, 9, 9]])
    assert meta["gt_labels"].tolist() == [1, 0] and meta["gt_ignore"].tolist() == [False, True]
    assert meta["gt_boxes"].dtype == np.float32 and meta["gt_labels"].dtype == np.int64
    empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["meta"]["gt_boxes"].shape == (0, 4) and empty["meta"]["gt_ignore"].shape == (0,)


def test_skip_ignored_false_trains_on_ignored(two_images):
    sample = DetectionDataset(two_images, classes=CLASSES, skip_ignored=False)[0]
    assert sample["labels"].tolist() == [1, 0] and sample["meta"]["gt_ignore"].tolist() == [False, True]


def test_metainfo_and_default_palette_skips_black(two_images):
    dataset = DetectionDataset(two_images, classes=CLASSES, category_ids=[3, 7])
    assert dataset.metainfo == {
        "classes": CLASSES,
        "palette": dataset.palette,
        "category_ids": [3, 7],
        "ignore_index": None,
        "image_format": {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": True},
    }
    assert dataset.num_classes == 2 and (0, 0, 0) not in dataset.palette


def test_collate_batch_with_zero_and_two_boxes(two_images):
    dataset = DetectionDataset(two_images, classes=CLASSES, skip_ignored=False)
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate)))
    assert batch["image"].shape == (2, 3, 20, 30)
    assert [b.shape for b in batch["boxes"]] == [(2, 4), (0, 4)]
    assert [lab.tolist() for lab in batch["labels"]] == [[1, 0], []]
    assert [m["image_id"] for m in batch["meta"]] == [1, 2]


def test_pipeline_moves_boxes_and_reports_img_shape(two_images):
    pipeline = [dict(type="Resize", height=40, width=60), dict(type="HorizontalFlip", p=1.0)]
    sample = DetectionDataset(two_images, classes=CLASSES, pipeline=pipeline)[0]
    assert sample["meta"]["img_shape"] == (40, 60) and sample["meta"]["ori_shape"] == (20, 30)
    np.testing.assert_allclose(sample["boxes"].numpy(), [[60 - 22, 4, 60 - 2, 24]])
    np.testing.assert_array_equal(sample["meta"]["gt_boxes"][0], [1, 2, 11, 12])  # ground truth stays original


def test_clip_boxes_names_each_box_clipped_or_dropped():
    boxes = [[-3, 2, 10, 25], [31, 0, 40, 5], [2, 2, 2, 8], [1, 1, 5, 5], [8, 1, 4, 5]]
    record = _annotation(boxes, [0, 1, 0, 1, 1], object_names=[f"annotation {i}" for i in (11, 12, 13, 14, 15)])
    clipped, report = clip_boxes(record, 20, 30)
    np.testing.assert_array_equal(clipped.boxes, [[0, 2, 10, 20], [1, 1, 5, 5]])
    assert clipped.labels.tolist() == [0, 1] and clipped.object_names == ("annotation 11", "annotation 14")
    image = "the 20x30 (HxW) image"
    assert report.clipped == [
        f"ann.json: annotation 11 (x1, y1, x2, y2 = -3, 2, 10, 25) reaches outside {image}: clipped"
    ]
    assert report.dropped == [
        f"ann.json: annotation 12 (x1, y1, x2, y2 = 31, 0, 40, 5) lies outside {image}: dropped",
        "ann.json: annotation 13 (x1, y1, x2, y2 = 2, 2, 2, 8) has x2 <= x1 or y2 <= y1: dropped",
        "ann.json: annotation 15 (x1, y1, x2, y2 = 8, 1, 4, 5) has x2 <= x1 or y2 <= y1: dropped",
    ]


def test_one_warning_counts_clipped_and_dropped_boxes(tmp_path, caplog):
    samples = [
        (
            _image(tmp_path / "a.png"),
            _annotation([[-3, 2, 10, 25], [31, 0, 40, 5]], [0, 1], source=tmp_path / "x.json"),
        ),
        (_image(tmp_path / "b.png"), _annotation([[0, 0, 35, 5], [3, 3, 3, 9]], [0, 1], source=tmp_path / "x.json")),
        (_image(tmp_path / "c.png"), _annotation([[1, 1, 5, 5]], [0], source=tmp_path / "x.json")),
    ]
    with caplog.at_level(logging.WARNING, logger="densevision"):
        dataset = DetectionDataset(samples, classes=CLASSES)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "clipped 2 box(es)" in message and "dropped 2 box(es)" in message and "x.json" in message
    assert "\n" not in message
    assert [len(annotation.boxes) for _, annotation in dataset.samples] == [1, 1, 1]


def test_no_warning_for_clean_boxes(two_images, caplog):
    with caplog.at_level(logging.WARNING, logger="densevision"):
        DetectionDataset(two_images, classes=CLASSES)
    assert not caplog.records


def test_annotation_without_size_is_clipped_to_the_image(tmp_path):
    samples = [(_image(tmp_path / "a.png"), _annotation([[-2, 0, 40, 10], [35, 0, 40, 5]], [0, 1], size=None))]
    sample = DetectionDataset(samples, classes=CLASSES)[0]
    assert sample["boxes"].tolist() == [[0, 0, 30, 10]]
    np.testing.assert_array_equal(sample["meta"]["gt_boxes"], [[0, 0, 30, 10]])


def test_metainfo_records_that_grey_images_are_trained_on_as_rgb(tmp_path):
    samples = [(_image(tmp_path / "g.png", mode="L"), _annotation([[1, 1, 5, 5]], [0]))]
    fmt = DetectionDataset(samples, classes=CLASSES).metainfo["image_format"]
    assert fmt == {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": True}


def test_grayscale_image_becomes_rgb(tmp_path):
    samples = [(_image(tmp_path / "g.png", mode="L"), _annotation([[1, 1, 5, 5]], [0]))]
    assert DetectionDataset(samples, classes=CLASSES)[0]["image"].shape == (3, 20, 30)


def test_label_outside_classes_names_the_file(tmp_path):
    samples = [(_image(tmp_path / "a.png"), _annotation([[1, 1, 5, 5]], [2], source=tmp_path / "bad.json"))]
    with pytest.raises(DatasetError, match=r"label 2 in .*bad\.json is outside the 2 classes"):
        DetectionDataset(samples, classes=CLASSES)


def test_size_mismatch_and_unreadable_image_name_the_files(tmp_path):
    wrong_size = [(_image(tmp_path / "a.png", height=10), _annotation([[1, 1, 5, 5]], [0], source="a.xml"))]
    dataset = DetectionDataset(wrong_size, classes=CLASSES)
    with pytest.raises(DatasetError, match=r"image .*a\.png is 10x30 \(HxW\) but its annotation in a\.xml says 20x30"):
        dataset.check()
    with pytest.raises(DatasetError, match=r"a\.png"):
        dataset[0]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    broken = DetectionDataset([(tmp_path / "broken.png", _annotation([], []))], classes=CLASSES)
    for read in (broken.check, lambda: broken[0]):
        with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
            read()


def test_check_counts_boxes_per_class(two_images):
    summary = DetectionDataset(two_images, classes=CLASSES).check()
    assert (summary.num_images, summary.counts, summary.ignored, summary.unit) == (2, [0, 1], 1, "boxes")
    table = summary.table()
    assert "boxes" in table and "(ignored)" in table and "2 images" in table


SHAPES = dict(num_train=4, num_val=2, num_test=0, image_size=32, seed=0)


def test_shapes_detection_reads_the_generated_coco(tmp_path):
    dataset = ShapesDetection(root=tmp_path / "shapes", split="val", **SHAPES)
    assert len(dataset) == 2 and dataset.classes == SHAPE_CLASSES == ShapesDetection.classes
    assert dataset.palette == SHAPES_PALETTE[1:] and dataset.metainfo["category_ids"] == [1, 2, 3]
    for index in range(len(dataset)):
        sample = dataset[index]
        boxes = sample["boxes"]
        assert len(boxes) >= 1 and sample["image"].shape == (3, 32, 32)
        assert ((boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 32).all()).item()
    summary = dataset.check()
    assert summary.num_images == 2 and sum(summary.counts) >= 2 and summary.ignored == 0


def test_ssd_training_pipeline_through_a_loader(tmp_path):
    pipeline = [
        dict(type="PhotometricDistort"),
        dict(type="Expand", max_ratio=4.0, p=0.5),
        dict(type="MinIoURandomCrop"),
        dict(type="Resize", height=64, width=64),
        dict(type="HorizontalFlip", p=0.5),
        dict(type="Normalize"),
    ]
    dataset = ShapesDetection(root=tmp_path / "shapes", pipeline=pipeline, **SHAPES)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 64, 64)
    for boxes, labels, meta in zip(batch["boxes"], batch["labels"], batch["meta"]):
        assert len(boxes) == len(labels) <= len(meta["gt_boxes"]) and meta["img_shape"] == (64, 64)
        assert ((boxes >= 0) & (boxes <= 64)).all() and labels.dtype == torch.int64


def test_check_dataset_tool_works_for_detection(tmp_path, capsys):
    config = tmp_path / "cfg.py"
    dataset = dict(type="ShapesDetection", root=str(tmp_path / "s"), **SHAPES)
    config.write_text(f"train_dataset = {dataset!r}\n")
    assert load_tool("check_dataset").main([str(config)]) == 0
    out = capsys.readouterr().out
    assert "ShapesDetection, OK" in out and "4 images" in out and "boxes" in out and "(ignored)" in out


def test_check_reports_every_bad_image_and_counts_the_readable_ones(tmp_path, two_images):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    samples = [
        (tmp_path / "broken.png", _annotation([], [], source="broken.xml")),
        *two_images,
        (_image(tmp_path / "small.png", height=10), _annotation([[1, 1, 5, 5]], [0], size=(10, 30), source="s.xml")),
    ]
    dataset = DetectionDataset(samples, classes=CLASSES, pipeline=[dict(type="RandomCrop", height=16, width=16)])
    problems = []
    summary = dataset.check(on_problem=problems.append)
    assert len(problems) == 2 and "broken.png" in problems[0]
    assert problems[1].endswith("small.png is 10x30 (HxW), smaller than the 16x16 crop of pipeline[0] RandomCrop")
    assert summary.counts == [1, 1] and summary.ignored == 1 and summary.num_bad == 1  # small.png is readable


def test_check_compares_the_rgb_images_with_the_models_channels(two_images):
    problems = []
    DetectionDataset(two_images, classes=CLASSES).check(on_problem=problems.append, channels=1)
    assert len(problems) == 2 and problems[0].endswith("is 3-channel uint8; the model takes in_chans=1")


def test_small_image_for_the_crop_is_a_dataset_error_before_training(tmp_path, two_images):
    crop = [dict(type="Normalize"), dict(type="AtLeastOneBBoxRandomCrop", height=25, width=25)]
    with pytest.raises(DatasetError, match=r"a\.png is 20x30 \(HxW\), smaller than the 25x25 crop.*1 more problem"):
        DetectionDataset(two_images, classes=CLASSES, pipeline=crop).check()


def test_crop_larger_than_the_image_without_check_is_one_line_naming_the_file(two_images):
    # check_datasets=False (the VOC and COCO configs): the sample itself must name the file, in one line
    crop = [dict(type="AtLeastOneBBoxRandomCrop", height=25, width=25), dict(type="Normalize")]
    dataset = DetectionDataset(two_images, classes=CLASSES, pipeline=crop)
    with pytest.raises(DatasetError, match=r"a\.png is 20x30 \(HxW\), smaller than the 25x25 crop of pipeline\[0\]"):
        dataset[0]

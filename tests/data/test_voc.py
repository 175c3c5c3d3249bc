import logging

import numpy as np
import pytest
from PIL import Image

from densevision.data import DatasetError, collate
from densevision.data.voc import VOC_CLASSES, VOCDetection
from densevision.registry import DATASETS

SIZE = (20, 30)  # H, W of every fake image


def _xml(objects, size=SIZE):
    """A VOC annotation: objects are (name, (xmin, ymin, xmax, ymax), difficult) in the 1-based inclusive pixels."""
    body = "".join(
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{int(difficult)}</difficult>"
        f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox>"
        "</object>"
        for name, box, difficult in objects
    )
    return (
        f"<annotation><folder>VOC</folder><size><width>{size[1]}</width><height>{size[0]}</height>"
        f"<depth>3</depth></size>{body}</annotation>"
    )


def make_voc(root, years):
    """``{year: {image_id: objects}}`` -> a VOCdevkit tree with JPEGs and trainval/test lists (all ids in both)."""
    for year, images in years.items():
        folder = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for image_id, objects in images.items():
            (folder / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
            Image.new("RGB", (SIZE[1], SIZE[0]), (90, 30, 200)).save(folder / "JPEGImages" / f"{image_id}.jpg")
        for split in ("trainval", "test"):
            (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
        (folder / "ImageSets" / "Main" / "dog_trainval.txt").write_text("")  # per-class lists are not splits
    return root


DEVKIT = {
    "2007": {
        "000001": [("dog", (1, 2, 10, 12), False), ("person", (5, 5, 20, 15), True)],
        "000002": [("car", (3, 4, 30, 20), False)],
    },
    "2012": {"2008_000001": [("tvmonitor", (2, 2, 6, 9), False)]},
}


@pytest.fixture
def devkit(tmp_path):
    return make_voc(tmp_path / "VOCdevkit", DEVKIT)


def test_years_are_concatenated_in_order(devkit):
    both = VOCDetection(devkit, years=("2007", "2012"), split="trainval")
    assert [a.image_id for _, a in both.samples] == ["000001", "000002", "2008_000001"]
    assert [p.relative_to(devkit).as_posix() for p, _ in both.samples][-1] == "VOC2012/JPEGImages/2008_000001.jpg"
    assert len(VOCDetection(devkit, years="2007")) == 2 and len(VOCDetection(devkit, years=[2012], split="test")) == 1


def test_missing_year_is_one_line_naming_the_folder(devkit):
    with pytest.raises(DatasetError) as info:
        VOCDetection(devkit, years=("2007", "2010"))
    message = str(info.value)
    assert message.startswith("VOC2010 not found: expected ") and str(devkit / "VOC2010") in message
    assert "\n" not in message


def test_coordinates_become_continuous_zero_based(devkit):
    sample = VOCDetection(devkit, years="2007")[0]
    np.testing.assert_array_equal(sample["meta"]["gt_boxes"], [[0, 1, 10, 12], [4, 4, 20, 15]])
    assert sample["meta"]["image_id"] == "000001" and sample["meta"]["ori_shape"] == SIZE


@pytest.mark.parametrize(
    "a, b", [((1, 1, 10, 10), (5, 5, 14, 14)), ((1, 2, 10, 12), (1, 2, 10, 12)), ((3, 3, 3, 3), (1, 1, 5, 5))]
)
def test_plain_iou_of_converted_boxes_is_the_devkit_iou(a, b):
    def devkit_iou(p, q):  # VOCevaluation: inclusive pixel boxes, +1 on widths and heights
        iw = min(p[2], q[2]) - max(p[0], q[0]) + 1
        ih = min(p[3], q[3]) - max(p[1], q[1]) + 1
        inter = max(iw, 0) * max(ih, 0)
        area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
        return inter / (area(p) + area(q) - inter)

    def plain_iou(p, q):
        iw, ih = min(p[2], q[2]) - max(p[0], q[0]), min(p[3], q[3]) - max(p[1], q[1])
        inter = max(iw, 0) * max(ih, 0)
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
        return inter / (area(p) + area(q) - inter)

    def convert(r):
        return (r[0] - 1, r[1] - 1, r[2], r[3])

    assert plain_iou(convert(a), convert(b)) == pytest.approx(devkit_iou(a, b))


@pytest.mark.parametrize("skip_difficult, trained", [(True, ["dog"]), (False, ["dog", "person"])])
def test_difficult_objects(devkit, skip_difficult, trained):
    sample = VOCDetection(devkit, years="2007", skip_difficult=skip_difficult)[0]
    assert [VOC_CLASSES[i] for i in sample["labels"].tolist()] == trained
    assert sample["meta"]["gt_ignore"].tolist() == [False, True]  # kept for evaluation either way
    assert [VOC_CLASSES[i] for i in sample["meta"]["gt_labels"]] == ["dog", "person"]


def test_classes_metainfo_and_registry(devkit):
    dataset = DATASETS.build(dict(type="VOCDetection", root=str(devkit), years=["2007"]))
    assert isinstance(dataset, VOCDetection) and len(VOC_CLASSES) == 20
    assert VOC_CLASSES[:3] == ("aeroplane", "bicycle", "bird") and VOC_CLASSES[-1] == "tvmonitor"
    assert dataset.metainfo["classes"] == VOC_CLASSES and dataset.metainfo["category_ids"] is None
    assert len(dataset.metainfo["palette"]) == 20 and VOCDetection.classes == VOC_CLASSES


def test_collate_and_check_summary(devkit):
    dataset = VOCDetection(devkit, years=("2007", "2012"), pipeline=[dict(type="Resize", height=32, width=32)])
    batch = collate([dataset[0], dataset[2]])
    assert batch["image"].shape == (2, 3, 32, 32) and [len(b) for b in batch["boxes"]] == [1, 1]
    summary = dataset.check()
    counts = dict(zip(summary.classes, summary.counts))
    assert (summary.num_images, summary.ignored, summary.unit) == (3, 1, "boxes")
    assert (counts["dog"], counts["car"], counts["tvmonitor"], counts["person"]) == (1, 1, 1, 0)


def test_boxes_outside_the_image_are_clipped_with_one_warning(tmp_path, caplog):
    root = make_voc(
        tmp_path,
        {
            "2007": {
                "a": [("cat", (1, 1, 40, 10), False), ("cat", (31, 1, 35, 10), False)],
                "b": [("cow", (0, 1, 5, 5), 0)],
            }
        },
    )
    with caplog.at_level(logging.WARNING, logger="densevision"):
        dataset = VOCDetection(root, years="2007")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "clipped 2 box(es)" in message and "dropped 1 box(es)" in message
    assert "in 2 files, first" in message and "a.xml" in message
    np.testing.assert_array_equal(dataset[0]["boxes"].numpy(), [[0, 0, 30, 10]])
    np.testing.assert_array_equal(dataset[1]["boxes"].numpy(), [[0, 0, 5, 5]])
    # check() names each box by file and object: the dropped one is a problem, the clipped ones warnings
    problems = []
    summary = dataset.check(on_problem=problems.append)
    notes = root / "VOC2007" / "Annotations"
    image = "the 20x30 (HxW) image"
    assert problems == [
        f"{notes / 'a.xml'}: object 1 (cat) (x1, y1, x2, y2 = 30, 0, 35, 10) lies outside {image}: dropped"
    ]
    assert summary.warnings == [
        f"{notes / 'a.xml'}: object 0 (cat) (x1, y1, x2, y2 = 0, 0, 40, 10) reaches outside {image}: clipped",
        f"{notes / 'b.xml'}: object 0 (cow) (x1, y1, x2, y2 = -1, 0, 5, 5) reaches outside {image}: clipped",
    ]
    assert summary.table().splitlines()[-2:] == [f"warning: {line}" for line in summary.warnings]


def test_size_zero_counts_as_not_given(devkit):
    _break(devkit, "000002", _xml([("car", (3, 4, 40, 20), False)], size=(0, 0)))
    sample = VOCDetection(devkit, years="2007")[1]
    np.testing.assert_array_equal(sample["boxes"].numpy(), [[2, 3, 30, 20]])  # clipped to the image read


def _break(devkit, image_id, text):
    (devkit / "VOC2007" / "Annotations" / f"{image_id}.xml").write_text(text)


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda d: _break(d, "000002", _xml([("zebra", (1, 1, 5, 5), False)])),
            r"unknown class 'zebra' in .*000002\.xml",
        ),
        (lambda d: _break(d, "000002", "<annotation><object>"), r"cannot parse annotation .*000002\.xml"),
        (
            lambda d: _break(d, "000002", _xml([("dog", ("a", 1, 5, 5), False)])),
            r"object 0 \(dog\) in .*000002\.xml has no numeric <xmin> \(got 'a'\)",
        ),
        (
            lambda d: (d / "VOC2007" / "Annotations" / "000002.xml").unlink(),
            r"annotation file not found: .*000002\.xml",
        ),
    ],
)
def test_bad_annotations_name_the_file_when_checked_or_read(devkit, damage, match):
    damage(devkit)
    dataset = VOCDetection(devkit, years="2007")  # a bad annotation is a bad sample, like an unreadable image
    with pytest.raises(DatasetError, match=match):
        dataset.check()
    with pytest.raises(DatasetError, match=match):
        dataset[1]
    assert dataset[0]["boxes"].shape == (1, 4)


def test_missing_split_list_is_an_error_when_built(devkit):
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(DatasetError, match=r"split list .*trainval\.txt not found \(split lists there: \['test'\]\)"):
        VOCDetection(devkit, years="2007")


def test_check_lists_every_annotation_problem_in_one_run(tmp_path):
    images = {f"{i:06d}": [("dog", (1, 2, 10, 12), False)] for i in range(1, 6)}
    root = make_voc(tmp_path, {"2007": images})
    notes = root / "VOC2007" / "Annotations"
    (notes / "000001.xml").write_text("<annotation><object>")
    (notes / "000002.xml").write_text(_xml([("zebra", (1, 1, 5, 5), False), ("dog", ("a", 1, 5, 5), False)]))
    (notes / "000004.xml").unlink()
    problems = []
    summary = VOCDetection(root, years="2007").check(on_problem=problems.append)
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"cannot parse annotation {notes / '000001.xml'}")
    assert problems[1].startswith(f"unknown class 'zebra' in {notes / '000002.xml'} (object 0)")
    assert problems[2].startswith(f"object 1 (dog) in {notes / '000002.xml'} has no numeric <xmin>")
    assert problems[3] == f"annotation file not found: {notes / '000004.xml'}"
    assert (summary.num_bad, summary.counts[VOC_CLASSES.index("dog")]) == (3, 2)


def test_unreadable_or_resized_image_names_the_file(devkit):
    (devkit / "VOC2007" / "JPEGImages" / "000002.jpg").write_bytes(b"broken")
    Image.new("RGB", (8, 8)).save(devkit / "VOC2012" / "JPEGImages" / "2008_000001.jpg")
    dataset = VOCDetection(devkit)
    with pytest.raises(DatasetError, match=r"cannot read image .*000002\.jpg"):
        dataset.check()
    with pytest.raises(DatasetError, match=r"2008_000001\.jpg is 8x8 \(HxW\) but its annotation in .*2008_000001\.xml"):
        dataset[2]

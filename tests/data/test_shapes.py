import json
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densevision.data import shapes
from densevision.data.io import read_image, read_mask
from densevision.data.shapes import SEGMENTATION_CLASSES, SHAPE_CLASSES, generate_shapes
from densevision.registry import DATASETS

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
SMALL = dict(num_train=6, num_val=3, num_test=3, image_size=32, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "shapes", **SMALL)


def _file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(small):
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        assert len(list((small / "segmentation" / "images" / split).glob("*.png"))) == count
        assert len(list((small / "segmentation" / "masks" / split).glob("*.png"))) == count
        assert len(list((small / "detection" / "images" / split).glob("*.png"))) == count
        assert (small / "detection" / "annotations" / f"instances_{split}.json").is_file()
        per_class = [len(list((small / "classification" / split / c).glob("*.png"))) for c in SHAPE_CLASSES]
        assert per_class == [count // 3] * 3
    assert json.loads((small / "shapes.json").read_text())["num_train"] == 6
    assert not [p for p in small.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_images_and_masks(small):
    image = read_image(small / "segmentation" / "images" / "train" / "00000.png")
    mask = read_mask(small / "segmentation" / "masks" / "train" / "00000.png")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and mask.shape == (32, 32)
    all_values = np.concatenate(
        [read_mask(p).ravel() for p in (small / "segmentation" / "masks" / "train").glob("*.png")]
    )
    assert set(np.unique(all_values)) <= {0, 1, 2, 3} and (all_values == 0).any() and (all_values > 0).any()
    # the shapes differ from the background in colour: mean colour inside vs outside differs clearly
    assert np.abs(image[mask > 0].mean(axis=0) - image[mask == 0].mean(axis=0)).max() > 20


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = generate_shapes(tmp_path / "again", **SMALL)
    assert _file_bytes(again) == _file_bytes(small)
    other = generate_shapes(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (
        _file_bytes(other)["segmentation/images/train/00000.png"]
        != _file_bytes(small)["segmentation/images/train/00000.png"]
    )


def test_splits_independent_of_other_splits_sizes(small, tmp_path):
    more_train = generate_shapes(tmp_path / "more", **{**SMALL, "num_train": 9})
    name = "segmentation/images/val/00002.png"
    assert (more_train / name).read_bytes() == (small / name).read_bytes()


def test_coco_annotations_valid_and_match_masks(small):
    coco = COCO(str(small / "detection" / "annotations" / "instances_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert len(coco.getImgIds()) == 6 and len(coco.getAnnIds()) >= 6
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann["image_id"])[0]
        assert (info["width"], info["height"]) == (32, 32) and ann["iscrowd"] == 0
        mask = read_mask(small / "segmentation" / "masks" / "train" / info["file_name"])
        binary = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert ann["area"] == binary.sum() > 0
        assert (mask[binary] == ann["category_id"]).all()
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(binary)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_existing_generation_is_reused(small, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the marker matches")

    monkeypatch.setattr(shapes, "_write_scenes", fail)
    assert generate_shapes(small, **SMALL) == small


def test_new_parameters_replace_earlier_generation(tmp_path):
    root = generate_shapes(tmp_path / "s", **SMALL)
    generate_shapes(root, **{**SMALL, "num_val": 6})
    assert len(list((root / "segmentation" / "images" / "val").glob("*.png"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not made by generate_shapes"):
        generate_shapes(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("bad", [{"num_train": -1}, {"num_val": 2.5}, {"image_size": 8}])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_shapes(tmp_path / "s", **{**SMALL, **bad})


def test_quick_start_size_takes_seconds(tmp_path):
    start = time.perf_counter()
    generate_shapes(tmp_path / "s", num_train=300, num_val=60, num_test=60, image_size=64)
    assert time.perf_counter() - start < 30


def test_registered_datasets_generate_then_load(tmp_path):
    cfg = dict(root=str(tmp_path / "s"), split="val", **SMALL)
    segmentation = DATASETS.build(dict(type="ShapesSegmentation", **cfg))
    assert segmentation.classes == SEGMENTATION_CLASSES and segmentation.num_classes == 4
    sample = segmentation[0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (32, 32)
    assert segmentation.check().num_images == 3
    classification = DATASETS.build(dict(type="ShapesClassification", pipeline=[dict(type="Normalize")], **cfg))
    assert classification.classes == SHAPE_CLASSES
    assert [int(classification[i]["label"]) for i in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="split"):
        DATASETS.build(dict(type="ShapesSegmentation", **{**cfg, "split": "training"}))

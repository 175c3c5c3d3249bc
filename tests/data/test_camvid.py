import numpy as np
import pytest
import torch
from PIL import Image

from densevision.data.camvid import CAMVID32_TO_11, CAMVID_CLASSES, CAMVID_PALETTE, CamVid
from densevision.data.checks import DatasetError
from densevision.data.io import write_mask_png
from densevision.registry import DATASETS
from tests.data.fakes import make_camvid


@pytest.fixture(params=["segnet", "rgb32"])
def camvid(request, tmp_path):
    return request.param, tmp_path, make_camvid(tmp_path, request.param)


def test_classes_palette_and_void():
    assert CAMVID_CLASSES[0] == "Sky" and CAMVID_CLASSES[-1] == "Bicyclist" and len(CAMVID_CLASSES) == 11
    assert CAMVID_PALETTE[4] == (60, 40, 222)  # Pavement, SegNet colours
    assert set(CAMVID32_TO_11.values()) == set(CAMVID_CLASSES)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_layout_detected_and_labels_decoded(camvid, split):
    layout, root, written = camvid
    dataset = CamVid(root, split)
    assert dataset.layout == layout
    assert (dataset.num_classes, dataset.ignore_index, len(dataset)) == (11, 11, 2)
    for index, (image_path, label_path, indices) in enumerate(written[split]):
        np.testing.assert_array_equal(dataset.read_mask(index), indices)
        assert dataset.read_mask(index).dtype == np.int64
        sample = dataset[index]
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 24, 32)
        np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), np.asarray(Image.open(image_path)))
        assert sample["mask"].dtype == torch.int64
        np.testing.assert_array_equal(sample["mask"].numpy(), indices)
        assert sample["meta"] == {"path": str(image_path), "mask_path": str(label_path), "ori_shape": (24, 32)}


def test_explicit_layout_and_config_pipeline(tmp_path):
    make_camvid(tmp_path, "rgb32")
    cfg = dict(type="CamVid", root=str(tmp_path), split="val", layout="rgb32",
               pipeline=[dict(type="RandomCrop", height=16, width=16), dict(type="Normalize")])  # fmt: skip
    sample = DATASETS.build(cfg)[0]
    assert sample["image"].shape == (3, 16, 16) and sample["mask"].shape == (16, 16)
    assert sample["image"].min() < 0  # normalised


def test_check_counts_pixels_per_class(camvid):
    _, root, written = camvid
    summary = CamVid(root, "train").check()
    labels = np.concatenate([indices.ravel() for _, _, indices in written["train"]])
    assert summary.num_images == 2
    assert summary.counts == np.bincount(labels, minlength=12)[:11].tolist()
    assert summary.ignored == int((labels == 11).sum())


def test_missing_root_lists_expected_folders_of_both_layouts(tmp_path):
    with pytest.raises(DatasetError) as info:
        CamVid(tmp_path / "camvid", "train")
    message = str(info.value)
    assert str(tmp_path / "camvid") in message
    for folder in ("train/", "trainannot/", "valannot/", "testannot/", "train_labels/", "class_dict.csv"):
        assert folder in message


def test_unrecognised_root_and_missing_split_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a CamVid folder"):
        CamVid(tmp_path, "train")
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(DatasetError, match=r"val not found.*valannot/"):
        CamVid(tmp_path, "val")


@pytest.mark.parametrize("layout, label", [("segnet", "trainannot/{stem}.png"), ("rgb32", "train_labels/{stem}_L.png")])
def test_missing_annotation_names_file(tmp_path, layout, label):
    written = make_camvid(tmp_path, layout)
    image_path, label_path, _ = written["train"][1]
    label_path.unlink()
    with pytest.raises(DatasetError, match="missing annotation") as info:
        CamVid(tmp_path, "train")
    assert str(tmp_path / label.format(stem=image_path.stem)) in str(info.value)


def test_check_reports_annotation_removed_after_construction(camvid):
    _, root, written = camvid
    dataset = CamVid(root, "test")
    written["test"][0][1].unlink()
    with pytest.raises(DatasetError, match=f"not found: {written['test'][0][1]}"):
        dataset.check()


def test_check_label_value_outside_classes_names_file_and_value(tmp_path):
    written = make_camvid(tmp_path, "segnet")
    _, label_path, indices = written["train"][0]
    indices = indices.copy()
    indices[3, 4] = 12
    write_mask_png(label_path, indices)
    dataset = CamVid(tmp_path, "train")
    with pytest.raises(DatasetError, match=rf"\[12\] in {label_path}"):
        dataset.check()


def test_check_size_mismatch_names_both_files(camvid):
    _, root, written = camvid
    image_path, label_path, _ = written["val"][1]
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(image_path)
    with pytest.raises(DatasetError, match="sizes differ") as info:
        CamVid(root, "val").check()
    assert str(image_path) in str(info.value) and str(label_path) in str(info.value)


def test_check_unknown_colour_names_file_and_colour(tmp_path):
    written = make_camvid(tmp_path, "rgb32")
    _, label_path, _ = written["train"][1]
    colours = np.asarray(Image.open(label_path)).copy()
    colours[0, 0] = (250, 1, 1)
    Image.fromarray(colours).save(label_path)
    with pytest.raises(DatasetError, match=rf"\(250, 1, 1\) in {label_path}"):
        CamVid(tmp_path, "train").check()


def test_check_unreadable_image_names_file(camvid):
    _, root, written = camvid
    image_path = written["train"][0][0]
    image_path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=f"cannot read image {image_path}"):
        CamVid(root, "train").check()


@pytest.mark.parametrize("content", ["", "name,red,green,blue\nSky,128,128,128\n", "name,r,g,b\nSky,128,x,128\n"])
def test_bad_class_dict_names_file(tmp_path, content):
    make_camvid(tmp_path, "rgb32")
    (tmp_path / "class_dict.csv").write_text(content)
    with pytest.raises(DatasetError, match="class_dict.csv"):
        CamVid(tmp_path, "train")


@pytest.mark.parametrize("kwargs, message", [({"split": "training"}, "split"), ({"layout": "voc"}, "layout")])
def test_bad_split_or_layout(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CamVid(tmp_path, **kwargs)


def test_macos_resource_forks_are_not_taken_for_images(camvid):
    _, root, written = camvid
    fork = root / "train" / f"._{written['train'][0][0].name}"
    fork.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    dataset = CamVid(root, "train")
    assert len(dataset) == 2 and dataset.skipped_files == [fork]
    assert dataset.check().skipped == [fork]


def test_check_lists_every_bad_file(tmp_path):
    written = make_camvid(tmp_path, "segnet", num_images=3)
    (image_a, label_a, _), _, (_, label_c, indices) = written["train"]
    image_a.write_bytes(b"\x89PNG broken")
    write_mask_png(label_c, np.where(indices == 0, 200, indices))
    problems = []
    summary = CamVid(tmp_path, "train").check(on_problem=problems.append)
    assert len(problems) == 2 and str(image_a) in problems[0] and f"[200] in {label_c}" in problems[1]
    assert summary.num_bad == 2 and sum(summary.counts) + summary.ignored == 24 * 32

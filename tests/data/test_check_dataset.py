import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from densevision.data.io import write_mask_png
from tests.data.fakes import make_camvid, random_image
from tests.data.test_coco import make_coco
from tests.data.test_voc import make_voc
from tests.tool_loader import load_tool

RESOURCE_FORK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "


@pytest.fixture(scope="module")
def tool():
    return load_tool("check_dataset")


def _config(tmp_path, dataset, **more):
    path = tmp_path / "cfg.py"
    path.write_text(f"train_dataset = {dataset!r}\n" + "".join(f"{k} = {v!r}\n" for k, v in more.items()))
    return str(path)


def _class_folders(root, counts, size=(9, 11)):
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(random_image(rng, *size)).save(root / name / f"{i}.png")
    return root


def test_prints_summary(tool, tmp_path, capsys):
    dataset = dict(type="ShapesSegmentation", root=str(tmp_path / "s"), num_train=3, num_val=0, num_test=0,
                   image_size=32)  # fmt: skip
    assert tool.main([_config(tmp_path, dataset)]) == 0
    out = capsys.readouterr().out
    assert "ShapesSegmentation, OK" in out and "3 images" in out
    assert all(name in out for name in ("background", "triangle", "rectangle", "ellipse", "(ignored)"))


def test_lists_every_bad_file_then_the_histogram_of_the_readable_ones_and_fails(tool, tmp_path, capsys):
    root = _class_folders(tmp_path / "cls", {"cat": 3, "dog": 3})
    bad = [root / "cat" / "0.png", root / "dog" / "1.png", root / "dog" / "2.png"]
    for path in bad:
        path.write_bytes(b"broken")
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root=str(root)))]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("checking train_dataset of") and "ImageFolderDataset, 6 samples" in lines[0]
    assert [line.split()[3] for line in lines[1:4]] == [f"{path}:" for path in bad]  # cannot read image PATH: ...
    assert lines[4] == "6 images (3 unreadable or with bad labels, not counted)"
    assert re.match(r"cat +2 +66\.67%", lines[6]) and re.match(r"dog +1 +33\.33%", lines[7])
    assert captured.err.strip().endswith("ImageFolderDataset, FAILED: 3 problem(s) in 6 images")


def test_max_errors_caps_the_list_and_counts_the_rest(tool, tmp_path, capsys):
    root = _class_folders(tmp_path / "cls", {"a": 5})
    for i in range(5):
        (root / "a" / f"{i}.png").write_bytes(b"broken")
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root=str(root))), "--max-errors", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("cannot read image") == 2
    assert "... and 3 more problem(s) (--max-errors 2)" in captured.out and "FAILED: 5 problem(s)" in captured.err
    with pytest.raises(SystemExit):
        tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root=str(root))), "--max-errors", "-1"])


def test_grey_16bit_and_rgba_images_among_rgb_ones(tool, tmp_path, capsys):
    root = _class_folders(tmp_path / "cls", {"a": 3, "b": 3})
    Image.fromarray(np.zeros((9, 11), np.uint16)).save(root / "a" / "1.png")
    Image.new("RGBA", (11, 9)).save(root / "b" / "2.png")
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root=str(root)))]) == 1
    out = capsys.readouterr().out
    assert f"image {root / 'a' / '1.png'} is 1-channel uint16, unlike 4 of the 6 images (3-channel uint8)" in out
    assert f"image {root / 'b' / '2.png'} is 4-channel uint8, unlike 4 of the 6 images (3-channel uint8)" in out
    assert "6 images\n" in out  # all readable: each is counted


def _four_band_folders(root, stems):
    rng = np.random.default_rng(0)
    for stem in stems:
        (root / "img").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "img" / f"{stem}.tif", rng.integers(0, 4096, (12, 10, 4), dtype=np.uint16))
        write_mask_png(root / "ann" / f"{stem}.png", rng.integers(0, 2, (12, 10)).astype(np.uint8))
    return dict(type="MaskFolderDataset", img_dir=str(root / "img"), mask_dir=str(root / "ann"), classes=["a", "b"])


@pytest.mark.parametrize(
    ("network", "said", "status"),
    [
        (dict(type="fcdensenet56", in_chans=4), "4 channels (model.model.in_chans)", 0),
        (dict(type="fcdensenet56"), "3 channels (the default in_chans)", 1),
    ],
)
def test_images_are_checked_against_the_models_in_chans(tool, tmp_path, capsys, network, said, status):
    dataset = _four_band_folders(tmp_path, ["t1", "t2"])
    model = dict(type="Segmentor", model=network)
    assert tool.main([_config(tmp_path, dataset, model=model)]) == status
    out = capsys.readouterr().out
    assert f"the model takes {said}" in out.splitlines()[0]
    assert out.count("is 4-channel uint16; the model takes in_chans=3") == 2 * status


def test_crop_larger_than_the_images(tool, tmp_path, capsys):
    make_camvid(tmp_path / "camvid", "segnet", num_images=2, size=(24, 32))
    crop = [dict(type="RandomCrop", height=28, width=28), dict(type="HorizontalFlip", p=0.5)]
    dataset = dict(type="CamVid", root=str(tmp_path / "camvid"), split="train", pipeline=crop)
    assert tool.main([_config(tmp_path, dataset)]) == 1
    out = capsys.readouterr().out
    assert out.count("is 24x32 (HxW), smaller than the 28x28 crop of pipeline[0] RandomCrop") == 2
    padded = [dict(type="PadIfNeeded", min_height=28, min_width=28), *crop]
    assert tool.main([_config(tmp_path, {**dataset, "pipeline": padded})]) == 0


def test_hidden_files_are_skipped_and_listed(tool, tmp_path, capsys):
    root = _class_folders(tmp_path / "cls", {"a": 2})
    (root / "a" / "._0.png").write_bytes(RESOURCE_FORK)
    (root / "a" / "._1.png").write_bytes(RESOURCE_FORK)
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root=str(root))), "--max-errors", "1"]) == 0
    out = capsys.readouterr().out
    assert f"skipped hidden file {root / 'a' / '._0.png'}\n" in out and "._1.png" not in out
    assert "... and 1 more hidden file(s) skipped (--max-errors 1)" in out and "2 images" in out and ", OK" in out


def test_coco_detection_lists_every_bad_image(tool, tmp_path, capsys):
    ann_file, img_dir = make_coco(tmp_path)
    (img_dir / "a.jpg").write_bytes(b"broken")
    Image.new("RGB", (16, 13)).save(img_dir / "b.png")  # the JSON says 16x12
    dataset = dict(type="CocoDetection", ann_file=str(ann_file), img_dir=str(img_dir))
    assert tool.main([_config(tmp_path, dataset)]) == 1
    out = capsys.readouterr().out
    assert f"cannot read image {img_dir / 'a.jpg'}" in out and f"image {img_dir / 'b.png'} is 13x16" in out
    assert "3 images (2 unreadable or with bad labels, not counted)" in out


def test_unknown_split_is_one_line_listing_defined_datasets(tool, tmp_path, capsys):
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root="x")), "--split", "val"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^error: .*neither val_dataloader.dataset nor val_dataset.*\['train_dataset'\]$", err.strip())


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (dict(type="ImageFolderDatset", root="x"), r"^error: .*ImageFolderDatset.*ImageFolderDataset"),
        (dict(type="ImageFolderDataset", root="/nope"), r"^error: train_dataset of .*cfg\.py: /nope not found"),
        (dict(type="CamVid", root=".", split="trian"), r"^error: .*unknown CamVid split 'trian'"),
    ],
)
def test_config_and_dataset_errors_are_one_line(tool, tmp_path, capsys, dataset, message):
    assert tool.main([_config(tmp_path, dataset)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err.strip())


def test_prefers_the_dataloader_dataset_the_runner_uses(tool, tmp_path, capsys):
    shapes = dict(type="ShapesClassification", root=str(tmp_path / "s"), num_train=3, num_val=0, num_test=0,
                  image_size=32)  # fmt: skip
    path = tmp_path / "cfg.py"
    path.write_text(f"train_dataset = dict(type='Nope')\ntrain_dataloader = dict(batch_size=2, dataset={shapes!r})\n")
    assert tool.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "train_dataloader.dataset" in out and "ShapesClassification, OK" in out and "3 images" in out


def test_all_void_masks_fail_and_name_the_void_files(tool, tmp_path, capsys):
    root = tmp_path / "camvid"
    for _, mask, indices in make_camvid(root, "segnet")["train"]:
        write_mask_png(mask, np.full(indices.shape, 11, np.uint8))  # CamVid's void label everywhere
    assert tool.main([_config(tmp_path, dict(type="CamVid", root=str(root), split="train"))]) == 1
    captured = capsys.readouterr()
    assert re.search(r"no labelled pixels in the \d+ readable sample\(s\)", captured.out)
    assert "warning: " in captured.out and "label files have no labelled pixels (all void)" in captured.out
    assert "FAILED: 1 problem(s)" in captured.err


def test_voc_annotation_problems_are_all_listed_in_one_run(tool, tmp_path, capsys):
    images = {f"{i:06d}": [("dog", (1, 2, 10, 12), False)] for i in range(1, 5)}
    root = make_voc(tmp_path / "VOCdevkit", {"2007": images})
    notes = root / "VOC2007" / "Annotations"
    (notes / "000001.xml").write_text("<annotation><object>")
    (notes / "000002.xml").write_text((notes / "000002.xml").read_text().replace(">dog<", ">zebra<"))
    (notes / "000003.xml").unlink()
    config = _config(tmp_path, dict(type="VOCDetection", root=str(root), years="2007", split="trainval"))
    assert tool.main([config]) == 1
    captured = capsys.readouterr()
    assert [line.split()[0] for line in captured.out.splitlines()[1:4]] == ["cannot", "unknown", "annotation"]
    assert "FAILED: 3 problem(s) in 4 images" in captured.err

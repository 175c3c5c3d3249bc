import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from densevision.data.checks import DatasetError
from densevision.data.io import write_colour_mask, write_mask_png
from densevision.data.mask_folder import MaskFolderDataset
from densevision.registry import DATASETS
from tests.data.fakes import random_image

CLASSES = ("background", "building", "road")


def _tree(root, stems, *, image_writer, mask_suffix=".png", values=3):
    rng = np.random.default_rng(1)
    masks = {}
    for stem in stems:
        (root / "img" / stem).parent.mkdir(parents=True, exist_ok=True)
        image_writer(root / "img" / stem, rng)
        masks[stem] = rng.integers(0, values, (12, 10)).astype(np.uint8)
        write_mask_png(root / "ann" / f"{stem}{mask_suffix}", masks[stem])
    return masks


def _rgb_png(path, rng):
    Image.fromarray(random_image(rng, 12, 10)).save(f"{path}.png")


def test_pairs_by_stem_in_subfolders_with_mask_suffix(tmp_path):
    masks = _tree(tmp_path, ["b", "a", "sub/c"], image_writer=_rgb_png, mask_suffix="_mask.png")
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, mask_suffix="_mask.png")
    assert [p.name for p, _ in dataset.samples] == ["a.png", "b.png", "c.png"]
    assert dataset.samples[2][1] == tmp_path / "ann" / "sub" / "c_mask.png"
    np.testing.assert_array_equal(dataset[2]["mask"].numpy(), masks["sub/c"])
    assert dataset.num_classes == 3 and len(dataset.palette) == 3 and len(set(dataset.palette)) == 3


def test_image_without_mask_names_it(tmp_path):
    _tree(tmp_path, ["a", "b"], image_writer=_rgb_png)
    (tmp_path / "ann" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"have no mask.*img/b\.png"):
        MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)


@pytest.mark.parametrize("missing", ["img", "ann"])
def test_missing_folder_names_it(tmp_path, missing):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    kwargs = {"img_dir": tmp_path / "img", "mask_dir": tmp_path / "ann"}
    kwargs["img_dir" if missing == "img" else "mask_dir"] = tmp_path / "nope"
    with pytest.raises(DatasetError, match=f"folder {tmp_path / 'nope'} not found"):
        MaskFolderDataset(classes=CLASSES, **kwargs)


def test_duplicate_stem_is_an_error(tmp_path):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    with pytest.raises(DatasetError, match=r"1 stem\(s\) shared by two files in .*img: 'a' \(a\.jpg and a\.png\)$"):
        MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)


def test_every_pairing_problem_is_named_in_one_error(tmp_path):
    _tree(tmp_path, ["a", "b", "c"], image_writer=_rgb_png)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")  # two images of stem a
    write_mask_png(tmp_path / "ann" / "b.PNG", np.zeros((12, 10), np.uint8))  # two masks of stem b
    (tmp_path / "ann" / "c.png").unlink()  # image c has no mask
    with pytest.raises(DatasetError) as caught:
        MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    assert str(caught.value) == (
        f"1 stem(s) shared by two files in {tmp_path / 'img'}: 'a' (a.jpg and a.png); "
        f"1 stem(s) shared by two files in {tmp_path / 'ann'}: 'b' (b.PNG and b.png); "
        f"1 image(s) have no mask '<stem>.png' in {tmp_path / 'ann'}: {tmp_path / 'img' / 'c.png'}"
    )


def test_img_suffix_filters_images(tmp_path):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "img" / "z.jpg")
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, img_suffix=".png")
    assert [p.name for p, _ in dataset.samples] == ["a.png"]


def test_four_band_16bit_tiff_images(tmp_path):
    def tiff(path, rng):
        tifffile.imwrite(f"{path}.tif", rng.integers(0, 65536, (4, 12, 10), dtype=np.uint16), photometric="minisblack")

    _tree(tmp_path, ["t1", "t2"], image_writer=tiff)
    pipeline = [
        dict(type="RandomCrop", height=8, width=8),
        dict(type="HorizontalFlip", p=1.0),
        dict(type="Normalize", mean=(0.5,) * 4, std=(0.25,) * 4, max_pixel_value=65535.0),
    ]
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, img_suffix=".tif", pipeline=pipeline)
    sample = dataset[0]
    assert sample["image"].shape == (4, 8, 8) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (8, 8)
    assert -2.01 <= float(sample["image"].min()) and float(sample["image"].max()) <= 2.01
    assert dataset.check().num_images == 2


def test_single_channel_images(tmp_path):
    def gray(path, rng):
        Image.fromarray(random_image(rng, 12, 10, channels=1)).save(f"{path}.png")

    _tree(tmp_path, ["g"], image_writer=gray)
    sample = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)[0]
    assert sample["image"].shape == (1, 12, 10)


def test_rgb_coded_masks_via_palette(tmp_path):
    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    _rgb_png(tmp_path / "img" / "a", rng)
    indices = rng.integers(0, 3, (12, 10))
    write_colour_mask(tmp_path / "ann" / "a.png", indices, palette)
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, palette=palette)
    np.testing.assert_array_equal(dataset.read_mask(0), indices)
    assert dataset.palette == palette
    without_palette = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    with pytest.raises(DatasetError, match="colour-coded"):
        without_palette.check()


def test_reduce_zero_label(tmp_path):
    (tmp_path / "img").mkdir()
    _rgb_png(tmp_path / "img" / "a", np.random.default_rng(0))
    write_mask_png(tmp_path / "ann" / "a.png", np.array([[0, 1, 2, 3, 255] * 2] * 12))
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, reduce_zero_label=True)
    np.testing.assert_array_equal(dataset.read_mask(0)[0, :5], [255, 0, 1, 2, 255])
    assert dataset.check().counts == [12 * 2, 12 * 2, 12 * 2]


def test_check_value_outside_classes_names_value_and_file(tmp_path):
    _tree(tmp_path, ["a", "b"], image_writer=_rgb_png)
    write_mask_png(tmp_path / "ann" / "b.png", np.full((12, 10), 7))
    dataset = DATASETS.build(dict(type="MaskFolderDataset", img_dir=tmp_path / "img", mask_dir=tmp_path / "ann",
                                  classes=CLASSES))  # fmt: skip
    with pytest.raises(DatasetError, match=rf"\[7\] in {tmp_path / 'ann' / 'b.png'}.*ignore index 255"):
        dataset.check()


def test_palette_length_must_match_classes(tmp_path):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    with pytest.raises(ValueError, match="palette has 2 colours for 3 classes"):
        MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, palette=[(0, 0, 0), (1, 1, 1)])


def test_sample_with_value_outside_classes_names_the_mask_file(tmp_path):
    _tree(tmp_path, ["a", "b"], image_writer=_rgb_png)
    write_mask_png(tmp_path / "ann" / "b.png", np.array([[0, 1, 255, 4] * 3] * 10).T)
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    assert dataset[0]["mask"].max() < 3
    with pytest.raises(DatasetError, match=rf"label value\(s\) \[4\] in {tmp_path / 'ann' / 'b.png'} are outside"):
        dataset[1]


def test_hidden_files_are_skipped_and_listed(tmp_path):
    _tree(tmp_path, ["a", "sub/b"], image_writer=_rgb_png)
    resource_fork = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X"
    hidden = [tmp_path / "img" / "._a.png", tmp_path / "img" / ".cache" / "b.png", tmp_path / "ann" / "._a.png"]
    for path in hidden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(resource_fork)
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    assert [p.name for p, _ in dataset.samples] == ["a.png", "b.png"]
    assert sorted(dataset.skipped_files) == sorted(hidden)
    summary = dataset.check()
    assert summary.num_problems == 0 and sorted(summary.skipped) == sorted(hidden)


def test_check_reports_every_bad_pair_and_counts_the_readable_ones(tmp_path):
    masks = _tree(tmp_path, ["a", "b", "c", "d"], image_writer=_rgb_png)
    (tmp_path / "img" / "a.png").write_bytes(b"broken")
    write_mask_png(tmp_path / "ann" / "c.png", np.full((12, 10), 9))
    write_mask_png(tmp_path / "ann" / "d.png", np.zeros((5, 5), np.uint8))
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    problems = []
    summary = dataset.check(on_problem=problems.append)
    assert len(problems) == 3 and all(f"{name}.png" in line for name, line in zip("acd", problems))
    assert "cannot read image" in problems[0] and "[9]" in problems[1] and "sizes differ" in problems[2]
    assert summary.counts == np.bincount(masks["b"].ravel(), minlength=3).tolist()
    assert (summary.num_problems, summary.num_bad, summary.num_images) == (3, 3, 4)
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.png.*\(and 2 more problem\(s\)"):
        dataset.check()


def test_check_against_the_models_channels(tmp_path):
    def four_band_tiff(path, rng):
        tifffile.imwrite(f"{path}.tif", rng.integers(0, 4096, (12, 10, 4), dtype=np.uint16))

    _tree(tmp_path, ["a", "b"], image_writer=four_band_tiff)
    _rgb_png(tmp_path / "img" / "c", np.random.default_rng(0))
    write_mask_png(tmp_path / "ann" / "c.png", np.zeros((12, 10), np.uint8))
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    problems = []
    dataset.check(on_problem=problems.append, channels=4)
    assert problems == [f"image {tmp_path / 'img' / 'c.png'} is 3-channel uint8; the model takes in_chans=4"]


def test_crop_larger_than_the_image_names_the_file_when_read(tmp_path):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    crop = [dict(type="RandomCrop", height=16, width=16)]
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES, pipeline=crop)
    with pytest.raises(
        DatasetError, match=r"img/a\.png is 12x10 \(HxW\), smaller than the 16x16 crop of pipeline\[0\]"
    ):
        dataset[0]


def _void_masks(root, stems):
    for stem in stems:
        write_mask_png(root / "ann" / f"{stem}.png", np.full((12, 10), 255, np.uint8))


def test_a_split_without_a_labelled_pixel_is_an_error_for_the_check_and_the_runner(tmp_path):
    _tree(tmp_path, ["a", "b"], image_writer=_rgb_png)
    _void_masks(tmp_path, ["a", "b"])  # 100 % nodata labels: training would log loss 0.0000 and "succeed"
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    with pytest.raises(
        DatasetError, match=r"no labelled pixels in the 2 readable sample\(s\).*all 240 pixels are void"
    ):
        dataset.check()
    problems = []
    summary = dataset.check(on_problem=problems.append)
    assert len(problems) == 1 and summary.num_problems == 1
    assert summary.unlabelled == [tmp_path / "ann" / "a.png", tmp_path / "ann" / "b.png"]


def test_a_few_void_masks_are_named_in_a_warning_not_an_error(tmp_path, caplog):
    _tree(tmp_path, ["a", "b", "c"], image_writer=_rgb_png)
    _void_masks(tmp_path, ["b"])
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    with caplog.at_level(logging.WARNING, logger="densevision"):
        summary = dataset.check()  # the runner's call: no problem raised, the file named in the run log
    void = tmp_path / "ann" / "b.png"
    assert summary.num_problems == 0 and summary.unlabelled == [void]
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: 1 of the 3 label files have no labelled pixels (all void): {void}"
    ]
    assert summary.table().splitlines()[-1] == caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "write, expected",
    [
        (_rgb_png, {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}),
        (
            lambda path, rng: tifffile.imwrite(f"{path}.tif", rng.integers(0, 65535, (12, 10), dtype=np.uint16)),
            {"dtype": "uint16", "max_value": 65535, "channels": 1, "to_rgb": False},
        ),
        (
            lambda path, rng: tifffile.imwrite(f"{path}.tif", rng.random((12, 10), dtype=np.float32)),
            {"dtype": "float32", "max_value": None, "channels": 1, "to_rgb": False},
        ),
    ],
)
def test_metainfo_records_the_bit_depth_and_channels_trained_on(tmp_path, write, expected):
    _tree(tmp_path, ["a"], image_writer=write)
    dataset = MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES)
    assert dataset.metainfo["image_format"] == expected


def test_metainfo_of_an_unreadable_first_image_leaves_the_format_unknown(tmp_path):
    _tree(tmp_path, ["a"], image_writer=_rgb_png)
    (tmp_path / "img" / "a.png").write_bytes(b"broken")
    assert MaskFolderDataset(tmp_path / "img", tmp_path / "ann", CLASSES).metainfo["image_format"] is None

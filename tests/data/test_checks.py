from pathlib import Path

import numpy as np
import pytest

from densevision.data.checks import DatasetError, FileChecker, bad_label_values, check_mask_values, pipeline_crop
from densevision.data.transforms import build_pipeline


def _image(height=20, width=30, channels=3, dtype=np.uint8):
    return np.zeros((height, width, channels), dtype=dtype)


@pytest.mark.parametrize(
    ("steps", "crop"),
    [
        ([dict(type="RandomCrop", height=8, width=9)], ("pipeline[0] RandomCrop", 8, 9)),
        (
            [
                dict(type="Normalize"),
                dict(type="HorizontalFlip"),
                dict(type="CropNonEmptyMaskIfExists", height=4, width=5),
            ],
            ("pipeline[2] CropNonEmptyMaskIfExists", 4, 5),
        ),
        ([dict(type="CenterCrop", height=8, width=8)], ("pipeline[0] CenterCrop", 8, 8)),
        ([dict(type="RandomCrop", height=8, width=8, pad_if_needed=True)], None),  # pads small images
        ([dict(type="PadIfNeeded", min_height=40, min_width=40), dict(type="RandomCrop", height=32, width=32)], None),
        ([dict(type="SmallestMaxSize", max_size=256), dict(type="CenterCrop", height=224, width=224)], None),
        ([dict(type="RandomResizedCrop", size=(224, 224))], None),  # resizes: any image will do
        ([dict(type="RandomSizedBBoxSafeCrop", height=300, width=300)], None),
        ([dict(type="Normalize")], None),
        ([], None),
    ],
)
def test_pipeline_crop_finds_the_fixed_crop_applied_to_the_file(steps, crop):
    assert pipeline_crop(build_pipeline(steps)) == crop


def test_pipeline_crop_of_a_plain_callable_is_none():
    assert pipeline_crop(lambda **data: data) is None


def test_bad_label_values_ignore_the_void_label():
    assert bad_label_values(np.array([[0, 1], [2, 255]], np.uint8), 3, 255) == []
    assert bad_label_values(np.array([[0, 7], [3, 255]], np.uint8), 3, 255) == [3, 7]
    assert bad_label_values(np.array([[0, 11]], np.uint8), 11, 11) == []
    with pytest.raises(DatasetError, match=r"label value\(s\) \[9\] in m\.png .*3 classes"):
        check_mask_values(np.array([[9]], np.uint8), 3, 255, Path("m.png"))


def test_without_a_handler_the_first_problem_is_raised_with_the_count_of_the_rest():
    checker = FileChecker()
    for name in ("a.png", "b.png", "c.png"):
        with checker.sample(Path(name)):
            raise DatasetError(f"cannot read image {name}")
    with pytest.raises(DatasetError, match=r"^cannot read image a\.png \(and 2 more problem\(s\): tools/check_"):
        checker.summary(3, ["x"], [0], unit="images")


def test_every_problem_goes_to_the_handler_and_bad_samples_are_counted():
    problems = []
    checker = FileChecker(on_problem=problems.append)
    with checker.sample(Path("a.png")):
        raise DatasetError("bad a.png")
    with checker.sample(Path("b.png")):
        checker.image(Path("b.png"), _image())
    summary = checker.summary(2, ["x"], [1], unit="images")
    assert problems == ["bad a.png"]
    assert (summary.num_problems, summary.num_bad, summary.counts) == (1, 1, [1])
    assert summary.table().startswith("2 images (1 unreadable or with bad labels, not counted)")


def test_images_unlike_the_rest_are_problems_once_each():
    problems = []
    checker = FileChecker(on_problem=problems.append)
    formats = {"a": _image(), "b": _image(channels=4), "c": _image(), "d": _image(channels=1, dtype=np.uint16)}
    for name, image in formats.items():
        checker.image(Path(name), image)
    checker.summary(4, ["x"], [4])
    assert problems == [
        "image b is 4-channel uint8, unlike 2 of the 4 images (3-channel uint8)",
        "image d is 1-channel uint16, unlike 2 of the 4 images (3-channel uint8)",
    ]


def test_channels_other_than_the_models_are_problems_without_repeating_them():
    problems = []
    checker = FileChecker(channels=4, on_problem=problems.append)
    for name, channels in (("a", 4), ("b", 4), ("c", 3)):
        checker.image(Path(name), _image(channels=channels, dtype=np.uint16))
    checker.summary(3, ["x"], [3])
    assert problems == ["image c is 3-channel uint16; the model takes in_chans=4"]


def test_images_smaller_than_the_crop_are_problems():
    problems = []
    checker = FileChecker(
        pipeline=build_pipeline([dict(type="RandomCrop", height=16, width=32)]), on_problem=problems.append
    )
    checker.image(Path("big"), _image(20, 40))
    checker.image(Path("narrow"), _image(20, 30))
    checker.summary(2, ["x"], [2])
    assert problems == ["image narrow is 20x30 (HxW), smaller than the 16x32 crop of pipeline[0] RandomCrop"]


@pytest.mark.parametrize(
    "unit, ignored, said", [("boxes", 3, "all 3 boxes are void or ignored"), ("voxels", 0, "they hold no voxels")]
)
def test_a_split_with_nothing_labelled_is_a_problem(unit, ignored, said):
    problems = []
    checker = FileChecker(on_problem=problems.append)
    for name in ("a", "b"):
        with checker.sample(Path(name)):
            checker.image(Path(name), _image())
    checker.summary(2, ["x", "y"], [0, 0], unit=unit, ignored=ignored)
    said = f"no labelled {unit} in the 2 readable sample(s) of this split (first a): {said}"
    assert problems == [f"{said}, so training would learn nothing"]


def test_a_split_of_unreadable_samples_is_not_also_called_unlabelled():
    problems = []
    checker = FileChecker(on_problem=problems.append)
    with checker.sample(Path("a")):
        raise DatasetError("cannot read a")
    checker.summary(1, ["x"], [0])
    assert problems == ["cannot read a"]

import albumentations as A
import numpy as np
import pytest
import torch

from densevision.data.checks import DatasetError
from densevision.data.transforms import apply_pipeline, build_pipeline
from densevision.registry import TRANSFORMS, ConfigError


@pytest.mark.parametrize("name", ["HorizontalFlip", "RandomCrop", "RandomResizedCrop", "Normalize", "OneOf"])
def test_albumentations_registered_by_own_name(name):
    assert TRANSFORMS.get(name) is getattr(A, name)


@pytest.mark.parametrize("base", ["BasicTransform", "DualTransform", "ImageOnlyTransform"])
def test_interface_bases_not_registered(base):
    assert base not in TRANSFORMS


def test_unknown_transform_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown type 'HorizontalFlp'.*did you mean 'HorizontalFlip'"):
        build_pipeline([dict(type="HorizontalFlp")])


def test_misspelt_argument_is_an_error_not_a_warning():
    with pytest.raises(ConfigError, match=r"RandomCrop has no argument 'heigth'.*did you mean 'height'"):
        build_pipeline([dict(type="RandomCrop", heigth=8, width=8)])


def test_bad_argument_value_names_transform_and_position():
    with pytest.raises(ConfigError, match=r"pipeline\[1\].*RandomResizedCrop"):
        build_pipeline([dict(type="HorizontalFlip"), dict(type="RandomResizedCrop", size=224)])


@pytest.mark.parametrize("bad", ["HorizontalFlip", dict(type="HorizontalFlip"), ["HorizontalFlip"]])
def test_pipeline_must_be_list_of_dicts(bad):
    with pytest.raises(ConfigError):
        build_pipeline(bad)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        build_pipeline([], task="depth")


def _position_coded(height=40, width=50):
    """Image whose channels hold each pixel's row and column; the mask holds (row + 2 * col) % 256."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.uint8)
    return image, ((rows + 2 * cols) % 256).astype(np.uint8)


@pytest.mark.parametrize(
    "cfgs",
    [
        [dict(type="RandomCrop", height=16, width=24), dict(type="HorizontalFlip", p=1.0)],
        [
            dict(type="RandomResizedCrop", size=(16, 16), scale=(0.5, 1.0), interpolation=0),
            dict(type="VerticalFlip", p=1.0),
        ],
        [dict(type="OneOf", transforms=[dict(type="Transpose"), dict(type="RandomRotate90")], p=1.0)],
        [
            dict(type="PadIfNeeded", min_height=64, min_width=64, fill=0, fill_mask=255),
            dict(type="RandomCrop", height=60, width=60),
        ],
    ],
)
def test_joint_geometric_transforms_keep_mask_aligned(cfgs):
    pipeline = build_pipeline(cfgs)
    image, mask = _position_coded()
    for seed in range(5):
        pipeline.set_random_seed(seed)
        out = pipeline(image=image, mask=mask)
        rows, cols = out["image"][..., 0].astype(int), out["image"][..., 1].astype(int)
        padded = out["mask"] == 255
        expected = (rows + 2 * cols) % 256
        assert out["image"].shape[:2] == out["mask"].shape
        np.testing.assert_array_equal(out["mask"][~padded], expected[~padded])


def test_crop_changes_size_and_normalize_scales():
    pipeline = build_pipeline([dict(type="CenterCrop", height=8, width=10), dict(type="Normalize", mean=0, std=1)])
    out = pipeline(image=np.full((20, 20, 3), 255, np.uint8), mask=np.zeros((20, 20), np.uint8))
    assert out["image"].shape == (8, 10, 3) and out["mask"].shape == (8, 10)
    np.testing.assert_allclose(out["image"], 1.0)


def test_detection_pipeline_moves_boxes_with_labels():
    pipeline = build_pipeline([dict(type="HorizontalFlip", p=1.0)], task="detection")
    out = pipeline(image=np.zeros((20, 30, 3), np.uint8), bboxes=[[2, 4, 10, 8], [20, 0, 30, 20]], labels=[1, 3])
    np.testing.assert_allclose(out["bboxes"], [[20, 4, 28, 8], [0, 0, 10, 20]])
    assert list(out["labels"]) == [1, 3]


def test_classification_pipeline_image_only_and_empty_is_identity():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(build_pipeline(None, task="classification")(image=image)["image"], image)
    flipped = build_pipeline([dict(type="HorizontalFlip", p=1.0)], task="classification")(image=image)["image"]
    np.testing.assert_array_equal(flipped, image[:, ::-1])


def test_pipeline_randomness_follows_torch_seed() -> None:
    pipeline = build_pipeline([dict(type="RandomCrop", height=8, width=8), dict(type="HorizontalFlip", p=0.5)])
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)

    def crops(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        return [pipeline(image=image)["image"] for _ in range(4)]

    first, again, other = crops(0), crops(0), crops(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(
    "steps, message",
    [
        (
            [dict(type="RandomCrop", height=16, width=8)],
            r"a\.png is 12x10 \(HxW\), smaller than the 16x8 crop of pipeline\[0\] RandomCrop$",
        ),
        (
            [dict(type="Resize", height=6, width=6), dict(type="CenterCrop", height=8, width=8)],
            r"a\.png \(12x10, HxW\) is too small for a crop of the pipeline: .*\(8, 8\) vs \(6, 6\)$",
        ),
    ],
)
def test_apply_pipeline_names_the_file_when_a_crop_is_larger_than_the_image(tmp_path, steps, message):
    with pytest.raises(DatasetError, match=message) as caught:
        apply_pipeline(build_pipeline(steps), tmp_path / "a.png", image=np.zeros((12, 10, 3), np.uint8))
    assert "\n" not in str(caught.value)


def test_apply_pipeline_leaves_other_errors_alone():
    def pipeline(**data):
        raise ValueError("a bug in a user's pipeline")

    with pytest.raises(ValueError, match="a bug") as caught:
        apply_pipeline(pipeline, "a.png", image=np.zeros((4, 4, 3), np.uint8))
    assert not isinstance(caught.value, DatasetError)

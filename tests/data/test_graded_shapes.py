"""Graded-difficulty shapes (the early-exit quick start's data): layout, recorded difficulties, determinism."""

import json

import numpy as np
import pytest

from densevision.data.shapes import SHAPE_CLASSES, GradedShapesClassification, _graded_image, generate_graded_shapes

COUNTS = dict(num_train=6, num_val=3, num_test=3, image_size=32)


def test_splits_are_class_folders_with_a_difficulty_per_image(tmp_path):
    root = tmp_path / "graded"
    train = GradedShapesClassification(root, "train", **COUNTS)
    test = GradedShapesClassification(root, "test", **COUNTS)
    assert (len(train), len(test), train.classes) == (6, 3, SHAPE_CLASSES)
    assert train.check().counts == [2, 2, 2]
    assert tuple(train[0]["image"].shape) == (3, 32, 32)
    records = json.loads((root / "difficulty_train.json").read_text())
    assert sorted(r["file"] for r in records) == sorted(str(p.relative_to(root)) for p, _ in train.samples)
    assert all(0 <= r["difficulty"] <= 1 for r in records)


def test_generation_is_deterministic_in_the_seed(tmp_path):
    def image_bytes(root, seed):
        generate_graded_shapes(root, **COUNTS, seed=seed)
        return [p.read_bytes() for p in sorted((root / "classification").rglob("*.png"))]

    first = image_bytes(tmp_path / "a", 0)
    assert image_bytes(tmp_path / "b", 0) == first
    assert image_bytes(tmp_path / "c", 1) != first


@pytest.mark.parametrize("class_index", range(3))
def test_easy_images_are_clear_and_hard_ones_noisy(class_index):
    def spread(difficulty):
        """Mean over images of the pixels' spread around the image's median (noise), and of the shape's contrast."""
        rng = np.random.default_rng(0)
        images = [_graded_image(32, class_index, difficulty, rng).astype(float) for _ in range(20)]
        corners = [np.abs(image[:3, :3] - np.median(image[:3, :3])).mean() for image in images]
        contrasts = [np.abs(image - np.median(image)).max() for image in images]
        return np.mean(corners), np.mean(contrasts)

    (easy_noise, easy_contrast), (hard_noise, _) = spread(0.0), spread(1.0)
    assert hard_noise > 3 * easy_noise
    assert easy_contrast > 80  # a clear shape, about 100 grey levels off its background


def test_bad_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_val must be a non-negative int"):
        generate_graded_shapes(tmp_path, num_train=1, num_val=-1, num_test=1)

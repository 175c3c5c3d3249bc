"""The tasks' drawers: one per task, used by tools/infer.py's outputs and a run's sample pictures alike."""

import numpy as np
import pytest

from densevision.tasks.classification.drawing import caption
from densevision.tasks.detection.drawing import DRAW_THRESHOLD, MIN_DRAWN_SIZE, draw_detections
from densevision.tasks.segmentation.drawing import blend_mask

PALETTE = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]


def test_mask_blend_colours_classes_and_leaves_void_pixels():
    image = np.full((1, 3, 3), 50, np.uint8)
    out = blend_mask(image, np.array([[0, 1, 255]]), PALETTE[:2], alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0], [[152, 25, 25], [25, 25, 152], [50, 50, 50]])
    with pytest.raises(ValueError, match="overlay alpha must be in"):
        blend_mask(image, np.zeros((1, 3), int), PALETTE, alpha=2)


def test_caption_writes_on_a_band_along_the_top_and_keeps_the_rest():
    image = np.full((40, 60, 3), 200, np.uint8)
    out = caption(image, 1, ["cat", "dog"], [0.3, 0.7])
    assert out.shape == image.shape
    assert (out[:5] != 200).any() and (out[-10:] == 200).all()


def _colour_at(picture: np.ndarray, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in picture[y, x])


def test_boxes_below_the_threshold_are_not_drawn_and_small_images_are_enlarged():
    zoom = -(-MIN_DRAWN_SIZE // 8)  # the whole factor an 8-pixel image is drawn at
    boxes = np.array([[0.0, 0.0, 4.0, 4.0], [5.0, 2.0, 7.0, 6.0]])
    scores = np.array([0.9, DRAW_THRESHOLD - 0.01])
    drawn = draw_detections(np.zeros((8, 8, 3), np.uint8), boxes, np.array([0, 1]), scores, palette=PALETTE)
    assert drawn.shape == (8 * zoom, 8 * zoom, 3)
    assert _colour_at(drawn, 4 * zoom, 2 * zoom) == PALETTE[0]  # right edge of the kept box
    assert _colour_at(drawn, 7 * zoom, 4 * zoom) == (0, 0, 0)  # right edge of the dropped one
    everything = draw_detections(np.zeros((8, 8, 3), np.uint8), boxes, np.array([0, 1]), scores, palette=PALETTE,
                                 threshold=0)  # fmt: skip
    assert _colour_at(everything, 7 * zoom, 4 * zoom) == PALETTE[1]


def test_boxes_in_another_images_pixels_are_scaled_to_the_image_drawn():
    # a box of a 200×100 (H×W) original, drawn on a 50×50 network input: x halves, y quarters
    drawn = draw_detections(np.zeros((50, 50, 3), np.uint8), np.array([[10.0, 20.0, 50.0, 60.0]]),
                            palette=PALETTE, boxes_size=(200, 100))  # fmt: skip
    zoom = drawn.shape[0] // 50
    assert _colour_at(drawn, 25 * zoom, 10 * zoom) == PALETTE[0]  # right edge at x = 25, mid-height y = 10
    assert _colour_at(drawn, 40 * zoom, 10 * zoom) == (0, 0, 0)

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from densevision.engine.visualize import (
    draw_boxes,
    draw_label,
    draw_mask,
    image_for_display,
    plot_curves,
    save_prediction_samples,
)

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)


def axis():
    return Figure().subplots()


def test_images_are_stretched_to_the_unit_range():
    image = image_for_display(torch.tensor([[[-2.0, 2.0]], [[0.0, 0.0]], [[1.0, 1.0]]]))
    assert image.shape == (1, 2, 3)
    assert image.min() == 0.0 and image.max() == 1.0
    assert image_for_display(torch.zeros(1, 2, 2)).shape == (2, 2, 3)  # grey images become RGB


def test_mask_overlay_blends_class_colours_and_leaves_ignored_pixels():
    image = np.full((1, 3, 3), 0.2)
    target = axis()
    draw_mask(target, image, {"mask": torch.tensor([[1, 2, 255]])}, PALETTE, None)
    shown = target.get_images()[0].get_array()
    np.testing.assert_allclose(shown[0, 0], [0.6, 0.1, 0.1])
    np.testing.assert_allclose(shown[0, 1], [0.1, 0.1, 0.6])
    np.testing.assert_allclose(shown[0, 2], [0.2, 0.2, 0.2])


def test_label_title_names_the_class_and_its_score():
    target = axis()
    target.set_title("prediction")
    draw_label(
        target,
        np.zeros((2, 2, 3)),
        {"label": torch.tensor(1), "scores": torch.tensor([0.1, 0.7, 0.2])},
        PALETTE,
        ["cat", "dog", "cow"],
    )
    assert target.get_title() == "prediction: dog (0.70)"


def test_boxes_below_the_score_threshold_are_not_drawn():
    target = axis()
    prediction = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 3.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.1]),
    }
    draw_boxes(target, np.zeros((5, 5, 3)), prediction, PALETTE, None)
    (rectangle,) = target.patches
    assert (rectangle.get_width(), rectangle.get_height()) == (4.0, 4.0)


def test_boxes_in_another_images_pixels_are_scaled_to_the_image_shown():
    target = axis()
    prediction = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
        "labels": torch.tensor([1]),
        "image_size": (200, 100),
    }
    draw_boxes(target, np.zeros((50, 50, 3)), prediction, PALETTE, None)  # a 200x100 original shown at 50x50
    (rectangle,) = target.patches
    assert rectangle.get_xy() == (5.0, 5.0) and (rectangle.get_width(), rectangle.get_height()) == (20.0, 10.0)


@pytest.mark.parametrize(
    ("prediction", "target"),
    [
        ({"mask": torch.zeros(4, 4, dtype=torch.long)}, {"mask": torch.ones(4, 4, dtype=torch.long)}),
        ({"label": torch.tensor(0), "scores": torch.tensor([0.6, 0.4])}, {"label": torch.tensor(1)}),
        ({"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([0])}, {}),
        ({"depth": torch.zeros(4, 4)}, {}),  # unknown keys: the image alone
    ],
    ids=["segmentation", "classification", "detection", "unknown"],
)
def test_sample_pictures_are_written_for_every_task(tmp_path, prediction, target):
    samples = [(torch.randn(3, 4, 4), prediction, target)]
    paths = save_prediction_samples(samples, tmp_path / "samples", classes=["a", "b"])
    assert [p.name for p in paths] == ["sample_00.png"] and paths[0].stat().st_size > 0


@pytest.mark.parametrize(("monitored", "plotted"), [(["mIoU"], ["mIoU"]), (None, ["aAcc", "mIoU"])])
def test_curves_plot_loss_and_the_validation_metrics(tmp_path, monitored, plotted):
    history = {
        "train": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}],
        "val": [{"epoch": 2, "mIoU": 0.3, "aAcc": 0.8, "IoU/Sky": 0.9}],
    }
    figure = plot_curves(history, tmp_path / "curves.png", monitored)
    loss_axis, metric_axis = figure.axes
    assert loss_axis.lines[0].get_ydata().tolist() == [1.0, 0.5]
    assert [line.get_label() for line in metric_axis.lines] == plotted  # per-class entries are left out
    assert (tmp_path / "curves.png").stat().st_size > 0

import pytest
import torch

from densevision.engine.visualize import image_for_display, plot_curves, save_prediction_samples
from densevision.tasks import Classifier, Detector, Segmentor


def test_images_are_stretched_to_the_unit_range():
    image = image_for_display(torch.tensor([[[-2.0, 2.0]], [[0.0, 0.0]], [[1.0, 1.0]]]))
    assert image.shape == (1, 2, 3)
    assert image.min() == 0.0 and image.max() == 1.0
    assert image_for_display(torch.zeros(1, 2, 2)).shape == (2, 2, 3)  # grey images become RGB


@pytest.mark.parametrize(
    ("prediction", "target"),
    [
        ({"mask": torch.zeros(4, 4, dtype=torch.long)}, {"mask": torch.ones(4, 4, dtype=torch.long)}),
        ({"label": torch.tensor(0), "scores": torch.tensor([0.6, 0.4])}, {"label": torch.tensor(1)}),
        ({"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([0])}, {}),
        ({"depth": torch.zeros(4, 4)}, {}),  # a task that does not draw: the image alone
    ],
    ids=["segmentation", "classification", "detection", "unknown"],
)
def test_sample_pictures_are_written_for_every_task(tmp_path, prediction, target):
    drawers = {"mask": Segmentor.draw, "label": Classifier.draw, "boxes": Detector.draw}
    task_draw = next((draw for key, draw in drawers.items() if key in prediction), None)
    draw = None if task_draw is None else lambda *args, **kwargs: task_draw(None, *args, **kwargs)
    samples = [(torch.randn(3, 4, 4), prediction, target)]
    paths = save_prediction_samples(samples, tmp_path / "samples", drawer=draw, classes=["a", "b"])
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

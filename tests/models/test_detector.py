import pytest
import torch
from torch import Tensor, nn

from densevision.registry import TASKS, ConfigError
from densevision.tasks import Detector

TINY_DSOD = dict(
    type="DSOD",
    num_classes=4,
    image_size=64,
    stem_channels=(8, 8, 16),
    growth_rate=4,
    block_config=(1, 1, 1, 1),
    extra_channels=(8, 8),
)


class FixedOutputs(nn.Module):
    """A 'detector' with two priors whose outputs are given: zero offsets decode to the priors themselves."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("priors", torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.2, 0.4]]))
        # prior 0: foreground label 1 (conf channel 2), prior 1: label 0
        self.register_buffer("conf", torch.tensor([[0.095, 0.005, 0.9], [0.2, 0.8, 0.0]]).clamp(min=1e-6).log())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        n = len(images)
        return torch.zeros(n, 2, 4), self.conf.expand(n, -1, -1)


def _batch(images: Tensor, metas: list[dict] | None = None) -> dict:
    batch = {
        "image": images,
        "boxes": [torch.tensor([[4.0, 8.0, 30.0, 40.0], [30.0, 20.0, 60.0, 62.0]]), torch.zeros(0, 4)],
        "labels": [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.int64)],
    }
    if metas is not None:
        batch["meta"] = metas
    return batch


def test_predict_returns_boxes_in_original_image_pixels():
    detector = Detector(FixedOutputs())
    assert detector.num_classes == 2
    metas = [{"ori_shape": (100, 200)}, {"ori_shape": (64, 64)}]
    first, second = detector.predict(_batch(torch.zeros(2, 3, 64, 64), metas))
    assert first["labels"].tolist() == [1, 0]
    torch.testing.assert_close(first["scores"], torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(first["boxes"], torch.tensor([[0.0, 0.0, 100.0, 50.0], [130.0, 55.0, 170.0, 95.0]]))
    torch.testing.assert_close(second["boxes"], torch.tensor([[0.0, 0.0, 32.0, 32.0], [41.6, 35.2, 54.4, 60.8]]))
    assert first["boxes"].dtype == torch.float32 and first["labels"].dtype == torch.int64
    without_meta = detector.predict(_batch(torch.zeros(2, 3, 64, 64)))
    torch.testing.assert_close(without_meta[0]["boxes"], second["boxes"])


def test_predict_applies_the_post_processing_options():
    detector = Detector(FixedOutputs(), score_threshold=0.85)
    (first,) = detector.predict({"image": torch.zeros(1, 3, 64, 64)})
    assert first["labels"].tolist() == [1]
    (capped,) = Detector(FixedOutputs(), max_detections=1).predict({"image": torch.zeros(1, 3, 64, 64)})
    assert len(capped["scores"]) == 1


def test_detector_loss_normalises_pixel_boxes_by_the_input_size():
    torch.manual_seed(0)
    detector = TASKS.build(dict(type="Detector", model=TINY_DSOD))
    assert detector.num_classes == 3
    batch = _batch(torch.randn(2, 3, 64, 64))
    out = detector.loss(batch)
    assert set(out) == {"loss", "loss_loc", "loss_conf"} and all(torch.isfinite(v) for v in out.values())
    loc, conf = detector(batch["image"])
    scale = torch.tensor([64.0, 64.0, 64.0, 64.0])
    direct = detector.loss_fn(loc, conf, detector.model.priors, [b / scale for b in batch["boxes"]], batch["labels"])
    torch.testing.assert_close(out["loss"], direct["loss"])


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    detector = Detector(TINY_DSOD)
    batch = _batch(torch.randn(2, 3, 64, 64))
    optimizer = torch.optim.Adam(detector.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        out = detector.loss(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_detector_needs_a_model_with_priors():
    with pytest.raises(ValueError, match="priors"):
        Detector(nn.Conv2d(3, 3, 1))


class OffsetOutputs(FixedOutputs):
    """FixedOutputs with non-zero box offsets: what they decode to depends on the box coder's weights."""

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        n = len(images)
        loc = torch.tensor([[1.0, -0.5, 0.4, 0.2], [-1.0, 0.5, -0.3, 0.1]])
        return loc.expand(n, -1, -1), self.conf.expand(n, -1, -1)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (5.0, 5.0, 2.0, 2.0)])
def test_decoding_reads_the_box_coder_weights_the_loss_encodes_with(weights):
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.ops import box_convert

    detector = Detector(OffsetOutputs(), loss=dict(type="MultiBoxLoss", box_coder_weights=weights))
    assert detector.box_coder_weights == weights == detector.loss_fn.box_coder.weights
    model = detector.model
    anchors = box_convert(model.priors, "cxcywh", "xyxy")
    expected = BoxCoder(weights).decode_single(model(torch.zeros(1, 3, 8, 8))[0][0], anchors).clamp(0, 1)
    boxes, _ = detector.export_forward(torch.zeros(1, 3, 8, 8))  # what ONNX exports and every backend runs
    torch.testing.assert_close(boxes[0], expected)
    (prediction,) = detector.predict({"image": torch.zeros(1, 3, 8, 8), "meta": [{"ori_shape": (10, 20)}]})
    scale = torch.tensor([20.0, 10.0, 20.0, 10.0])
    torch.testing.assert_close(prediction["boxes"], expected[[0, 1]] * scale)  # prior 0 scores 0.9, prior 1 0.8
    default = Detector(OffsetOutputs()).export_forward(torch.zeros(1, 3, 8, 8))[0]
    assert torch.equal(default[0], boxes[0]) == (weights == (10.0, 10.0, 5.0, 5.0))


def test_a_loss_without_box_coder_weights_is_named():
    with pytest.raises(ConfigError, match="Detector's loss Module does not say its box_coder_weights"):
        Detector(FixedOutputs(), loss=nn.Module())

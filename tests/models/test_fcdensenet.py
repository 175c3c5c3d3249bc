from pathlib import Path

import pytest
import torch
from torch import nn

from densevision import create_model, list_models
from densevision.config import Config
from densevision.models.blocks import DenseLayer
from densevision.models.fcdensenet import (
    EncoderDecoder,
    FCDenseNet,
    FCDenseNetEncoder,
    TiramisuDecoder,
    match_size,
)
from densevision.registry import HEADS, MODELS

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "models"


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tiny_fcdensenet(**kwargs) -> FCDenseNet:
    args = dict(down_layers=(1, 2, 1, 1, 1), bottleneck_layers=2, growth_rate=4, stem_channels=6, num_classes=3)
    args.update(kwargs)
    return FCDenseNet(**args)


class TinyStridedEncoder(nn.Module):
    """A DenseNet-121-like feature extractor in miniature: five maps at strides 2..32."""

    def __init__(self, *, in_chans: int = 3, memory_efficient: bool = False) -> None:
        super().__init__()
        channels = (8, 12, 16, 20, 20)
        self.stages = nn.ModuleList()
        previous = in_chans
        for c in channels:
            self.stages.append(nn.Sequential(nn.Conv2d(previous, c, 3, stride=2, padding=1), nn.ReLU()))
            previous = c
        self.feature_info = [
            dict(num_chs=c, reduction=2 ** (i + 1), module=f"stages.{i}") for i, c in enumerate(channels)
        ]

    def forward(self, x):
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@pytest.mark.parametrize(
    "config_file, expected",
    [("fcdensenet56.py", 1_376_795), ("fcdensenet67.py", 3_463_243), ("fcdensenet103.py", 9_322_091)],
)
def test_base_config_builds_model_with_paper_parameter_count(config_file, expected):
    network = Config.fromfile(MODEL_CONFIGS / config_file).network
    model = MODELS.build(network)
    assert isinstance(model, FCDenseNet)
    assert trainable_params(model) == expected


def test_fcdensenet103_channels_and_forward_size():
    model = create_model("fcdensenet103", num_classes=11).eval()
    assert [info["num_chs"] for info in model.encoder.feature_info] == [112, 192, 304, 464, 656, 656]
    assert [info["reduction"] for info in model.encoder.feature_info] == [1, 2, 4, 8, 16, 32]
    decoder = model.decoder
    stacks = [656 + decoder.bottleneck.out_channels]
    stacks += [block.in_channels + len(block) * block.growth_rate for block in decoder.blocks_up]
    assert stacks == [896, 1088, 816, 576, 384, 256]
    assert decoder.classifier.in_channels == 256
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 11, 37, 53)


def test_builders_are_registered_with_their_keyword_args():
    assert {"fcdensenet56", "fcdensenet67", "fcdensenet103", "FCDenseNet", "EncoderDecoder"} <= set(list_models())
    assert "TiramisuDecoder" in HEADS
    model = create_model("fcdensenet56", num_classes=5, in_chans=1, drop_rate=0.1, memory_efficient=True)
    assert model.decoder.classifier.out_channels == 5
    assert model.encoder.conv0.in_channels == 1
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    assert all(layer.memory_efficient and layer.drop_rate == 0.1 for layer in layers)
    with pytest.raises(TypeError):
        create_model("fcdensenet56", growth_rate=8)


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (64, 96), (45, 33)])
def test_output_matches_any_input_size(size):
    model = tiny_fcdensenet().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_encoder_returns_skips_and_pooled_map():
    encoder = FCDenseNetEncoder(down_layers=(1, 2), growth_rate=4, stem_channels=6, drop_rate=0.0).eval()
    features = encoder(torch.randn(1, 3, 9, 13))
    assert [f.shape[1:] for f in features] == [(10, 9, 13), (18, 4, 6), (18, 2, 3)]
    assert [(i["num_chs"], i["reduction"]) for i in encoder.feature_info] == [(10, 1), (18, 2), (18, 4)]
    # Down blocks keep their input: the first skip starts with the stem's maps.
    stem = encoder.conv0(torch.randn(1, 3, 9, 13))
    assert encoder.denseblock1(stem)[:, :6].equal(stem)


def test_dropout_is_elementwise():
    model = tiny_fcdensenet()
    assert not any(isinstance(m, nn.Dropout2d) for m in model.modules())
    transition_drops = [m for m in model.modules() if type(m) is nn.Dropout]
    assert len(transition_drops) == 5 and all(m.p == 0.2 for m in transition_drops)
    assert all(m.drop_rate == 0.2 for m in model.modules() if isinstance(m, DenseLayer))


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((5, 7), (3, 4), [[9, 10, 11, 12], [16, 17, 18, 19], [23, 24, 25, 26]]),
        ((2, 2), (4, 3), [[0, 0, 0], [0, 1, 2], [0, 3, 4], [0, 0, 0]]),
    ],
)
def test_match_size_centre_crops_or_pads(shape, size, expected):
    x = torch.arange(1, shape[0] * shape[1] + 1).reshape(1, 1, *shape)
    assert match_size(x, size)[0, 0].tolist() == expected


def test_memory_efficient_gives_equal_outputs_and_gradients():
    torch.set_default_dtype(torch.float64)
    try:
        plain = tiny_fcdensenet(down_layers=(2, 1), bottleneck_layers=2, memory_efficient=False).train()
        efficient = tiny_fcdensenet(down_layers=(2, 1), bottleneck_layers=2, memory_efficient=True).train()
    finally:
        torch.set_default_dtype(torch.float32)
    efficient.load_state_dict(plain.state_dict())
    assert all(m.memory_efficient for m in efficient.modules() if isinstance(m, DenseLayer))
    assert any(m.memory_efficient for m in efficient.decoder.modules() if isinstance(m, DenseLayer))
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64)
    results = []
    for model in (plain, efficient):
        inputs = x.clone().requires_grad_()
        torch.manual_seed(1)  # same dropout masks in both runs
        out = model(inputs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out, inputs.grad, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()))
    (out_a, gx_a, grads_a, state_a), (out_b, gx_b, grads_b, state_b) = results
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(gx_a, gx_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)
    for name in state_a:  # BatchNorm statistics are counted once, not again in the recomputation
        torch.testing.assert_close(state_a[name], state_b[name], msg=name)
    torch.manual_seed(2)  # other dropout masks give other outputs: the equality above is not vacuous
    assert not torch.allclose(plain(x), out_a)


def test_encoder_decoder_from_configs_on_strided_encoder():
    model = MODELS.build(
        dict(
            type="EncoderDecoder",
            encoder=dict(type=TinyStridedEncoder),
            decoder=dict(type="TiramisuDecoder", bottleneck_layers=2, up_layers=(2, 1, 1, 1), growth_rate=4),
            num_classes=4,
            memory_efficient=True,
        )
    ).eval()
    assert isinstance(model.decoder, TiramisuDecoder) and model.decoder.output_reduction == 2
    assert all(m.memory_efficient for m in model.decoder.modules() if isinstance(m, DenseLayer))
    with torch.no_grad():
        features = model.encoder(torch.randn(1, 3, 37, 53))
        at_first_skip = model.decoder(features)
        out = model(torch.randn(1, 3, 37, 53))
    assert at_first_skip.shape == (1, 4, 19, 27)
    assert out.shape == (1, 4, 37, 53)


@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_densenet121_tiramisu_config_forward(size):
    network = Config.fromfile(MODEL_CONFIGS / "densenet121_tiramisu.py").network
    model = MODELS.build(dict(network, memory_efficient=True)).eval()
    assert [i["reduction"] for i in model.encoder.feature_info] == [2, 4, 8, 16, 32]
    assert [i["num_chs"] for i in model.encoder.feature_info] == [64, 256, 512, 1024, 1024]
    assert all(m.memory_efficient for m in model.modules() if isinstance(m, DenseLayer))
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 11, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 32, 32), "4-D input N×3×H×W"),
        ((1, 1, 32, 32), "3 input channels"),
        ((1, 3, 31, 64), "at least 32"),
    ],
)
def test_bad_input_raises_value_error(shape, message):
    model = tiny_fcdensenet().eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_bad_construction_raises_value_error():
    encoder = TinyStridedEncoder()
    with pytest.raises(ValueError, match="one entry per skip"):
        TiramisuDecoder(feature_info=encoder.feature_info, num_classes=3, up_layers=(1, 1))
    with pytest.raises(ValueError, match="feature_info"):
        EncoderDecoder(encoder=nn.Conv2d(3, 3, 1), decoder=dict(type="TiramisuDecoder"), num_classes=3)

import pytest
import torch
import torchvision
from torch import nn

import densevision
from densevision.models.densenet import DenseNet
from densevision.models.heads import ClassifierHead
from densevision.registry import HEADS, MODELS

TINY = dict(growth_rate=4, block_config=(2, 1, 1, 2), stem_channels=8)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("densenet121", 7_978_856), ("densenet169", 14_149_480), ("densenet201", 20_013_928), ("densenet161", 28_681_000)],
)
def test_parameter_counts_equal_torchvision(name, expected):
    with torch.device("meta"):
        ours = densevision.create_model(name, num_classes=1000)
        theirs = getattr(torchvision.models, name)(weights=None)
    assert _num_params(ours) == expected == _num_params(theirs)


def test_state_dict_layout_equals_torchvision():
    with torch.device("meta"):
        ours = densevision.create_model("densenet121").state_dict()
        theirs = torchvision.models.densenet121(weights=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].shape == theirs[key].shape for key in ours)


def test_densenet264_layout():
    with torch.device("meta"):
        model = densevision.create_model("densenet264")
    assert len(model.features.denseblock3) == 64 and len(model.features.denseblock4) == 48
    assert model.num_features == 2688 and model.classifier.in_features == 2688


def _densenet_bc_params(depth: int, k: int, num_classes: int) -> int:
    """Counted by hand from the paper's description: Conv3x3(2k) stem, 3 blocks of n = (depth - 4) / 6 layers."""
    n = (depth - 4) // 6
    width = 4 * k

    def layer(m):  # BN(m) + Conv1x1(m -> 4k) + BN(4k) + Conv3x3(4k -> k)
        return 2 * m + m * width + 2 * width + width * k * 9

    total, channels = 3 * 2 * k * 9, 2 * k
    for block in range(3):
        total += sum(layer(channels + i * k) for i in range(n))
        channels += n * k
        if block < 2:  # transition: BN + Conv1x1 halving the channels
            total += 2 * channels + channels * (channels // 2)
            channels //= 2
    return total + 2 * channels + channels * num_classes + num_classes  # norm5 + linear


@pytest.mark.parametrize(("depth", "k"), [(100, 12), (40, 12), (22, 4)])
def test_densenet_bc_parameter_count(depth, k):
    model = densevision.create_model("densenet_bc", depth=depth, growth_rate=k, num_classes=10)
    assert _num_params(model) == _densenet_bc_params(depth, k, 10)


def test_densenet_bc_100_is_the_papers_0_8m_model():
    model = densevision.create_model("densenet_bc")
    assert _num_params(model) == 769_162
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.out_channels == 24
    assert [len(model.features.get_submodule(f"denseblock{i}")) for i in (1, 2, 3)] == [16, 16, 16]
    assert model.default_cfg["image_size"] == (32, 32)


@pytest.mark.parametrize("depth", [98, 4])
def test_densenet_bc_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match=f"got {depth}"):
        densevision.create_model("densenet_bc", depth=depth)


def test_densenet_bc_forward_and_features():
    model = densevision.create_model("densenet_bc", depth=22, growth_rate=4, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    encoder = densevision.create_model("densenet_bc", depth=22, growth_rate=4, out_indices=(0, 1, 2, 3))
    assert [(f["num_chs"], f["reduction"]) for f in encoder.feature_info] == [(8, 1), (20, 1), (22, 2), (23, 4)]
    shapes = [tuple(f.shape) for f in encoder(torch.randn(1, 3, 32, 32))]
    assert shapes == [(1, 8, 32, 32), (1, 20, 32, 32), (1, 22, 16, 16), (1, 23, 8, 8)]


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("densenet121", [64, 256, 512, 1024, 1024]),
        ("densenet169", [64, 256, 512, 1280, 1664]),
        ("densenet201", [64, 256, 512, 1792, 1920]),
        ("densenet161", [96, 384, 768, 2112, 2208]),
    ],
)
def test_feature_info_matches_smp_channels(name, channels):
    with torch.device("meta"):
        model = densevision.create_model(name, out_indices=(0, 1, 2, 3, 4))
    assert [f["num_chs"] for f in model.feature_info] == channels
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f["module"] for f in model.feature_info] == [
        "features.relu0",
        "features.transition1.relu",
        "features.transition2.relu",
        "features.transition3.relu",
        "features.relu5",
    ]
    assert not hasattr(model, "classifier")


def test_features_are_tapped_after_transition_activation_and_norm5():
    model = densevision.create_model("densenet121", **TINY, out_indices=(0, 1, 2, 3, 4)).eval()
    x = torch.randn(2, 3, 64, 64)
    features = model(x)
    f = model.features
    stem = f.relu0(f.norm0(f.conv0(x)))
    after1 = f.transition1.relu(f.transition1.norm(f.denseblock1(f.pool0(stem))))
    after2 = f.transition2.relu(f.transition2.norm(f.denseblock2(f.transition1.pool(f.transition1.conv(after1)))))
    torch.testing.assert_close(features[0], stem)
    torch.testing.assert_close(features[1], after1)
    torch.testing.assert_close(features[2], after2)
    assert features[4].min() >= 0  # after relu5
    torch.testing.assert_close(features[4], model.forward_features(x))


def test_out_indices_subset():
    model = densevision.create_model("densenet121", **TINY, out_indices=(3, 1))
    assert model.out_indices == (1, 3)
    shapes = [tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))]
    assert shapes == [(1, 16, 16, 16), (1, 10, 4, 4)]
    assert [f["reduction"] for f in model.feature_info] == [4, 16]


@pytest.mark.parametrize("out_indices", [(), (0, 5), (1, 1), (-1,)])
def test_bad_out_indices_raise(out_indices):
    with pytest.raises(ValueError, match="out_indices"):
        densevision.create_model("densenet121", **TINY, out_indices=out_indices)


@pytest.mark.parametrize("in_chans", [1, 3, 5])
def test_in_chans(in_chans):
    model = densevision.create_model("densenet121", **TINY, num_classes=4, in_chans=in_chans)
    assert model.in_chans == in_chans and model.features.conv0.in_channels == in_chans
    assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize(
    ("shape", "message"), [((2, 3, 32, 32), r"N×1×H×W.*\(2, 3, 32, 32\)"), ((1, 32, 32), r"4-D.*\(1, 32, 32\)")]
)
def test_bad_input_raises_value_error(shape, message):
    model = densevision.create_model("densenet121", **TINY, in_chans=1)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))
    encoder = densevision.create_model("densenet121", **TINY, in_chans=1, out_indices=(0,))
    with pytest.raises(ValueError, match=message):
        encoder(torch.randn(*shape))


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(KeyError, match="densenet121"):
        densevision.create_model("densenet12")


def test_builders_are_registered():
    expected = {"densenet121", "densenet161", "densenet169", "densenet201", "densenet264", "densenet_bc"}
    assert expected <= set(densevision.list_models("densenet*"))
    assert all(name in MODELS for name in expected)


def test_classifier_forward_and_reset():
    model = densevision.create_model("densenet121", **TINY, num_classes=5, head_drop_rate=0.5)
    assert isinstance(model.classifier, ClassifierHead) and model.classifier.drop_rate == 0.5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, model.num_features, 2, 2)
    model.reset_classifier(3, global_pool="max")
    assert model.num_classes == 3 and model.classifier.pool_type == "max"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert set(model.state_dict()) >= {"classifier.weight", "classifier.bias"}
    assert model.default_cfg["first_conv"] == "features.conv0" and model.default_cfg["classifier"] == "classifier"
    assert model.default_cfg["architecture"] == "densenet121"


def test_encoder_has_no_classifier_to_reset():
    model = densevision.create_model("densenet121", **TINY, out_indices=(4,))
    with pytest.raises(ValueError, match="no classifier"):
        model.reset_classifier(10)


def test_options_reach_every_layer():
    model = densevision.create_model(
        "densenet121",
        **TINY,
        memory_efficient=True,
        drop_rate=0.1,
        norm_layer=lambda c: nn.GroupNorm(1, c),
        act_layer=nn.SiLU,
    )
    layers = [m for m in model.modules() if type(m).__name__ == "DenseLayer"]
    assert len(layers) == sum(TINY["block_config"])
    assert all(layer.memory_efficient and layer.drop_rate == 0.1 for layer in layers)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in model.modules())
    assert isinstance(model.features.norm5, nn.GroupNorm) and isinstance(model.features.transition2.relu, nn.SiLU)
    loss = model(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    assert model.features.conv0.weight.grad.abs().sum() > 0


def test_memory_efficient_model_matches_plain():
    plain = densevision.create_model("densenet121", **TINY, num_classes=3).double()
    efficient = densevision.create_model("densenet121", **TINY, num_classes=3, memory_efficient=True).double()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain(x).sum().backward()
    efficient(x).sum().backward()
    for (name, p_efficient), p_plain in zip(efficient.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p_efficient.grad, p_plain.grad, rtol=0, atol=1e-10, msg=name)


def test_torchvision_initialisation():
    model = densevision.create_model("densenet121", **TINY, num_classes=3)
    assert torch.equal(model.classifier.bias, torch.zeros(3))
    std = model.features.denseblock1.denselayer1.conv1.weight.std().item()
    assert std == pytest.approx((2 / 8) ** 0.5, rel=0.25)  # He-normal, fan_in 8


@pytest.mark.parametrize(("pool_type", "expected"), [("avg", 2.5), ("max", 4.0)])
def test_classifier_head_pools_then_projects(pool_type, expected):
    head = ClassifierHead(1, 1, pool_type=pool_type)
    with torch.no_grad():
        head.weight.fill_(2.0)
        head.bias.fill_(1.0)
    features = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    assert head(features).item() == 2 * expected + 1
    assert head(torch.tensor([[3.0]])).item() == 7.0


def test_classifier_head_validation():
    assert HEADS.get("ClassifierHead") is ClassifierHead
    with pytest.raises(ValueError, match="'median'"):
        ClassifierHead(4, 2, pool_type="median")
    with pytest.raises(ValueError, match="num_classes >= 1"):
        ClassifierHead(4, 0)
    with pytest.raises(ValueError, match=r"N×4×H×W or N×4.*\(2, 4, 3\)"):
        ClassifierHead(4, 2)(torch.randn(2, 4, 3))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="stem"):
        DenseNet(stem="deep")
    with pytest.raises(ValueError, match="block_config"):
        DenseNet(block_config=(2, 0))
    with pytest.raises(ValueError, match="compression"):
        DenseNet(compression=0.0)

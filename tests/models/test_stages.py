"""The encoder interface shared by DenseNet, the FC-DenseNet down path and DSOD: ``dense_stage`` and the
norm/activation resolver, reaching every layer of every family; heads built through ``HEADS``."""

import functools

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import densevision
from densevision.models.blocks import (
    DenseBlock,
    Transition,
    dense_stage,
    resolve_act_layer,
    resolve_norm_act,
    resolve_norm_layer,
)
from densevision.models.densenet import DenseNet
from densevision.models.heads import ClassifierHead, SSDHead
from densevision.registry import HEADS, ConfigError


@pytest.mark.parametrize(
    ("spec", "channels", "expected"),
    [
        ("BatchNorm2d", 6, "BatchNorm2d(6"),
        ("batchnorm", 6, "BatchNorm2d(6"),
        ("SyncBatchNorm", 6, "SyncBatchNorm(6"),
        ("sync_batchnorm", 6, "SyncBatchNorm(6"),
        ("GroupNorm", 64, "GroupNorm(32, 64"),
        ("groupnorm", 64, "GroupNorm(32, 64"),
        (dict(type="GroupNorm", num_groups=16), 84, "GroupNorm(14, 84"),  # largest divisor of 84 up to 16
        (dict(type="GroupNorm", num_groups=16), 7, "GroupNorm(7, 7"),
        (dict(type="BatchNorm2d", eps=1e-3), 6, "eps=0.001"),
        (nn.InstanceNorm2d, 6, "InstanceNorm2d(6"),
        (FrozenBatchNorm2d, 6, "FrozenBatchNorm2d(6"),
        (functools.partial(nn.GroupNorm, 3), 6, "GroupNorm(3, 6"),
    ],
)
def test_resolve_norm_layer(spec, channels, expected):
    assert expected in repr(resolve_norm_layer(spec)(channels))


@pytest.mark.parametrize("spec", ["LayerNorm", dict(num_groups=4), dict(type="GroupNorm", num_groups=0), 3])
def test_resolve_norm_layer_rejects_unknown_specs(spec):
    with pytest.raises(ConfigError, match="norm_layer"):
        resolve_norm_layer(spec)


@pytest.mark.parametrize(
    ("spec", "kind", "expected"),
    [
        ("relu", nn.ReLU, "ReLU()"),
        ("ReLU", nn.ReLU, "ReLU()"),
        ("silu", nn.SiLU, "SiLU()"),
        ("swish", nn.SiLU, "SiLU()"),
        ("gelu", nn.GELU, "GELU(approximate='none')"),
        (dict(type="leaky_relu", negative_slope=0.1), nn.LeakyReLU, "LeakyReLU(negative_slope=0.1)"),
        (nn.Mish, nn.Mish, "Mish()"),
    ],
)
def test_resolve_act_layer(spec, kind, expected):
    act = resolve_act_layer(spec)()
    assert type(act) is kind and repr(act) == expected


@pytest.mark.parametrize("spec", ["tanhh", dict(negative_slope=0.1), None])
def test_resolve_act_layer_rejects_unknown_specs(spec):
    with pytest.raises(ConfigError, match=r"act_layer.*" + ("tanhh" if spec == "tanhh" else "")):
        resolve_act_layer(spec)


def test_resolve_norm_act_keeps_classes_as_they_are():
    assert resolve_norm_act(nn.BatchNorm2d, nn.ReLU) == (nn.BatchNorm2d, nn.ReLU)


@pytest.mark.parametrize(
    ("options", "transition_channels", "pool"),
    [
        (dict(compression=0.5), 13, nn.AvgPool2d),  # DenseNet: floor(0.5 * (6 + 3 * 7))
        (dict(pool="max"), 27, nn.MaxPool2d),  # FC-DenseNet: no compression
        (dict(transition_channels=5, pool=None), 5, None),  # DSOD's last stage
    ],
)
def test_dense_stage_is_a_block_then_its_transition(options, transition_channels, pool):
    torch.manual_seed(0)
    block, transition = dense_stage(3, 6, 7, **options)
    torch.manual_seed(0)
    expected_block = DenseBlock(3, 6, 7)
    expected_transition = Transition(27, transition_channels, pool=options.get("pool", "avg"))
    assert block.out_channels == 27 and transition.out_channels == transition_channels
    assert (pool is None and not hasattr(transition, "pool")) or isinstance(transition.pool, pool)
    # created in the same order as by hand, so seeded initialisation is the one before the shared builder
    for ours, theirs in zip(
        [*block.state_dict().values(), *transition.state_dict().values()],
        [*expected_block.state_dict().values(), *expected_transition.state_dict().values()],
        strict=True,
    ):
        assert torch.equal(ours, theirs)


def test_dense_stage_without_transition_and_its_errors():
    block, transition = dense_stage(2, 4, 3, transition=False, norm_layer="groupnorm", act_layer="silu")
    assert transition is None and block.out_channels == 10
    assert isinstance(block.denselayer2.norm1, nn.GroupNorm) and isinstance(block.denselayer2.relu2, nn.SiLU)
    with pytest.raises(ConfigError, match="compression"):
        dense_stage(2, 4, 3, compression=0.0)


TINY_DSOD = dict(
    num_classes=4,
    image_size=64,
    stem_channels=(8, 8, 16),
    growth_rate=4,
    block_config=(2, 1, 1, 2),
    extra_channels=(8, 8),
)
FAMILIES = {
    "DenseNet": (dict(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=3), (2, 3, 32, 32)),
    "FCDenseNet": (
        dict(down_layers=(2, 2), bottleneck_layers=2, growth_rate=4, stem_channels=8, num_classes=3),
        (2, 3, 32, 32),
    ),
    "fcdensenet56": (dict(num_classes=3), (1, 3, 32, 32)),
    "DSOD": (TINY_DSOD, (2, 3, 64, 64)),
    "SSD": (
        dict(
            encoder=dict(type="densenet121", growth_rate=4, stem_channels=8, out_indices=(2, 3, 4)),
            num_classes=3,
            image_size=64,
            extra_channels=(8,),
        ),
        (2, 3, 64, 64),
    ),
}
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_norm_layer_and_act_layer_reach_every_layer_of_every_family(family):
    options, shape = FAMILIES[family]
    norm_layer = dict(type="groupnorm", num_groups=2)
    model = densevision.create_model(family, **options, norm_layer=norm_layer, act_layer="silu")
    kinds = {type(m) for m in model.modules() if isinstance(m, (*NORMS, nn.ReLU, nn.SiLU))}
    assert kinds == {nn.GroupNorm, nn.SiLU}
    out = model(torch.randn(shape))
    sum(o.sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_default_norm_and_act_are_batchnorm_and_relu(family):
    options, _ = FAMILIES[family]
    model = densevision.create_model(family, **options)
    kinds = {type(m) for m in model.modules() if isinstance(m, (*NORMS, nn.ReLU, nn.SiLU))}
    assert kinds == {nn.BatchNorm2d, nn.ReLU}


def test_heads_are_built_through_the_registry(monkeypatch):
    assert {"ClassifierHead", "SSDHead", "TiramisuDecoder"} <= set(HEADS.names())

    class TracedClassifier(ClassifierHead):
        pass

    class TracedSSDHead(SSDHead):
        pass

    monkeypatch.setitem(HEADS._entries, "ClassifierHead", TracedClassifier)
    monkeypatch.setitem(HEADS._entries, "SSDHead", TracedSSDHead)
    classifier = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=3)
    assert type(classifier.classifier) is TracedClassifier
    assert set(classifier.state_dict()) >= {"classifier.weight", "classifier.bias"}
    assert type(densevision.create_model("DSOD", **TINY_DSOD).head) is TracedSSDHead

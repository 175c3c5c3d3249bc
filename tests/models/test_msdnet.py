"""MSDNet: the paper's configurations against the authors' figures, exit order, early stopping, input checks."""

import pytest
import torch

import densevision
from densevision.flops import count_flops
from densevision.models.msdnet import MSDNet
from densevision.registry import MODELS

# Parameters and multiply-adds per image at each exit of the authors' implementation (kalviny/MSDNet-PyTorch,
# models/msdnet.py + op_counter.py, args.py defaults), built with the same arguments at 32 px (CIFAR-100) and 224 px
# (ImageNet): the figures their budgets are expressed in.
AUTHORS_FIGURES = {
    "msdnet_cifar_anytime": (
        32,
        3_067_960,
        [15_140_452, 25_505_992, 37_095_980, 46_331_024, 57_335_540, 66_960_728, 75_937_724],
    ),
    "msdnet_cifar_budget": (32, 2_078_924, [6_859_876, 14_350_024, 27_536_684, 41_714_576, 58_480_628]),
    "msdnet_imagenet": (
        224,
        23_958_440,
        [339_902_824, 685_456_720, 1_008_156_120, 1_254_472_688, 1_360_529_624],
    ),
}


def tiny(**overrides):
    """Two scales, three blocks of one or two layers, growth 4: builds and runs in milliseconds."""
    args = dict(
        num_blocks=3,
        step_mode="even",
        step=1,
        base=2,
        stem_channels=4,
        growth_rate=4,
        growth_factors=(1, 2),
        bottleneck_factors=(1, 2),
        classifier_channels=8,
        num_classes=5,
    )
    return MSDNet(**{**args, **overrides})


@pytest.mark.parametrize("name", sorted(AUTHORS_FIGURES))
def test_paper_configurations_match_the_authors_parameters_and_exit_flops(name):
    size, params, exit_flops = AUTHORS_FIGURES[name]
    model = densevision.create_model(name, num_classes=100 if "cifar" in name else 1000).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    counted = count_flops(model, torch.zeros(1, 3, size, size), exits=model.classifiers)
    assert counted.at_exits == exit_flops
    assert counted.total == exit_flops[-1]


@pytest.mark.parametrize(("step_mode", "steps"), [("even", [4, 2, 2, 2]), ("lin_grow", [4, 3, 5, 7])])
def test_block_lengths_follow_the_step_mode(step_mode, steps):
    assert tiny(num_blocks=4, base=4, step=2, step_mode=step_mode).steps == steps


@pytest.mark.parametrize("num_classes", [3, 7])
def test_forward_returns_every_exit_shallowest_first(num_classes):
    model = tiny(num_classes=num_classes).eval()
    images = torch.randn(2, 3, 32, 32)
    exits = model(images)
    assert [tuple(logits.shape) for logits in exits] == [(2, num_classes)] * 3
    # exit k is classifier k applied to block k's output: recompute it by hand
    scales = images
    for block, classifier, logits in zip(model.blocks, model.classifiers, exits, strict=True):
        scales = block(scales)
        torch.testing.assert_close(classifier(scales), logits)


@pytest.mark.parametrize("num_exits", [1, 2, 3])
def test_running_to_exit_k_skips_the_deeper_blocks(num_exits):
    model = tiny().eval()
    calls = []
    for index, block in enumerate(model.blocks):
        block.register_forward_hook(lambda module, args, output, index=index: calls.append(("block", index)))
    for index, classifier in enumerate(model.classifiers):
        classifier.register_forward_hook(lambda module, args, output, index=index: calls.append(("exit", index)))
    images = torch.randn(2, 3, 32, 32)
    exits = model(images, num_exits=num_exits)
    assert calls == [(kind, k) for k in range(num_exits) for kind in ("block", "exit")]
    full = model(images)
    for early, late in zip(exits, full[:num_exits], strict=True):
        torch.testing.assert_close(early, late)


def test_iter_exits_runs_a_block_only_when_its_exit_is_asked_for():
    model = tiny().eval()
    ran = []
    for index, block in enumerate(model.blocks):
        block.register_forward_hook(lambda module, args, output, index=index: ran.append(index))
    exits = model.iter_exits(torch.randn(1, 3, 32, 32))
    next(exits)
    assert ran == [0]
    next(exits)
    assert ran == [0, 1]


def test_scales_are_dropped_with_a_transition_and_other_input_sizes_work():
    # 4 layers over 2 scales: the finest scale goes after layer 2, followed by a channel-halving transition
    model = tiny(num_blocks=2, base=2, step=2).train()
    kinds = [type(module).__name__ for module in model.blocks[1]]
    assert kinds == ["MultiScaleLayer", "ScaleTransition", "MultiScaleLayer"]
    outputs = model(torch.randn(2, 3, 48, 40))
    assert [tuple(o.shape) for o in outputs] == [(2, 5), (2, 5)]
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_builders_are_registered_and_take_num_classes_and_in_chans():
    assert {"MSDNet", "msdnet_cifar_anytime", "msdnet_cifar_budget", "msdnet_imagenet"} <= set(MODELS.names())
    assert densevision.list_models("msdnet*") == ["msdnet_cifar_anytime", "msdnet_cifar_budget", "msdnet_imagenet"]
    with torch.device("meta"):
        model = densevision.create_model("msdnet_cifar_budget", num_classes=10, in_chans=1)
    assert model.num_exits == 5 and model.num_classes == 10
    assert model.classifiers[-1].linear.out_features == 10
    assert model.blocks[0][0][0][0].in_channels == 1  # the stem's first convolution


def test_initialisation_is_he_normal_with_zero_linear_biases():
    model = tiny(stem_channels=32, growth_rate=32, growth_factors=(1,), bottleneck_factors=(1,))
    conv = model.blocks[0][0][0][0]  # 3x3, 32 output channels: std sqrt(2 / (9 * 32))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.1)
    assert all(torch.count_nonzero(c.linear.bias) == 0 for c in model.classifiers)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(step_mode="linear"), "step_mode"),
        (dict(stem="resnet"), "stem"),
        (dict(bottleneck_factors=(1,)), "one growth and one bottleneck factor per scale"),
        (dict(reduction=0.0), "reduction"),
        (dict(num_blocks=0), "num_blocks"),
    ],
)
def test_bad_arguments_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32)])
def test_bad_input_names_the_expected_shape(shape):
    with pytest.raises(ValueError, match="N×3×H×W"):
        tiny()(torch.randn(*shape))


def test_num_exits_out_of_range_is_refused():
    with pytest.raises(ValueError, match="num_exits must be in 1..3"):
        tiny()(torch.randn(1, 3, 32, 32), num_exits=4)

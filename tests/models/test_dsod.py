import pytest
import torch
from torch import nn

import densevision
from densevision.models.blocks import Transition
from densevision.models.dsod import DSOD
from densevision.models.heads.ssd import L2Norm
from densevision.registry import MODELS

# A DSOD-style detector small enough for CPU tests and quick starts: 64×64 input, sources 8², 4², 2².
TINY = dict(
    num_classes=4,
    image_size=64,
    stem_channels=(8, 8, 16),
    growth_rate=4,
    block_config=(2, 1, 1, 2),
    extra_channels=(8, 8),
)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_dsod300_parameters_priors_and_outputs():
    model = densevision.create_model("dsod300", num_classes=21).eval()
    # REFERENCE (computed): ≈ 14.72 M trainable, 14.8 M with BatchNorm statistics.
    assert _trainable(model) == 14_715_804
    statistics = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert _trainable(model) + statistics == 14_795_736
    assert model.priors.shape == (8744, 4)
    assert model.feature_sizes == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (2, 2)]
    assert [conv[0].in_channels for conv in model.head.loc] == [800, 512, 512, 256, 256, 256]
    assert [conv[0].out_channels // 4 for conv in model.head.loc] == [4, 6, 6, 6, 4, 4]
    assert all(isinstance(norm, L2Norm) and norm.weight[0] == 20 for norm in model.head.l2norms)
    with torch.no_grad():
        loc, conf = model(torch.randn(1, 3, 300, 300))
    assert loc.shape == (1, 8744, 4) and conf.shape == (1, 8744, 21)


def test_dsod_is_registered_and_builds_from_a_config_dict():
    assert {"DSOD", "dsod300", "SSD", "ssd300_densenet121"} <= set(densevision.list_models())
    model = MODELS.build(dict(type="DSOD", **TINY))
    assert model.num_classes == 4 and model.image_size == (64, 64)
    assert model.feature_sizes == [(8, 8), (4, 4), (2, 2)]
    assert len(model.priors) == 64 * 4 + 16 * 4 + 4 * 4
    assert torch.all((model.priors[:, :2] > 0) & (model.priors[:, :2] < 1))


def test_dsod_layout_dense_prediction_halves():
    model = DSOD(**TINY)
    # transitions do not compress; the last one makes the learning half of the second source
    assert [getattr(model, f"transition{i}").out_channels for i in range(1, 5)] == [24, 28, 32, 8]
    x = torch.randn(2, 3, 64, 64)
    sources = model.extract_features(x)
    assert [s.shape[1] for s in sources] == [28, 16, 16]
    first = sources[0]
    torch.testing.assert_close(sources[1][:, 8:], model.reuse_first(first))
    scale = model.extras[0]
    torch.testing.assert_close(sources[2], torch.cat([scale.learn(sources[1]), scale.reuse(sources[1])], 1))


def _run(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    loc, conf = model(x)
    (loc.sum() + (conf * torch.linspace(-1, 1, conf.shape[-1], dtype=conf.dtype)).sum()).backward()
    return [loc, conf], {n: p.grad for n, p in model.named_parameters()}


def test_memory_efficient_dsod_matches_plain_in_float64():
    torch.manual_seed(1)
    plain = DSOD(**TINY).double()
    efficient = DSOD(**TINY, memory_efficient=True).double()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outputs, grads = _run(plain, x)
    outputs_me, grads_me = _run(efficient, x)
    for a, b in zip(outputs, outputs_me):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_me[name], rtol=0, atol=1e-10, msg=name)
    for (name, a), (_, b) in zip(plain.named_buffers(), efficient.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)  # BN statistics counted once


@pytest.mark.parametrize("norm_layer", ["GroupNorm", dict(type="GroupNorm", num_groups=16), "SyncBatchNorm"])
def test_dsod_norm_layer_option(norm_layer):
    model = DSOD(**TINY, norm_layer=norm_layer)
    kinds = {type(m) for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm))}
    assert kinds == ({nn.SyncBatchNorm} if norm_layer == "SyncBatchNorm" else {nn.GroupNorm})
    loc, conf = model(torch.randn(2, 3, 64, 64))
    (loc.sum() + conf.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dsod_rejects_inputs_its_priors_do_not_fit():
    model = DSOD(**TINY)
    with pytest.raises(ValueError, match=r"N×3×64×64"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="four dense blocks"):
        DSOD(**{**TINY, "block_config": (1, 1, 1)})
    with pytest.raises(ValueError, match="min_sizes and max_sizes"):
        DSOD(**TINY, min_sizes=(8, 16, 32))


def test_transition_ceil_mode_rounds_up():
    pooled = Transition(4, 4, pool="max", ceil_mode=True)(torch.randn(1, 4, 75, 75))
    assert pooled.shape[-2:] == (38, 38)
    assert Transition(4, 4, pool="max")(torch.randn(1, 4, 75, 75)).shape[-2:] == (37, 37)


def test_dsod300_follows_the_authors_unclipped_boxes_and_keeps_the_option():
    unclipped = densevision.create_model("dsod300").priors
    clipped = densevision.create_model("dsod300", clip=True).priors
    differ = (unclipped != clipped).any(1).nonzero().flatten()
    # The (2, 1/2) boxes of every 3x3 and 2x2 location: 213 and 264 px boxes stretched by sqrt(2) pass 300 px.
    last_two_levels = 8744 - (9 + 4) * 4
    expected = [last_two_levels + 4 * location + box for location in range(9 + 4) for box in (2, 3)]
    assert len(differ) == 26 and differ.tolist() == expected
    torch.testing.assert_close(unclipped[differ, :2], clipped[differ, :2])
    stretched = unclipped[differ, 2:].amax(1)
    torch.testing.assert_close(stretched[:18], torch.full((18,), 213 * 2**0.5 / 300))
    torch.testing.assert_close(stretched[18:], torch.full((8,), 264 * 2**0.5 / 300))
    assert clipped[:, 2:].max() == 1


def test_dsod_class_default_still_clips():
    # The quick-start detector builds DSOD itself: its priors stay as they were (clipped to the image).
    model = DSOD(**TINY, min_sizes=(16, 24, 52), max_sizes=(24, 52, 64))
    assert model.priors[:, 2:].max() == 1
    assert DSOD(**TINY, min_sizes=(16, 24, 52), max_sizes=(24, 52, 64), clip=False).priors[:, 2:].max() > 1

"""Early exits on the DenseNet encoder (models/early_exits.py): exits after chosen transitions, the deeper blocks
skipped when fewer exits are asked for, and everything else as the plain DenseNet."""

import pytest
import torch

import densevision
from densevision.early_exit.task import EarlyExitClassifier
from densevision.models.early_exits import EarlyExitDenseNet

TINY = dict(depth=10, growth_rate=4, num_classes=5)  # densenet_bc: three blocks of one layer, two transitions


def tiny(**kwargs):
    torch.manual_seed(0)
    return densevision.create_model("densenet_bc", **TINY, **kwargs)


@pytest.mark.parametrize("early_exits", [(1,), (2,), (2, 1)])
def test_exits_come_shallowest_first_and_the_last_is_the_densenet_itself(early_exits):
    model = tiny(early_exits=early_exits).eval()
    plain = tiny().eval()
    assert isinstance(model, EarlyExitDenseNet) and model.num_exits == len(early_exits) + 1
    x = torch.randn(2, 3, 32, 32)
    outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 5)] * model.num_exits
    torch.testing.assert_close(outputs[-1], plain(x))  # the DenseNet's draws came first: same weights, same logits
    for k in range(1, model.num_exits + 1):
        assert all(torch.equal(a, b) for a, b in zip(model(x, num_exits=k), outputs[:k], strict=True))


def test_without_exits_the_densenet_is_unchanged_and_its_weights_load():
    plain, model = tiny(), tiny(early_exits=(1, 2))
    assert type(plain).__name__ == "DenseNet"
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(key.startswith("exits.") for key in missing)
    assert set(plain.state_dict()) == {k for k in model.state_dict() if not k.startswith("exits.")}


def test_fewer_exits_skip_the_deeper_blocks():
    model = tiny(early_exits=(1, 2)).eval()
    calls = []
    for name, module in model.features.named_children():
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
    model(torch.randn(1, 3, 32, 32), num_exits=1)
    assert calls == ["conv0", "denseblock1", "transition1"]
    calls.clear()
    model(torch.randn(1, 3, 32, 32))
    assert calls[-3:] == ["denseblock3", "norm5", "relu5"]


def test_the_early_exit_task_flops_and_budgets_take_it_unchanged():
    task = EarlyExitClassifier(tiny(early_exits=(1, 2)))
    flops = task.exit_flops((3, 32, 32))
    assert len(flops) == 3 and flops[0] < flops[1] < flops[2]
    predictions = task.predict({"image": torch.randn(2, 3, 32, 32)})
    assert predictions[0]["exit_scores"].shape == (3, 5)
    loss = task.loss({"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 4])})
    assert {"loss", "loss/exit0", "loss/exit2"} <= set(loss)


def test_named_imagenet_densenets_take_exits():
    model = densevision.create_model("densenet121", early_exits=(2, 3), num_classes=10)
    assert model.num_exits == 3 and [e.linear.in_features for e in model.exits] == [128, 128]


@pytest.mark.parametrize("early_exits", [(), (0,), (3,), (1, 1)])
def test_bad_exits_are_refused_by_name(early_exits):
    with pytest.raises(ValueError, match=r"early_exits must be distinct transition indices among \[1, 2\]"):
        tiny(early_exits=early_exits)

import io
import logging
import math

import pytest
import torch
from torch import nn

from densevision import precision
from densevision.engine.optim import OptimWrapper, ParamSchedulers, build_optim_wrapper, build_param_groups
from densevision.registry import ConfigError

BASE_LR = 0.8
CPU = torch.device("cpu")


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize(("norm_mult", "bias_mult"), [(0.0, 0.0), (1.0, 0.0), (0.5, 2.0)])
def test_param_groups_scale_decay_of_norm_layers_and_biases(norm_mult, bias_mult):
    model = small_model()
    groups = build_param_groups(model, weight_decay=0.1, norm_decay_mult=norm_mult, bias_decay_mult=bias_mult)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    expected = {
        "0.weight": 0.1,
        "0.bias": 0.1 * bias_mult,
        "1.weight": 0.1 * norm_mult,
        "1.bias": 0.1 * norm_mult,
        "3.weight": 0.1,
        "3.bias": 0.1 * bias_mult,
    }
    assert {name: decay_of[id(p)] for name, p in model.named_parameters()} == pytest.approx(expected)
    assert len(groups) == len(set(expected.values()))


def test_frozen_parameters_are_left_out_and_no_paramwise_means_one_group():
    model = small_model()
    model[0].weight.requires_grad_(False)
    wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type="SGD", lr=0.1, weight_decay=0.01)), torch.device("cpu")
    )
    (group,) = wrapper.optimizer.param_groups
    assert group["weight_decay"] == 0.01
    assert len(group["params"]) == 5


@pytest.mark.parametrize(
    ("accumulate", "num_iters", "sizes", "steps"),
    [
        (1, 3, [1, 1, 1], [True, True, True]),
        (2, 4, [2, 2, 2, 2], [False, True, False, True]),
        (2, 3, [2, 2, 1], [False, True, True]),
        (4, 3, [3, 3, 3], [False, False, True]),
    ],
)
def test_accumulation_groups_end_with_the_epoch(accumulate, num_iters, sizes, steps):
    wrapper = OptimWrapper(
        torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), device=torch.device("cpu"), accumulate_steps=accumulate
    )
    assert [wrapper.group_size(i, num_iters) for i in range(num_iters)] == sizes
    assert [wrapper.should_step(i, num_iters) for i in range(num_iters)] == steps


def test_accumulated_small_batches_equal_one_large_batch():
    inputs, targets = torch.randn(6, 4), torch.randn(6, 1)
    reference, accumulated = nn.Linear(4, 1), nn.Linear(4, 1)
    accumulated.load_state_dict(reference.state_dict())

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for chunk in ((0, 4), (4, 6)):  # accumulate 2 over batches of 2: samples 0-3, then the 1-batch remainder
        optimizer.zero_grad()
        nn.functional.mse_loss(reference(inputs[slice(*chunk)]), targets[slice(*chunk)]).backward()
        optimizer.step()

    wrapper = OptimWrapper(
        torch.optim.SGD(accumulated.parameters(), lr=0.1), device=torch.device("cpu"), accumulate_steps=2
    )
    for index in range(3):
        batch = slice(2 * index, 2 * index + 2)
        loss = nn.functional.mse_loss(accumulated(inputs[batch]), targets[batch])
        wrapper.backward(loss, group_size=wrapper.group_size(index, 3))
        if wrapper.should_step(index, 3):
            wrapper.step()
    for expected, actual in zip(reference.parameters(), accumulated.parameters()):
        torch.testing.assert_close(actual, expected)


def test_clip_grad_limits_the_update_and_reports_the_norm_before_clipping():
    model = nn.Linear(3, 1, bias=False)
    before = model.weight.detach().clone()
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=1.0), device=torch.device("cpu"), clip_grad=dict(max_norm=0.1)
    )
    loss = (model(torch.full((1, 3), 10.0)) ** 2).sum()
    wrapper.backward(loss, group_size=1)
    unclipped = model.weight.grad.norm().item()
    assert wrapper.step() == pytest.approx(unclipped)
    assert (model.weight.detach() - before).norm().item() == pytest.approx(0.1, rel=1e-4)
    assert model.weight.grad is None


def test_bf16_amp_runs_on_a_cpu_with_native_bf16(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    caplog.set_level(logging.INFO, logger="densevision")
    model = small_model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), device=CPU, amp="bf16")
    assert wrapper.amp_dtype is torch.bfloat16 and wrapper.scaler is None
    assert "bf16 autocast on cpu, losses in float32" in caplog.text
    inner = []
    model[0].register_forward_hook(lambda module, args, output: inner.append(output.dtype))
    with wrapper.autocast(model):
        logits = model(torch.randn(2, 3, 3, 3))
        loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert inner == [torch.bfloat16] and logits.dtype == loss.dtype == torch.float32
    wrapper.backward(loss, group_size=1)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    ("amp", "supported", "reason"), [("bf16", False, "no native bfloat16"), ("fp16", True, "'bf16'")]
)
def test_amp_the_cpu_does_not_accelerate_falls_back_to_float32_with_a_warning(
    monkeypatch, caplog, amp, supported, reason
):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: supported)
    wrapper = OptimWrapper(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), device=CPU, amp=amp)
    assert wrapper.amp_dtype is None and wrapper.scaler is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"optim_wrapper.amp={amp!r} runs in float32" in warned[0] and reason in warned[0]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (dict(optimizer=dict(type="SGD", lr=0.1), amp="fp8"), "amp must be None, 'bf16' or 'fp16'"),
        (dict(optimizer=dict(type="SGD", lr=0.1), accumulate_steps=0), "accumulate_steps"),
        (dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(norm_type=2)), "clip_grad"),
        (dict(optimizer=dict(type="SGD", lr=0.1), accumulate_step=2), "did you mean 'accumulate_steps'"),
        (dict(optimizer=dict(type="SGD", lr=0.1), paramwise=dict(norm_decay=0.0)), "did you mean 'norm_decay_mult'"),
        (dict(paramwise=None), "no 'optimizer'"),
    ],
)
def test_bad_optim_wrapper_config_names_the_key(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_optim_wrapper(small_model(), cfg, torch.device("cpu"))


def run_schedule(schedulers: ParamSchedulers, optimizer, epochs: int, iters: int, start_epoch: int = 0) -> list[float]:
    """The LR used at every iteration, driving the schedulers the way the runner does."""
    lrs = []
    for epoch in range(start_epoch, start_epoch + epochs):
        schedulers.before_epoch(epoch)
        for index in range(iters):
            iteration = epoch * iters + index
            schedulers.before_iter(iteration)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedulers.after_iter(iteration)
        schedulers.after_epoch(epoch)
    return lrs


def sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=BASE_LR)


ITERS = 3  # iterations per epoch in the schedule tests


@pytest.mark.parametrize(
    ("cfgs", "factor"),
    [
        (  # per-iteration warm-up chained with per-epoch exponential decay
            [
                dict(type="LinearLR", start_factor=0.25, by_epoch=False, begin=0, end=4),
                dict(type="ExponentialLR", gamma=0.5, by_epoch=True),
            ],
            lambda e, t: (0.25 + 0.75 * min(t, 4) / 4) * 0.5**e,
        ),
        ([dict(type="MultiStepLR", milestones=[1, 3], gamma=0.1)], lambda e, t: 0.1 ** sum(e >= m for m in (1, 3))),
        (
            [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=4)],
            lambda e, t: (1 + math.cos(math.pi * min(e, 4) / 4)) / 2,
        ),
        ([dict(type="PolynomialLR", power=2.0, by_epoch=False, end=6)], lambda e, t: (1 - min(t, 6) / 6) ** 2),
        (  # a window that opens later: nothing changes before epoch 2
            [dict(type="LinearLR", start_factor=0.5, by_epoch=True, begin=2, end=4)],
            lambda e, t: 1.0 if e < 2 else 0.5 + 0.5 * min(e - 2, 2) / 2,
        ),
    ],
    ids=["warmup+exponential", "multistep", "cosine", "poly", "late-linear"],
)
def test_schedules_follow_their_closed_forms(cfgs, factor):
    optimizer = sgd()
    lrs = run_schedule(ParamSchedulers(optimizer, cfgs), optimizer, epochs=5, iters=ITERS)
    expected = [BASE_LR * factor(t // ITERS, t) for t in range(5 * ITERS)]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_fast_forwarded_schedules_continue_exactly_and_follow_a_changed_config():
    cfgs = [
        dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5),
        dict(type="MultiStepLR", milestones=[2, 3], gamma=0.5, by_epoch=True),
    ]
    straight = sgd()
    expected = run_schedule(ParamSchedulers(straight, cfgs), straight, epochs=4, iters=ITERS)

    resumed = sgd()
    schedulers = ParamSchedulers(resumed, cfgs)
    schedulers.fast_forward(epochs=2, iterations=2 * ITERS, iters_per_epoch=ITERS)
    tail = run_schedule(schedulers, resumed, epochs=2, iters=ITERS, start_epoch=2)
    assert tail == expected[2 * ITERS :]  # bit for bit, not approximately

    halved = [dict(cfgs[0]), dict(cfgs[1], gamma=0.25)]  # a gentler base LR and a steeper decay from now on
    lowered = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=BASE_LR / 10)
    schedulers = ParamSchedulers(lowered, halved)
    schedulers.fast_forward(epochs=2, iterations=2 * ITERS, iters_per_epoch=ITERS)
    tail = run_schedule(schedulers, lowered, epochs=2, iters=ITERS, start_epoch=2)
    assert tail == pytest.approx([BASE_LR / 10 * 0.25] * ITERS + [BASE_LR / 10 * 0.25**2] * ITERS)


def test_loading_optimizer_state_keeps_the_configs_hyper_parameters():
    model = small_model()
    trained = build_optim_wrapper(model, dict(optimizer=dict(type="Adam", lr=1e-2, betas=(0.9, 0.99))), CPU)
    model(torch.randn(2, 3, 3, 3)).sum().backward()
    trained.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = build_optim_wrapper(model, dict(optimizer=dict(type="Adam", lr=1e-3, betas=(0.9, 0.99))), CPU)
    changes = resumed.load_state_dict(state)
    assert changes == ["optimizer param group 0: lr 0.01 -> 0.001"]
    (group,) = resumed.optimizer.param_groups
    assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.99)
    moments = resumed.optimizer.state[group["params"][0]]
    assert int(moments["step"]) == 1 and torch.equal(
        moments["exp_avg"], trained.optimizer.state[group["params"][0]]["exp_avg"]
    )

    unchanged = build_optim_wrapper(model, dict(optimizer=dict(type="Adam", lr=1e-2, betas=(0.9, 0.99))), CPU)
    assert unchanged.load_state_dict(state) == []


@pytest.mark.parametrize(
    ("cfgs", "message"),
    [
        ([dict(gamma=0.5)], "must be a dict with a 'type'"),
        ([dict(type="ExponentialLR", gamma=0.5, begin=3, end=2)], "begin < end"),
        ([dict(type="ReduceLROnPlateau")], "not supported"),
        ([dict(type="ExponentialLRR", gamma=0.5)], "did you mean 'ExponentialLR'"),
    ],
)
def test_bad_scheduler_config_is_a_config_error(cfgs, message):
    with pytest.raises(ConfigError, match=message):
        ParamSchedulers(sgd(), cfgs)

"""Mixed precision: which dtype each device gets, the forward under autocast with float32 outputs, and the runner's
bf16 training and testing on CPU."""

import json
import logging

import pytest
import torch
from torch import nn

from densevision import precision
from densevision.engine.runner import Runner
from densevision.precision import autocast_dtype, autocast_forward
from densevision.registry import ConfigError
from tests.engine.toys import toy_config


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU multiplies bf16 natively (autocast itself runs on any CPU), so the bf16 path is tested here."""
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)


@pytest.mark.parametrize(
    ("asked", "device", "native", "expected"),
    [
        (None, "cpu", True, None),
        ("fp32", "cuda", True, None),
        ("bf16", "cpu", True, torch.bfloat16),
        ("bf16", "cpu", False, None),
        ("fp16", "cpu", True, None),
        ("bf16", "cuda", False, torch.bfloat16),
        ("fp16", "cuda", False, torch.float16),
    ],
)
def test_each_device_gets_the_precision_it_accelerates(monkeypatch, caplog, asked, device, native, expected):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: native)
    assert autocast_dtype(asked, device, what="--precision") is expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    falls_back = asked in ("bf16", "fp16") and expected is None
    assert len(warnings) == int(falls_back)
    if falls_back:
        assert f"--precision={asked!r} runs in float32" in warnings[0]


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, got 'int8'"):
        autocast_dtype("int8", "cpu", what="precision")


def test_the_forward_runs_in_bf16_and_returns_float32_until_the_context_closes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    inner = []
    model[0].register_forward_hook(lambda module, args, output: inner.append(output.dtype))
    images = torch.randn(2, 3, 8, 8)
    with autocast_forward(model, torch.bfloat16, "cpu"):
        logits = model(images)
        after = torch.is_autocast_enabled("cpu")
    assert inner == [torch.bfloat16] and logits.dtype == torch.float32 and not after
    assert (logits - model(images)).abs().max() < 0.1  # closed: float32 again, and bf16 was close to it
    assert inner[-1] == torch.float32


def test_a_forward_that_raises_leaves_autocast_off():
    class Failing(nn.Module):
        def forward(self, x):
            raise ValueError("bad input")

    module = Failing()
    with autocast_forward(module, torch.bfloat16, "cpu"):
        with pytest.raises(ValueError, match="bad input"):
            module(torch.zeros(1))
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_training_and_testing_on_cpu_keep_losses_and_metrics_in_float32(tmp_path, native_bf16, caplog):
    caplog.set_level(logging.INFO, logger="densevision")
    cfg = toy_config(tmp_path / "run")
    cfg["optim_wrapper"]["amp"] = "bf16"
    runner = Runner(cfg)
    convolutions, losses = [], []
    runner.task.body[0].register_forward_hook(lambda module, args, output: convolutions.append(output.dtype))
    original_loss = runner.task.loss

    def loss(batch):
        result = original_loss(batch)
        losses.append(result["loss"].dtype)
        return result

    runner.task.loss = loss
    metrics = runner.train()
    assert set(convolutions) == {torch.bfloat16}  # training and validation forwards
    assert set(losses) == {torch.float32}
    assert "mixed precision: the forward runs in bf16 autocast on cpu, losses in float32" in caplog.text

    tested = Runner(toy_config(tmp_path / "test")).test(tmp_path / "run" / "last.pth", precision="bf16")
    assert tested["acc"] == pytest.approx(metrics["acc"])
    assert "testing in bf16 autocast on cpu" in caplog.text
    records = [json.loads(line) for line in (tmp_path / "test" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["mode"] == "test" and records[-1]["precision"] == "bf16"

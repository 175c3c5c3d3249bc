"""train_cfg.compile and train_cfg.channels_last (densevision/engine/acceleration.py) through the runner, on CPU: a
compiled run trains as an eager one does, resumes exactly, and bad values are one ConfigError naming them."""

import json

import pytest
import torch

from densevision.engine.acceleration import TrainingAcceleration
from densevision.engine.checkpoint import load_checkpoint
from densevision.engine.runner import Runner
from densevision.registry import ConfigError
from tests.engine.test_runner import resumable_config
from tests.engine.toys import toy_config

TINY_SEGMENTOR = dict(
    type="Segmentor",
    model=dict(
        type="FCDenseNet",
        down_layers=(1, 2),
        bottleneck_layers=2,
        growth_rate=4,
        stem_channels=8,
        num_classes=3,
        memory_efficient=True,
        drop_rate=0.0,  # compiled dropout draws its masks differently from eager dropout
    ),
)


def train_losses(work_dir, **train_cfg):
    cfg = toy_config(work_dir, train_cfg=dict(max_epochs=1, **train_cfg), val_dataloader=None, checkpoint={})
    Runner(cfg).train()
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["mode"] == "train"]


@pytest.mark.parametrize("acceleration", [dict(compile=True), dict(compile=dict(backend="aot_eager"))])
def test_a_compiled_run_gives_the_eager_runs_losses(tmp_path, acceleration):
    eager = train_losses(tmp_path / "eager")
    compiled = train_losses(tmp_path / "compiled", channels_last=True, **acceleration)
    assert len(compiled) == len(eager) == 4
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_a_compiled_memory_efficient_dense_network_in_autocast_trains_as_eager(tmp_path):
    """The real dense blocks (memory-efficient, so the compiled checkpointing path), channels-last, gradient
    accumulation and the amp hooks, which stay eager around the compiled network."""

    def run(work_dir, **train_cfg):
        cfg = toy_config(
            work_dir,
            model=TINY_SEGMENTOR,
            train_cfg=dict(max_epochs=1, **train_cfg),
            val_dataloader=None,
            checkpoint={},
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1), accumulate_steps=2, amp="bf16"),
        )
        Runner(cfg).train()
        return load_checkpoint(work_dir / "last.pth")["state_dict"]

    eager = run(tmp_path / "eager")
    compiled = run(tmp_path / "compiled", compile=dict(backend="aot_eager"), channels_last=True)
    assert eager.keys() == compiled.keys()  # compiled in place: the checkpoint names are the eager ones
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, atol=1e-4, rtol=1e-3, msg=key)


def test_a_compiled_run_resumes_exactly(tmp_path, caplog):
    """Dropout, flips, accumulation, clipping and momentum under inductor: epoch 1, then resume to epoch 2, ends as a
    straight two-epoch run. The short last batch (8 samples in 3s) also exercises the CUDA-graph fallback."""

    def config(work_dir, epochs, **overrides):
        cfg = resumable_config(work_dir, **overrides)
        cfg["train_cfg"] = dict(max_epochs=epochs, compile=dict(mode="reduce-overhead"))
        return cfg

    with caplog.at_level("INFO", logger="densevision"):
        Runner(config(tmp_path / "straight", 2)).train()
    assert "training input shape changed from (3, 3, 8, 8) to (2, 3, 8, 8)" in caplog.text
    Runner(config(tmp_path / "resumed", 1)).train()
    torch.manual_seed(1234)  # whatever the process did in between must not matter
    Runner(config(tmp_path / "resumed", 2, resume="auto")).train()

    expected = load_checkpoint(tmp_path / "straight" / "last.pth")
    actual = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert actual["meta"]["epoch"] == expected["meta"]["epoch"] == 2
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][key], value, atol=1e-6, rtol=0, msg=key)
    assert actual["history"] == expected["history"]


def test_the_test_split_is_evaluated_by_the_compiled_network(tmp_path, caplog):
    """train_cfg.compile and channels_last apply to Runner.test (tools/test.py --compile) too, after the checkpoint's
    weights are loaded: the same metrics as eager."""
    cfg = toy_config(tmp_path / "run", train_cfg=dict(max_epochs=1), checkpoint={})
    Runner(cfg).train()
    eager = Runner(cfg).test(tmp_path / "run" / "last.pth")
    compiled_cfg = {**cfg, "train_cfg": dict(max_epochs=1, compile=dict(backend="aot_eager"), channels_last=True)}
    with caplog.at_level("INFO", logger="densevision"):
        compiled = Runner(compiled_cfg).test(tmp_path / "run" / "last.pth")
    assert "test: compiling body of ToySegmentor with torch.compile(backend='aot_eager')" in caplog.text
    assert "test: channels-last (NHWC) parameters (train_cfg)" in caplog.text
    assert compiled.keys() == eager.keys() and compiled == pytest.approx(eager)


@pytest.mark.parametrize(
    ("train_cfg", "message"),
    [
        (dict(compile="yes"), "train_cfg.compile must be False, True or a dict of torch.compile options, got 'yes'"),
        (dict(compile=dict(mode="fast")), "train_cfg.compile.mode must be one of"),
        (dict(compile=dict(modes="default")), "train_cfg.compile has unknown torch.compile option(s) ['modes']"),
        (dict(compile=dict(options="fast")), "train_cfg.compile.options must be a dict of inductor options"),
        (dict(channels_last=1), "train_cfg.channels_last must be True or False, got 1"),
        (dict(cudnn_benchmark="on"), "train_cfg.cudnn_benchmark must be True or False, got 'on'"),
    ],
)
def test_bad_values_name_the_key_and_value(train_cfg, message):
    with pytest.raises(ConfigError) as raised:
        TrainingAcceleration.from_train_cfg(train_cfg)
    assert message in str(raised.value)


def test_the_runner_checks_the_keys_before_training(tmp_path):
    cfg = toy_config(tmp_path, train_cfg=dict(max_epochs=1, compile=dict(mode="fast")))
    with pytest.raises(ConfigError, match="train_cfg.compile.mode must be one of"):
        Runner(cfg).train()
    assert not (tmp_path / "last.pth").exists()


def test_cudnn_benchmark_is_off_unless_asked_and_said_in_the_log(tmp_path):
    """Off by default (a resumed run repeats an uninterrupted one exactly); asked for, set and logged."""
    Runner(toy_config(tmp_path / "default", train_cfg=dict(max_epochs=1), val_dataloader=None, checkpoint={})).train()
    assert not torch.backends.cudnn.benchmark
    cfg = toy_config(tmp_path / "on", train_cfg=dict(max_epochs=1, cudnn_benchmark=True), val_dataloader=None)
    try:
        Runner(cfg).train()
        assert torch.backends.cudnn.benchmark
        assert "cuDNN benchmarks convolution algorithms per input shape" in (tmp_path / "on" / "run.log").read_text()
    finally:
        torch.backends.cudnn.benchmark = False

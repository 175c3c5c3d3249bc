"""Inference backends: eager, channels_last and onnxruntime agree with eager PyTorch in float32, tiles included; the
ONNX export is cached beside the checkpoint; ``auto`` says what it chose and why."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from densevision import backends
from densevision.backends import CHECK_SIZE, onnx_cache_file, prepare_forward
from densevision.config import Config
from densevision.engine.checkpoint import save_checkpoint
from densevision.export import ExportError, ExportResult
from densevision.inference import Predictor
from densevision.registry import ConfigError
from densevision.tasks import Detector, Segmentor
from tests.tool_loader import load_tool

CPU = torch.device("cpu")
TINY_TIRAMISU = dict(type="FCDenseNet", down_layers=(1, 2), bottleneck_layers=2, growth_rate=4, stem_channels=8,
                     num_classes=3, drop_rate=0.0)  # fmt: skip
PIPELINE = [dict(type="Normalize", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A config and a checkpoint of a tiny FC-DenseNet with trained-looking (non-default) BatchNorm statistics."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    task = Segmentor(model=TINY_TIRAMISU)
    with torch.no_grad():
        task.train()(torch.randn(4, 3, 48, 48) * 2 + 1)  # BatchNorm running statistics away from 0 and 1
    config = folder / "cfg.py"
    dataset = dict(type="MaskFolderDataset", img_dir="unused", mask_dir="unused", classes=["a", "b", "c"],
                   pipeline=PIPELINE)  # fmt: skip
    config.write_text(f"model = {dict(type='Segmentor', model=TINY_TIRAMISU)!r}\ntest_dataset = {dataset!r}\n")
    checkpoint = folder / "model.pth"
    save_checkpoint({"state_dict": task.state_dict(), "meta": {"epoch": 1}}, checkpoint)
    return Config.fromfile(config), checkpoint


@pytest.fixture(scope="module")
def exported(run):
    """The run's checkpoint exported once (the slow part), cached beside it where later predictors find it."""
    cfg, checkpoint = run
    predictor = Predictor.from_config(cfg, checkpoint, backend="onnxruntime")
    assert " exported (" in predictor.backend
    return onnx_cache_file(checkpoint, cfg["model"])


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_float32_backends_agree_with_eager_torch_within_1e_4_whole_and_tiled(run, exported):
    cfg, checkpoint = run
    image = _image(70, 90)
    eager = Predictor.from_config(cfg, checkpoint, backend="torch", channels_last=False)
    assert eager.backend == "torch, eager, contiguous, float32"
    reference = eager.predict(image)["probs"]
    reference_tiled = Predictor.from_config(cfg, checkpoint, backend="torch", channels_last=False, tile_size=48)
    tiled_reference = reference_tiled.predict(image)["probs"]
    others = {
        "channels_last": dict(backend="torch", channels_last=True),
        "onnxruntime": dict(backend="onnxruntime"),
    }
    for name, options in others.items():
        for tile_size, expected in ((None, reference), (48, tiled_reference)):
            predictor = Predictor.from_config(cfg, checkpoint, tile_size=tile_size, **options)
            assert predictor.backend.startswith("onnxruntime" if name == "onnxruntime" else "torch, eager, channels")
            probs = predictor.predict(image)["probs"]
            assert probs.dtype == np.float32 and probs.shape == (3, 70, 90)
            assert np.abs(probs - expected).max() < 1e-4, (name, tile_size)


def _fake_export(exported: Path, calls: list[Path]):
    """An ``export_and_check`` that copies the fixture's real export: the tests below are about what surrounds it."""

    def export_and_check(task, path, **kwargs):
        calls.append(Path(path))
        shutil.copyfile(exported, path)
        return ExportResult(Path(path), "dynamo", 18, (1, 3, *CHECK_SIZE), 1e-7)

    return export_and_check


def test_the_export_is_cached_beside_the_checkpoint_and_renewed_with_it(run, exported, tmp_path, monkeypatch):
    cfg, checkpoint = run
    calls = []
    monkeypatch.setattr(backends, "export_and_check", _fake_export(exported, calls))
    copy = tmp_path / "best.pth"
    copy.write_bytes(checkpoint.read_bytes())
    cached = onnx_cache_file(copy, cfg["model"])
    assert cached.parent == tmp_path and cached.name.startswith("best.pth.") and cached.suffix == ".onnx"
    first = Predictor.from_config(cfg, copy, backend="onnxruntime")
    assert cached.is_file() and first.backend.endswith(f"at input (1, 3, 83, 109)) to {cached}")
    again = Predictor.from_config(cfg, copy, backend="onnxruntime")
    assert again.backend.endswith(f"cached export {cached}") and len(calls) == 1

    task = Segmentor(model=TINY_TIRAMISU)  # other weights in the same file: a new key, the old export removed
    save_checkpoint({"state_dict": task.state_dict(), "meta": {"epoch": 2}}, copy)
    renewed = onnx_cache_file(copy, cfg["model"])
    assert renewed != cached
    Predictor.from_config(cfg, copy, backend="onnxruntime")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [renewed.name] and len(calls) == 2


def test_a_folder_that_cannot_hold_the_cache_runs_a_temporary_export(run, exported, tmp_path, monkeypatch):
    cfg, _ = run
    monkeypatch.setattr(backends, "export_and_check", _fake_export(exported, []))
    blocked = tmp_path / "BLOCKED"
    blocked.write_text("a file where the checkpoint's folder should be")
    predictor = Predictor.from_config(cfg, run[1], backend="onnxruntime", onnx_file=blocked / "model.onnx")
    assert " to a temporary file (cannot cache it in " in predictor.backend
    assert predictor.predict(_image(20, 30))["probs"].shape == (3, 20, 30)


def test_auto_runs_onnxruntime_on_cpu_and_torch_where_onnxruntime_cannot(run, exported, monkeypatch):
    cfg, checkpoint = run
    assert Predictor.from_config(cfg, checkpoint, backend="auto").backend.endswith(
        "(auto: the fastest exact path on CPU)"
    )
    bf16 = Predictor.from_config(cfg, checkpoint, backend="auto", precision="bf16")
    assert (
        bf16.backend.startswith("torch") and "auto: not onnxruntime, as precision 'bf16' is for torch" in bf16.backend
    )

    def failing(*args, **kwargs):
        raise ExportError("model.onnx differs from PyTorch by up to 0.5")

    monkeypatch.setattr(backends, "export_and_check", failing)
    fallback = Predictor.from_config(cfg, checkpoint, backend="auto", onnx_file=checkpoint.with_suffix(".none"))
    assert fallback.backend == (
        "torch, eager, channels_last, float32 (auto: not onnxruntime, as the ONNX export failed: "
        "model.onnx differs from PyTorch by up to 0.5)"
    )
    monkeypatch.setattr(backends, "_onnxruntime_missing", lambda: "onnxruntime is not installed")
    assert Predictor.from_config(cfg, checkpoint, backend="auto").backend.endswith(
        "(auto: not onnxruntime, as onnxruntime is not installed)"
    )
    with pytest.raises(ConfigError, match="backend 'onnxruntime': onnxruntime is not installed"):
        Predictor.from_config(cfg, checkpoint, backend="onnxruntime")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(precision="bf16"), "precision 'bf16' is for torch"),
        (dict(compile=True), "compile is a torch option"),
        (dict(channels_last=True), "channels_last is a torch option"),
        (dict(backend="tensorrt"), "backend must be one of auto, torch, onnxruntime, got 'tensorrt'"),
        (dict(precision="fp8"), "precision must be one of fp32, bf16, fp16"),
    ],
)
def test_options_onnxruntime_cannot_take_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        prepare_forward(nn.Conv2d(3, 2, 1), device=CPU, **{"backend": "onnxruntime", **options})


TINY_DSOD = dict(type="DSOD", num_classes=4, image_size=64, stem_channels=(8, 8, 16), growth_rate=4,
                 block_config=(1, 1, 1, 1), extra_channels=(8, 8))  # fmt: skip


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    """A config and checkpoint of a tiny DSOD detector with non-default BatchNorm statistics."""
    folder = tmp_path_factory.mktemp("detection")
    torch.manual_seed(0)
    task = Detector(model=TINY_DSOD)
    with torch.no_grad():
        task.train()(torch.randn(4, 3, 64, 64) * 2 + 1)
    config = folder / "cfg.py"
    dataset = dict(type="ShapesDetection", root="unused", pipeline=PIPELINE)
    config.write_text(f"model = {dict(type='Detector', model=TINY_DSOD)!r}\ntest_dataset = {dataset!r}\n")
    checkpoint = folder / "model.pth"
    save_checkpoint({"state_dict": task.state_dict(), "meta": {"epoch": 1}}, checkpoint)
    return Config.fromfile(config), checkpoint


def test_torch_runs_what_the_task_exports():
    detector = Detector(model=TINY_DSOD).eval()
    forward, _ = prepare_forward(detector, device=CPU, backend="torch", channels_last=False)
    assert forward == detector.export_forward  # decoded boxes and class probabilities, as the ONNX graph
    segmentor = Segmentor(model=TINY_TIRAMISU)
    assert prepare_forward(segmentor, device=CPU, backend="torch")[0] == segmentor.export_forward  # its forward


def test_detection_predicts_through_onnxruntime_like_torch(detection_run):
    cfg, checkpoint = detection_run
    torch_predictor = Predictor.from_config(cfg, checkpoint, backend="torch", channels_last=False)
    onnx_predictor = Predictor.from_config(cfg, checkpoint, backend="auto")
    assert onnx_predictor.backend.startswith("onnxruntime") and "(auto: the fastest exact path on CPU)" in (
        onnx_predictor.backend
    )
    image = _image(50, 70, seed=3)
    expected, got = torch_predictor.predict(image), onnx_predictor.predict(image)
    assert len(expected["scores"]) > 0
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-4)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-2)  # pixels of a 50×70 image


def test_torch_options_prepare_the_task_in_place(monkeypatch):
    monkeypatch.setattr(backends, "autocast_dtype", lambda *args, **kwargs: torch.bfloat16)
    task = Segmentor(model=TINY_TIRAMISU).eval()
    forward, description = prepare_forward(task, device=CPU, backend="torch", precision="bf16", compile=True)
    assert forward == task.export_forward
    assert description == "torch, compiled, channels_last, bfloat16 autocast (outputs float32)"
    assert task.model._compiled_call_impl is not None  # compiled lazily, at the first call
    convolution = next(m for m in task.modules() if isinstance(m, nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)


def test_infer_tool_says_which_backend_runs_and_writes_the_same_masks(run, exported, tmp_path, caplog):
    from PIL import Image

    cfg, checkpoint = run
    (tmp_path / "in").mkdir()
    Image.fromarray(_image(40, 56, seed=3)).save(tmp_path / "in" / "img.png")
    tool = load_tool("infer")
    masks = {}
    for backend in ("torch", "onnxruntime"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="densevision"):
            out = tmp_path / backend
            args = [cfg.filename, str(checkpoint), str(tmp_path / "in"), "--out", str(out), "--backend", backend]
            assert tool.main([*args, "--device", "cpu"]) == 0
        assert f"inference: {backend}" in caplog.text
        masks[backend] = np.asarray(Image.open(out / "img_mask.png"))
    np.testing.assert_array_equal(masks["torch"], masks["onnxruntime"])

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densevision.engine.checkpoint import save_checkpoint
from densevision.export import ExportError, check_onnx, export_and_check, export_onnx, input_channels
from densevision.models.blocks import DenseBlock, Transition
from densevision.tasks import Segmentor
from tests.tool_loader import load_tool


class TinyDenseSegmenter(nn.Module):
    """Stem, dense block, max-pool transition, new-maps-only dense block, 1x1 classifier, upsampling to input size."""

    def __init__(self, in_chans: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.down = DenseBlock(3, 8, 4, bottleneck_width=None)
        self.transition = Transition(self.down.out_channels, 8, pool="max")
        self.up = DenseBlock(2, 8, 4, bottleneck_width=2, return_new_only=True)
        self.head = nn.Conv2d(self.up.out_channels, num_classes, 1)
        for module in self.modules():  # non-trivial running statistics, so eval-mode BN matters
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.up(self.transition(self.down(self.stem(x)))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class TinyDenseClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = DenseBlock(2, 3, 4, bottleneck_width=None)
        self.fc = nn.Linear(self.block.out_channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(x).mean((2, 3)))


class DataDependent(nn.Module):
    """Branches on a tensor value: torch.export cannot capture it, a trace can (both branches agree here)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 0:
            return self.conv(x)
        return self.conv(x) * 0


class WidthSpecialised(nn.Module):
    """Scales by the width read as a Python number: a trace bakes the export width in as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float(x.shape[-1])


def _input_dims(path: Path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dense_segmenter_exports_with_dynamic_batch_and_size(tmp_path, exporter):
    model = TinyDenseSegmenter().eval()
    path = tmp_path / "seg.onnx"
    used, opset, reason = export_onnx(model, path, input_size=(32, 32), exporter=exporter)
    assert used == exporter and reason is None and opset >= 17
    assert _input_dims(path) == ["batch", 3, "height", "width"]
    for shape in [(2, 3, 48, 64), (3, 3, 37, 29)]:  # other batches and sizes, odd ones too
        assert check_onnx(model, path, input_shape=shape, atol=1e-4) < 1e-4


def test_classifier_exports_with_dynamic_batch(tmp_path):
    result = export_and_check(TinyDenseClassifier(), tmp_path / "cls.onnx", input_size=(16, 16), batch_size=2)
    assert result.exporter == "dynamo" and result.check_shape == (3, 3, 48, 48)
    assert result.max_abs_diff < 1e-4


def test_auto_falls_back_to_torchscript_and_says_why(tmp_path, capfd):
    result = export_and_check(DataDependent(), tmp_path / "dd.onnx", input_size=(8, 8))
    assert result.exporter == "torchscript" and result.fallback_reason
    assert "data-dependent" in result.fallback_reason.lower() or "guard" in result.fallback_reason.lower()
    assert result.max_abs_diff < 1e-5
    assert capfd.readouterr().err == ""  # torch.export's dump of the failed graph is not passed on
    with pytest.raises(ExportError, match="torch.export"):
        export_onnx(DataDependent(), tmp_path / "dd2.onnx", input_size=(8, 8), exporter="dynamo")


def test_a_graph_valid_only_at_the_export_size_is_caught(tmp_path):
    model, path = WidthSpecialised(), tmp_path / "w.onnx"
    export_onnx(model, path, input_size=(8, 8), exporter="torchscript")
    assert check_onnx(model, path, input_shape=(2, 3, 12, 8)) < 1e-5
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_onnx(model, path, input_shape=(1, 3, 8, 16))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_and_check(model, path, input_size=(8, 8), exporter="torchscript")


def test_input_channels():
    assert input_channels(TinyDenseSegmenter(in_chans=5)) == 5
    assert input_channels(Segmentor(model=dict(type="fcdensenet56", in_chans=2, num_classes=3))) == 2
    with pytest.raises(ExportError, match="in_chans"):
        input_channels(nn.Identity())
    with pytest.raises(ExportError, match="exporter"):
        export_onnx(nn.Identity(), "x.onnx", exporter="tflite")


@pytest.fixture(scope="module")
def tool():
    return load_tool("export")


def test_export_tool_exports_a_checkpoint_of_the_real_model(tool, tmp_path, capsys):
    network = dict(type="FCDenseNet", down_layers=(1, 1), bottleneck_layers=1, growth_rate=4, stem_channels=8,
                   num_classes=3, drop_rate=0.0)  # fmt: skip
    config = tmp_path / "cfg.py"
    config.write_text(f"model = {dict(type='Segmentor', model=network)!r}\n")
    task = Segmentor(model=network)
    save_checkpoint({"state_dict": task.state_dict()}, tmp_path / "model.pth")
    out = tmp_path / "model.onnx"
    assert tool.main([str(config), str(tmp_path / "model.pth"), "--out", str(out), "--input-size", "32", "48"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "max abs diff" in printed
    diff = float(printed.rsplit("max abs diff", 1)[1])
    assert diff < 1e-4
    assert _input_dims(out) == ["batch", 3, "height", "width"]
    import onnxruntime

    images = np.random.default_rng(0).standard_normal((2, 3, 40, 72)).astype(np.float32)
    (logits,) = onnxruntime.InferenceSession(str(out)).run(None, {"images": images})
    with torch.no_grad():
        np.testing.assert_allclose(logits, task.eval()(torch.from_numpy(images)).numpy(), atol=1e-4)


def test_export_tool_fails_on_a_missing_checkpoint(tool, tmp_path, capsys):
    config = tmp_path / "cfg.py"
    config.write_text("model = dict(type='Segmentor', model=dict(type='fcdensenet56'))\n")
    assert tool.main([str(config), str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "missing.pth" in capsys.readouterr().err


@pytest.fixture
def tiny_run(tmp_path):
    network = dict(type="FCDenseNet", down_layers=(1,), bottleneck_layers=1, growth_rate=4, stem_channels=8,
                   num_classes=3, drop_rate=0.0)  # fmt: skip
    config = tmp_path / "cfg.py"
    config.write_text(f"model = {dict(type='Segmentor', model=network)!r}\n")
    save_checkpoint({"state_dict": Segmentor(model=network).state_dict()}, tmp_path / "model.pth")
    return config, tmp_path / "model.pth"


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_export_tool_reports_a_missing_config_in_one_line(tool, tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    args = [str(tmp_path / "missing.py"), str(checkpoint), "--out", str(tmp_path / "m.onnx")]
    assert tool.main(args) == 1
    assert _error_line(capsys.readouterr().err) == f"error: config file not found: {tmp_path / 'missing.py'}"


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("BLOCKED/m.onnx", "cannot write the ONNX file {tmp}/BLOCKED/m.onnx: {tmp}/BLOCKED is a file, not a folder"),
        ("BLOCKED/sub/m.onnx", "cannot write the ONNX file {tmp}/BLOCKED/sub/m.onnx: {tmp}/BLOCKED is a file, not a"),
        ("folder", "cannot write the ONNX file {tmp}/folder: it is a folder; name a file, e.g. {tmp}/folder/model."),
    ],
)
def test_export_tool_reports_an_unwritable_out_before_exporting(tool, tiny_run, tmp_path, capsys, out, message):
    config, checkpoint = tiny_run
    (tmp_path / "BLOCKED").write_text("a file, not a folder")
    (tmp_path / "folder").mkdir()
    assert tool.main([str(config), str(checkpoint), "--out", str(tmp_path / out), "--input-size", "16", "16"]) == 1
    assert _error_line(capsys.readouterr().err).startswith("error: " + message.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BLOCKED", "cfg.py", "folder", "model.pth"]


class FixedSizeTask(nn.Module):
    """A task whose graph holds at one input size only (as a detector's priors do)."""

    export_input_size = (12, 20)
    export_outputs = ("scores",)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def test_a_fixed_size_task_exports_at_its_size_and_refuses_another(tmp_path):
    result = export_and_check(FixedSizeTask(), tmp_path / "fixed.onnx")
    assert result.check_shape == (3, 3, 12, 20) and _input_dims(tmp_path / "fixed.onnx") == ["batch", 3, 12, 20]
    export_and_check(FixedSizeTask(), tmp_path / "same.onnx", input_size=(12, 20))  # repeating it is fine
    with pytest.raises(ExportError, match=r"input size \(30, 30\) cannot be exported: FixedSizeTask takes only its "
                                          r"fixed input size \(12, 20\)"):  # fmt: skip
        export_onnx(FixedSizeTask(), tmp_path / "other.onnx", input_size=(30, 30))
    assert not (tmp_path / "other.onnx").exists()


@pytest.mark.parametrize(
    ("opset", "exporter", "outcome"),
    [
        (5, "auto", "opset 5 cannot be exported: the dynamo exporter writes opset 18 or later, TorchScript 7-20"),
        (25, "torchscript", "opset 25 cannot be exported by the torchscript exporter"),
        (11, "dynamo", "opset 11 cannot be exported by the dynamo exporter"),
        (11, "auto", ("torchscript", 11)),  # below dynamo's minimum: TorchScript writes it
        (18, "auto", ("dynamo", 18)),
    ],
)
def test_the_opset_asked_for_is_written_or_refused(tmp_path, opset, exporter, outcome):
    path = tmp_path / "m.onnx"
    if isinstance(outcome, str):
        with pytest.raises(ExportError, match=outcome):
            export_onnx(TinyDenseClassifier(), path, input_size=(16, 16), opset=opset, exporter=exporter)
        assert not path.exists()
        return
    used, written, _ = export_onnx(TinyDenseClassifier(), path, input_size=(16, 16), opset=opset, exporter=exporter)
    assert (used, written) == outcome
    assert {o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")} == {opset}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_a_path_that_cannot_be_created_is_blamed_even_when_permissions_allow_it(tool, tiny_run, capsys):
    config, checkpoint = tiny_run
    assert tool.main([str(config), str(checkpoint), "--out", "/proc/densevision-test.onnx"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: cannot write the ONNX file /proc/densevision-test.onnx: ")
    assert "export" not in line.split(": ", 2)[2]  # the reason is the path's, not an exporter's


def test_export_tool_help_says_what_each_task_exports(tool, capsys):
    with pytest.raises(SystemExit):
        tool.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "``logits`` N×K×H×W" in shown and "``boxes`` N×P×4" in shown and "``scores`` N×P×(K+1)" in shown
    assert "fixed input size" in shown

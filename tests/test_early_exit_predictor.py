"""EarlyExitPredictor: adaptive prediction stops at the first confident exit and skips the deeper blocks; the
calibration file picks the thresholds of a budget; predictions.csv records the exit and its FLOPs; the ONNX graph
returns every exit; tools/infer.py takes --budget and --exit-threshold."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.early_exit.predictor import EarlyExitPredictor, load_exit_thresholds
from densevision.early_exit.task import EarlyExitClassifier
from densevision.engine.checkpoint import save_checkpoint
from densevision.export import export_and_check
from densevision.registry import ConfigError
from tests.test_early_exit import TINY_MSDNET
from tests.tool_loader import load_tool

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CALIBRATION = {
    "exit_flops": [100, 200, 300],
    "image_shape": [3, 32, 32],
    "budgets": [
        {"q": 0.1, "mean_flops": 150.0, "thresholds": [0.5, 0.9, None]},
        {"q": 0.5, "mean_flops": 220.0, "thresholds": [0.8, None, None]},
        {"q": 1.0, "mean_flops": 260.0, "thresholds": [0.95, 0.99, None]},
    ],
}


def task(**kwargs):
    torch.manual_seed(0)
    return EarlyExitClassifier(model=TINY_MSDNET, **kwargs).eval()


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def predictor(model=None, **options):
    return EarlyExitPredictor(model or task(), mean=MEAN, std=STD, num_classes=3, top_k=2, **options)


def calibration_file(tmp_path, data=CALIBRATION, name="exit_thresholds.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(150, [0.5, 0.9]), (219.9, [0.5, 0.9]), (220, [0.8, math.inf]), (1e9, [0.95, 0.99])],
)
def test_a_budget_takes_the_thresholds_of_the_largest_budget_that_fits(tmp_path, budget, expected):
    thresholds = load_exit_thresholds(calibration_file(tmp_path), num_exits=3, budget=budget)
    assert thresholds == [*expected, -math.inf]  # null is "nobody leaves"; the last exit takes everyone left


def test_a_single_list_of_thresholds_needs_no_budget(tmp_path):
    path = calibration_file(tmp_path, {"thresholds": [None, 0.7, 0.1]})
    assert load_exit_thresholds(path, num_exits=3) == [math.inf, 0.7, -math.inf]


@pytest.mark.parametrize(
    ("data", "budget", "message"),
    [
        (CALIBRATION, None, r"holds 3 budgets \(val mean FLOPs 150 to 260\); choose one with --budget"),
        (CALIBRATION, 149, "below every budget .* the cheapest costs 150 FLOPs"),
        ({"thresholds": [0.5, None, None]}, 200, "no budgets to choose from; leave --budget out"),
        ({"thresholds": [0.5, None]}, None, "the model has 3 exits"),
        ({"thresholds": [0.5, "high", None]}, None, "must be numbers or null"),
        ({"exit_flops": [1, 2, 3]}, None, "neither 'budgets'"),
        ({"budgets": []}, 100, "non-empty list"),
    ],
)
def test_a_bad_calibration_is_refused_naming_the_file(tmp_path, data, budget, message):
    path = calibration_file(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as caught:
        load_exit_thresholds(path, num_exits=3, budget=budget)
    assert str(path) in str(caught.value)


def test_a_missing_calibration_file_says_who_writes_it(tmp_path):
    with pytest.raises(ConfigError, match="not found: tools/test.py writes it"):
        load_exit_thresholds(tmp_path / "nope.json", num_exits=3, budget=1)


def count_block_calls(model):
    calls = [0] * len(model.model.model.blocks)
    for index, block in enumerate(model.model.model.blocks):
        block.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize(
    ("thresholds", "exit_index"),
    [((0.0, 0.0, 0.0), 0), ((1.1, 0.0, 0.0), 1), ((math.inf, math.inf, -math.inf), 2), ((1.1, 1.1, 1.1), 2)],
)
def test_each_image_stops_at_its_first_confident_exit_and_no_deeper_block_runs(thresholds, exit_index):
    adaptive = predictor(exit_thresholds=thresholds)
    adaptive.predict(image(seed=1))  # the first image of a size also counts the FLOPs per exit: a full forward
    calls = count_block_calls(adaptive)
    result = adaptive.predict(image())
    assert calls == [1] * (exit_index + 1) + [0] * (2 - exit_index)
    assert result["exit"] == exit_index
    assert result["flops"] == adaptive.model.exit_flops((3, 32, 32))[exit_index]
    full = adaptive.model.exit_logits(adaptive.input_tensor(image()))[exit_index].detach().softmax(1)[0]
    assert result["label"] == int(full.argmax())
    np.testing.assert_allclose(result["scores"], full.numpy(), atol=1e-6)


def test_thresholds_between_confidences_send_images_to_different_exits():
    model = task()
    confidences = [
        model.exit_logits(predictor(model).input_tensor(image(s)))[0].detach().softmax(1).max() for s in (0, 1)
    ]
    low, high = sorted(float(c) for c in confidences)
    adaptive = predictor(model, exit_thresholds=((low + high) / 2, 0.0, 0.0))
    exits = sorted(adaptive.predict(image(s))["exit"] for s in (0, 1))
    assert low < high and exits == [0, 1]


@pytest.mark.parametrize(("predict_exit", "backend"), [(-1, "torch"), (0, "torch"), (-1, "onnxruntime")])
def test_without_thresholds_the_chosen_exit_answers_on_every_backend(predict_exit, backend):
    model = task(predict_exit=predict_exit)
    reference = model.exit_logits(predictor(task(predict_exit=predict_exit)).input_tensor(image()))
    result = predictor(model, backend=backend).predict(image())
    chosen = predict_exit % 3
    assert result["exit"] == chosen and result["flops"] == model.exit_flops((3, 32, 32))[chosen]
    np.testing.assert_allclose(result["scores"], reference[chosen].detach().softmax(1)[0].numpy(), atol=1e-5)


def test_predictions_csv_records_the_exit_and_the_flops_spent(tmp_path):
    adaptive = predictor(exit_thresholds=(0.0, 0.0, 0.0))
    prediction = adaptive.predict(image())
    adaptive.write(tmp_path / "a.png", image(), prediction, tmp_path)
    adaptive.finish(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert list(rows[0]) == ["image", "label", "class", "score", "top2_label", "top2_class", "top2_score",
                             "exit", "flops"]  # fmt: skip
    assert rows[0]["exit"] == "0" and int(rows[0]["flops"]) == adaptive.model.exit_flops((3, 32, 32))[0] > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(backend="onnxruntime"), "runs eager torch; drop --backend onnxruntime"),
        (dict(compile=True), "runs eager torch; drop --compile"),
    ],
)
def test_adaptive_prediction_refuses_other_backends_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        predictor(exit_thresholds=(0.5, 0.5, 0.5), **options)


def test_adaptive_prediction_on_auto_runs_torch():
    assert predictor(exit_thresholds=(0.5, 0.5, 0.5), backend="auto").backend.startswith("torch")


def test_the_onnx_graph_returns_every_exit(tmp_path):
    model = task()
    result = export_and_check(model, tmp_path / "msdnet.onnx", input_size=(32, 32), check_size=(40, 48))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["exit0", "exit1", "exit2"]
    images = torch.randn(2, 3, 32, 32)
    for got, want in zip(session.run(None, {"images": images.numpy()}), model.exit_logits(images)):
        np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4)


@pytest.fixture
def run(tmp_path):
    """A config, a checkpoint in a work dir with tools/test.py's calibration file, and two images."""
    dataset = dict(type="ImageFolderDataset", root="unused", pipeline=[dict(type="Normalize", mean=MEAN, std=STD)])
    work_dir = tmp_path / "work"
    config = tmp_path / "cfg.py"
    model = dict(type="EarlyExitClassifier", model=TINY_MSDNET)
    config.write_text(f"model = {model!r}\ntest_dataset = {dataset!r}\nwork_dir = {str(work_dir)!r}\n")
    work_dir.mkdir()
    checkpoint = work_dir / "best.pth"
    meta = {"epoch": 1, "dataset_meta": {"classes": ["a", "b", "c"]}}
    save_checkpoint({"state_dict": task().state_dict(), "meta": meta}, checkpoint)
    always_first = {"budgets": [{"q": 1.0, "mean_flops": 10.0, "thresholds": [0.0, None, None]}]}
    calibration_file(work_dir, always_first)
    calibration_file(tmp_path, {"thresholds": [None, 0.0, None]}, name="mine.json")  # every image leaves at exit 1
    (tmp_path / "in").mkdir()
    for seed in (0, 1):
        Image.fromarray(image(seed)).save(tmp_path / "in" / f"img{seed}.png")
    return config, checkpoint, tmp_path


@pytest.mark.parametrize(
    ("options", "exit_index"),
    [
        ([], "2"),
        (["--budget", "10"], "0"),
        (["--exit-threshold", "{root}/mine.json"], "1"),
        (["--exit-threshold", "{root}/work/exit_thresholds.json", "--budget", "99"], "0"),
    ],
)
def test_infer_tool_predicts_adaptively_with_a_budget(run, options, exit_index):
    config, checkpoint, root = run
    options = [o.format(root=root) for o in options]
    args = [str(config), str(checkpoint), str(root / "in"), "--out", str(root / "out"), "--device", "cpu"]
    assert load_tool("infer").main([*args, "--backend", "torch", *options]) == 0
    rows = list(csv.DictReader(open(root / "out" / "predictions.csv")))
    assert [row["exit"] for row in rows] == [exit_index] * 2 and all(int(row["flops"]) > 0 for row in rows)


def test_a_budget_reads_the_calibration_of_the_configs_work_dir_when_none_is_beside_the_checkpoint(run, capsys):
    config, checkpoint, root = run
    elsewhere = root / "elsewhere" / "model.pth"
    elsewhere.parent.mkdir()
    shutil.copy(checkpoint, elsewhere)
    args = [str(config), str(elsewhere), str(root / "in"), "--out", str(root / "out"), "--device", "cpu"]
    assert load_tool("infer").main([*args, "--backend", "torch", "--budget", "10"]) == 0
    assert [row["exit"] for row in csv.DictReader(open(root / "out" / "predictions.csv"))] == ["0", "0"]
    (checkpoint.parent / "exit_thresholds.json").unlink()
    assert load_tool("infer").main([*args, "--budget", "10"]) != 0
    message = f"calibration file {elsewhere.parent / 'exit_thresholds.json'} not found"
    assert message in capsys.readouterr().err


def test_infer_tool_refuses_onnxruntime_with_a_budget_in_one_line(run, capsys):
    config, checkpoint, root = run
    args = [str(config), str(checkpoint), str(root / "in"), "--out", str(root / "out"), "--device", "cpu"]
    assert load_tool("infer").main([*args, "--backend", "onnxruntime", "--budget", "10"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("adaptive prediction (--budget/--exit-threshold) runs eager torch; drop --backend onnxruntime")
    )


def test_infer_tool_help_lists_the_adaptive_options(run, capsys):
    config, checkpoint, root = run
    with pytest.raises(SystemExit):
        load_tool("infer").main([str(config), str(checkpoint), "x.png", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--budget FLOPS" in out and "--exit-threshold FILE" in out and "eager torch only" in out


def test_adaptive_prediction_runs_the_exits_under_the_precisions_autocast(monkeypatch):
    import densevision.early_exit.predictor as module

    monkeypatch.setattr(module, "autocast_dtype", lambda *_, **__: torch.bfloat16)  # as on a CPU with native bf16
    adaptive = predictor(exit_thresholds=(1.1, 1.1, 1.1), precision="bf16")
    dtypes = []
    adaptive.model.model.classifiers[2].register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    adaptive.predict(image(seed=1))  # the first image of a size also counts the FLOPs, in float32
    dtypes.clear()
    result = adaptive.predict(image())
    reference = predictor(exit_thresholds=(1.1, 1.1, 1.1)).predict(image())
    assert dtypes == [torch.bfloat16] and result["scores"].dtype == np.float32 and result["exit"] == 2
    np.testing.assert_allclose(result["scores"], reference["scores"], atol=0.05)


@pytest.mark.parametrize(("exit_index", "blocks_run"), [(0, ["denseblock1"]), (1, ["denseblock1", "denseblock2"])])
def test_a_densenet_with_exits_stops_early_too(exit_index, blocks_run):
    torch.manual_seed(0)
    densenet = dict(type="densenet_bc", depth=10, growth_rate=4, num_classes=3, early_exits=(1, 2))
    adaptive = predictor(
        EarlyExitClassifier(model=densenet).eval(), exit_thresholds=[1.1] * exit_index + [0.0] * (3 - exit_index)
    )
    adaptive.predict(image(seed=1))  # the FLOP count's full forward
    called = []
    for name in ("denseblock1", "denseblock2", "denseblock3"):
        getattr(adaptive.model.model.features, name).register_forward_hook(lambda *_, n=name: called.append(n))
    assert adaptive.predict(image())["exit"] == exit_index and called == blocks_run

"""Detection through the same front doors as segmentation: train, test, infer and export on generated shapes."""

import json
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from densevision.engine.checkpoint import load_checkpoint
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
TINY_DSOD = dict(type="DSOD", num_classes=4, image_size=64, stem_channels=(8, 8, 16), growth_rate=4,
                 block_config=(1, 1, 1, 1), extra_channels=(8, 8))  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny detector trained for one epoch by tools/train.py: (config path, work dir, data root)."""
    tmp = tmp_path_factory.mktemp("detection")
    config = tmp / "tiny_detection.py"
    config.write_text(
        textwrap.dedent(
            f"""
            _base_ = [{str(ROOT / "configs" / "quickstart_shapes_detection.py")!r}]
            shapes = dict(num_train=16, num_val=4, num_test=6, image_size=64, seed=1)
            data_root = {str(tmp / "shapes")!r}
            model = dict(type="Detector", model={TINY_DSOD!r}, _delete_=True)
            train_dataloader = dict(batch_size=8, dataset=dict(root=data_root, **shapes))
            val_dataloader = dict(batch_size=4, dataset=dict(root=data_root, **shapes))
            test_dataloader = dict(batch_size=4, dataset=dict(root=data_root, **shapes))
            train_cfg = dict(max_epochs=1, val_interval=1)
            param_scheduler = []
            device = "cpu"
            """
        )
    )
    work_dir = tmp / "work"
    assert load_tool("train").main([str(config), "--work-dir", str(work_dir)]) == 0
    return config, work_dir, tmp / "shapes"


def test_training_stores_the_dataset_metainfo_and_draws_boxes(run):
    _, work_dir, _ = run
    meta = load_checkpoint(work_dir / "last.pth")["meta"]["dataset_meta"]
    assert tuple(meta["classes"]) == ("triangle", "rectangle", "ellipse") and meta["category_ids"] == [1, 2, 3]
    assert list((work_dir / "predictions" / "epoch_001").glob("*.png"))
    log = (work_dir / "run.log").read_text()
    assert "effective batch 8" in log and "score threshold 0.01" in log
    assert "could not draw" not in log  # the samples were drawn by the task's own drawer


def test_test_tool_prints_the_map_table(run, tmp_path, capsys):
    config, work_dir, _ = run
    out = tmp_path / "metrics.json"
    assert load_tool("test").main([str(config), str(work_dir / "last.pth"), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mAP" in table and "triangle" in table and "ellipse" in table
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["mAP"] <= 1 and {"AP/triangle", "AP/rectangle", "AP/ellipse"} <= set(metrics)


def test_infer_tool_draws_boxes_and_writes_coco_results_in_image_pixels(run, tmp_path, capsys):
    config, work_dir, data = run
    images = tmp_path / "in"
    images.mkdir()
    source = sorted((data / "detection" / "images" / "test").glob("*.png"))[0]
    Image.open(source).resize((96, 48)).save(images / "000042.png")  # another size: boxes come back in its pixels
    Image.open(source).save(images / "scene.png")
    out = tmp_path / "out"
    args = [str(config), str(work_dir / "last.pth"), str(images), "--out", str(out), "--draw-threshold", "0"]
    assert load_tool("infer").main([*args, "--device", "cpu"]) == 0
    assert Image.open(out / "000042_boxes.png").size == (96 * 6, 48 * 6)  # small images are drawn enlarged
    results = json.loads((out / "results.json").read_text())
    assert results and {r["image_id"] for r in results} == {42, "scene"}
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    wide = np.array([r["bbox"] for r in results if r["image_id"] == 42])
    assert (wide[:, 0] >= 0).all() and (wide[:, 0] + wide[:, 2] <= 96.01).all()
    assert (wide[:, 1] + wide[:, 3] <= 48.01).all() and (wide[:, 2] > 0).all()
    assert "2 image(s)" in capsys.readouterr().out


def test_export_tool_writes_decoded_boxes_and_scores_checked_by_onnxruntime(run, tmp_path, capsys):
    config, work_dir, _ = run
    out = tmp_path / "detector.onnx"
    assert load_tool("export").main([str(config), str(work_dir / "last.pth"), "--out", str(out)]) == 0
    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == ["boxes", "scores"]
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "(3, 3, 64, 64)" in printed  # checked at another batch, the fixed size
    assert "outputs boxes, scores" in printed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--input-size", "300", "300"],
            "error: input size (300, 300) cannot be exported: Detector takes only its fixed",
        ),
        (["--opset", "5"], "error: opset 5 cannot be exported: the dynamo exporter writes opset 18 or later"),
    ],
)
def test_export_tool_refuses_what_it_cannot_honour_in_one_line(run, tmp_path, capsys, options, message):
    config, work_dir, _ = run
    out = tmp_path / "detector.onnx"
    assert load_tool("export").main([str(config), str(work_dir / "last.pth"), "--out", str(out), *options]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1 and not out.exists()


def test_dsod300_voc_front_door_trains_and_evaluates_with_a_vocdevkit_in_place(tmp_path):
    """The real DSOD300 config on a two-year VOCdevkit of 3 images: 07+12 trainval in, VOC07 test mAP out."""
    from tests.data.test_voc import DEVKIT, make_voc

    devkit = make_voc(tmp_path / "VOCdevkit", DEVKIT)
    work_dir = tmp_path / "work"
    overrides = [
        f"train_dataloader.dataset.root={devkit}",
        f"val_dataloader.dataset.root={devkit}",
        "train_dataloader.batch_size=2",
        "train_dataloader.num_workers=0",
        "val_dataloader.num_workers=0",
        "optim_wrapper.accumulate_steps=1",
        "train_cfg.max_iters=1",
        "param_scheduler=[]",
        "device='cpu'",
    ]
    args = [str(ROOT / "configs" / "dsod300_voc.py"), "--work-dir", str(work_dir), "--cfg-options", *overrides]
    assert load_tool("train").main(args) == 0
    checkpoint = load_checkpoint(work_dir / "last.pth")
    assert checkpoint["meta"]["iteration"] == 1 and len(checkpoint["meta"]["dataset_meta"]["classes"]) == 20
    log = (work_dir / "run.log").read_text()
    assert "VOC" in log and "8744 priors" in log and "mAP" in log

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from densevision.data.base import default_palette
from densevision.data.checks import DatasetError
from densevision.engine.checkpoint import save_checkpoint
from densevision.inference import Predictor, find_images, infer_files, predictor_class
from densevision.registry import ConfigError
from densevision.tasks import ClassificationPredictor, Classifier, SegmentationPredictor, Segmentor
from densevision.tasks.segmentation.drawing import blend_mask
from densevision.tasks.segmentation.predictor import AUTO_TILE_SIZE, DEFAULT_MAX_PIXELS
from densevision.tiling import window_starts
from tests.tool_loader import load_tool

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class PixelSegmenter(nn.Module):
    """A 1x1 convolution: no spatial context, so tiling must not change its prediction at all."""

    def __init__(self, in_chans: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, num_classes, 1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.conv(x)


class NeedsMultipleOf32(PixelSegmenter):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"size {tuple(x.shape[-2:])} is not a multiple of 32")
        return super().forward(x)


class TinyClassifier(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _image(height: int, width: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, bands), dtype=np.uint8)
    return image[..., 0] if bands == 1 else image


def _segmenter(bands: int = 3, **kwargs) -> SegmentationPredictor:
    mean, std = (MEAN, STD) if bands == 3 else ((0.5,) * bands, (0.25,) * bands)
    return SegmentationPredictor(PixelSegmenter(bands), mean=mean, std=std, num_classes=4, **kwargs)


@pytest.mark.parametrize(
    "length, window, overlap, expected",
    [
        (100, 40, 0.25, [0, 30, 60]),
        (101, 32, 0.5, [0, 16, 32, 48, 64, 69]),
        (64, 32, 0.0, [0, 32]),
        (40, 40, 0.25, [0]),
        (30, 40, 0.5, [0]),
    ],
)
def test_window_starts_cover_the_length_and_end_at_the_border(length, window, overlap, expected):
    starts = window_starts(length, window, overlap)
    assert starts == expected
    assert starts[-1] + min(window, length) == length
    assert all(b - a <= window * (1 - overlap) for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("overlap", [-0.1, 1.0])
def test_window_starts_rejects_bad_overlap(overlap):
    with pytest.raises(ValueError, match="overlap"):
        window_starts(100, 10, overlap)


def test_normalises_like_albumentations():
    import albumentations as A

    image = _image(5, 7)
    predictor = _segmenter()
    expected = A.Normalize(mean=MEAN, std=STD)(image=image)["image"].transpose(2, 0, 1)
    np.testing.assert_allclose(predictor.to_tensor(image).numpy(), expected, atol=1e-5)


def test_whole_image_prediction_matches_the_model():
    predictor = _segmenter()
    image = _image(37, 53)
    result = predictor.predict(image)
    with torch.no_grad():
        probs = predictor.model(predictor.to_tensor(image)[None]).softmax(1)[0].numpy()
    assert result["mask"].shape == (37, 53) and result["mask"].dtype == np.int64
    assert result["probs"].shape == (4, 37, 53) and result["probs"].dtype == np.float32
    np.testing.assert_allclose(result["probs"], probs, atol=1e-6)
    np.testing.assert_array_equal(result["mask"], probs.argmax(0))


@pytest.mark.parametrize(
    "size, bands, tile, overlap, window, batch_size",
    [
        ((70, 90), 3, 32, 0.25, "uniform", 4),
        ((64, 100), 1, (24, 40), 0.5, "uniform", 3),
        ((50, 45), 4, 16, 0.3, "hann", 5),
        ((20, 120), 3, 32, 0.25, "uniform", 2),  # shorter than a tile one way, tiled the other
    ],
)
def test_tiled_prediction_equals_whole_image_for_a_pixelwise_model(size, bands, tile, overlap, window, batch_size):
    image = _image(*size, bands=bands, seed=1)
    whole_predictor = _segmenter(bands)
    tiled_predictor = _segmenter(bands, tile_size=tile, tile_overlap=overlap, tile_window=window, batch_size=batch_size)
    tiled_predictor.model.load_state_dict(whole_predictor.model.state_dict())
    whole, tiled = whole_predictor.predict(image), tiled_predictor.predict(image)
    np.testing.assert_array_equal(tiled["mask"], whole["mask"])
    # Only float rounding may differ: a conv or softmax kernel may round a pixel differently in another-sized input.
    np.testing.assert_allclose(tiled["probs"], whole["probs"], rtol=0, atol=1e-6)
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    calls = tiled_predictor.model.calls
    assert len(calls) > 1 and all(n <= batch_size for n, *_ in calls)
    assert {shape[-2:] for shape in calls} == {(min(tile_h, size[0]), min(tile_w, size[1]))}
    expected_tiles = len(window_starts(size[0], tile_h, overlap)) * len(window_starts(size[1], tile_w, overlap))
    assert sum(n for n, *_ in calls) == expected_tiles


def test_tiles_are_averaged_where_they_overlap():
    """A model whose output depends on where the tile starts: overlapping pixels get the mean of the tiles."""

    class TileOffset(nn.Module):
        def forward(self, x):  # class 0 probability is 1 for the first tile column, 0 elsewhere
            first = (x[:, :1, :, :1] == 0).float()  # the image is 0 in column 0 only
            logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            logits[:, 0] = first[:, 0] * 50 - 25
            return logits

    image = np.ones((8, 24, 1), np.float32)
    image[:, 0] = 0
    predictor = SegmentationPredictor(TileOffset(), mean=0, std=1 / 255, num_classes=2, tile_size=(8, 16),
                                      tile_overlap=0.5)  # fmt: skip
    probs = predictor.predict(image)["probs"][0, 0]
    # windows start at 0 and 8: columns 0-7 only in the first tile, 8-15 in both, 16-23 only in the second
    np.testing.assert_allclose(probs[:8], 1, atol=1e-6)
    np.testing.assert_allclose(probs[8:16], 0.5, atol=1e-6)
    np.testing.assert_allclose(probs[16:], 0, atol=1e-6)


def test_image_smaller_than_a_tile_is_predicted_in_one_pass():
    predictor = _segmenter(tile_size=64)
    result = predictor.predict(_image(20, 30))
    assert result["mask"].shape == (20, 30)
    assert predictor.model.calls == [(1, 3, 20, 30)]


@pytest.mark.parametrize("tile_size", [None, 64])
def test_size_divisor_pads_and_crops(tile_size):
    predictor = SegmentationPredictor(NeedsMultipleOf32(), mean=MEAN, std=STD, num_classes=4, size_divisor=32,
                                      tile_size=tile_size)  # fmt: skip
    image = _image(50, 100)
    result = predictor.predict(image)
    reference = _segmenter()
    reference.model.load_state_dict(predictor.model.state_dict())
    assert result["mask"].shape == (50, 100)
    assert all(h % 32 == 0 and w % 32 == 0 for *_, h, w in predictor.model.calls)
    np.testing.assert_array_equal(result["mask"], reference.predict(image)["mask"])


def test_bad_inputs_and_outputs_are_named():
    with pytest.raises(ValueError, match="4 band"):
        _segmenter().predict(_image(8, 8, bands=4))
    with pytest.raises(ValueError, match="H×W or H×W×C"):
        _segmenter().predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="N×5×H×W"):
        SegmentationPredictor(PixelSegmenter(), mean=MEAN, std=STD, num_classes=5).predict(_image(8, 8))

    class Halves(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 4, x.shape[-2] // 2, x.shape[-1] // 2)

    with pytest.raises(ValueError, match="input size"):
        SegmentationPredictor(Halves(), mean=MEAN, std=STD, num_classes=4).predict(_image(8, 8))
    with pytest.raises(ValueError, match="tile_window"):
        _segmenter(tile_window="gauss")
    with pytest.raises(ValueError, match="overlap"):
        _segmenter(tile_size=16, tile_overlap=1.5)


def test_classification_top_k_and_resize():
    model = TinyClassifier()
    predictor = ClassificationPredictor(model, mean=MEAN, std=STD, num_classes=5, top_k=3, input_size=(16, 24),
                                        classes=list("abcde"))  # fmt: skip
    image = _image(40, 30)
    result = predictor.predict(image)
    assert model.calls == [(1, 3, 16, 24)]
    with torch.no_grad():
        resized = nn.functional.interpolate(predictor.to_tensor(image)[None], size=(16, 24), mode="bilinear",
                                            antialias=True)  # fmt: skip
        scores = model(resized).softmax(1)[0].numpy()
    np.testing.assert_allclose(result["scores"], scores, atol=1e-6)
    assert result["label"] == int(scores.argmax())
    assert [label for label, _ in result["top_k"]] == list(np.argsort(-scores)[:3])
    assert [s for _, s in result["top_k"]] == sorted((s for _, s in result["top_k"]), reverse=True)


def test_find_images(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.tif").write_bytes(b"")
    assert find_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert find_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b.png"]
    everything = [tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "sub" / "c.tif"]
    assert find_images(str(tmp_path / "**" / "*")) == everything
    with pytest.raises(FileNotFoundError, match=r"\*\.bmp"):
        find_images(str(tmp_path / "*.bmp"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in folder .*empty"):
        find_images(tmp_path / "empty")


def test_overlay_blends_palette_colours():
    image = np.full((2, 3), 100, np.uint16)  # one band, not uint8: stretched (constant -> black)
    mask = np.array([[0, 1, 1], [1, 0, 0]])
    palette = [(200, 0, 0), (0, 100, 50)]
    out = blend_mask(image, mask, palette, alpha=0.5)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 50, 25])
    rgb = _image(2, 3)
    np.testing.assert_array_equal(blend_mask(rgb, mask, palette, alpha=0.0), rgb)


def _write_images(folder: Path, sizes, bands: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i}.png"
        Image.fromarray(_image(h, w, bands=bands, seed=i)).save(path)
        paths.append(path)
    return paths


def test_infer_files_writes_masks_colours_and_overlays(tmp_path):
    paths = _write_images(tmp_path / "in", [(20, 30), (33, 17)])
    predictor = _segmenter(palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)])
    report = infer_files(predictor, paths, tmp_path / "out")
    assert not report.failed
    assert sorted(p.name for p in report.written) == sorted(
        f"img{i}_{kind}.png" for i in range(2) for kind in ("mask", "color", "overlay")
    )
    for path in paths:
        image = np.asarray(Image.open(path))
        expected = predictor.predict(image)["mask"]
        mask = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_mask.png"))
        np.testing.assert_array_equal(mask, expected)
        colour = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_color.png"))
        np.testing.assert_array_equal(colour, np.array(predictor.palette, np.uint8)[expected])
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_overlay.png"))
        np.testing.assert_array_equal(overlay, blend_mask(image, expected, predictor.palette))


def test_infer_files_writes_classification_csv(tmp_path):
    paths = _write_images(tmp_path / "in", [(20, 30), (16, 16), (25, 10)])
    predictor = ClassificationPredictor(TinyClassifier(), mean=MEAN, std=STD, num_classes=5, top_k=2,
                                        classes=list("abcde"))  # fmt: skip
    (csv_path,) = infer_files(predictor, paths, tmp_path / "out").written
    rows = list(csv.DictReader(open(csv_path)))
    assert [row["image"] for row in rows] == [str(p) for p in paths]
    for path, row in zip(paths, rows):
        result = predictor.predict(np.asarray(Image.open(path)))
        (second, second_score) = result["top_k"][1]
        assert int(row["label"]) == result["label"] and row["class"] == "abcde"[result["label"]]
        assert float(row["score"]) == pytest.approx(result["top_k"][0][1], abs=1e-6)
        assert (int(row["top2_label"]), row["top2_class"]) == (second, "abcde"[second])
        assert float(row["top2_score"]) == pytest.approx(second_score, abs=1e-6)


def test_infer_files_skips_unreadable_images_and_lists_them(tmp_path):
    good, other = _write_images(tmp_path / "in", [(8, 8), (9, 9)])
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    report = infer_files(_segmenter(), [good, broken, other], tmp_path / "out")
    assert [path for path, _ in report.failed] == [broken]
    assert "broken.png" in report.failed[0][1]
    assert sorted({p.name.split("_")[0] for p in report.written}) == ["img0", "img1"]


def test_classification_csv_keeps_the_rows_of_readable_images(tmp_path):
    good, other = _write_images(tmp_path / "in", [(8, 8), (9, 9)])
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"")
    predictor = ClassificationPredictor(TinyClassifier(), mean=MEAN, std=STD, num_classes=5, top_k=1)
    report = infer_files(predictor, [broken, good, other], tmp_path / "out")
    (csv_path,) = report.written
    assert [row["image"] for row in csv.DictReader(open(csv_path))] == [str(good), str(other)]
    assert [path for path, _ in report.failed] == [broken]


def test_infer_files_refuses_colliding_names(tmp_path):
    good = _write_images(tmp_path / "in", [(8, 8)])[0]
    twin = _write_images(tmp_path / "other", [(8, 8)])[0]
    with pytest.raises(DatasetError, match="img0"):
        infer_files(_segmenter(), [good, twin], tmp_path / "out")


# Prediction from a config and checkpoint, with the real Config, registries, tasks and checkpoint format.

TINY_TIRAMISU = dict(type="FCDenseNet", down_layers=(1, 1), bottleneck_layers=1, growth_rate=4, stem_channels=8,
                     num_classes=3, drop_rate=0.0)  # fmt: skip
PIPELINE = [dict(type="Normalize", mean=MEAN, std=STD)]


def _config_file(tmp_path: Path, model: dict, dataset: dict) -> Path:
    path = tmp_path / "cfg.py"
    path.write_text(f"model = {model!r}\ntest_dataset = {dataset!r}\n")
    return path


def _checkpoint(tmp_path: Path, task: nn.Module) -> Path:
    path = tmp_path / "model.pth"
    save_checkpoint({"state_dict": task.state_dict(), "meta": {"epoch": 1}}, path)
    return path


@pytest.fixture
def segmentation_run(tmp_path):
    """A config (MaskFolderDataset with classes and palette) and a checkpoint of a tiny FC-DenseNet."""
    from densevision.config import Config

    palette = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    dataset = dict(type="MaskFolderDataset", img_dir="unused", mask_dir="unused", classes=["a", "b", "c"],
                   palette=palette, pipeline=[dict(type="HorizontalFlip", p=0.5), *PIPELINE])  # fmt: skip
    config = _config_file(tmp_path, dict(type="Segmentor", model=TINY_TIRAMISU), dataset)
    task = Segmentor(model=TINY_TIRAMISU).eval()
    return Config.fromfile(config), _checkpoint(tmp_path, task), task, palette


def test_segmentation_predictor_from_config(segmentation_run):
    cfg, checkpoint, task, palette = segmentation_run
    predictor = Predictor.from_config(cfg, checkpoint, tile_size=32)
    assert isinstance(predictor, SegmentationPredictor)
    assert predictor.palette == palette and predictor.classes == ("a", "b", "c") and predictor.num_classes == 3
    assert predictor.tile_size == (32, 32)
    image = _image(40, 52)
    with torch.no_grad():
        expected = task(predictor.to_tensor(image)[None]).argmax(1)[0].numpy()
    whole = SegmentationPredictor.from_config(cfg, checkpoint).predict(image)
    np.testing.assert_array_equal(whole["mask"], expected)
    assert predictor.predict(image)["mask"].shape == (40, 52)


def test_from_config_default_palette_and_bad_configs(tmp_path):
    from densevision.config import Config

    task = Segmentor(model=TINY_TIRAMISU)
    checkpoint = _checkpoint(tmp_path, task)
    cfg = Config.fromfile(_config_file(tmp_path, dict(type="Segmentor", model=TINY_TIRAMISU),
                                       dict(type="MaskFolderDataset", pipeline=PIPELINE)))  # fmt: skip
    predictor = Predictor.from_config(cfg, checkpoint)
    assert predictor.palette == default_palette(3)
    cfg.test_dataset.pipeline = [dict(type="Normalize")]  # albumentations' defaults: ImageNet statistics
    np.testing.assert_allclose(Predictor.from_config(cfg, checkpoint).mean.flatten(), [123.675, 116.28, 103.53])
    for pipeline in ([dict(type="HorizontalFlip")], [dict(type="Normalize", max_pixel_value=None)]):
        cfg.test_dataset.pipeline = pipeline
        with pytest.raises(ConfigError, match="Normalize"):
            Predictor.from_config(cfg, checkpoint)
    cfg.model = dict(type="Segmentor", model=dict(TINY_TIRAMISU, num_classes=4))
    cfg.test_dataset.pipeline = PIPELINE
    with pytest.raises(Exception, match="model.pth"):  # weights of another shape: the checkpoint is named
        Predictor.from_config(cfg, checkpoint)


def test_predictor_class_follows_the_task():
    assert predictor_class({"model": {"type": "Segmentor"}}) is SegmentationPredictor
    assert predictor_class({"model": {"type": Classifier}}) is ClassificationPredictor
    with pytest.raises(ConfigError, match="names its predictor"):
        predictor_class({"model": {"type": nn.Identity}})
    with pytest.raises(ConfigError, match="needs a ClassificationPredictor"):
        SegmentationPredictor.from_config({"model": {"type": "Classifier"}}, "unused.pth")


def test_classification_predictor_from_config(tmp_path):
    model = dict(type="Classifier", model=dict(type=TinyClassifier))
    pipeline = [dict(type="Resize", height=16, width=16), *PIPELINE]
    cfg = {"model": model, "test_dataset": dict(type="ImageFolderDataset", root="x", classes=list("vwxyz"),
                                                pipeline=pipeline)}  # fmt: skip
    task = Classifier(model=TinyClassifier())
    predictor = Predictor.from_config(cfg, _checkpoint(tmp_path, task), top_k=2)
    assert isinstance(predictor, ClassificationPredictor)
    assert predictor.classes == tuple("vwxyz") and predictor.input_size == (16, 16) and predictor.top_k == 2
    image = _image(30, 20)
    with torch.no_grad():
        resized = nn.functional.interpolate(predictor.to_tensor(image)[None], size=(16, 16), mode="bilinear",
                                            antialias=True)  # fmt: skip
        scores = task.eval()(resized).softmax(1)[0].numpy()
    result = predictor.predict(image)
    np.testing.assert_allclose(result["scores"], scores, atol=1e-6)
    assert result["label"] == int(scores.argmax())


@pytest.fixture(scope="module")
def tool():
    return load_tool("infer")


def test_infer_tool_writes_outputs(tool, segmentation_run, tmp_path, capsys):
    cfg, checkpoint, _, _ = segmentation_run
    _write_images(tmp_path / "in", [(40, 40), (36, 70)])
    out = tmp_path / "out"
    args = [cfg.filename, str(checkpoint), str(tmp_path / "in" / "*.png"), "--out", str(out), "--tile-size", "32",
            "--device", "cpu", "--backend", "torch"]  # fmt: skip
    assert tool.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img{i}_{kind}.png" for i in range(2) for kind in ("mask", "color", "overlay")
    )
    assert np.asarray(Image.open(out / "img1_mask.png")).shape == (36, 70)
    assert "2 image(s)" in capsys.readouterr().out


def test_infer_tool_names_the_pattern_that_matched_nothing(tool, segmentation_run, tmp_path, capsys):
    cfg, checkpoint, _, _ = segmentation_run
    pattern = str(tmp_path / "nowhere" / "*.jpg")
    assert tool.main([cfg.filename, str(checkpoint), pattern, "--out", str(tmp_path / "o")]) == 1
    assert pattern in capsys.readouterr().err


def test_infer_tool_predicts_the_readable_images_and_fails_listing_the_others(tool, segmentation_run, tmp_path, capsys):
    cfg, checkpoint, _, _ = segmentation_run
    _write_images(tmp_path / "in", [(20, 20), (24, 24)])
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    args = [cfg.filename, str(checkpoint), str(tmp_path / "in"), "--out", str(out), "--device", "cpu"]
    assert tool.main([*args, "--backend", "torch"]) == 1
    captured = capsys.readouterr()
    assert "2 image(s)" in captured.out
    assert "failed: " in captured.err and "broken.png" in captured.err and "1 of 3 image(s)" in captured.err
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["img0_mask.png", "img1_mask.png"]


def test_infer_tool_help_lists_the_tasks_options(tool, segmentation_run, capsys):
    cfg, checkpoint, _, _ = segmentation_run
    with pytest.raises(SystemExit):
        tool.main([cfg.filename, str(checkpoint), "x.png", "--help"])
    assert "--tile-size" in capsys.readouterr().out


def test_a_large_image_is_tiled_automatically_and_matches_whole_image_prediction(caplog):
    image = _image(1500, 1500, seed=2)
    auto = _segmenter()  # default max_pixels: 1024×1024
    whole = _segmenter(max_pixels=None)
    whole.model.load_state_dict(auto.model.state_dict())
    caplog.clear()  # what the predictors' construction logged (when another test left the logger at INFO)
    with caplog.at_level(logging.INFO, logger="densevision"):
        tiled_result = auto.predict(image)
        auto.predict(image)
    assert [r.getMessage() for r in caplog.records] == [
        f"images of more than {DEFAULT_MAX_PIXELS} pixels (this one is 1500×1500) are predicted in 512×512 tiles to "
        "bound memory; a tile size (--tile-size) chooses the tiles, max_pixels=None (--max-pixels 0) predicts whole "
        "images"
    ]  # said once, not per image
    # 0, 384, 768, 988 each way: 16 tiles of 512×512, 4 per forward pass (the default batch_size)
    assert auto.model.calls == [(4, 3, AUTO_TILE_SIZE, AUTO_TILE_SIZE)] * 8
    whole_result = whole.predict(image)
    assert whole.model.calls == [(1, 3, 1500, 1500)]
    np.testing.assert_array_equal(tiled_result["mask"], whole_result["mask"])
    np.testing.assert_allclose(tiled_result["probs"], whole_result["probs"], rtol=0, atol=1e-6)
    assert tiled_result["probs"].dtype == np.float32


def test_max_pixels_decides_tiling_only_without_a_tile_size():
    predictor = _segmenter(max_pixels=100 * 100)
    assert predictor.tile_shape(100, 100) is None and predictor.tile_shape(50, 200) is None
    assert predictor.tile_shape(101, 100) == (AUTO_TILE_SIZE, AUTO_TILE_SIZE)
    assert _segmenter(max_pixels=None).tile_shape(5000, 5000) is None
    assert _segmenter(tile_size=64, max_pixels=10).tile_shape(64, 64) is None  # the user's tile size decides
    assert _segmenter(tile_size=(32, 48)).tile_shape(33, 10) == (32, 48)
    for bad in (0, -1, 2.5, "1e6"):
        with pytest.raises(ConfigError, match="max_pixels must be a positive int or None"):
            _segmenter(max_pixels=bad)
    predictor = _segmenter(max_pixels=30 * 30)
    result = predictor.predict(_image(40, 30))  # above the budget, within one auto tile: one 40×30 window
    assert predictor.model.calls == [(1, 3, 40, 30)] and result["mask"].shape == (40, 30)


@pytest.mark.parametrize("out", ["BLOCKED", "BLOCKED/out"])
def test_infer_tool_reports_an_unusable_out_folder_in_one_line(tool, segmentation_run, tmp_path, capsys, out):
    cfg, checkpoint, _, _ = segmentation_run
    _write_images(tmp_path / "in", [(20, 20)])
    (tmp_path / "BLOCKED").write_text("a file, not a folder")
    args = [cfg.filename, str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / out), "--device", "cpu"]
    assert tool.main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot use {tmp_path / out} as the output folder: {tmp_path / 'BLOCKED'} is a file, not a folder"
    )


def test_infer_tool_says_when_it_tiles_by_itself(tool, segmentation_run, tmp_path, caplog):
    cfg, checkpoint, _, _ = segmentation_run
    _write_images(tmp_path / "in", [(40, 40)])
    args = [cfg.filename, str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu",
            "--backend", "torch", "--max-pixels", "1000"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert tool.main(args) == 0
    assert "images of more than 1000 pixels (this one is 40×40) are predicted in 512×512 tiles" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert tool.main([*args[:-2], "--max-pixels", "0"]) == 0
    assert "tiles" not in caplog.text


def test_a_device_the_machine_lacks_is_a_config_error(monkeypatch, segmentation_run):
    cfg, checkpoint, _, _ = segmentation_run
    with pytest.raises(ConfigError, match="unknown device 'gpu'; use 'cpu', 'cuda' or 'cuda:N'"):
        _segmenter(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' was asked for but CUDA is not available"):
        Predictor.from_config(cfg, checkpoint, device="cuda")


# Images of another bit depth or band count than the training images (checkpoint's image_format).

RGB8 = {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}


def _save_as_8_and_16_bit(folder: Path) -> tuple[Path, Path]:
    """The same picture as an 8-bit PNG and as a 16-bit TIFF (×257: 255 becomes 65535)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    image = _image(24, 20, seed=3)
    Image.fromarray(image).save(folder / "eight.png")
    tifffile.imwrite(folder / "sixteen.tif", image.astype(np.uint16) * 257)
    return folder / "eight.png", folder / "sixteen.tif"


def test_a_16_bit_image_gives_the_prediction_of_the_same_8_bit_image(tmp_path):
    eight, sixteen = _save_as_8_and_16_bit(tmp_path / "in")
    predictor = _segmenter(image_format=RGB8)
    report = infer_files(predictor, [eight, sixteen], tmp_path / "out")
    assert not report.failed
    masks = [np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png")) for name in ("eight", "sixteen")]
    np.testing.assert_array_equal(masks[0], masks[1])
    image = np.asarray(Image.open(eight))
    torch.testing.assert_close(predictor.to_tensor(image.astype(np.uint16) * 257), predictor.to_tensor(image))


def test_an_8_bit_image_is_scaled_up_for_a_model_trained_on_16_bit_images():
    image = _image(8, 8)
    predictor = _segmenter(image_format={**RGB8, "dtype": "uint16", "max_value": 65535}, max_pixel_value=65535)
    torch.testing.assert_close(predictor.to_tensor(image), predictor.to_tensor(image.astype(np.uint16) * 257))


@pytest.mark.parametrize(
    ("image_format", "max_pixel_value", "dtype", "message"),
    [
        (RGB8, 255, np.float32, "float32 but the model was trained on 8-bit \\(uint8, max 255\\) images"),
        ({**RGB8, "dtype": "float32", "max_value": None}, 1.0, np.uint8, "8-bit .* trained on float32 images"),
        (RGB8, 255, np.int16, "16-bit \\(int16, max 32767\\) but the model was trained on 8-bit"),
        (None, 255, np.uint16, "16-bit .*max_pixel_value=255 .*does not record the bit depth"),
    ],
)
def test_a_bit_depth_that_cannot_be_scaled_is_refused_naming_both(image_format, max_pixel_value, dtype, message):
    predictor = _segmenter(image_format=image_format, max_pixel_value=max_pixel_value)
    with pytest.raises(DatasetError, match=message):
        predictor.predict(_image(8, 8).astype(dtype))


def test_without_a_recorded_format_images_go_as_read_when_the_scale_fits():
    predictor = _segmenter(max_pixel_value=65535)
    image = _image(8, 8).astype(np.uint16) * 200
    expected = (torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)) - predictor.mean) / predictor.std
    torch.testing.assert_close(predictor.to_tensor(image), expected)


def test_an_image_format_without_its_keys_is_a_config_error():
    with pytest.raises(ConfigError, match="image_format needs dtype"):
        _segmenter(image_format={"dtype": "uint8"})


def _mixed_folder(folder: Path) -> dict[str, Path]:
    """Two RGB images, a grey one, an RGBA one and a corrupt file."""
    paths = dict(zip(("rgb0", "rgb1"), _write_images(folder, [(20, 24), (18, 16)])))
    for name, mode in (("grey", "L"), ("rgba", "RGBA")):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(_image(16, 20, seed=7)).convert(mode).save(paths[name])
    paths["corrupt"] = folder / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG truncated")
    return paths


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_grey_and_rgba_images_are_listed_with_the_reason_and_the_others_predicted(tmp_path, task):
    paths = _mixed_folder(tmp_path / "in")
    if task == "segmentation":
        predictor = _segmenter(image_format=RGB8)
    else:
        predictor = ClassificationPredictor(TinyClassifier(), mean=MEAN, std=STD, num_classes=5, image_format=RGB8)
    report = infer_files(predictor, sorted(paths.values()), tmp_path / "out")
    failed = dict(report.failed)
    assert sorted(failed) == sorted([paths["corrupt"], paths["grey"], paths["rgba"]])
    assert "1 band(s) (grayscale) but the model was trained on 3-band images" in failed[paths["grey"]]
    assert "4 band(s)" in failed[paths["rgba"]] and "corrupt.png" in failed[paths["corrupt"]]
    if task == "segmentation":
        assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == ["img0_mask.png", "img1_mask.png"]
    else:
        rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
        assert [row["image"] for row in rows] == [str(paths["rgb0"]), str(paths["rgb1"])]


def test_infer_tool_predicts_8_and_16_bit_alike_and_lists_the_images_it_cannot_predict(tool, tmp_path, capsys):
    from densevision.config import Config

    dataset = dict(type="MaskFolderDataset", img_dir="unused", mask_dir="unused", classes=["a", "b", "c"],
                   pipeline=PIPELINE)  # fmt: skip
    cfg = Config.fromfile(_config_file(tmp_path, dict(type="Segmentor", model=TINY_TIRAMISU), dataset))
    checkpoint = tmp_path / "model.pth"
    meta = {"epoch": 1, "dataset_meta": {"classes": ["a", "b", "c"], "image_format": RGB8}}
    save_checkpoint({"state_dict": Segmentor(model=TINY_TIRAMISU).state_dict(), "meta": meta}, checkpoint)
    paths = _mixed_folder(tmp_path / "in")
    _save_as_8_and_16_bit(tmp_path / "in")
    out = tmp_path / "out"
    args = [cfg.filename, str(checkpoint), str(tmp_path / "in"), "--out", str(out), "--device", "cpu"]
    assert tool.main([*args, "--backend", "torch"]) == 1
    captured = capsys.readouterr()
    assert "4 image(s)" in captured.out and "3 of 7 image(s) could not be predicted" in captured.err
    for name in ("grey", "rgba", "corrupt"):
        assert f"failed: {paths[name]}: " in captured.err
    np.testing.assert_array_equal(np.asarray(Image.open(out / "eight_mask.png")),
                                  np.asarray(Image.open(out / "sixteen_mask.png")))  # fmt: skip

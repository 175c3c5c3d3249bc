from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from densevision.data.checks import DatasetError
from densevision.data.mask_folder import MaskFolderDataset
from densevision.data.raster import BandStatistics, RasterWindowDataset, band_values
from densevision.formats.geotiff import grid_windows
from densevision.registry import ConfigError

CLASSES = ("soil", "water", "building")


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """rasterio's ``from_origin`` without its deprecated ``*`` composition."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


TRANSFORM = from_origin(500_000, 5_000_000, 10.0, 10.0)
HEIGHT, WIDTH = 40, 50


def write_raster(path: Path, data: np.ndarray, *, nodata=None, crs="EPSG:32633", transform=TRANSFORM) -> Path:
    """A tiled GeoTIFF of ``data`` (bands first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=data.dtype.name, crs=crs,
                   transform=transform, nodata=nodata, tiled=True, blockxsize=16, blockysize=16)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def scene_pair(root: Path, name: str = "area", seed: int = 0, *, label_crs="EPSG:32633", label_transform=TRANSFORM):
    """A 3-band uint16 scene (band b holds 1000 b + class + noise) with a nodata (0) corner, and its labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), (HEIGHT, WIDTH)).astype(np.uint8)
    scene = np.stack(
        [1000 * band + labels.astype(np.int64) * 10 + rng.integers(1, 5, labels.shape) for band in (1, 2, 3)]
    )
    scene = scene.astype(np.uint16)
    scene[:, :3, :4] = 0
    labels[-2:, -2:] = 255
    write_raster(root / "scenes" / f"{name}.tif", scene, nodata=0)
    write_raster(root / "labels" / f"{name}.tif", labels[None], nodata=255, crs=label_crs, transform=label_transform)
    return scene, labels


def dataset(root: Path, **options) -> RasterWindowDataset:
    return RasterWindowDataset(root / "scenes", root / "labels", CLASSES, **options)


def test_grid_windows_cover_every_pixel_once_with_padded_edges(tmp_path):
    scene, labels = scene_pair(tmp_path)
    grid = dataset(tmp_path, mode="grid", window_size=16)
    assert len(grid) == len(grid_windows(HEIGHT, WIDTH, (16, 16))) == 3 * 4
    canvas = np.full((48, 64), -1, dtype=np.int64)
    for index in range(len(grid)):
        sample = grid[index]
        row, col, height, width = sample["meta"]["window"]
        assert sample["image"].shape == (3, 16, 16) and (height, width) == (16, 16)
        canvas[row : row + height, col : col + width] = sample["mask"].numpy()
    expected = labels.astype(np.int64)
    expected[scene[0] == 0] = 255  # scene nodata is ignored in the labels
    np.testing.assert_array_equal(canvas[:HEIGHT, :WIDTH], expected)
    assert np.all(canvas[HEIGHT:] == 255) and np.all(canvas[:, WIDTH:] == 255)  # padding past the edges


def test_sample_meta_records_the_window_georeferencing_and_nodata(tmp_path):
    scene, _ = scene_pair(tmp_path)
    sample = dataset(tmp_path, mode="grid", window_size=16)[5]  # row 1, column 1 of the grid
    meta = sample["meta"]
    assert meta["window"] == (16, 16, 16, 16) and meta["crs"] == "EPSG:32633" and meta["nodata"] == 0
    assert meta["transform"] == pytest.approx((10.0, 0.0, 500_160.0, 0.0, -10.0, 4_999_840.0))
    np.testing.assert_array_equal(sample["image"][0].numpy(), scene[0, 16:32, 16:32].astype(np.float32))
    assert sample["image"].dtype == torch.float32 and sample["mask"].dtype == torch.int64


def test_random_windows_are_inside_the_scene_and_follow_torch_seed(tmp_path):
    scene_pair(tmp_path)
    random = dataset(tmp_path, window_size=(8, 12), samples_per_epoch=10)
    assert len(random) == 10
    torch.manual_seed(3)
    first = [random[i]["meta"]["window"] for i in range(10)]
    torch.manual_seed(3)
    assert [random[i]["meta"]["window"] for i in range(10)] == first
    assert len(set(first)) > 1
    for row, col, height, width in first:
        assert (height, width) == (8, 12) and 0 <= row <= HEIGHT - 8 and 0 <= col <= WIDTH - 12


def test_band_selection_picks_and_orders_bands(tmp_path):
    scene, _ = scene_pair(tmp_path)
    sample = dataset(tmp_path, mode="grid", window_size=16, bands=(3, 1))[1]
    assert sample["image"].shape[0] == 2
    np.testing.assert_array_equal(sample["image"][0].numpy(), scene[2, :16, 16:32])
    np.testing.assert_array_equal(sample["image"][1].numpy(), scene[0, :16, 16:32])
    with pytest.raises(DatasetError, match=r"bands \[4\] requested from .*area.tif, which has 3 band"):
        dataset(tmp_path, bands=(1, 4))


def test_scene_nodata_is_zero_in_the_image_and_ignored_in_labels(tmp_path):
    scene_pair(tmp_path)
    sample = dataset(tmp_path, mode="grid", window_size=16)[0]
    assert torch.all(sample["image"][:, :3, :4] == 0) and torch.all(sample["mask"][:3, :4] == 255)
    assert torch.all(sample["mask"][3:, 4:] < 3)


def test_label_nodata_that_is_a_class_index_stays_that_class(tmp_path):
    scene, labels = scene_pair(tmp_path)
    write_raster(tmp_path / "labels" / "area.tif", np.where(labels == 255, 0, labels)[None].astype(np.uint8), nodata=0)
    sample = dataset(tmp_path, mode="grid", window_size=16)[2]
    assert (sample["mask"] == 0).any() and not (sample["mask"][:, :2] == 255).any()


def test_float_scenes_and_other_dtypes_are_read_as_float32(tmp_path):
    _, labels = scene_pair(tmp_path)
    write_raster(
        tmp_path / "scenes" / "area.tif", np.random.default_rng(0).normal(size=(2, HEIGHT, WIDTH)).astype("f4")
    )
    sample = dataset(tmp_path, mode="grid", window_size=16)[0]
    assert sample["image"].shape == (2, 16, 16) and sample["image"].dtype == torch.float32


def test_crs_mismatch_names_both_files_and_values(tmp_path):
    scene_pair(tmp_path, label_crs="EPSG:32632")
    data = dataset(tmp_path, mode="grid", window_size=16)
    with pytest.raises(DatasetError) as err:
        data.check()
    message = str(err.value)
    assert "labels/area.tif" in message and "scenes/area.tif" in message
    assert "EPSG:32632 vs EPSG:32633" in message
    with pytest.raises(DatasetError, match="coordinate reference systems"):
        data[0]


def test_transform_mismatch_names_both_files_and_values(tmp_path):
    scene_pair(tmp_path, label_transform=from_origin(500_020, 5_000_000, 10.0, 10.0))
    problems = []
    dataset(tmp_path).check(on_problem=problems.append)
    assert len(problems) == 1 and "geotransforms" in problems[0] and "500020" in problems[0] and "500000" in problems[0]
    scene_pair(tmp_path, label_transform=from_origin(500_000.01, 5_000_000, 10.0, 10.0))  # 0.001 pixel: tolerated
    assert dataset(tmp_path).check().num_problems == 0


def test_check_counts_pixels_and_names_label_values_outside_the_classes(tmp_path):
    scene, labels = scene_pair(tmp_path)
    summary = dataset(tmp_path).check()
    valid = scene[0] != 0
    assert summary.counts == [int(((labels == c) & valid).sum()) for c in range(3)]
    assert summary.ignored == HEIGHT * WIDTH - sum(summary.counts)
    labels[10, 10] = 9
    write_raster(tmp_path / "labels" / "area.tif", labels[None], nodata=255)
    with pytest.raises(DatasetError, match=r"label value\(s\) \[9\] in .*labels/area.tif"):
        dataset(tmp_path).check()


def test_truncated_geotiff_is_a_dataset_error_naming_it(tmp_path):
    scene_pair(tmp_path)
    path = tmp_path / "scenes" / "area.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cannot read scene raster .*scenes/area.tif"):
        dataset(tmp_path).check()
    path.write_bytes(b"not a tiff")
    with pytest.raises(DatasetError, match=r"cannot read scene raster .*scenes/area.tif"):
        dataset(tmp_path)


def test_check_reports_a_band_count_unlike_the_model(tmp_path):
    scene_pair(tmp_path)
    problems = []
    dataset(tmp_path).check(on_problem=problems.append, channels=4)
    assert len(problems) == 1 and "in_chans=4" in problems[0]


def test_bad_options_are_config_errors(tmp_path):
    scene_pair(tmp_path)
    with pytest.raises(ConfigError, match="mode"):
        dataset(tmp_path, mode="tiles")
    with pytest.raises(ConfigError, match="window_size"):
        dataset(tmp_path, window_size=0)


def test_band_statistics_are_exact_for_integers_and_close_for_floats():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3000, (5000, 2)).astype(np.uint16)
    stats = BandStatistics()
    for chunk in np.array_split(values, 3):
        stats.add(chunk)
    for chunk in np.array_split(values, 4):
        stats.add_to_histogram(chunk)
    np.testing.assert_allclose(stats.mean, values.mean(axis=0))
    np.testing.assert_allclose(stats.std, values.std(axis=0))
    np.testing.assert_array_equal(stats.percentile(2), np.percentile(values, 2, axis=0, method="inverted_cdf"))
    assert stats.max_pixel_value == 65535.0
    floats = rng.normal(0, 1, (20000, 1)).astype(np.float32)
    stats = BandStatistics(bins=4096)
    stats.add(floats)
    stats.add_to_histogram(floats)
    assert abs(stats.percentile(98)[0] - np.percentile(floats, 98)) < 0.01 and stats.max_pixel_value == 1.0
    line = stats.normalize_config(repeat=3)
    assert line.startswith('normalize = dict(type="Normalize", mean=(') and line.count(",") > 6


def test_band_values_of_raster_and_image_folder_datasets(tmp_path):
    scene, _ = scene_pair(tmp_path)
    chunks = list(band_values(dataset(tmp_path)))
    values = np.concatenate(chunks)
    assert values.shape == (HEIGHT * WIDTH - 12, 3) and values.dtype == np.uint16  # nodata left out
    from PIL import Image

    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    Image.fromarray(np.full((4, 5, 3), 7, dtype=np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.zeros((4, 5), dtype=np.uint8)).save(tmp_path / "mask" / "a.png")
    folder = MaskFolderDataset(tmp_path / "img", tmp_path / "mask", CLASSES)
    (only,) = list(band_values(folder))
    assert only.shape == (20, 3) and np.all(only == 7)

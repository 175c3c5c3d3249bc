import re

import numpy as np
import pytest

import densevision.data.medical  # noqa: F401  (registers the NIfTI datasets)
import densevision.data.raster  # noqa: F401  (registers RasterWindowDataset)
from tests.data.test_medical import decathlon
from tests.data.test_raster import CLASSES, scene_pair
from tests.tool_loader import load_tool


@pytest.fixture(scope="module")
def band_stats():
    return load_tool("band_stats")


def run(tool, capsys, config, *extra) -> tuple[int, str, str]:
    code = tool.main([str(config), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def normalize_step(out: str) -> dict:
    (line,) = [line for line in out.splitlines() if line.startswith("normalize = ")]
    namespace: dict = {}
    exec(line, {}, namespace)  # the printed line is meant to be pasted into a config
    return namespace["normalize"]


def test_raster_band_statistics_leave_nodata_out_and_print_a_normalize_step(tmp_path, band_stats, capsys):
    scene, _ = scene_pair(tmp_path)
    config = tmp_path / "cfg.py"
    config.write_text(
        f"train_dataset = dict(type='RasterWindowDataset', img_dir={str(tmp_path / 'scenes')!r}, "
        f"label_dir={str(tmp_path / 'labels')!r}, classes={CLASSES!r}, bands=(3, 1))\n"
    )
    code, out, _ = run(band_stats, capsys, config)
    assert code == 0
    valid = scene[:, scene[0] != 0].astype(np.float64)[[2, 0]]  # bands 3 and 1, nodata pixels left out
    step = normalize_step(out)
    assert step["type"] == "Normalize" and step["max_pixel_value"] == 65535.0
    np.testing.assert_allclose(np.array(step["mean"]) * 65535, valid.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(np.array(step["std"]) * 65535, valid.std(axis=1), rtol=1e-5)
    rows = [line.split() for line in out.splitlines() if re.match(r"#\s+\d", line)]
    assert [float(row[4]) for row in rows] == [np.percentile(band, 2, method="inverted_cdf") for band in valid]
    assert f"{valid.shape[1]:,} values per band" in out


def test_volume_statistics_are_after_the_ct_window_and_repeat_per_context_slice(tmp_path, band_stats, capsys):
    root = decathlon(tmp_path / "T")
    config = tmp_path / "cfg.py"
    config.write_text(
        f"train_dataloader = dict(dataset=dict(type='DecathlonDataset', root={str(root)!r}, split='trainval', "
        "context=2, window=(-100, 200), empty_slice_rate=0.5))\n"
    )
    code, out, _ = run(band_stats, capsys, config)
    step = normalize_step(out)
    assert code == 0 and step["max_pixel_value"] == 1.0 and len(step["mean"]) == 5
    assert len(set(step["mean"])) == 1 and 0 < step["mean"][0] < 1
    assert "repeated 5 times" in out


def test_a_config_without_the_split_is_one_error_line(tmp_path, band_stats, capsys):
    config = tmp_path / "cfg.py"
    config.write_text("model = None\n")
    code, _, err = run(band_stats, capsys, config, "--split", "val")
    assert code == 1 and err.strip().count("\n") == 0 and "val_dataset" in err

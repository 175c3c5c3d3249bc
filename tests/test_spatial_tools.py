"""Medical volumes and georeferenced scenes through the front doors: train, test, then infer whole files into
label volumes and label rasters that keep the input's geometry."""

import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio

from densevision.data.synthetic import SCENE_PALETTE
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
TINY_FCDENSENET = dict(type="FCDenseNet", down_layers=(1, 1), bottleneck_layers=1, growth_rate=4, stem_channels=8,
                       drop_rate=0.0)  # fmt: skip


def _train(tmp: Path, base: str, body: str) -> tuple[Path, Path]:
    config = tmp / f"tiny_{base}"
    config.write_text(f"_base_ = [{str(ROOT / 'configs' / base)!r}]\n" + textwrap.dedent(body))
    work_dir = tmp / "work"
    assert load_tool("train").main([str(config), "--work-dir", str(work_dir)]) == 0
    return config, work_dir


@pytest.fixture(scope="module")
def nifti_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nifti")
    body = f"""
        volumes = dict(num_train=2, num_val=1, num_test=1, shape=(32, 32, 8), seed=1)
        _data = dict(root={str(tmp / "volumes")!r}, **volumes)
        model = dict(model=dict({TINY_FCDENSENET!r}, in_chans=3, num_classes=3, _delete_=True))
        train_dataloader = dict(batch_size=4, dataset=_data)
        val_dataloader = dict(dataset=_data)
        test_dataloader = dict(dataset=_data)
        train_cfg = dict(max_epochs=1, val_interval=1)
        param_scheduler = []
        device = "cpu"
    """
    config, work_dir = _train(tmp, "quickstart_nifti_segmentation.py", body)
    return config, work_dir, tmp / "volumes"


def test_nifti_test_tool_reports_dice_and_hd95_per_class(nifti_run, tmp_path, capsys):
    config, work_dir, _ = nifti_run
    args = [str(config), str(work_dir / "best.pth"), "--out", str(tmp_path / "m.json")]
    assert load_tool("test").main(args) == 0
    table = capsys.readouterr().out
    assert "organ" in table and "lesion" in table and "HD95" in table


def test_nifti_infer_writes_label_volumes_with_the_scans_affine_and_shape(nifti_run, tmp_path):
    config, work_dir, volumes = nifti_run
    out = tmp_path / "out"
    args = [str(config), str(work_dir / "best.pth"), str(volumes / "imagesTs"), "--out", str(out), "--device", "cpu"]
    assert load_tool("infer").main(args) == 0
    (scan,) = sorted((volumes / "imagesTs").glob("*.nii.gz"))
    written = nib.load(out / scan.name.replace(".nii.gz", "_mask.nii.gz"))
    original = nib.load(scan)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scenes")
    body = f"""
        _data = dict(root={str(tmp / "scenes")!r}, sizes=dict(train=96, val=64, test=80), window_size=32)
        model = dict(model=dict({TINY_FCDENSENET!r}, in_chans=4, num_classes=4, _delete_=True))
        train_dataloader = dict(dataset=dict(_data, samples_per_epoch=8))
        val_dataloader = dict(dataset=_data)
        test_dataloader = dict(dataset=_data)
        train_cfg = dict(max_epochs=1, val_interval=1)
        param_scheduler = []
        device = "cpu"
    """
    config, work_dir = _train(tmp, "quickstart_geotiff_segmentation.py", body)
    return config, work_dir, tmp / "scenes"


def test_geotiff_infer_writes_label_and_colour_rasters_on_the_scenes_grid(scene_run, tmp_path, capsys):
    config, work_dir, scenes = scene_run
    out = tmp_path / "out"
    args = [str(config), str(work_dir / "best.pth"), str(scenes / "scenes" / "test"), "--out", str(out)]
    assert load_tool("infer").main([*args, "--device", "cpu"]) == 0
    (scene,) = sorted((scenes / "scenes" / "test").glob("*.tif"))
    with rasterio.open(scene) as source, rasterio.open(out / f"{scene.stem}_mask.tif") as labels:
        assert (labels.crs, labels.transform, labels.shape) == (source.crs, source.transform, source.shape)
        assert labels.count == 1 and labels.dtypes[0] == "uint8" and labels.nodata == 255
    with rasterio.open(out / f"{scene.stem}_color.tif") as colour:
        assert [colour.colormap(1)[i][:3] for i in range(len(SCENE_PALETTE))] == [tuple(c) for c in SCENE_PALETTE]
    assert "1 image(s) -> 2 file(s)" in capsys.readouterr().out

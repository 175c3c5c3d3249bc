import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio

from densevision.config import Config
from densevision.data.generated import generate_once
from densevision.data.synthetic import (
    SCENE_CLASSES,
    VOLUME_CLASSES,
    EllipsoidVolumes,
    GeneratedScenes,
    generate_ellipsoid_volumes,
    generate_scenes,
)
from densevision.evaluation import volume as _volume_metric  # noqa: F401  (registers VolumeSegmentationMetric)
from densevision.registry import DATASETS

ROOT = Path(__file__).resolve().parents[2]
SMALL_VOLUMES = dict(num_train=2, num_val=1, num_test=1, shape=(16, 16, 8))


def test_generated_volumes_form_a_decathlon_task_with_every_class(tmp_path):
    root = generate_ellipsoid_volumes(tmp_path / "ell", **SMALL_VOLUMES)
    description = json.loads((root / "dataset.json").read_text())
    assert description["modality"] == {"0": "CT"} and len(description["training"]) == 3
    assert tuple(description["labels"].values()) == VOLUME_CLASSES
    image = nib.load(root / "imagesTr" / "ellipsoid_000.nii.gz")
    labels = np.asarray(nib.load(root / "labelsTr" / "ellipsoid_000.nii.gz").dataobj)
    assert image.shape == (16, 16, 8) and image.get_data_dtype() == np.int16
    assert image.header.get_zooms() == pytest.approx((1.5, 1.5, 3.0)) and int(image.header["qform_code"]) == 1
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (root / "labelsTs" / "ellipsoid_003.nii.gz").is_file()


def test_generation_is_deterministic_and_done_once(tmp_path):
    first = generate_ellipsoid_volumes(tmp_path / "a", **SMALL_VOLUMES)
    second = generate_ellipsoid_volumes(tmp_path / "b", **SMALL_VOLUMES)
    name = "imagesTr/ellipsoid_001.nii.gz"
    assert np.array_equal(nib.load(first / name).get_fdata(), nib.load(second / name).get_fdata())
    stamp = (first / name).stat().st_mtime_ns
    generate_ellipsoid_volumes(tmp_path / "a", **SMALL_VOLUMES)
    assert (first / name).stat().st_mtime_ns == stamp
    generate_ellipsoid_volumes(tmp_path / "a", **{**SMALL_VOLUMES, "num_test": 2})  # other parameters: regenerated
    assert (first / "imagesTs" / "ellipsoid_004.nii.gz").is_file()


def test_generation_never_replaces_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not replacing"):
        generate_once(tmp_path / "mine", {"kind": "x"}, lambda folder: None, marker="made.json", made_by="test")
    assert (tmp_path / "mine" / "scan.nii.gz").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # the temporary folder is gone


def test_ellipsoid_splits_hold_out_the_validation_volumes(tmp_path):
    splits = {split: EllipsoidVolumes(tmp_path / "ell", split, **SMALL_VOLUMES) for split in ("train", "val", "test")}
    assert [len(splits[s].volumes) for s in ("train", "val", "test")] == [2, 1, 1]
    assert splits["val"].classes == VOLUME_CLASSES and splits["test"][0]["image"].shape == (1, 16, 16)


def test_generated_scenes_are_georeferenced_with_nodata(tmp_path):
    root = generate_scenes(tmp_path / "sc", sizes={"train": 64, "val": 48})
    with rasterio.open(root / "scenes" / "train" / "scene_train.tif") as scene:
        assert scene.crs.to_epsg() == 32633 and scene.res == (10.0, 10.0) and scene.count == 4
        assert scene.dtypes[0] == "uint16" and scene.nodata == 0 and scene.descriptions[3] == "nir"
        corner = scene.read(1)[0, 0]
    with rasterio.open(root / "labels" / "train" / "scene_train.tif") as labels:
        values = labels.read(1)
        assert labels.nodata == 255 and labels.transform == scene.transform
    assert corner == 0 and values[0, 0] == 255 and set(np.unique(values)) <= {0, 1, 2, 3, 255}
    train = GeneratedScenes(tmp_path / "sc", "train", sizes={"train": 64, "val": 48}, window_size=32)
    assert train.classes == SCENE_CLASSES and train[0]["image"].shape == (4, 32, 32)
    with pytest.raises(ValueError, match="no generated split 'test'"):
        GeneratedScenes(tmp_path / "sc", "test", sizes={"train": 64, "val": 48})


@pytest.mark.parametrize("name", ["quickstart_nifti_segmentation", "quickstart_geotiff_segmentation"])
def test_quick_start_configs_build_their_datasets(name, tmp_path):
    cfg = Config.fromfile(ROOT / "configs" / f"{name}.py")
    small = (
        dict(root=str(tmp_path / "data"), **SMALL_VOLUMES)
        if "nifti" in name
        else dict(root=str(tmp_path / "data"), sizes={"train": 64, "val": 32, "test": 32})
    )
    for split in ("train", "val", "test"):
        dataset = DATASETS.build({**cfg[f"{split}_dataloader"].dataset, **small})
        sample = dataset[0]
        assert sample["image"].shape[0] == cfg.model.model.in_chans and len(dataset) > 0
    assert cfg.checkpoint.monitor in ("mDice", "mIoU")

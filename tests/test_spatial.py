import logging

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from densevision.data.decathlon import DecathlonDataset
from densevision.data.slicing import VolumeSlicing
from densevision.registry import ConfigError
from densevision.spatial import LABEL_NODATA, predict_geotiff, predict_nifti
from densevision.tasks.segmentation import SegmentationPredictor
from tests.data.test_medical import AFFINE, SHAPE, decathlon, save, volume_pair
from tests.data.test_raster import HEIGHT, TRANSFORM, WIDTH, scene_pair


def threshold(level: float):
    """``predict_probs`` of a 2-class model thresholding the centre channel: class 1 where it exceeds ``level``."""
    calls = []

    def predict_probs(image: torch.Tensor) -> torch.Tensor:
        calls.append(image.clone())
        centre = image[image.shape[0] // 2]
        foreground = (centre > level).float()
        return torch.stack([1 - foreground, foreground])

    return predict_probs, calls


def test_label_volume_keeps_the_scans_affine_header_and_shape(tmp_path):
    image, labels = volume_pair(0)
    scan = save(tmp_path / "scan.nii.gz", image)
    predict_probs, _ = threshold(0.3)  # -10 HU in the (-100, 200) window
    out = predict_nifti(
        scan, predict_probs, tmp_path / "out" / "scan_label.nii.gz", slicing=VolumeSlicing(window=(-100, 200))
    )
    written, source = nib.load(out), nib.load(scan)
    assert written.shape == SHAPE and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(written.get_qform(), source.get_qform(), atol=1e-6)
    np.testing.assert_allclose(written.get_sform(), source.get_sform(), atol=1e-6)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 2)
    assert written.header.get_intent()[0] == "label" and written.header.get_zooms() == source.header.get_zooms()
    np.testing.assert_array_equal(np.asarray(written.dataobj), (labels > 0).astype(np.uint8))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scan_label.nii.gz"]  # no temporary left behind


def test_slices_reach_the_model_as_the_dataset_prepares_them(tmp_path):
    root = decathlon(tmp_path / "T", count=1, modality="MR")
    dataset = DecathlonDataset(root, "trainval", context=1, axis=0)
    predict_probs, calls = threshold(0.0)
    out = predict_nifti(dataset.volumes[0].image, predict_probs, tmp_path / "label.nii", slicing=dataset.slicing)
    assert len(calls) == SHAPE[0] and nib.load(out).shape == SHAPE
    for index in (0, 4, SHAPE[0] - 1):
        assert torch.equal(calls[index], dataset[index]["image"])


def test_four_d_scans_give_three_d_label_volumes(tmp_path):
    image, _ = volume_pair(0)
    scan = save(tmp_path / "mr.nii", np.stack([image, image], axis=-1).astype(np.float32) + 500)
    out = predict_nifti(scan, threshold(0.0)[0], tmp_path / "mr_label.nii.gz", slicing=VolumeSlicing(modality="MR"))
    assert nib.load(out).shape == SHAPE


def test_label_volume_needs_a_nifti_name(tmp_path):
    image, _ = volume_pair(0)
    with pytest.raises(ConfigError, match="nii"):
        predict_nifti(save(tmp_path / "a.nii", image), threshold(0)[0], tmp_path / "a.png", slicing=VolumeSlicing())


def pixel_model(bands: int = 3, classes: int = 3) -> nn.Module:
    """A 1x1 convolution: each pixel's prediction depends on that pixel only."""
    torch.manual_seed(0)
    model = nn.Conv2d(bands, classes, 1)
    model.num_classes = classes
    return model


def predictor(model, **options) -> SegmentationPredictor:
    mean, std = (1010.0, 2010.0, 3010.0), (10.0, 10.0, 10.0)  # bands spread over a few units: classes vary
    return SegmentationPredictor(model, mean=mean, std=std, max_pixel_value=1.0, num_classes=3, **options)


def test_a_scene_predicted_in_blocks_equals_the_whole_scene_prediction(tmp_path):
    scene, _ = scene_pair(tmp_path)
    model = pixel_model()
    whole = predictor(model)
    image = np.where(scene[0] == 0, 0, scene).transpose(1, 2, 0)
    probs = whole.predict_probs(whole.to_tensor(image)).numpy()
    reference = probs.argmax(0)
    tiled = predictor(model, tile_size=12, tile_overlap=0.25, tile_window="hann")
    (out,) = predict_geotiff(
        tmp_path / "scenes" / "area.tif",
        tiled.predict_probs,
        tmp_path / "pred" / "area_label.tif",
        to_tensor=tiled.to_tensor,
        block_size=16,
        halo=3,
    )
    with rasterio.open(out) as src:
        labels = src.read(1)
    top_two = np.sort(probs, axis=0)[-2:]
    decided = (top_two[1] - top_two[0]) > 1e-5  # away from ties, blending rounding cannot flip the class
    valid = scene[0] != 0
    assert decided[valid].mean() > 0.99
    np.testing.assert_array_equal(labels[valid & decided], reference[valid & decided])
    assert np.all(labels[~valid] == LABEL_NODATA) and len(np.unique(labels[valid])) > 1


def test_label_raster_keeps_crs_transform_and_is_a_tiled_compressed_uint8(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # rasterio passes GDAL's messages to logging
    scene_pair(tmp_path)
    model = pixel_model()
    written = predict_geotiff(
        tmp_path / "scenes" / "area.tif",
        predictor(model).predict_probs,
        tmp_path / "pred" / "area_label.tif",
        halo=0,  # one block, as tools/infer.py predicts scenes of this size
        colour_path=tmp_path / "pred" / "area_colour.tif",
        palette=[(10, 20, 30), (40, 50, 60), (70, 80, 90)],
    )
    with rasterio.open(tmp_path / "scenes" / "area.tif") as scene, rasterio.open(written[0]) as label:
        assert label.crs == scene.crs and label.crs.to_epsg() == 32633
        assert label.transform == scene.transform == TRANSFORM
        assert (label.height, label.width, label.count, label.dtypes[0]) == (HEIGHT, WIDTH, 1, "uint8")
        assert label.nodata == LABEL_NODATA and label.compression.value == "DEFLATE"
        assert label.profile["blockxsize"] == 256 and label.profile["blockysize"] == 256
        indices = label.read(1)
    with rasterio.open(written[1]) as colour:
        assert colour.colormap(1)[1] == (40, 50, 60, 255) and colour.colormap(1)[LABEL_NODATA][3] == 0
        assert colour.colorinterp[0].name == "palette" and np.array_equal(colour.read(1), indices)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["area_colour.tif", "area_label.tif"]
    said = caplog.text + "".join(capfd.readouterr())
    assert "GDAL signalled an error" not in said and "PhotometricInterpretation" not in said


def test_the_model_sees_selected_bands_and_one_block_with_its_halo_at_a_time(tmp_path):
    scene_pair(tmp_path)
    seen = []

    def predict_probs(image):
        seen.append(tuple(image.shape))
        return torch.zeros(2, *image.shape[1:])

    predict_geotiff(
        tmp_path / "scenes" / "area.tif", predict_probs, tmp_path / "l.tif", bands=(3, 1), block_size=16, halo=4
    )
    assert len(seen) == 3 * 4 and {shape[0] for shape in seen} == {2}  # one call per 16x16 block of the 40x50 scene
    assert max(shape[1] for shape in seen) == max(shape[2] for shape in seen) == 16 + 2 * 4  # never the scene
    with pytest.raises(ConfigError, match="block_size"):
        predict_geotiff(tmp_path / "scenes" / "area.tif", predict_probs, tmp_path / "l.tif", block_size=0)

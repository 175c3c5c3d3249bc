import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from densevision.config import Config
from densevision.data.checks import DatasetError
from densevision.data.decathlon import DecathlonDataset, validation_cases
from densevision.data.medical import NiftiFolderDataset, slicing_from_config
from densevision.data.slicing import VolumeSlicing
from densevision.evaluation import volume as _volume_metric  # noqa: F401  (registers VolumeSegmentationMetric)
from densevision.formats.nifti import volume_data
from densevision.registry import ConfigError
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("background", "organ", "lesion")
AFFINE = np.array([[0.0, -1.5, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (12, 10, 6)


def volume_pair(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An int16 'CT' volume and its labels: a box of organ in slices 2-3, one lesion voxel, noise elsewhere."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[3:8, 2:7, 2:4] = 1
    labels[5, 4, 3] = 2
    image = (np.array([-50, 60, 150])[labels] + rng.integers(-20, 20, shape)).astype(np.int16)
    return image, labels


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = nib.Nifti1Image(data, affine)
    volume.set_qform(affine, code=1)
    nib.save(volume, path)
    return path


def decathlon(root: Path, count: int = 3, *, suffix: str = ".nii.gz", modality="CT", test: int = 0) -> Path:
    """A Decathlon task folder of ``count`` training cases (and ``test`` labelled test cases)."""
    training, tests = [], []
    for number in range(count + test):
        image, labels = volume_pair(number)
        name = f"case_{number:02d}{suffix}"
        split = ("Ts", tests) if number >= count else ("Tr", training)
        save(root / f"images{split[0]}" / name, image)
        save(root / f"labels{split[0]}" / name, labels)
        if number >= count:
            tests.append(f"./imagesTs/{name}")
        else:
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    description = {
        "labels": {str(i): name for i, name in enumerate(CLASSES)},
        "modality": {"0": modality},
        "training": training,
        "test": tests,
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_decathlon_layout_gives_classes_modality_and_disjoint_splits(tmp_path):
    root = decathlon(tmp_path / "Task01", count=5)
    train = DecathlonDataset(root, "train", val_fraction=0.4)
    val = DecathlonDataset(root, "val", val_fraction=0.4)
    everything = DecathlonDataset(root, "trainval")
    assert train.classes == CLASSES and train.slicing.modality == "CT"
    names = lambda ds: {v.name for v in ds.volumes}  # noqa: E731
    assert len(names(val)) == 2 and names(train) | names(val) == names(everything) and not names(train) & names(val)
    assert len(everything) == 5 * SHAPE[2]  # every slice along the last axis


def test_nnunet_v2_label_mapping_and_mr_modality(tmp_path):
    root = decathlon(tmp_path / "Task02", modality="T2")
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {"background": 0, "organ": 1, "lesion": 2}
    (root / "dataset.json").write_text(json.dumps(description))
    dataset = DecathlonDataset(root, "trainval")
    assert dataset.classes == CLASSES and dataset.slicing.modality == "MR"


def test_validation_cases_are_seeded_and_never_all():
    names = [f"c{i}" for i in range(10)]
    assert validation_cases(names, 0.2, 0) == validation_cases(list(reversed(names)), 0.2, 0)
    assert len(validation_cases(names, 0.2, 0)) == 2 and len(validation_cases(["a", "b"], 0.01, 0)) == 1
    assert validation_cases(["a"], 0.5, 0) == set() and validation_cases(names, 0.0, 0) == set()


def test_a_sample_follows_the_segmentation_contract(tmp_path):
    dataset = DecathlonDataset(decathlon(tmp_path / "T"), "trainval", window=(-100, 200))
    sample = dataset[3]
    image, mask, meta = sample["image"], sample["mask"], sample["meta"]
    assert image.dtype == torch.float32 and image.shape == (1, SHAPE[0], SHAPE[1])
    assert mask.dtype == torch.int64 and mask.shape == SHAPE[:2]
    _, labels = volume_pair(0)
    assert torch.equal(mask, torch.from_numpy(labels[:, :, 3].astype(np.int64)))
    assert meta["volume"] == "case_00" and meta["slice"] == 3 and meta["num_slices"] == SHAPE[2]
    assert meta["path"].endswith("imagesTr/case_00.nii.gz") and meta["axis"] == 2
    assert meta["spacing"] == pytest.approx((1.2, 1.5, 3.0))  # H, W and slice step, from the affine's columns
    assert dataset.metainfo == {"classes": CLASSES, "palette": dataset.palette, "ignore_index": 255}


def test_ct_window_clips_then_scales_to_unit_range():
    slicing = VolumeSlicing(window=(-100, 300))
    values = np.array([[-1000.0], [-100.0], [100.0], [300.0], [3000.0]])
    assert slicing.normalise(values).ravel().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_mr_zscore_over_nonzero_voxels_per_volume():
    rng = np.random.default_rng(0)
    volume = rng.normal(500, 80, (8, 8, 5))
    volume[:2] = 0  # background outside the head
    slicing = VolumeSlicing(modality="MR")
    stats = slicing.statistics(volume)
    image = slicing.stack(volume, 2, stats)[..., 0]
    inside = volume[2:, :, 2]
    expected = (inside - volume[2:].mean()) / volume[2:].std()
    np.testing.assert_allclose(image[2:], expected, rtol=1e-4, atol=1e-4)
    assert np.all(image[:2] == 0)


def test_context_slices_become_channels_and_edges_repeat(tmp_path):
    dataset = DecathlonDataset(decathlon(tmp_path / "T"), "trainval", context=2)
    first, inner = dataset[0]["image"], dataset[3]["image"]
    assert first.shape[0] == 5  # in_chans = 2k + 1
    assert torch.equal(first[0], first[2]) and torch.equal(first[1], first[2])  # slices -2 and -1 repeat slice 0
    assert torch.equal(inner[2], dataset[3]["image"][2]) and torch.equal(inner[3], dataset[4]["image"][2])


def test_slicing_along_another_axis(tmp_path):
    dataset = DecathlonDataset(decathlon(tmp_path / "T"), "trainval", axis=0)
    sample = dataset[5]
    assert len(dataset) == 3 * SHAPE[0] and sample["image"].shape == (1, SHAPE[1], SHAPE[2])
    _, labels = volume_pair(0)
    assert torch.equal(sample["mask"], torch.from_numpy(labels[5].astype(np.int64)))
    assert sample["meta"]["spacing"] == pytest.approx((1.5, 3.0, 1.2))


def test_four_d_volumes_stack_modalities_per_slice(tmp_path):
    image, labels = volume_pair(0)
    modalities = np.stack([image, image * 2], axis=-1).astype(np.float32) + 1000
    save(tmp_path / "images" / "a.nii", modalities)
    save(tmp_path / "labels" / "a.nii", labels)
    dataset = NiftiFolderDataset(tmp_path / "images", tmp_path / "labels", CLASSES, modality="MR", context=1)
    sample = dataset[2]["image"]
    assert sample.shape == (6, *SHAPE[:2]) and dataset.channels_per_band == 3 and dataset.modalities == 2


def test_empty_slices_are_sampled_at_the_configured_rate(tmp_path):
    root = decathlon(tmp_path / "T")
    assert len(DecathlonDataset(root, "trainval", empty_slice_rate=0.0)) == 3 * 2  # slices 2 and 3 have foreground
    rate = DecathlonDataset(root, "trainval", empty_slice_rate=0.5)
    assert len(rate) == 6 + round(0.5 * 3 * 4)
    drawn = {(rate[i]["meta"]["volume"], rate[i]["meta"]["slice"]) for i in range(6, len(rate)) for _ in range(3)}
    assert all(s not in (2, 3) for _, s in drawn) and len(drawn) > 1
    with pytest.raises(ConfigError, match="empty_slice_rate"):
        DecathlonDataset(root, "trainval", empty_slice_rate=1.5)


def test_uncompressed_volumes_are_read_through_a_proxy_and_one_volume_is_cached(tmp_path):
    dataset = DecathlonDataset(decathlon(tmp_path / "T", suffix=".nii"), "trainval")
    image = nib.load(dataset.volumes[0].image)
    assert isinstance(volume_data(image, dataset.volumes[0].image), nib.arrayproxy.ArrayProxy)
    dataset[0], dataset[len(dataset) - 1]
    assert dataset._cached[0] == 2  # only the last volume read is held
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._cached is None and torch.equal(clone[7]["image"], dataset[7]["image"])


def test_folder_pairs_by_name_with_suffixes(tmp_path):
    image, labels = volume_pair(0)
    save(tmp_path / "img" / "case_0000.nii.gz", image)
    save(tmp_path / "lab" / "case.nii.gz", labels)
    dataset = NiftiFolderDataset(tmp_path / "img", tmp_path / "lab", CLASSES, img_suffix="_0000.nii.gz")
    assert len(dataset) == SHAPE[2] and dataset.read_mask(3).max() == 2
    with pytest.raises(DatasetError, match="no label volume"):
        NiftiFolderDataset(tmp_path / "img", tmp_path / "img", CLASSES, img_suffix="_0000.nii.gz")


def test_check_counts_voxels_and_returns_a_summary(tmp_path):
    summary = DecathlonDataset(decathlon(tmp_path / "T"), "trainval").check()
    assert summary.num_images == 3 and summary.unit == "voxels" and summary.counts[2] == 3
    assert sum(summary.counts) == 3 * np.prod(SHAPE)


def test_check_names_a_label_volume_of_another_shape(tmp_path):
    root = decathlon(tmp_path / "T")
    save(root / "labelsTr" / "case_01.nii.gz", np.zeros((12, 10, 5), dtype=np.uint8))
    with pytest.raises(DatasetError) as err:
        DecathlonDataset(root, "trainval").check()
    assert "labelsTr/case_01.nii.gz" in str(err.value) and "(12, 10, 5)" in str(err.value)
    assert "(12, 10, 6)" in str(err.value) and "\n" not in str(err.value)


def test_check_names_a_misaligned_label_volume_beyond_the_tolerance(tmp_path):
    root = decathlon(tmp_path / "T")
    _, labels = volume_pair(1)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    save(root / "labelsTr" / "case_01.nii.gz", labels, shifted)
    with pytest.raises(DatasetError, match=r"labelsTr/case_01.nii.gz is not aligned .* differ by 0.5 .* 10.5 vs 10"):
        DecathlonDataset(root, "trainval").check()
    assert DecathlonDataset(root, "trainval", affine_tolerance=0.6).check().num_images == 3


def test_check_names_a_label_value_outside_the_classes(tmp_path, capsys):
    root = decathlon(tmp_path / "T")
    _, labels = volume_pair(2)
    labels[0, 0, 0] = 7
    save(root / "labelsTr" / "case_02.nii.gz", labels)
    problems = []
    summary = DecathlonDataset(root, "trainval").check(on_problem=problems.append)
    assert summary.num_problems == 1 and "[7]" in problems[0] and "case_02.nii.gz" in problems[0]


def test_check_names_a_truncated_volume(tmp_path):
    root = decathlon(tmp_path / "T")
    path = root / "imagesTr" / "case_01.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    problems = []
    DecathlonDataset(root, "trainval").check(on_problem=problems.append)
    assert len(problems) == 1 and "cannot read image volume" in problems[0] and str(path) in problems[0]


def test_check_reports_channels_unlike_the_model(tmp_path):
    problems = []
    DecathlonDataset(decathlon(tmp_path / "T"), "trainval", context=1).check(on_problem=problems.append, channels=5)
    assert len(problems) == 3 and "in_chans=5" in problems[0]


def test_missing_decathlon_task_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset.json is missing .*imagesTr/ and labelsTr/") as err:
        DecathlonDataset(tmp_path / "Task09_Spleen")
    assert "\n" not in str(err.value)


def test_the_spleen_config_without_data_is_one_error_line(tmp_path, capsys):
    train = load_tool("train")
    missing = tmp_path / "Task09_Spleen"
    code = train.main(
        [
            str(ROOT / "configs" / "fcdensenet_msd_spleen.py"),
            "--work-dir",
            str(tmp_path / "work"),
            "--cfg-options",
            f"train_dataloader.dataset.root={missing}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and str(missing / "dataset.json") in err


def test_spleen_config_follows_the_tiramisu_recipe_on_2_5d_slices():
    cfg = Config.fromfile(ROOT / "configs" / "fcdensenet_msd_spleen.py")
    assert cfg.model.model.type == "fcdensenet103" and cfg.model.model.in_chans == 5
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.lr) == ("RMSprop", 1e-3)
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == "DecathlonDataset" and dataset.root == "data/msd/Task09_Spleen"
    assert dataset.context == 2 and dataset.modality == "CT" and cfg.val_evaluator.type == "VolumeSegmentationMetric"
    assert slicing_from_config(cfg.test_dataloader.dataset) == VolumeSlicing(context=2, window=(-57, 164))


def test_slicing_from_a_decathlon_config_reads_the_modality(tmp_path):
    root = decathlon(tmp_path / "T", modality="MRI")
    assert slicing_from_config({"type": "DecathlonDataset", "root": str(root), "context": 1}).modality == "MR"


@pytest.mark.parametrize("empty_slice_rate", [1.0, 0.5])  # 0.5 reads every label volume while the dataset is built
def test_check_lists_every_bad_volume_in_one_run(tmp_path, empty_slice_rate):
    root = decathlon(tmp_path / "T")
    save(root / "labelsTr" / "case_01.nii.gz", np.zeros((12, 10, 5), dtype=np.uint8))
    truncated = root / "imagesTr" / "case_02.nii.gz"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    problems = []
    DecathlonDataset(root, "trainval", empty_slice_rate=empty_slice_rate).check(on_problem=problems.append)
    assert len(problems) == 2
    assert "labelsTr/case_01.nii.gz has shape (12, 10, 5)" in problems[0] and str(truncated) in problems[1]

from pathlib import Path

import pytest

from densevision.config import Config
from densevision.data.transforms import build_pipeline
from densevision.registry import DATASETS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "datasets"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
CLASSIFICATION_TYPES = {"ImageFolderDataset", "CIFAR10Folder", "ShapesClassification"}


def test_all_expected_configs_exist():
    expected = {"camvid", "shapes_segmentation", "shapes_classification", "imagenet", "cifar10", "mask_folder_example"}
    assert expected <= {Path(name).stem for name in CONFIGS}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_config_defines_registered_dataset_with_valid_pipeline(name, split):
    cfg = Config.fromfile(CONFIG_DIR / name)
    dataset = cfg[f"{split}_dataset"]
    assert dataset.type in DATASETS
    assert cfg[f"{split}_dataloader"].dataset == dataset
    task = "classification" if dataset.type in CLASSIFICATION_TYPES else "segmentation"
    assert len(build_pipeline(dataset.pipeline, task=task).transforms) >= 1


def test_camvid_config_follows_the_paper():
    cfg = Config.fromfile(CONFIG_DIR / "camvid.py")
    assert cfg.train_dataset.root == "data/camvid" and cfg.train_dataset.layout == "segnet"
    crop = cfg.train_dataset.pipeline[0]
    assert (crop.type, crop.height, crop.width) == ("RandomCrop", 224, 224)
    assert [t.type for t in cfg.val_dataset.pipeline] == ["Normalize"]  # full images
    assert cfg.train_dataloader.batch_size == 3


@pytest.mark.parametrize("name", ["shapes_segmentation.py", "shapes_classification.py"])
def test_shapes_configs_build(name, tmp_path):
    cfg = Config.fromfile(CONFIG_DIR / name)
    small = dict(root=str(tmp_path / "shapes"), num_train=3, num_val=3, num_test=3)
    dataset = DATASETS.build({**cfg.val_dataset, **small})
    assert len(dataset) == 3 and dataset[0]["image"].shape == (3, 64, 64)

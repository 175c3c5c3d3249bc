import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.config import load_config
from densevision.data.checks import DatasetError
from densevision.data.image_folder import CIFAR10Folder, ImageFolderDataset
from densevision.registry import DATASETS
from densevision.splits import split_dataset_cfg
from tests.data.fakes import random_image


def _class_tree(root, counts):
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(random_image(rng, 9, 11)).save(root / name / f"{i}.png")


def test_classes_from_sorted_subfolders(tmp_path):
    _class_tree(tmp_path, {"dog": 2, "cat": 1})
    (tmp_path / "dog" / "readme.txt").write_text("ignored: not an image")
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes == ("cat", "dog") and dataset.num_classes == 2 and len(dataset) == 3
    sample = dataset[2]
    assert sample["label"].dtype == torch.int64 and int(sample["label"]) == 1
    assert sample["image"].shape == (3, 9, 11) and sample["image"].dtype == torch.float32
    assert sample["meta"] == {"path": str(tmp_path / "dog" / "1.png"), "ori_shape": (9, 11)}
    assert dataset.check().counts == [1, 2]
    assert dataset.metainfo["image_format"] == {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}


def test_given_classes_pick_and_order_folders(tmp_path):
    _class_tree(tmp_path, {"a": 1, "b": 2, "c": 1})
    dataset = ImageFolderDataset(tmp_path, classes=["c", "a"])
    assert dataset.classes == ("c", "a")
    assert [int(dataset[i]["label"]) for i in range(len(dataset))] == [0, 1]
    with pytest.raises(DatasetError, match=r"\['z'\] not found"):
        ImageFolderDataset(tmp_path, classes=["a", "z"])


def test_pipeline_applies(tmp_path):
    _class_tree(tmp_path, {"a": 1})
    sample = ImageFolderDataset(tmp_path, pipeline=[dict(type="CenterCrop", height=4, width=6)])[0]
    assert sample["image"].shape == (3, 4, 6)


def test_empty_class_folder_named(tmp_path):
    _class_tree(tmp_path, {"a": 1, "b": 0})
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=f"no images.*{tmp_path / 'b'}"):
        ImageFolderDataset(tmp_path)


@pytest.mark.parametrize("seed", [0, 1])
def test_train_and_val_split_a_folder_by_a_seeded_permutation(tmp_path, seed):
    _class_tree(tmp_path, {"a": 4, "b": 3, "c": 3})
    everything = ImageFolderDataset(tmp_path).samples

    def part(split, split_seed=seed):
        return ImageFolderDataset(tmp_path, split=split, val_size=3, split_seed=split_seed).samples

    train, val = part("train"), part("val")
    assert len(val) == 3 and sorted(train + val) == sorted(everything)  # disjoint, and every image in one of them
    assert train == [s for s in everything if s not in val]  # the rest, in the folder's order
    assert part("val") == val and {tuple(part("val", s)) for s in range(6)} != {tuple(val)}  # seeded, the seed draws


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(split="val"), "val_size must be an int in 1..4"),
        (dict(split="train", val_size=5), "got 5"),
        (dict(split="test", val_size=1), "unknown ImageFolderDataset split 'test'"),
    ],
)
def test_bad_split_or_val_size_named(tmp_path, options, message):
    _class_tree(tmp_path, {"a": 2, "b": 3})
    with pytest.raises(DatasetError, match=message):
        ImageFolderDataset(tmp_path, **options)


def test_msdnet_imagenet_budget_calibrates_on_training_images_held_out_from_training(tmp_path):
    _class_tree(tmp_path / "train", {"n01": 4, "n02": 4})
    _class_tree(tmp_path / "val", {"n01": 1, "n02": 1})
    cfg = load_config("configs/msdnet_imagenet_budget.py", [f"data_root={tmp_path}", "held_out.val_size=3"])
    train, val, test = (DATASETS.build(split_dataset_cfg(cfg, split)) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (5, 3, 2)
    assert not set(train.samples) & set(val.samples) and {p.parent.parent for p, _ in val.samples} == {
        tmp_path / "train"
    }
    assert {p.parent.parent for p, _ in test.samples} == {tmp_path / "val"}


def test_no_class_folders_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} not found"):
        ImageFolderDataset(tmp_path / "nope")


def test_check_reports_every_unreadable_image_and_counts_the_others(tmp_path):
    _class_tree(tmp_path, {"a": 3, "b": 2})
    for name in ("a/0.png", "a/2.png", "b/1.png"):
        (tmp_path / name).write_bytes(b"garbage")
    problems = []
    summary = ImageFolderDataset(tmp_path).check(on_problem=problems.append)
    assert [line.split()[3] for line in problems] == [str(tmp_path / n) for n in ("a/0.png:", "a/2.png:", "b/1.png:")]
    assert summary.counts == [1, 1] and (summary.num_problems, summary.num_bad) == (3, 3)


def test_check_finds_grey_16bit_and_rgba_images_among_rgb_ones(tmp_path):
    _class_tree(tmp_path, {"a": 3, "b": 2})
    Image.fromarray(np.zeros((9, 11), np.uint16)).save(tmp_path / "a" / "1.png")
    Image.new("RGBA", (11, 9)).save(tmp_path / "b" / "0.png")
    dataset = ImageFolderDataset(tmp_path)
    with pytest.raises(
        DatasetError, match=r"a/1\.png is 1-channel uint16, unlike 3 of the 5 images \(3-channel uint8\)"
    ):
        dataset.check()
    problems = []
    dataset.check(on_problem=problems.append)
    assert [p.split()[1] for p in problems] == [str(tmp_path / "a" / "1.png"), str(tmp_path / "b" / "0.png")]
    assert "4-channel uint8" in problems[1]


def test_check_finds_images_smaller_than_the_training_crop(tmp_path):
    _class_tree(tmp_path, {"a": 2})
    Image.fromarray(np.zeros((5, 11, 3), np.uint8)).save(tmp_path / "a" / "1.png")
    dataset = ImageFolderDataset(
        tmp_path, pipeline=[dict(type="Normalize"), dict(type="RandomCrop", height=8, width=8)]
    )
    message = r"1\.png is 5x11 \(HxW\), smaller than the 8x8 crop of pipeline\[1\] RandomCrop"
    with pytest.raises(DatasetError, match=message):
        dataset.check()
    with pytest.raises(DatasetError, match=message):  # and when read without the check (check_datasets=False)
        dataset[1]


def test_hidden_files_are_skipped(tmp_path):
    _class_tree(tmp_path, {"a": 1})
    (tmp_path / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    dataset = ImageFolderDataset(tmp_path)
    assert len(dataset) == 1 and dataset.check().skipped == [tmp_path / "a" / "._0.png"]


def test_check_names_unreadable_image(tmp_path):
    _class_tree(tmp_path, {"a": 2})
    (tmp_path / "a" / "1.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=f"cannot read image {tmp_path / 'a' / '1.png'}"):
        ImageFolderDataset(tmp_path).check()


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """CIFAR-10 batches in torchvision's pickle format; md5 checks disabled because the bytes are fake."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [3, 7]}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return tmp_path, batches


def test_cifar10_reads_python_batches(fake_cifar):
    root, batches = fake_cifar
    train = CIFAR10Folder(root, "train", pipeline=[dict(type="HorizontalFlip", p=1.0)])
    test = CIFAR10Folder(root, "test")
    assert (len(train), len(test), train.num_classes, train.classes[3]) == (10, 2, 10, "cat")
    sample = test[1]
    expected = batches["test_batch"]["data"][1].reshape(3, 32, 32)
    np.testing.assert_array_equal(sample["image"].numpy(), expected)
    assert int(sample["label"]) == 7 and sample["meta"]["ori_shape"] == (32, 32)
    np.testing.assert_array_equal(
        train[0]["image"].numpy(), batches["data_batch_1"]["data"][0].reshape(3, 32, 32)[..., ::-1]
    )
    assert test.check().counts == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert test.metainfo["image_format"] == {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}


def test_cifar10_missing_batches_named(tmp_path):
    with pytest.raises(DatasetError, match=r"data_batch_1.*batches\.meta in .*cifar-10-batches-py"):
        CIFAR10Folder(tmp_path, "train")


def test_cifar10_corrupt_batches_reported(fake_cifar, monkeypatch):
    import torchvision.datasets.cifar as cifar

    root, _ = fake_cifar
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: False)
    with pytest.raises(DatasetError, match="failed torchvision's check"):
        CIFAR10Folder(root, "test")

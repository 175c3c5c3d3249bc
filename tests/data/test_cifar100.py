"""CIFAR100Folder: CIFAR-100's python batches (fine labels) and the validation split held out from training."""

import pickle

import numpy as np
import pytest

from densevision.data.checks import DatasetError
from densevision.data.image_folder import CIFAR100Folder

NUM_TRAIN = 12


@pytest.fixture
def fake_cifar100(tmp_path, monkeypatch):
    """CIFAR-100's three pickles in the real format (latin-1 dicts of uint8 rows, fine and coarse labels, a meta file
    of names); md5 checks disabled because the bytes are fake."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, count in (("train", NUM_TRAIN), ("test", 3)):
        batches[name] = {
            "filenames": [f"{name}_{i}.png" for i in range(count)],
            "batch_label": f"{name} batch",
            "fine_labels": [int(label) for label in rng.integers(0, 100, count)],
            "coarse_labels": [int(label) for label in rng.integers(0, 20, count)],
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    meta = {
        "fine_label_names": [f"fine{i:02d}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return tmp_path, batches


def test_reads_fine_labels_and_images(fake_cifar100):
    root, batches = fake_cifar100
    test = CIFAR100Folder(root, "test")
    assert (len(test), test.num_classes, test.classes[7]) == (3, 100, "fine07")
    sample = test[2]
    np.testing.assert_array_equal(sample["image"].numpy(), batches["test"]["data"][2].reshape(3, 32, 32))
    assert int(sample["label"]) == batches["test"]["fine_labels"][2]
    assert test.metainfo["image_format"] == {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}
    assert sum(test.check().counts) == 3


@pytest.mark.parametrize("val_size", [1, 5])
def test_val_is_held_out_of_train_seeded(fake_cifar100, val_size):
    root, batches = fake_cifar100

    def sources(split, seed=0):
        dataset = CIFAR100Folder(root, split, val_size=val_size, split_seed=seed)
        rows = {bytes(row): i for i, row in enumerate(batches["train"]["data"])}
        return [rows[bytes(dataset[i]["image"].numpy().astype(np.uint8).reshape(-1))] for i in range(len(dataset))]

    train, val = sources("train"), sources("val")
    assert len(val) == val_size and sorted(train + val) == list(range(NUM_TRAIN))
    assert sources("val") == val  # the same images every run
    assert {tuple(sources("val", seed)) for seed in range(5)} != {tuple(val)}  # the seed draws them
    labels = [int(CIFAR100Folder(root, "val", val_size=val_size)[i]["label"]) for i in range(val_size)]
    assert labels == [batches["train"]["fine_labels"][i] for i in val]


def test_no_val_size_trains_on_everything(fake_cifar100):
    root, _ = fake_cifar100
    assert len(CIFAR100Folder(root, "train", val_size=0)) == NUM_TRAIN


@pytest.mark.parametrize(
    ("split", "val_size", "message"),
    [("val", 0, "val_size must be an int in 1..11"), ("train", NUM_TRAIN, "got 12"), ("valid", 5, "unknown CIFAR-100")],
)
def test_bad_split_or_val_size_named(fake_cifar100, split, val_size, message):
    root, _ = fake_cifar100
    with pytest.raises(DatasetError, match=message):
        CIFAR100Folder(root, split, val_size=val_size)


def test_missing_batches_named(tmp_path):
    with pytest.raises(
        DatasetError, match=r"CIFAR-100 val batches not found: expected train, meta in .*cifar-100-python"
    ):
        CIFAR100Folder(tmp_path, "val")

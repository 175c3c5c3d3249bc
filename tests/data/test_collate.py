import pytest
import torch
from torch.utils.data import DataLoader

from densevision.data import collate
from densevision.data.shapes import ShapesSegmentation


def _sample(i, size=(4, 5)):
    return {
        "image": torch.full((3, *size), float(i)),
        "mask": torch.full(size, i, dtype=torch.int64),
        "label": torch.tensor(i),
        "boxes": torch.zeros((i, 4)),
        "meta": {"path": f"{i}.png"},
    }


def test_stacks_tensors_and_keeps_lists():
    batch = collate([_sample(1), _sample(2)])
    assert batch["image"].shape == (2, 3, 4, 5) and batch["image"][1].eq(2).all()
    assert batch["mask"].shape == (2, 4, 5) and batch["mask"].dtype == torch.int64
    assert batch["label"].tolist() == [1, 2]
    assert [b.shape[0] for b in batch["boxes"]] == [1, 2]  # per-image boxes stay a list
    assert batch["meta"] == [{"path": "1.png"}, {"path": "2.png"}]


def test_different_sizes_explain_the_fix():
    with pytest.raises(ValueError, match=r"cannot stack 'image'.*batch_size=1"):
        collate([_sample(1), _sample(2, size=(6, 5))])


@pytest.mark.parametrize("samples", [[], [{"image": torch.zeros(1)}, {"mask": torch.zeros(1)}]])
def test_empty_or_inconsistent_samples(samples):
    with pytest.raises(ValueError):
        collate(samples)


def test_dataloader_over_a_dataset(tmp_path):
    dataset = ShapesSegmentation(tmp_path / "s", "train", num_train=4, num_val=0, num_test=0, image_size=32)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["mask"].shape == (3, 32, 32)
    assert [m["ori_shape"] for m in batch["meta"]] == [(32, 32)] * 3

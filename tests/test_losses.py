import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densevision.losses import (
    CombinedLoss,
    CrossEntropyLoss,
    median_frequency_weights,
)
from densevision.registry import LOSSES, ConfigError

VOID = 11
NUM_CLASSES = 11


def make_batch(seed=0, void_fraction=0.3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, NUM_CLASSES, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randint(0, NUM_CLASSES, (2, 8, 8), generator=generator)
    target[torch.rand(target.shape, generator=generator) < void_fraction] = VOID
    return logits, target


def torch_ce_on_labelled_pixels(logits, target, weight=None):
    """torch's cross-entropy on the labelled pixels only, gathered explicitly: the void pixels never reach it."""
    valid = target != VOID
    flat_logits = logits.permute(0, 2, 3, 1)[valid]
    return F.cross_entropy(flat_logits, target[valid], weight=weight)


class MaskList:
    def __init__(self, masks, num_classes=4):
        self.num_classes = num_classes
        self.masks = [np.asarray(m, dtype=np.uint8) for m in masks]

    def __len__(self):
        return len(self.masks)

    def read_mask(self, index):
        return self.masks[index]


class Unreadable:
    num_classes = 2

    def __len__(self):
        return 1

    def read_mask(self, index):
        raise AssertionError("the dataset must not be read when no loss needs class weights")


@pytest.mark.parametrize("class_weight", [None, [float(c + 1) for c in range(NUM_CLASSES)]])
def test_cross_entropy_equals_torch_on_labelled_pixels(class_weight):
    logits, target = make_batch()
    loss = LOSSES.build(dict(type="CrossEntropyLoss", ignore_index=VOID, class_weight=class_weight))
    weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float64)
    assert loss(logits, target).item() == pytest.approx(torch_ce_on_labelled_pixels(logits, target, weight).item())


def test_void_pixels_get_no_gradient():
    logits, target = make_batch()
    logits.requires_grad_(True)
    CrossEntropyLoss(ignore_index=VOID)(logits, target).backward()
    grad_per_pixel = logits.grad.abs().sum(dim=1)
    void = target == VOID
    assert void.any() and (~void).any()
    assert torch.all(grad_per_pixel[void] == 0)
    assert torch.all(grad_per_pixel[~void] > 0)


@pytest.mark.parametrize("class_weight", [None, [1.0] * NUM_CLASSES])
def test_all_void_batch_gives_zero_loss_not_nan(class_weight):
    logits, target = make_batch(void_fraction=1.0)
    logits.requires_grad_(True)
    value = CrossEntropyLoss(ignore_index=VOID, class_weight=class_weight)(logits, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_median_frequency_weights_hand_computed():
    masks = [
        [[0, 0], [0, 1]],  # 4 labelled pixels: class 0 ×3, class 1 ×1
        [[1, 1], [VOID, 2]],  # 3 labelled pixels: class 1 ×2, class 2 ×1
    ]
    # freq(0) = 3/4, freq(1) = 3/(4+3), freq(2) = 1/3; median = 3/7; class 3 never appears -> 0.
    weights = median_frequency_weights(MaskList(masks), num_classes=4, ignore_index=VOID)
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([4 / 7, 1.0, 9 / 7, 0.0])


def test_median_frequency_weights_reject_labels_out_of_range():
    with pytest.raises(ValueError, match=r"mask 1 of MaskList has label\(s\) \[7\]"):
        median_frequency_weights(MaskList([[[0]], [[7]]]), num_classes=4, ignore_index=VOID)
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights(MaskList([[[VOID]]]), num_classes=4, ignore_index=VOID)


def test_median_frequency_loss_must_be_prepared_and_survives_a_checkpoint():
    logits, target = make_batch()
    loss = CrossEntropyLoss(ignore_index=VOID, class_weight="median_frequency")
    assert loss.needs_class_weight
    with pytest.raises(RuntimeError, match="before its weights were set"):
        loss(logits, target)
    weights = torch.linspace(0.5, 2.0, NUM_CLASSES)
    loss.set_class_weight(weights)
    assert not loss.needs_class_weight
    expected = torch_ce_on_labelled_pixels(logits, target, weights.double())
    assert loss(logits, target).item() == pytest.approx(expected.item())

    restored = CrossEntropyLoss(ignore_index=VOID, class_weight="median_frequency")
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.class_weight, weights)
    assert restored(logits, target).item() == pytest.approx(expected.item())


def test_unweighted_loss_has_no_weight_in_its_state():
    assert "class_weight" not in CrossEntropyLoss().state_dict()
    with pytest.raises(ConfigError, match="'inverse'"):
        CrossEntropyLoss(class_weight="inverse")


def test_prepare_fills_nested_median_frequency_weights_once():
    combined = CombinedLoss(
        losses=[
            dict(type="CrossEntropyLoss", ignore_index=VOID, class_weight="median_frequency"),
            dict(type="DiceLoss"),
        ]
    )
    combined.prepare(MaskList([[[0, 0, 0, 1]]], num_classes=2))
    # freq 3/4 and 1/4, median 1/2
    assert combined.losses[0].class_weight.tolist() == pytest.approx([2 / 3, 2.0])
    combined.prepare(Unreadable())  # weights already set: the dataset is not read again
    CrossEntropyLoss().prepare(Unreadable())


@pytest.mark.parametrize("name", ["DiceLoss", "FocalLoss", "LovaszLoss"])
def test_smp_losses_from_config_ignore_void(name):
    logits, target = make_batch()
    loss = LOSSES.build(dict(type=name, ignore_index=VOID))
    value = loss(logits, target)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0

    void = (target == VOID).unsqueeze(1).expand_as(logits)
    changed_on_void = torch.where(void, logits + 10 * torch.randn_like(logits), logits)
    assert loss(changed_on_void, target).item() == pytest.approx(value.item())
    changed_on_labelled = torch.where(void, logits, logits + 10 * torch.randn_like(logits))
    assert loss(changed_on_labelled, target).item() != pytest.approx(value.item())

    logits.requires_grad_(True)
    loss(logits, target).backward()
    assert torch.all(logits.grad.abs().sum(dim=1)[target == VOID] == 0)


@pytest.mark.parametrize("name", ["DiceLoss", "FocalLoss", "LovaszLoss"])
def test_smp_losses_on_an_all_void_batch_are_zero(name):
    logits, target = make_batch(void_fraction=1.0)
    value = LOSSES.build(dict(type=name, ignore_index=VOID))(logits, target)
    assert value.dim() == 0 and value.item() == 0.0


def test_smp_options_pass_through():
    logits, target = make_batch()
    plain = LOSSES.build(dict(type="DiceLoss", ignore_index=VOID))(logits, target)
    logged = LOSSES.build(dict(type="DiceLoss", ignore_index=VOID, log_loss=True))(logits, target)
    assert logged.item() != pytest.approx(plain.item())
    with pytest.raises(ConfigError, match="DiceLoss"):
        LOSSES.build(dict(type="DiceLoss", not_an_option=1))


def test_combined_loss_is_the_weighted_sum_and_names_its_terms():
    logits, target = make_batch()
    combined = LOSSES.build(
        dict(
            type="CombinedLoss",
            losses=[
                dict(type="CrossEntropyLoss", ignore_index=VOID),
                dict(type="DiceLoss", ignore_index=VOID),
                dict(type="DiceLoss", ignore_index=VOID, log_loss=True),
            ],
            weights=[1.0, 0.5, 2.0],
        )
    )
    ce = CrossEntropyLoss(ignore_index=VOID)(logits, target)
    dice = LOSSES.build(dict(type="DiceLoss", ignore_index=VOID))(logits, target)
    log_dice = LOSSES.build(dict(type="DiceLoss", ignore_index=VOID, log_loss=True))(logits, target)
    terms = combined.terms(logits, target)
    assert list(terms) == ["CrossEntropyLoss", "DiceLoss", "DiceLoss_1"]
    assert terms["DiceLoss_1"].item() == pytest.approx(2.0 * log_dice.item())
    assert combined(logits, target).item() == pytest.approx((ce + 0.5 * dice + 2.0 * log_dice).item())


def test_combined_loss_config_errors():
    with pytest.raises(ConfigError, match="2 losses but 1 weights"):
        CombinedLoss(losses=[dict(type="CrossEntropyLoss"), dict(type="DiceLoss")], weights=[1.0])
    with pytest.raises(ConfigError, match="at least one"):
        CombinedLoss(losses=[])


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "DiceLoss"])
def test_shape_mismatch_is_reported(name):
    loss = LOSSES.build(dict(type=name))
    with pytest.raises(ValueError, match=r"target shape \(2, 4, 4\) does not match logits"):
        loss(torch.randn(2, 3, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="N×C×H×W"):
        loss(torch.randn(3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.long))

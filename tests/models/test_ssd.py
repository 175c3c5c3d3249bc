import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import SSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_convert, box_iou

import densevision
from densevision.models.dsod import SSD
from densevision.models.heads.ssd import (
    L2Norm,
    MultiBoxLoss,
    SSDHead,
    default_aspect_ratios,
    default_boxes,
    postprocess,
    ssd_box_sizes,
)
from densevision.profiling import dispatched_operators
from densevision.registry import HEADS, LOSSES

DSOD_MIN = [30, 60, 111, 162, 213, 264]
DSOD_MAX = [60, 111, 162, 213, 264, 315]
DSOD_STEPS = [8, 16, 32, 64, 100, 300]
DSOD_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
DSOD_MAPS = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (2, 2)]


def _torchvision_boxes(generator: DefaultBoxGenerator, maps, size: int) -> torch.Tensor:
    images = ImageList(torch.empty(1, 3, size, size), [(size, size)])
    corners = generator(images, [torch.empty(1, 1, *m) for m in maps])[0]
    return box_convert(corners / size, "xyxy", "cxcywh")


def test_dsod_default_boxes_equal_torchvision_default_box_generator():
    ours = default_boxes(
        DSOD_MAPS, (300, 300), min_sizes=DSOD_MIN, max_sizes=DSOD_MAX, aspect_ratios=DSOD_RATIOS, steps=DSOD_STEPS
    )
    generator = DefaultBoxGenerator(DSOD_RATIOS, scales=[s / 300 for s in [*DSOD_MIN, 315]], steps=DSOD_STEPS)
    assert ours.shape == (8744, 4)
    torch.testing.assert_close(ours, _torchvision_boxes(generator, DSOD_MAPS, 300), rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip", [True, False])
def test_default_boxes_without_steps_tile_like_torchvision(clip):
    maps, ratios = [(4, 4), (2, 2), (1, 1)], [[2], [2, 3], [2]]
    mins, maxs = [10, 25, 40], [25, 40, 70]
    ours = default_boxes(maps, (64, 64), min_sizes=mins, max_sizes=maxs, aspect_ratios=ratios, clip=clip)
    generator = DefaultBoxGenerator(ratios, scales=[s / 64 for s in [*mins, 70]], clip=clip)
    torch.testing.assert_close(ours, _torchvision_boxes(generator, maps, 64), rtol=0, atol=1e-6)
    assert (ours[:, 2:].max() > 1) is not clip


def test_default_boxes_are_square_in_pixels_on_non_square_images():
    boxes = default_boxes([(1, 2)], (50, 100), min_sizes=[20], max_sizes=[20], aspect_ratios=[[]])
    torch.testing.assert_close(boxes[:, 2] * 100, boxes[:, 3] * 50)
    torch.testing.assert_close(boxes[:, 0], torch.tensor([0.25, 0.25, 0.75, 0.75]))


def test_default_boxes_reject_one_list_too_short():
    with pytest.raises(ValueError, match="max_sizes"):
        default_boxes([(2, 2), (1, 1)], (32, 32), min_sizes=[5, 10], max_sizes=[10], aspect_ratios=[[2], [2]])


def test_ssd_box_sizes_follow_the_caffe_rule_dsod300_uses():
    assert ssd_box_sizes(6, 300) == (DSOD_MIN, DSOD_MAX)
    assert default_aspect_ratios(6) == [tuple(float(r) for r in ratios) for ratios in DSOD_RATIOS]


def test_l2norm_scales_unit_vectors():
    norm = L2Norm(5, scale=20.0)
    out = norm(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(out.norm(dim=1), torch.full((2, 3, 3), 20.0))
    assert L2Norm(5, 20.0)(torch.zeros(1, 5, 2, 2)).abs().sum() == 0  # no NaN on all-zero positions


def test_ssd_head_orders_boxes_by_source_location_then_box():
    head = HEADS.build(dict(type="SSDHead", in_channels=[3, 2], num_anchors=[2, 4], num_classes=3, l2norm_scales=None))
    sources = [torch.randn(1, 3, 2, 2), torch.randn(1, 2, 1, 1)]
    loc, conf = head(sources)
    assert loc.shape == (1, 4 * 2 + 1 * 4, 4) and conf.shape == (1, 4 * 2 + 1 * 4, 3)
    raw = head.conf[0](sources[0])  # 1×(2 boxes × 3 classes)×2×2
    # location (row 1, col 0) is the third location; its second box has classes at channels 3..5
    torch.testing.assert_close(conf[0, 2 * 2 + 1], raw[0, 3:6, 1, 0])


def test_ssd_head_rejects_per_source_options_of_the_wrong_length():
    with pytest.raises(ValueError, match="l2norm_scales"):
        SSDHead(in_channels=[3, 2], num_anchors=[2, 4], num_classes=3, l2norm_scales=[20.0])


# --- MultiBoxLoss -------------------------------------------------------------------------------------------------

# Prior 0 is the ground truth's box itself; prior 1 overlaps it with IoU 0.68; priors 2..9 are far from it.
PRIORS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.30, 0.30, 0.5, 0.5]] + [[0.1 * i, 0.9, 0.1, 0.1] for i in range(2, 10)]
)
GT_BOX = torch.tensor([[0.0, 0.0, 0.5, 0.5]])


def _conf(num_images: int) -> torch.Tensor:
    """Logits 3 classes; each far prior j has a foreground logit j-dependent, so its background CE is known."""
    conf = torch.zeros(num_images, len(PRIORS), 3)
    conf[:, 2:, 1] = torch.tensor([0.5, 3.0, 1.0, 2.5, 0.0, 4.0, 1.5, 2.0])  # hardest: priors 7, 3, 5
    return conf


def test_multibox_loss_matches_mines_three_negatives_per_positive_and_normalises():
    loss_fn = LOSSES.build(dict(type="MultiBoxLoss"))
    loc = torch.zeros(1, len(PRIORS), 4)
    loc[0, 0] = 0.5  # prior 0's target offsets are zero: smooth-L1 0.5 * 0.5² per coordinate
    conf = _conf(1).requires_grad_(True)
    loc.requires_grad_(True)
    out = loss_fn(loc, conf, PRIORS, [GT_BOX], [torch.tensor([1])])

    _, (labels,) = loss_fn.match(box_convert(PRIORS, "cxcywh", "xyxy"), [GT_BOX], [torch.tensor([1])], 3)
    assert labels.tolist() == [2, 2] + [0] * 8  # two positives (IoU 1 and 0.68), foreground label 1 -> channel 2

    ce = F.cross_entropy(conf.detach()[0], labels, reduction="none")
    chosen = [0, 1] + sorted(range(2, 10), key=lambda j: -ce[j])[:6]
    assert sorted(chosen[2:]) == [3, 4, 5, 7, 8, 9]
    torch.testing.assert_close(out["loss_conf"], ce[chosen].sum() / 2)
    offsets = loss_fn.box_coder.encode_single(torch.cat([GT_BOX, GT_BOX]), box_convert(PRIORS[:2], "cxcywh", "xyxy"))
    expected_loc = (F.smooth_l1_loss(loc.detach()[0, :2], offsets, reduction="sum")) / 2
    torch.testing.assert_close(out["loss_loc"], expected_loc)
    torch.testing.assert_close(out["loss"], out["loss_loc"] + out["loss_conf"])

    out["loss"].backward()
    assert conf.grad[0].abs().sum(1).nonzero().flatten().tolist() == sorted(chosen)
    assert loc.grad[0].abs().sum(1).nonzero().flatten().tolist() == [0, 1]


def test_multibox_loss_image_without_objects_contributes_its_hardest_negatives():
    loss_fn = MultiBoxLoss()
    conf = _conf(2).requires_grad_(True)
    loc = torch.zeros(2, len(PRIORS), 4, requires_grad=True)
    boxes = [GT_BOX, torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)]
    out = loss_fn(loc, conf, PRIORS, boxes, labels)
    assert all(torch.isfinite(v) for v in out.values())

    ce_empty = F.cross_entropy(conf.detach()[1], torch.zeros(len(PRIORS), dtype=torch.int64), reduction="none")
    alone = loss_fn(loc[:1], conf[:1], PRIORS, boxes[:1], labels[:1])["loss_conf"]
    # image 0: 2 positives; image 1 counts as 1: normaliser 3; image 1 gives its 3 hardest (priors 7, 3, 5)
    torch.testing.assert_close(out["loss_conf"], (alone * 2 + ce_empty[[3, 5, 7]].sum()) / 3)
    out["loss"].backward()
    assert conf.grad[1].abs().sum(1).nonzero().flatten().tolist() == [3, 5, 7]


def test_multibox_loss_batch_without_any_object_is_finite_and_trains():
    conf = _conf(2).requires_grad_(True)
    loc = torch.zeros(2, len(PRIORS), 4, requires_grad=True)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    out = MultiBoxLoss()(loc, conf, PRIORS, empty, [torch.zeros(0, dtype=torch.int64)] * 2)
    assert out["loss_loc"] == 0 and torch.isfinite(out["loss_conf"]) and out["loss_conf"] > 0
    out["loss"].backward()
    assert torch.isfinite(conf.grad).all() and conf.grad.abs().sum() > 0


def test_multibox_loss_drops_zero_area_boxes_and_rejects_bad_labels():
    loss_fn = MultiBoxLoss()
    loc, conf = torch.zeros(1, len(PRIORS), 4), _conf(1)
    degenerate = torch.tensor([[0.2, 0.2, 0.2, 0.4]])
    out = loss_fn(loc, conf, PRIORS, [degenerate], [torch.tensor([0])])
    assert torch.isfinite(out["loss"]) and out["loss_loc"] == 0
    with pytest.raises(ValueError, match=r"labels must be foreground labels 0\.\.1"):
        loss_fn(loc, conf, PRIORS, [GT_BOX], [torch.tensor([2])])


def _random_boxes(generator: torch.Generator, count: int) -> torch.Tensor:
    corners = torch.rand(count, 2, generator=generator) * 0.8
    boxes = torch.cat([corners, corners + 0.05 + torch.rand(count, 2, generator=generator) * 0.4], 1)
    boxes[::3, 2] = boxes[::3, 0]  # every third box has zero width
    return boxes


@pytest.mark.parametrize("seed", range(6))
def test_batched_matching_equals_torchvisions_ssd_matcher_image_by_image(seed):
    """Ground-truth counts 0 to 7 per image, zero-area boxes among them, priors dense enough that one ground truth is
    several priors' best and priors are several ground truths' best."""
    generator = torch.Generator().manual_seed(seed)
    priors = torch.cat([torch.rand(60, 2, generator=generator), 0.05 + torch.rand(60, 2, generator=generator) * 0.4], 1)
    anchors = box_convert(priors, "cxcywh", "xyxy")
    counts = torch.randint(0, 8, (5,), generator=generator).tolist()
    boxes = [_random_boxes(generator, count) for count in counts]
    labels = [torch.randint(0, 4, (count,), generator=generator) for count in counts]
    target_boxes, target_labels = MultiBoxLoss(iou_threshold=0.3).match(anchors, boxes, labels, 5)

    matcher = SSDMatcher(0.3)
    for image, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, lab = b[valid], lab[valid]
        if not len(b):
            assert target_labels[image].eq(0).all()
            continue
        matches = matcher(box_iou(b, anchors))
        expected = torch.where(matches >= 0, lab[matches.clamp(min=0)] + 1, 0)
        assert target_labels[image].tolist() == expected.tolist()
        matched = matches >= 0
        torch.testing.assert_close(target_boxes[image][matched], b[matches[matched]], rtol=0, atol=0)


def test_multibox_loss_compiles_to_one_graph():
    """No branch on values and no boolean indexing: nothing for a GPU to wait on, one graph for CUDA graphs."""
    generator = torch.Generator().manual_seed(0)
    loc, conf = torch.randn(3, len(PRIORS), 4), torch.randn(3, len(PRIORS), 3)
    boxes = [GT_BOX, torch.zeros(0, 4), _random_boxes(generator, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.int64), torch.tensor([0, 1, 1, 0])]
    explanation = torch._dynamo.explain(MultiBoxLoss())(loc, conf, PRIORS, boxes, labels)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_multibox_loss_launches_do_not_grow_with_the_batch_beyond_copying_its_ground_truths():
    """Matching image by image launched kernels per image (and waited for the host on each); batched, a step's
    launches grow only by the copies of each image's boxes and labels into the padded batch."""
    generator = torch.Generator().manual_seed(0)

    def operators(n: int) -> int:
        loc = torch.randn(n, len(PRIORS), 4, requires_grad=True)
        conf = torch.randn(n, len(PRIORS), 3, requires_grad=True)
        boxes = [_random_boxes(generator, 3) for _ in range(n)]
        labels = [torch.tensor([0, 1, 1])] * n
        counts = dispatched_operators(lambda: MultiBoxLoss()(loc, conf, PRIORS, boxes, labels)["loss"].backward())
        return sum(counts.values())

    assert operators(16) - operators(2) == 2 * (16 - 2)


# --- postprocess --------------------------------------------------------------------------------------------------


def _logits(probabilities: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probabilities).log().unsqueeze(0)


def test_postprocess_thresholds_scores_and_returns_foreground_labels():
    priors = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    conf = _logits([[0.1, 0.895, 0.005], [0.98, 0.005, 0.015]])
    (out,) = postprocess(torch.zeros(1, 2, 4), conf, priors)
    assert out["labels"].tolist() == [0, 1]
    torch.testing.assert_close(out["scores"], torch.tensor([0.895, 0.015]))
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.15, 0.15, 0.35, 0.35], [0.65, 0.65, 0.85, 0.85]]))


def test_postprocess_nms_is_per_class():
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.51, 0.5, 0.4, 0.4]])
    same = _logits([[0.0999, 0.9, 0.0001], [0.1999, 0.8, 0.0001], [0.2999, 0.0001, 0.7]])
    (out,) = postprocess(torch.zeros(1, 3, 4), same, priors, score_threshold=0.5)
    assert out["labels"].tolist() == [0, 1]  # prior 1 overlaps prior 0 in the same class; prior 2 is another class
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7]))


def test_postprocess_keeps_the_best_detections_sorted():
    priors = torch.tensor([[0.1 * i + 0.05, 0.5, 0.05, 0.05] for i in range(10)])
    scores = torch.linspace(0.5, 0.95, 10)
    conf = torch.stack([1 - scores, scores], -1).log().unsqueeze(0)
    (out,) = postprocess(torch.zeros(1, 10, 4), conf, priors, max_detections=4)
    torch.testing.assert_close(out["scores"], scores.flip(0)[:4])
    (out,) = postprocess(torch.zeros(1, 10, 4), conf, priors, pre_nms_top_k=3)
    assert len(out["scores"]) == 3


def test_postprocess_decodes_offsets_with_ssd_variances():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    loc = torch.tensor([[[1.0, 0.0, 5 * math.log(2), 0.0]]])  # dx 0.1 of the width, width doubled
    (out,) = postprocess(loc, _logits([[0.0001, 0.9999]]), priors)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.32, 0.4, 0.72, 0.6]]))


# --- SSD on an encoder --------------------------------------------------------------------------------------------

TINY_ENCODER = dict(type="densenet121", out_indices=(3, 4), growth_rate=4, block_config=(1, 1, 1, 1), stem_channels=8)


def test_ssd_on_a_densenet_encoder_has_priors_for_its_feature_maps():
    torch.manual_seed(0)
    model = SSD(encoder=TINY_ENCODER, num_classes=3, image_size=64, extra_channels=(16,))
    assert model.feature_sizes == [(4, 4), (2, 2), (1, 1)]
    assert len(model.priors) == 4 * 4 * 4 + 2 * 2 * 4 + 1 * 4
    loc, conf = model(torch.randn(2, 3, 64, 64))
    assert loc.shape == (2, len(model.priors), 4) and conf.shape == (2, len(model.priors), 3)
    assert isinstance(model.head.l2norms[0], L2Norm) and not isinstance(model.head.l2norms[1], L2Norm)


def test_ssd_rejects_an_encoder_that_returns_logits():
    with pytest.raises(ValueError, match="out_indices"):
        SSD(encoder={**TINY_ENCODER, "out_indices": None}, num_classes=3, image_size=64)


def test_ssd300_densenet121_priors():
    model = densevision.create_model("ssd300_densenet121", num_classes=21)
    assert model.feature_sizes == [(37, 37), (18, 18), (9, 9), (5, 5), (3, 3), (2, 2)]
    assert model.priors.shape == (37 * 37 * 4 + 18 * 18 * 6 + 81 * 6 + 25 * 6 + 9 * 4 + 4 * 4, 4)

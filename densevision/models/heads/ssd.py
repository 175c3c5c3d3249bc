"""Single-shot detection parts shared by DSOD and SSD: default boxes, the multibox head, its loss and post-processing.

Conventions (the detection contract): priors are P×4 ``(cx, cy, w, h)`` normalised to the input; the head's ``loc`` are
offsets encoded against them with torchvision's ``BoxCoder(weights=(10, 10, 5, 5))`` (SSD's variances 0.1/0.2) and its
``conf`` has ``K + 1`` logits, channel 0 background. Everything outside the conf tensor (targets, predictions) uses the
datasets' foreground labels ``0..K-1``; foreground label ``i`` is conf channel ``i + 1``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_convert, box_iou

from densevision.models.blocks import NormLayer
from densevision.registry import HEADS, LOSSES

__all__ = [
    "BOX_CODER_WEIGHTS",
    "L2Norm",
    "SSDHead",
    "MultiBoxLoss",
    "default_aspect_ratios",
    "ssd_box_sizes",
    "default_boxes",
    "feature_sizes",
    "decode",
    "postprocess",
    "select_detections",
]

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels times a learned per-channel scale (ParseNet; SSD, DSOD).

    Brings sources of very different magnitudes to one scale before the shared-style heads; starts at ``scale``.
    """

    def __init__(self, channels: int, scale: float = 20.0, *, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)


@HEADS.register_module()
class SSDHead(nn.Module):
    """Per source: [L2Norm-]Conv3x3[-norm] for ``loc`` (4 per default box) and for ``conf`` (classes per box).

    ``forward(sources)`` returns ``loc`` N×P×4 and ``conf`` N×P×num_classes, boxes ordered source by source, then row,
    column and box within a location (the order of ``default_boxes``). ``l2norm_scales``: one initial scale (or
    ``None``) per source, a single float for all, or ``None`` for no L2Norm. With ``norm_layer`` each prediction conv
    is followed by that norm (DSOD's Conv-BN heads; the norm's shift replaces the conv bias).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        num_anchors: Sequence[int],
        num_classes: int,
        l2norm_scales: float | Sequence[float | None] | None = 20.0,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors) or not in_channels:
            raise ValueError(
                f"SSDHead needs one anchor count per source, got in_channels={tuple(in_channels)} and "
                f"num_anchors={tuple(num_anchors)}"
            )
        if num_classes < 2:
            raise ValueError(f"SSDHead num_classes counts the background too and must be >= 2, got {num_classes}")
        if l2norm_scales is None or isinstance(l2norm_scales, (int, float)):
            l2norm_scales = [l2norm_scales] * len(in_channels)
        if len(l2norm_scales) != len(in_channels):
            raise ValueError(
                f"SSDHead l2norm_scales={tuple(l2norm_scales)} must have one entry per source ({len(in_channels)})"
            )
        self.num_classes = num_classes
        self.l2norms = nn.ModuleList(L2Norm(c, s) if s else nn.Identity() for c, s in zip(in_channels, l2norm_scales))
        self.loc = nn.ModuleList(_predictor(c, a * 4, norm_layer) for c, a in zip(in_channels, num_anchors))
        self.conf = nn.ModuleList(_predictor(c, a * num_classes, norm_layer) for c, a in zip(in_channels, num_anchors))

    def forward(self, sources: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(sources) != len(self.loc):
            raise ValueError(f"SSDHead was built for {len(self.loc)} sources, got {len(sources)}")
        locs, confs = [], []
        for x, l2norm, loc, conf in zip(sources, self.l2norms, self.loc, self.conf):
            x = l2norm(x)
            locs.append(loc(x).permute(0, 2, 3, 1).reshape(len(x), -1, 4))
            confs.append(conf(x).permute(0, 2, 3, 1).reshape(len(x), -1, self.num_classes))
        return torch.cat(locs, 1), torch.cat(confs, 1)


def _predictor(in_channels: int, out_channels: int, norm_layer: NormLayer | None) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=norm_layer is None)
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv if norm_layer is None else nn.Sequential(conv, norm_layer(out_channels))


def default_aspect_ratios(num_scales: int) -> list[tuple[float, ...]]:
    """SSD300/DSOD300's pattern for any number of scales: (2,) on the first and the last two scales, (2, 3) between."""
    return [(2.0,) if k == 0 or k >= num_scales - 2 else (2.0, 3.0) for k in range(num_scales)]


def ssd_box_sizes(num_scales: int, image_size: int) -> tuple[list[float], list[float]]:
    """Min and max box sizes in pixels by SSD's Caffe rule (``ssd_pascal.py``), which DSOD300 uses too.

    The first scale spans 10 %–20 % of ``image_size``; the others start at 20 % in equal integer-percent steps
    ``floor(70 / (num_scales - 2))``, each max being the next min: at 300 px and 6 scales, 30, 60, 111, 162, 213, 264
    and 60, 111, 162, 213, 264, 315.
    """
    if num_scales < 1:
        raise ValueError(f"ssd_box_sizes needs num_scales >= 1, got {num_scales}")
    step = (90 - 20) // (num_scales - 2) if num_scales > 2 else 90 - 20
    percents = [10, *(20 + step * k for k in range(num_scales - 1))]
    maxima = [20, *(p + step for p in percents[1:])]
    return [image_size * p / 100 for p in percents], [image_size * p / 100 for p in maxima]


def default_boxes(
    feature_sizes: Sequence[Sequence[int]],
    image_size: Sequence[int],
    *,
    min_sizes: Sequence[float],
    max_sizes: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float] | None = None,
    clip: bool = True,
) -> Tensor:
    """SSD default boxes, P×4 ``(cx, cy, w, h)`` normalised to ``image_size`` (H, W); sizes and steps in pixels.

    Per location: a square of ``min_size``, a square of ``sqrt(min_size * max_size)``, then ``(w, h)`` and ``(h, w)``
    for each aspect ratio. Centres sit at ``(j + 0.5) * step``; without ``steps`` the maps tile the image evenly.
    ``clip`` clamps widths and heights to 1. On square images this equals torchvision's ``DefaultBoxGenerator`` with
    ``scales = sizes / image_size`` (tested); sizes in pixels keep boxes square in pixels on non-square inputs.
    """
    num = len(feature_sizes)
    lengths = {"min_sizes": len(min_sizes), "max_sizes": len(max_sizes), "aspect_ratios": len(aspect_ratios)}
    if steps is not None:
        lengths["steps"] = len(steps)
    wrong = {k: v for k, v in lengths.items() if v != num}
    if wrong:
        raise ValueError(f"default boxes need one entry per feature map ({num}: {list(feature_sizes)}), got {wrong}")
    height, width = image_size
    boxes = []
    for k, (rows, cols) in enumerate(feature_sizes):
        step_y, step_x = (steps[k], steps[k]) if steps is not None else (height / rows, width / cols)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step_y / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step_x / width
        small, large = min_sizes[k], math.sqrt(min_sizes[k] * max_sizes[k])
        shapes = [(small, small), (large, large)]
        for ratio in aspect_ratios[k]:
            w, h = small * math.sqrt(ratio), small / math.sqrt(ratio)
            shapes += [(w, h), (h, w)]
        wh = torch.tensor(shapes, dtype=torch.float64) / torch.tensor([width, height], dtype=torch.float64)
        if clip:
            wh = wh.clamp(0, 1)
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([grid_x, grid_y], -1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        boxes.append(torch.cat([centres, wh.expand(rows * cols, -1, -1)], -1).reshape(-1, 4))
    return torch.cat(boxes).float()


def feature_sizes(
    module: nn.Module,
    extract: Callable[[nn.Module, Tensor], Sequence[Tensor]],
    in_chans: int,
    image_size: Sequence[int],
) -> list[tuple[int, int]]:
    """Spatial sizes of the maps ``extract(module, images)`` returns at ``image_size``, without computing anything.

    A copy of ``module`` on the meta device runs the shapes only, so a detector knows its priors at construction
    whatever its encoder rounds (floor or ceil pooling, padding).
    """
    probe = copy.deepcopy(module).to("meta").eval()
    with torch.no_grad():
        maps = extract(probe, torch.empty(1, in_chans, *image_size, device="meta"))
    return [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]


@LOSSES.register_module()
class MultiBoxLoss(nn.Module):
    """SSD's loss: smooth-L1 on matched priors' offsets plus softmax cross-entropy with hard-negative mining.

    Matching (torchvision's ``SSDMatcher``): a prior is positive when its IoU with a ground truth reaches
    ``iou_threshold``, and each ground truth also takes its best prior. Mining keeps, per image, the
    ``neg_pos_ratio`` × positives background priors with the highest cross-entropy (all images at once, one sort).

    An image without objects counts as if it had one positive: it contributes its ``neg_pos_ratio`` hardest negatives
    and 1 to the normaliser. Both terms are divided by ``Σ_i max(positives_i, 1)`` — the number of matched priors
    whenever every image has an object — so a batch of empty images still trains against its worst false positives
    at the usual scale, and the loss is never NaN. Zero-area ground truths cannot be encoded (log of a zero width) and
    are dropped.

    ``forward(loc, conf, priors, boxes, labels)``: ``boxes`` per image n×4 ``(x1, y1, x2, y2)`` normalised to the
    input, ``labels`` per image n foreground labels ``0..K-1``. Returns ``loss`` (``loc_weight`` × ``loss_loc`` +
    ``loss_conf``), ``loss_loc`` and ``loss_conf``.
    """

    def __init__(
        self,
        *,
        iou_threshold: float = 0.5,
        neg_pos_ratio: float = 3.0,
        loc_weight: float = 1.0,
        box_coder_weights: Sequence[float] = BOX_CODER_WEIGHTS,
    ) -> None:
        super().__init__()
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"MultiBoxLoss iou_threshold must be in (0, 1], got {iou_threshold}")
        if neg_pos_ratio < 0:
            raise ValueError(f"MultiBoxLoss neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.iou_threshold = float(iou_threshold)
        # Read by the Detector for decoding too: one value for encoding targets and decoding predictions.
        self.box_coder_weights = tuple(float(w) for w in box_coder_weights)
        self.box_coder = BoxCoder(self.box_coder_weights)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.loc_weight = float(loc_weight)

    def match(
        self, anchors: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor], num_classes: int
    ) -> tuple[Tensor, Tensor]:
        """Every image's targets at once: matched ground-truth box (N×P×4, xyxy) and conf class (N×P, 0 = background)
        per prior, as torchvision's ``SSDMatcher`` gives image by image (a ground truth that is several priors' best
        keeps the last of them; zero-area boxes match nothing).

        The ground truths are padded to the batch's largest count and matched by tensor arithmetic alone: no boolean
        indexing or branch on values, so a GPU never waits for the host and the compiled loss is one graph.
        """
        n, p = len(boxes), len(anchors)
        for b, lab in zip(boxes, labels, strict=True):
            if b.dim() != 2 or b.shape[-1] != 4 or lab.shape != b.shape[:1]:
                raise ValueError(
                    f"MultiBoxLoss expects n×4 boxes and n labels per image, got {tuple(b.shape)} and "
                    f"{tuple(lab.shape)}"
                )
        if max(map(len, boxes), default=0) == 0:
            return anchors.new_zeros((n, p, 4)), torch.zeros((n, p), dtype=torch.int64, device=anchors.device)
        gt_boxes = pad_sequence([b.to(anchors).detach() for b in boxes], batch_first=True)  # N×M×4
        gt_labels = pad_sequence([lab.to(anchors.device, torch.int64) for lab in labels], batch_first=True)  # N×M
        if not torch.compiler.is_compiling():  # a compiled loss takes the labels as they come: no host round trip
            _check_labels(gt_labels, num_classes)
        # padding rows are zero boxes: zero-area, so invalid like the degenerate boxes a dataset may hold
        valid = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])  # N×M
        iou = torch.vmap(box_iou, in_dims=(0, None))(gt_boxes, anchors).masked_fill(~valid.unsqueeze(2), -1.0)  # N×M×P

        best_iou, best_gt = iou.max(1)  # each prior's best ground truth
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, -1)
        # each valid ground truth also takes its best prior; invalid ones write into a spare column P, dropped after
        best_prior = torch.where(valid, iou.argmax(2), p)  # N×M
        gt_index = torch.arange(gt_boxes.shape[1], device=anchors.device).expand_as(best_prior)
        forced = torch.full((n, p + 1), -1, dtype=torch.int64, device=anchors.device)
        forced = forced.scatter_reduce(1, best_prior, gt_index, reduce="amax")[:, :p]  # the last ground truth wins
        matches = torch.where(forced >= 0, forced, matches)

        matched = matches.clamp(min=0)
        target_boxes = gt_boxes.gather(1, matched.unsqueeze(2).expand(n, p, 4))
        target_labels = torch.where(matches >= 0, gt_labels.gather(1, matched) + 1, 0)
        return target_boxes, target_labels

    def forward(
        self, loc: Tensor, conf: Tensor, priors: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor]
    ) -> dict[str, Tensor]:
        n, p, num_classes = conf.shape
        if loc.shape != (n, p, 4) or priors.shape != (p, 4) or len(boxes) != n or len(labels) != n:
            raise ValueError(
                f"MultiBoxLoss expects loc N×P×4, conf N×P×C, priors P×4 and N box/label lists; got loc "
                f"{tuple(loc.shape)}, conf {tuple(conf.shape)}, priors {tuple(priors.shape)}, {len(boxes)} box and "
                f"{len(labels)} label lists"
            )
        loc, conf = loc.float(), conf.float()
        anchors = box_convert(priors.float(), "cxcywh", "xyxy").expand(n, p, 4)
        target_boxes, target_labels = self.match(anchors[0], boxes, labels, num_classes)

        positive = target_labels > 0
        num_positive = positive.sum(1)
        # background priors are encoded against themselves (finite offsets) and masked out of the sum
        safe_targets = torch.where(positive.unsqueeze(2), target_boxes, anchors)
        encoded = self.box_coder.encode_single(safe_targets.reshape(-1, 4), anchors.reshape(-1, 4)).view(n, p, 4)
        loss_loc = torch.where(positive, F.smooth_l1_loss(loc, encoded, reduction="none").sum(2), 0.0).sum()

        ce = F.cross_entropy(conf.flatten(0, 1), target_labels.flatten(), reduction="none").view(n, p)
        mining = ce.detach().masked_fill(positive, -math.inf)
        rank = mining.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        num_negative = self.neg_pos_ratio * num_positive.clamp(min=1)
        negative = (rank < num_negative[:, None]) & ~positive
        normaliser = num_positive.clamp(min=1).sum()
        loss_conf = torch.where(positive | negative, ce, 0.0).sum() / normaliser  # where: an unchosen inf adds nothing
        loss_loc = loss_loc / normaliser
        return {"loss": self.loc_weight * loss_loc + loss_conf, "loss_loc": loss_loc, "loss_conf": loss_conf}


def _check_labels(labels: Tensor, num_classes: int) -> None:
    """Foreground labels ``0..num_classes-2`` (padding is 0), checked with one transfer to the host per batch."""
    if labels.device.type == "meta":  # shapes only (counting a step's operators): no values to check
        return
    low, high = torch.stack(torch.aminmax(labels)).tolist()
    if low < 0 or high >= num_classes - 1:
        raise ValueError(
            f"MultiBoxLoss labels must be foreground labels 0..{num_classes - 2} (the model predicts "
            f"{num_classes} classes with background), got {labels.unique().tolist()}"
        )


def decode(
    loc: Tensor, conf: Tensor, priors: Tensor, *, box_coder_weights: Sequence[float] = BOX_CODER_WEIGHTS
) -> tuple[Tensor, Tensor]:
    """Every prior's box and class probabilities: ``boxes`` N×P×4 ``(x1, y1, x2, y2)`` normalised to the input and
    clipped to it, ``scores`` N×P×(K+1) softmax (column 0 the background). What an exported detector outputs; NMS
    follows in ``postprocess``."""
    batch, num_priors = loc.shape[:2]
    anchors = box_convert(priors.float(), "cxcywh", "xyxy")
    codes = loc.float().reshape(batch * num_priors, 4)
    boxes = BoxCoder(tuple(box_coder_weights)).decode_single(codes, anchors.repeat(batch, 1))
    return boxes.reshape(batch, num_priors, 4).clamp(0, 1), conf.float().softmax(-1)


@torch.no_grad()
def postprocess(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    *,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    pre_nms_top_k: int = 400,
    max_detections: int = 200,
    box_coder_weights: Sequence[float] = BOX_CODER_WEIGHTS,
) -> list[dict[str, Tensor]]:
    """Detections per image from raw head outputs: ``decode``, then ``select_detections``."""
    return select_detections(
        *decode(loc, conf, priors, box_coder_weights=box_coder_weights),
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        pre_nms_top_k=pre_nms_top_k,
        max_detections=max_detections,
    )


@torch.no_grad()
def select_detections(
    all_boxes: Tensor,
    all_scores: Tensor,
    *,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    pre_nms_top_k: int = 400,
    max_detections: int = 200,
) -> list[dict[str, Tensor]]:
    """Detections per image from decoded boxes (N×P×4) and class probabilities (N×P×(K+1), ``decode``'s outputs and
    an exported detector's): per class the ``pre_nms_top_k`` best priors scoring above ``score_threshold``,
    class-wise NMS (``batched_nms``), then the ``max_detections`` best.

    Returns per image ``boxes`` n×4 ``(x1, y1, x2, y2)`` normalised to the input and clipped to it, ``scores`` n and
    foreground ``labels`` n (``0..K-1``), sorted by score, highest first.
    """
    results = []
    for boxes, scores in zip(all_boxes.float(), all_scores.float()):
        scores = scores[:, 1:]
        top_scores, top_index = scores.topk(min(pre_nms_top_k, len(scores)), dim=0)
        classes = torch.arange(scores.shape[1], device=scores.device).expand_as(top_index)
        keep = top_scores > score_threshold
        top_scores, top_index, classes = top_scores[keep], top_index[keep], classes[keep]
        candidates = boxes[top_index]
        kept = batched_nms(candidates, top_scores, classes, nms_threshold)[:max_detections]
        results.append({"boxes": candidates[kept], "scores": top_scores[kept], "labels": classes[kept]})
    return results

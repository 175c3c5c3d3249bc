import copy
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevision.data.checks import DatasetError
from densevision.evaluation.detection import COCO_STATS, CocoMetric, VOCMetric, box_iou
from densevision.registry import METRICS, ConfigError

CLASSES = ("cat", "dog", "bird")


def image(index, gt_boxes=(), gt_labels=(), gt_ignore=None, boxes=(), scores=(), labels=(), image_id=None):
    """One image's (prediction, meta) pair in the shapes Detector.predict and a detection dataset produce."""
    gt_ignore = [False] * len(gt_labels) if gt_ignore is None else gt_ignore
    meta = {
        "path": f"img{index}.jpg",
        "index": index,
        "image_id": f"img{index}" if image_id is None else image_id,
        "gt_boxes": np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4),
        "gt_labels": np.asarray(gt_labels, dtype=np.int64),
        "gt_ignore": np.asarray(gt_ignore, dtype=bool),
    }
    pred = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    return pred, meta


def random_images(seed, num_images, num_classes, *, size=100.0, image_ids=None):
    """Jittered and duplicated copies of ground truths, wrong labels, stray boxes, difficult flags, tied scores."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(num_images):
        count = int(rng.integers(0, 5))
        corner = rng.uniform(0, 0.7 * size, (count, 2))
        extent = rng.uniform(0.04 * size, 0.5 * size, (count, 2))
        gt_boxes = np.concatenate([corner, corner + extent], axis=1)
        gt_labels = rng.integers(0, num_classes, count)
        copies = rng.integers(0, count, int(rng.integers(0, 2 * count + 1))) if count else np.zeros(0, dtype=int)
        jittered = gt_boxes[copies] + rng.normal(0, 0.1, (len(copies), 4)) * np.tile(extent[copies], 2)
        stray_corner = rng.uniform(0, 0.7 * size, (int(rng.integers(0, 4)), 2))
        stray = np.concatenate([stray_corner, stray_corner + rng.uniform(2, 0.4 * size, stray_corner.shape)], axis=1)
        boxes = np.concatenate([jittered, stray])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([gt_labels[copies], rng.integers(0, num_classes, len(stray))])
        relabel = rng.random(len(labels)) < 0.15
        labels[relabel] = rng.integers(0, num_classes, int(relabel.sum()))
        images.append(
            image(
                index,
                gt_boxes,
                gt_labels,
                rng.random(count) < 0.2,
                boxes,
                rng.integers(1, 20, len(boxes)) / 20,  # few distinct values: ties across and within images
                labels,
                image_id=None if image_ids is None else image_ids[index],
            )
        )
    return images


def evaluate(metric, images, batch_size=3):
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        metric.update([pred for pred, _ in chunk], {"meta": [meta for _, meta in chunk]})
    return metric


# ------------------------------------------------------------------------------------------------ VOC reference


def reference_iou(a, b, legacy):
    extra = 1.0 if legacy else 0.0
    width = min(a[2], b[2]) - max(a[0], b[0]) + extra
    height = min(a[3], b[3]) - max(a[1], b[1]) + extra
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0] + extra) * (a[3] - a[1] + extra) + (b[2] - b[0] + extra) * (b[3] - b[1] + extra) - inter
    return inter / union


def reference_voc(images, num_classes, *, iou_threshold=0.5, method="11point", legacy=False):
    """Per-class AP by the devkit's loop (VOCevaldet + VOCap), with its floating-point recall thresholds for the
    11-point AP (MATLAB's 0:0.1:1); NaN without positives."""
    aps = []
    for c in range(num_classes):
        truth, used, positives, detections = {}, {}, 0, []
        for i, (pred, meta) in enumerate(images):
            truth[i] = [
                (box, bool(ignore))
                for box, label, ignore in zip(meta["gt_boxes"].tolist(), meta["gt_labels"], meta["gt_ignore"])
                if label == c
            ]
            used[i] = [False] * len(truth[i])
            positives += sum(not ignore for _, ignore in truth[i])
            for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
                if label == c:
                    detections.append((score, i, box))
        detections = sorted(detections, key=lambda d: -d[0])  # stable: ties stay in image order
        tp = fp = 0
        curve = []  # (recall, precision) after each counted detection
        for _, i, box in detections:
            best, best_j = -math.inf, -1
            for j, (gt_box, _) in enumerate(truth[i]):
                overlap = reference_iou(box, gt_box, legacy)
                if overlap > best:
                    best, best_j = overlap, j
            if best >= iou_threshold:
                if truth[i][best_j][1]:
                    continue  # difficult: neither true nor false positive
                if used[i][best_j]:
                    fp += 1
                else:
                    used[i][best_j] = True
                    tp += 1
            else:
                fp += 1
            if positives:
                curve.append((Fraction(tp, positives), tp / (tp + fp)))
        if positives == 0:
            aps.append(math.nan)
        elif method == "11point":
            total = 0.0
            for step in range(11):
                total += max([p for r, p in curve if float(r) >= step * 0.1], default=0.0)
            aps.append(total / 11)
        else:
            recall = [0.0] + [float(r) for r, _ in curve] + [1.0]
            precision = [0.0] + [p for _, p in curve] + [0.0]
            for k in range(len(precision) - 2, -1, -1):
                precision[k] = max(precision[k], precision[k + 1])
            aps.append(sum((recall[k + 1] - recall[k]) * precision[k + 1] for k in range(len(recall) - 1)))
    return aps


def assert_matches_reference(results, reference, classes):
    for name, ap in zip(classes, reference):
        assert results[f"AP/{name}"] == pytest.approx(ap, abs=1e-9, nan_ok=True), name
    defined = [ap for ap in reference if not math.isnan(ap)]
    assert results["mAP"] == pytest.approx(sum(defined) / len(defined), abs=1e-9)


# ------------------------------------------------------------------------------------------------------ VOC tests

GT = [10, 10, 50, 50]
HIT = [12, 10, 52, 50]  # IoU 38·40 / (1600 + 1600 − 1520) ≈ 0.905
MISS = [60, 60, 90, 90]


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        # 1 gt, a hit then a miss: recall 1 at precision 1.
        ([image(0, [GT], [0], boxes=[HIT, MISS], scores=[0.9, 0.8], labels=[0, 0])], {"11point": 1.0, "area": 1.0}),
        # 1 gt, a miss ranked above the hit: precision 1/2 at recall 1.
        ([image(0, [GT], [0], boxes=[MISS, HIT], scores=[0.9, 0.8], labels=[0, 0])], {"11point": 0.5, "area": 0.5}),
        # 2 gts, TP FP TP: (recall, precision) = (1/2, 1), (1/2, 1/2), (1, 2/3).
        # 11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 2/3 (5 points); area: 1/2 · 1 + 1/2 · 2/3.
        (
            [
                image(0, [GT], [0], boxes=[HIT, MISS], scores=[0.9, 0.8], labels=[0, 0]),
                image(1, [GT], [0], boxes=[HIT], scores=[0.7], labels=[0]),
            ],
            {"11point": (6 + 5 * 2 / 3) / 11, "area": 0.5 + 1 / 3},
        ),
        # 10 gts, 3 found at precision 1: recall 0.3 misses the t = 0.3 point as in the devkit, whose floating
        # thresholds have 0.1 * 3 > 0.3: 3/11 (exact fractions would give 4/11).
        (
            [
                image(i, [GT], [0], boxes=[HIT] * (i < 3), scores=[0.9] * (i < 3), labels=[0] * (i < 3))
                for i in range(10)
            ],
            {"11point": 3 / 11, "area": 0.3},
        ),
    ],
)
@pytest.mark.parametrize("method", ["11point", "area"])
def test_hand_computed_average_precision(images, expected, method):
    results = evaluate(VOCMetric(classes=["cat"], ap_method=method), images).compute()
    assert results["AP/cat"] == pytest.approx(expected[method], abs=1e-12)
    assert results["mAP"] == results["AP/cat"]
    assert_matches_reference(results, reference_voc(images, 1, method=method), ["cat"])


@pytest.mark.parametrize("method", ["11point", "area"])
def test_detection_on_a_difficult_object_changes_nothing(method):
    # The 2-gt TP FP TP case above, plus a difficult object hit by a detection ranked between the others.
    plain = [
        image(0, [GT], [0], boxes=[HIT, MISS], scores=[0.9, 0.8], labels=[0, 0]),
        image(1, [GT], [0], boxes=[HIT], scores=[0.7], labels=[0]),
    ]
    difficult = [100, 100, 140, 140]
    with_difficult = [
        image(0, [GT, difficult], [0, 0], [False, True], [HIT, MISS, difficult], [0.9, 0.8, 0.85], [0] * 3),
        image(1, [GT], [0], boxes=[HIT], scores=[0.7], labels=[0]),
    ]
    expected = evaluate(VOCMetric(classes=["cat"], ap_method=method), plain).compute()
    metric = evaluate(VOCMetric(classes=["cat"], ap_method=method), with_difficult)
    assert metric.compute() == pytest.approx(expected, abs=1e-12)
    lines = metric.summary_table().splitlines()
    assert lines[2].split()[:3] == ["cat", "2", "4"]  # difficult objects are not counted, its detection is


def test_duplicate_detection_is_a_false_positive():
    # Both detections hit the one gt: the lower-scored one is a false positive, after recall 1 at precision 1.
    images = [image(0, [GT], [0], boxes=[HIT, GT], scores=[0.8, 0.9], labels=[0, 0])]
    metric = evaluate(VOCMetric(classes=["cat"], ap_method="area"), images)
    assert metric.compute()["AP/cat"] == 1.0
    # A miss first, then the two hits: (0, 0), (1/1, 1/2), (1, 1/3) -> AP 1/2.
    images = [image(0, [GT], [0], boxes=[MISS, GT, HIT], scores=[0.95, 0.9, 0.8], labels=[0, 0, 0])]
    assert evaluate(VOCMetric(classes=["cat"], ap_method="area"), images).compute()["AP/cat"] == 0.5


def test_detection_matched_to_its_best_ground_truth_only():
    # The devkit matches each detection to its highest-IoU gt; if that one is taken it is a duplicate (false
    # positive) even when it also overlaps another free gt above the threshold.
    left, right = [0, 0, 10, 10], [1, 0, 11, 10]
    images = [image(0, [left, right], [0, 0], boxes=[left, left], scores=[0.9, 0.8], labels=[0, 0])]
    results = evaluate(VOCMetric(classes=["cat"], ap_method="area"), images).compute()
    assert results["AP/cat"] == 0.5
    assert_matches_reference(results, reference_voc(images, 1, method="area"), ["cat"])


@pytest.mark.parametrize(("legacy", "expected"), [(False, 0.0), (True, 1.0)])
def test_legacy_coordinates_add_one_pixel(legacy, expected):
    # Integer-pixel boxes 0..9 × 0..9 and 0..9 × 0..4: IoU 36/81 continuous, 50/100 with the devkit's +1.
    images = [image(0, [[0, 0, 9, 9]], [0], boxes=[[0, 0, 9, 4]], scores=[0.5], labels=[0])]
    assert box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 4]]), legacy_coordinates=legacy)[0, 0] == (
        0.5 if legacy else 36 / 81
    )
    assert evaluate(VOCMetric(classes=["cat"], legacy_coordinates=legacy), images).compute()["mAP"] == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["11point", "area"])
@pytest.mark.parametrize("legacy", [False, True])
def test_random_detections_match_reference_loop(seed, method, legacy):
    images = random_images(seed, num_images=25, num_classes=len(CLASSES))
    metric = VOCMetric(ap_method=method, legacy_coordinates=legacy)
    metric.dataset_meta = {"classes": CLASSES, "category_ids": None}
    results = evaluate(metric, images).compute()
    assert_matches_reference(results, reference_voc(images, len(CLASSES), method=method, legacy=legacy), CLASSES)


def test_class_without_ground_truth_is_nan_and_left_out_of_map():
    images = [
        image(0, [GT], [0], boxes=[HIT, MISS], scores=[0.9, 0.8], labels=[0, 1]),  # a dog detection, no dog object
        image(1, [MISS], [2], boxes=[GT], scores=[0.9], labels=[1]),  # a bird nobody found
        image(2, [MISS], [1], [True]),  # only a difficult dog
    ]
    metric = evaluate(VOCMetric(classes=CLASSES), images)
    results = metric.compute()
    assert results["AP/cat"] == 1.0 and results["AP/bird"] == 0.0
    assert math.isnan(results["AP/dog"])
    assert results["mAP"] == 0.5
    lines = metric.summary_table().splitlines()
    assert lines[0].split() == ["class", "gts", "dets", "AP", "%"]
    assert lines[2].split() == ["cat", "1", "1", "100.00"]
    assert lines[3].split() == ["dog", "0", "2", "-"]
    assert lines[4].split() == ["bird", "1", "0", "0.00"]
    assert lines[-1].split() == ["mAP", "50.00"]


def test_empty_split_and_images_without_objects():
    assert math.isnan(VOCMetric(classes=CLASSES).compute()["mAP"])
    images = [image(0), image(1, [GT], [0]), image(2, boxes=[GT], scores=[0.5], labels=[0])]
    results = evaluate(VOCMetric(classes=CLASSES, ap_method="area"), images).compute()
    assert results["AP/cat"] == 0.0 and results["mAP"] == 0.0


def test_class_names_from_dataset_meta_and_registry():
    metric = METRICS.build(dict(type="VOCMetric", ap_method="area"))
    assert metric.num_classes is None
    with pytest.raises(ConfigError, match="no class names"):
        metric.compute()
    metric.dataset_meta = {"classes": CLASSES, "category_ids": None}
    assert metric.num_classes == 3
    assert set(metric.compute()) == {"mAP", "AP/cat", "AP/dog", "AP/bird"}
    with pytest.raises(ConfigError, match="ap_method must be one of"):
        METRICS.build(dict(type="VOCMetric", ap_method="101point"))


def test_bad_labels_and_shapes_name_the_image():
    metric = VOCMetric(classes=CLASSES)
    with pytest.raises(DatasetError, match=r"img0.jpg: labels \[3\] outside the classes \[0, 3\)"):
        evaluate(metric, [image(0, boxes=[GT], scores=[0.5], labels=[3])])
    with pytest.raises(DatasetError, match="img1.jpg: 1 predicted boxes, 2 scores"):
        evaluate(metric, [image(1, boxes=[GT], scores=[0.5, 0.4], labels=[0])])
    late = evaluate(VOCMetric(), [image(3, [GT], [5])])  # classes unknown at update: checked at compute
    late.dataset_meta = {"classes": CLASSES, "category_ids": None}
    with pytest.raises(DatasetError, match=r"image 'img3': gt_labels \[5\] outside the classes"):
        late.compute()
    pred, meta = image(2)
    del meta["gt_ignore"]
    with pytest.raises(DatasetError, match="img2.jpg: meta lacks gt_ignore"):
        metric.update([pred], {"meta": [meta]})


def test_reset_clears_the_records():
    metric = evaluate(VOCMetric(classes=CLASSES), random_images(0, 4, 3))
    metric.reset()
    assert metric.records == [] and math.isnan(metric.compute()["mAP"])


# ----------------------------------------------------------------------------------------------------- COCO tests

CATEGORY_IDS = [3, 7, 12]  # non-contiguous, as in COCO


def coco_ground_truth(images, category_ids):
    """A box-only COCO annotation file for the images' meta ground truth (area = w · h)."""
    annotations = []
    for _, meta in images:
        for box, label, ignore in zip(meta["gt_boxes"].tolist(), meta["gt_labels"], meta["gt_ignore"]):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": meta["image_id"],
                    "category_id": category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(ignore),
                }
            )
    return {
        "images": [{"id": meta["image_id"], "width": 400, "height": 400} for _, meta in images],
        "categories": [{"id": i, "name": name} for i, name in zip(category_ids, CLASSES)],
        "annotations": annotations,
    }


def direct_cocoeval(ann_file, images, category_ids):
    """The figures COCOeval gives for the images' detections, written out by hand here."""
    detections = [
        {
            "image_id": meta["image_id"],
            "category_id": category_ids[label],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        for pred, meta in images
        for (x1, y1, x2, y2), score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
        )
    ]
    ground_truth = COCO(ann_file)
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(copy.deepcopy(detections)), "bbox")  # loadRes adds keys
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {name: math.nan if value == -1 else value for name, value in zip(COCO_STATS, evaluator.stats)}, detections


def coco_images(seed):
    # 300-px images: small (< 32²), medium and large boxes all occur.
    return random_images(seed, num_images=20, num_classes=3, size=300.0, image_ids=[100 + 7 * i for i in range(20)])


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_figures_equal_cocoeval_run_directly(tmp_path, seed):
    images = coco_images(seed)
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(coco_ground_truth(images, CATEGORY_IDS)))
    expected, detections = direct_cocoeval(str(ann_file), images, CATEGORY_IDS)
    assert not math.isnan(expected["APs"]) and not math.isnan(expected["APl"])

    metric = CocoMetric(ann_file=str(ann_file), results_file=str(tmp_path / "out" / "results.json"))
    metric.dataset_meta = {"classes": CLASSES, "category_ids": CATEGORY_IDS}
    results = evaluate(metric, images).compute()
    assert {k: results[k] for k in COCO_STATS} == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == detections  # dataset category ids

    # Ground truth built from the records' meta instead of the file: the same figures for box-only annotations.
    in_memory = evaluate(CocoMetric(classes=CLASSES), images)
    in_memory.dataset_meta = {"classes": CLASSES, "category_ids": CATEGORY_IDS}
    assert in_memory.compute() == pytest.approx(results, abs=1e-12, nan_ok=True)


def test_coco_category_ids_default_to_the_ann_files_sorted_ids_or_label_plus_one(tmp_path):
    images = coco_images(2)
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(coco_ground_truth(images, CATEGORY_IDS)))
    expected, _ = direct_cocoeval(str(ann_file), images, CATEGORY_IDS)
    results = evaluate(CocoMetric(ann_file=str(ann_file), classes=CLASSES), images).compute()
    assert {k: results[k] for k in COCO_STATS} == pytest.approx(expected, abs=1e-12, nan_ok=True)
    metric = evaluate(CocoMetric(classes=CLASSES), images)
    assert {k: metric.compute()[k] for k in COCO_STATS} == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert {d["category_id"] for d in metric.results([1, 2, 3])} <= {1, 2, 3}


def test_coco_per_class_ap_and_summary_table():
    images = [
        image(0, [[0, 0, 40, 40]], [0], boxes=[[0, 0, 40, 40]], scores=[0.9], labels=[0], image_id=1),
        image(1, [[0, 0, 40, 40]], [1], boxes=[[50, 50, 90, 90]], scores=[0.9], labels=[1], image_id=2),
    ]
    metric = evaluate(CocoMetric(classes=CLASSES), images)
    results = metric.compute()
    assert results["AP/cat"] == pytest.approx(1.0) and results["AP/dog"] == 0.0 and math.isnan(results["AP/bird"])
    assert results["AP"] == pytest.approx(0.5)
    table = metric.summary_table()
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500" in table
    assert table.splitlines()[-3:] == [f"{'cat':<5}  100.00", f"{'dog':<5}    0.00", f"{'bird':<5}       -"]


def test_coco_zero_detections_give_zero_not_a_crash(capsys):
    images = [image(0, [[0, 0, 40, 40]], [0], image_id=1), image(1, image_id=2)]
    results = evaluate(CocoMetric(classes=CLASSES), images).compute()
    assert results["AP"] == 0.0 and results["AP50"] == 0.0 and results["AR100"] == 0.0 and results["APm"] == 0.0
    assert math.isnan(results["APl"])  # no large ground truth: COCOeval's -1
    assert capsys.readouterr().out == ""  # COCOeval's prints are captured, not shown
    assert math.isnan(CocoMetric(classes=CLASSES).compute()["AP"])


def test_coco_unknown_images_and_categories_are_errors(tmp_path):
    images = coco_images(0)
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(coco_ground_truth(images[:5], CATEGORY_IDS)))
    with pytest.raises(DatasetError, match=r"image ids \[135, 142, .*\] evaluated but not in .*instances.json"):
        evaluate(CocoMetric(ann_file=str(ann_file), classes=CLASSES), images).compute()
    metric = evaluate(CocoMetric(ann_file=str(ann_file), classes=CLASSES), images[:5])
    metric.dataset_meta = {"classes": CLASSES, "category_ids": [1, 7, 12]}
    with pytest.raises(ConfigError, match=r"category ids \[1\] .* are not categories of"):
        metric.compute()
    with pytest.raises(ConfigError, match="ann_file not found"):
        CocoMetric(ann_file=str(tmp_path / "missing.json"))

import itertools
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from densevision.data.checks import DatasetError
from densevision.engine.runner import ShardSampler
from densevision.evaluation.volume import (
    VolumeSegmentationMetric,
    dice_score,
    hausdorff_distance_95,
    surface_distances,
)
from densevision.registry import METRICS, ConfigError

CLASSES = ("background", "organ", "lesion")
SPACING = (0.8, 0.8, 2.5)


def cube(shape, low, high) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(low, high))] = True
    return mask


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """MONAI's definition by pairwise distances between surface voxels (6-connected erosion)."""

    def surface(mask):
        padded = np.pad(mask, 1)
        inner = padded.copy()
        for axis in range(mask.ndim):
            inner &= np.roll(padded, 1, axis) & np.roll(padded, -1, axis)
        return np.argwhere((padded & ~inner)[1:-1, 1:-1, 1:-1]) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    distances = np.linalg.norm(sa[:, None] - sb[None], axis=-1)
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


def test_dice_of_overlapping_and_empty_masks():
    a, b = cube((6, 6, 4), (0, 0, 0), (4, 4, 2)), cube((6, 6, 4), (2, 0, 0), (6, 4, 2))
    assert dice_score(a, b) == pytest.approx(2 * 16 / 64)
    assert dice_score(a, a) == 1.0 and dice_score(a, ~a & False) == 0.0
    assert math.isnan(dice_score(np.zeros(3, bool), np.zeros(3, bool)))


def test_hd95_is_in_physical_units_and_matches_the_definition():
    rng = np.random.default_rng(0)
    a = cube((14, 12, 8), (2, 2, 1), (9, 8, 5))
    b = cube((14, 12, 8), (4, 3, 2), (12, 10, 7)) | (rng.random((14, 12, 8)) > 0.97)
    assert hausdorff_distance_95(a, b, SPACING) == pytest.approx(brute_force_hd95(a, b, SPACING))
    shifted = cube((14, 12, 8), (2, 2, 3), (9, 8, 7))  # two slices further along the 2.5 mm axis
    assert hausdorff_distance_95(a, shifted, SPACING) == pytest.approx(2 * 2.5)
    assert hausdorff_distance_95(a, a, SPACING) == 0.0


def test_hd95_with_one_empty_mask_is_the_diagonal_and_nan_when_both_are():
    shape = (10, 10, 4)
    empty = np.zeros(shape, dtype=bool)
    diagonal = np.linalg.norm(np.array(shape) * np.array(SPACING))
    assert hausdorff_distance_95(cube(shape, (1, 1, 1), (3, 3, 3)), empty, SPACING) == pytest.approx(diagonal)
    assert math.isnan(hausdorff_distance_95(empty, empty, SPACING))


def test_surface_distances_of_a_mask_to_itself_are_zero():
    a = cube((6, 6, 6), (1, 1, 1), (5, 5, 5))
    assert surface_distances(a, a, (1, 1, 1)).max() == 0 and len(surface_distances(a, a, (1, 1, 1))) == 56


def volumes(seed: int = 0):
    """Two (prediction, target) class-index volumes H×W×slices with an organ and a lesion; void voxels in one."""
    rng = np.random.default_rng(seed)
    pairs = []
    for number, slices in enumerate((5, 7)):
        target = np.zeros((16, 12, slices), dtype=np.int64)
        target[3:12, 2:10, 1 : slices - 1] = 1
        target[6:8, 4:6, 2:4] = 2
        prediction = target.copy()
        prediction[rng.random(target.shape) > 0.9] = 1
        prediction[10:12, 2:5, 1] = 2
        if number == 1:
            target[0, 0, :] = 255  # void: counts for no class whatever is predicted there
            prediction[0, 0, :] = 2
        pairs.append((f"case_{number}", prediction, target))
    return pairs


def slice_batches(pairs, order, batch_size=3):
    """Per-slice predictions and batches in ``order`` (a list of (volume number, slice)), as the runner feeds them."""
    items = [
        (
            {"mask": torch.from_numpy(pairs[v][1][..., s])},
            torch.from_numpy(pairs[v][2][..., s]),
            {
                "path": f"/data/{pairs[v][0]}.nii.gz",
                "volume": pairs[v][0],
                "slice": s,
                "num_slices": pairs[v][2].shape[2],
                "spacing": SPACING,
            },
        )  # fmt: skip
        for v, s in order
    ]
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        yield [p for p, _, _ in chunk], {"mask": torch.stack([t for _, t, _ in chunk]), "meta": [m for *_, m in chunk]}


def expected(pairs, metric):
    scores = [metric.score(prediction, target, SPACING) for _, prediction, target in pairs]
    return {
        "Dice/organ": np.mean([s["dice"][0] for s in scores]),
        "Dice/lesion": np.mean([s["dice"][1] for s in scores]),
        "HD95/organ": np.mean([s["hd95"][0] for s in scores]),
        "HD95/lesion": np.mean([s["hd95"][1] for s in scores]),
    }


def in_order(pairs):
    return [(v, s) for v, (_, _, t) in enumerate(pairs) for s in range(t.shape[2])]


def evaluate(metric, pairs, order):
    metric.reset()
    for preds, batch in slice_batches(pairs, order):
        metric.update(preds, batch)
    return metric.compute()


def test_slices_are_stacked_back_into_volumes_in_any_order():
    pairs = volumes()
    metric = METRICS.build(dict(type="VolumeSegmentationMetric"))
    metric.dataset_meta = {"classes": CLASSES, "ignore_index": 255}
    order = in_order(pairs)
    results = evaluate(metric, pairs, order)
    for key, value in expected(pairs, metric).items():
        assert results[key] == pytest.approx(value)
    assert results["mDice"] == pytest.approx((results["Dice/organ"] + results["Dice/lesion"]) / 2)
    assert 0 < results["Dice/lesion"] < 1 and results["HD95/lesion"] > 0
    shuffled = [order[i] for i in np.random.default_rng(1).permutation(len(order))]
    assert evaluate(metric, pairs, shuffled) == pytest.approx(results)
    assert sorted(volume["volume"] for volume in metric.per_volume()) == ["case_0", "case_1"]


def test_volumes_are_scored_as_they_complete_and_their_slices_dropped():
    pairs = volumes()
    metric = VolumeSegmentationMetric(class_names=CLASSES)
    order = in_order(pairs)
    for preds, batch in slice_batches(pairs, order[:6]):  # volume 0 (5 slices) and one slice of volume 1
        metric.update(preds, batch)
    assert len(metric.volumes) == 1 and len(metric.slices) == 1


def test_void_voxels_count_for_no_class():
    metric = VolumeSegmentationMetric(class_names=CLASSES)
    target = np.ones((4, 4, 2), dtype=np.int64)
    target[0] = 255
    prediction = np.ones_like(target)
    prediction[0] = 2
    score = metric.score(prediction, target, (1, 1, 1))
    assert score["dice"][0] == 1.0 and math.isnan(score["dice"][1])


def test_a_volume_missing_slices_is_named():
    pairs = volumes()
    metric = VolumeSegmentationMetric(class_names=CLASSES)
    order = [item for item in in_order(pairs) if item != (1, 3)]
    with pytest.raises(DatasetError, match=r"volume case_1 .*1 of its 7 slices were not evaluated \(slice 3\)"):
        evaluate(metric, pairs, order)


def test_slices_without_volume_meta_are_refused():
    metric = VolumeSegmentationMetric(class_names=CLASSES)
    batch = {"mask": torch.zeros(1, 4, 4, dtype=torch.int64), "meta": [{"path": "a.png"}]}
    with pytest.raises(DatasetError, match=r"a.png: VolumeSegmentationMetric needs slice meta"):
        metric.update([{"mask": torch.zeros(4, 4, dtype=torch.int64)}], batch)


def test_class_count_must_agree_with_the_dataset():
    metric = VolumeSegmentationMetric(num_classes=2)
    with pytest.raises(ConfigError, match="num_classes=2 but the dataset has 3"):
        metric.dataset_meta = {"classes": CLASSES}
    with pytest.raises(ConfigError, match="needs num_classes"):
        VolumeSegmentationMetric().update([], {"mask": torch.zeros(0, 2, 2)})


def test_two_processes_gather_slices_and_get_the_single_process_figures(monkeypatch):
    pairs = volumes()
    order = in_order(pairs)
    single = VolumeSegmentationMetric(class_names=CLASSES)
    reference = evaluate(single, pairs, order)
    world_size = 2
    ranks = []
    for rank in range(world_size):
        metric = VolumeSegmentationMetric(class_names=CLASSES)
        shard = [order[i] for i in ShardSampler(len(order), rank=rank, world_size=world_size)]
        for preds, batch in slice_batches(pairs, shard, batch_size=2):
            metric.update(preds, batch)
        ranks.append(metric)
    assert all(not metric.volumes for metric in ranks)  # no process sees a whole volume
    states = iter([[list(m.slices) for m in ranks], [list(m.volumes) for m in ranks]])
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: world_size)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), next(states)))
    ranks[0].sync()
    assert ranks[0].compute() == pytest.approx(reference)


def test_summary_table_lists_foreground_classes_in_percent_and_mm():
    pairs = volumes()
    metric = VolumeSegmentationMetric(class_names=CLASSES)
    results = evaluate(metric, pairs, in_order(pairs))
    table = metric.summary_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "Dice", "%", "HD95", "mm", "volumes"]
    assert lines[2].split()[0] == "organ" and float(lines[2].split()[1]) == pytest.approx(
        100 * results["Dice/organ"], abs=0.01
    )
    assert "background" not in table and lines[-1].split()[-1] == "2"
    with_background = VolumeSegmentationMetric(class_names=CLASSES, include_background=True)
    assert "Dice/background" in evaluate(with_background, pairs, in_order(pairs))


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(range(3), 2)))
def test_scores_do_not_depend_on_which_class_is_which(first, second):
    target = np.zeros((6, 6, 3), dtype=np.int64)
    target[1:4, 1:4] = 1
    target[4:, 4:] = 2
    swap = {first: second, second: first}
    swapped = np.vectorize(lambda v: swap.get(v, v))(target)
    metric = VolumeSegmentationMetric(class_names=CLASSES, include_background=True)
    plain, other = metric.score(target, target, (1, 1, 1)), metric.score(swapped, swapped, (1, 1, 1))
    assert plain["dice"] == other["dice"] == [1.0, 1.0, 1.0]

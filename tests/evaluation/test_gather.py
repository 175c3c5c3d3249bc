import json
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from densevision.engine.runner import ShardSampler
from densevision.evaluation.base import Metric, interleave
from densevision.evaluation.detection import CocoMetric, VOCMetric
from tests.evaluation.test_detection import CATEGORY_IDS, CLASSES, coco_ground_truth, evaluate, random_images

NUM_IMAGES = 11  # odd: rank 0 evaluates one image more than rank 1


class Records(Metric):
    gather_states = ("store.items",)

    def __init__(self, items):
        self.store = type("Store", (), {})()
        self.store.items = list(items)


@pytest.mark.parametrize(("length", "world_size"), [(7, 3), (8, 2), (2, 4), (0, 2)])
def test_interleaving_shards_restores_the_dataset_order(length, world_size):
    shards = [list(ShardSampler(length, rank=r, world_size=world_size)) for r in range(world_size)]
    assert interleave(shards) == list(range(length))


def test_sync_gathers_records_into_dataset_order(monkeypatch):
    world_size, length = 3, 7
    shards = [list(ShardSampler(length, rank=r, world_size=world_size)) for r in range(world_size)]
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: world_size)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), shards))
    metric = Records(shards[1])
    metric.sync()
    assert metric.store.items == list(range(length))


def test_sync_without_distributed_keeps_the_records():
    metric = Records([3, 1, 2])
    metric.sync()
    assert metric.store.items == [3, 1, 2]


def images():
    return random_images(5, NUM_IMAGES, len(CLASSES), size=300.0, image_ids=[50 + 3 * i for i in range(NUM_IMAGES)])


def metrics(ann_file: str) -> dict[str, Metric]:
    built = {
        "voc07": VOCMetric(),
        "voc_area": VOCMetric(ap_method="area"),
        "coco": CocoMetric(),
        "coco_file": CocoMetric(ann_file=ann_file),
    }
    for metric in built.values():
        metric.dataset_meta = {"classes": CLASSES, "category_ids": CATEGORY_IDS}
    return built


def figures(shard, ann_file: str) -> dict[str, dict]:
    """Every metric's figures and the dataset indices of its records, after sync."""
    results = {}
    for name, metric in metrics(ann_file).items():
        evaluate(metric, shard, batch_size=2)
        metric.sync()
        results[name] = {"figures": metric.compute(), "indices": [record["index"] for record in metric.records]}
    return results


def _evaluate_shard(rank: int, world_size: int, port: int, out_dir: str, ann_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        everything = images()
        shard = [everything[i] for i in ShardSampler(len(everything), rank=rank, world_size=world_size)]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(figures(shard, ann_file)))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_give_the_figures_of_one_process(tmp_path):
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(coco_ground_truth(images(), CATEGORY_IDS)))
    single = figures(images(), str(ann_file))
    assert single["voc07"]["figures"]["mAP"] > 0.1 and single["coco"]["figures"]["AP"] > 0.1

    mp.spawn(_evaluate_shard, args=(2, free_port(), str(tmp_path), str(ann_file)), nprocs=2, join=True)
    for rank in range(2):
        gathered = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, expected in single.items():
            assert gathered[name]["indices"] == list(range(NUM_IMAGES)), (rank, name)
            assert gathered[name]["figures"] == pytest.approx(expected["figures"], rel=0, abs=0, nan_ok=True)

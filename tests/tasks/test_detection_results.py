"""One COCO results writer: CocoMetric's results file and tools/infer.py's results.json hold the same entries."""

import json

import numpy as np
import pytest

from densevision.evaluation.detection import CocoMetric
from densevision.tasks.detection.results import CocoResultsStream, coco_results, image_id_of

BOXES = np.array([[1.25, 2.5, 10.123456, 20.987654], [0.0, 0.0, 3.0, 4.0]], np.float32)
SCORES = np.array([0.87654321, 0.1], np.float32)
LABELS = np.array([1, 0])


@pytest.mark.parametrize(("name", "image_id"), [("000000397133.jpg", 397133), ("scene_01.png", "scene_01")])
def test_a_files_image_id_is_the_number_a_coco_name_carries_else_its_stem(name, image_id):
    assert image_id_of(f"photos/{name}") == image_id


def test_entries_keep_the_predicted_values_in_xywh_with_the_category_ids():
    first, second = coco_results(7, BOXES, SCORES, LABELS, [3, 9], file_name="a.png")
    assert first["image_id"] == 7 and first["category_id"] == 9 and second["category_id"] == 3
    x1, y1, x2, y2 = BOXES[0].tolist()
    assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1] and first["score"] == float(SCORES[0])  # not rounded
    assert first["file_name"] == "a.png"
    json.dumps([first, second])  # plain Python values


def test_the_metrics_results_file_is_written_by_the_same_writer(tmp_path):
    metric = CocoMetric(classes=["a", "b"], results_file=str(tmp_path / "results.json"))
    meta = {"image_id": 5, "gt_boxes": BOXES, "gt_labels": LABELS, "gt_ignore": np.zeros(2, bool)}
    metric.update([{"boxes": BOXES, "scores": SCORES, "labels": LABELS}], {"meta": [meta]})
    metric.compute()
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(coco_results(5, BOXES, SCORES, LABELS, [1, 2])))


def test_the_stream_is_valid_json_after_every_image_and_equals_one_dump(tmp_path):
    images = [coco_results(i, BOXES, SCORES, LABELS, [1, 2], file_name=f"{i}.png") for i in range(3)]
    stream = CocoResultsStream(tmp_path / "out" / "results.json")
    assert json.loads(stream.path.read_text()) == []
    for done, entries in enumerate(images, start=1):
        stream.add(entries)
        stream.add([])  # an image without detections adds nothing
        assert json.loads(stream.path.read_text()) == [entry for image in images[:done] for entry in image]
    stream.close()
    assert stream.path.read_text() == json.dumps([entry for image in images for entry in image])
    with pytest.raises(ValueError, match="closed"):
        stream.add(images[0])

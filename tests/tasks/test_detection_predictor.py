"""Detection inference over files: grey and RGBA images made RGB as detection training makes them, and results.json
streamed (valid JSON after every image, nothing kept per image)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.inference import infer_files
from densevision.tasks import Detector
from densevision.tasks.detection.predictor import DETECTION_RESULTS, DetectionPredictor

TINY_DSOD = dict(type="DSOD", num_classes=4, image_size=64, stem_channels=(8, 8, 16), growth_rate=4,
                 block_config=(1, 1, 1, 1), extra_channels=(8, 8))  # fmt: skip
DETECTION_FORMAT = {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": True}  # what detection datasets record


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    detector = Detector(model=TINY_DSOD, score_threshold=0.0, max_detections=5)
    return DetectionPredictor(detector, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=3, image_format=DETECTION_FORMAT)


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def test_grey_and_rgba_images_are_made_rgb_as_in_training_and_a_corrupt_one_is_listed(predictor, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    grey = np.repeat(_rgb(1)[..., :1], 3, axis=2)
    Image.fromarray(grey[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([_rgb(2), np.full((40, 48), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(_rgb(3)).save(folder / "rgb.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG truncated")
    report = infer_files(predictor, sorted(folder.iterdir()), tmp_path / "out")
    assert [path.name for path, _ in report.failed] == ["corrupt.png"]
    results = json.loads((tmp_path / "out" / DETECTION_RESULTS).read_text())
    assert {entry["image_id"] for entry in results} == {"grey", "rgba", "rgb"}
    for name, as_rgb in (("grey", grey), ("rgba", _rgb(2))):
        expected = predictor.predict(as_rgb)
        boxes = [entry["bbox"] for entry in results if entry["image_id"] == name]
        x1, y1, x2, y2 = expected["boxes"].T.tolist()
        np.testing.assert_allclose(boxes, np.array([x1, y1, np.subtract(x2, x1), np.subtract(y2, y1)]).T, atol=1e-4)


def test_results_json_holds_each_image_as_it_is_predicted_and_stays_valid_after_a_failure(predictor, tmp_path):
    paths = []
    for index in range(4):
        paths.append(tmp_path / "in" / f"{index:06d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(_rgb(index)).save(paths[-1])
    results_file = tmp_path / "out" / DETECTION_RESULTS
    seen: list[set] = []

    def progress(items):
        for done, path in enumerate(items):
            if done:  # the images before this one are in the file already, before finish()
                seen.append({entry["image_id"] for entry in json.loads(results_file.read_text())})
            if done == 3:
                raise KeyboardInterrupt  # the run stops midway
            yield path

    with pytest.raises(KeyboardInterrupt):
        infer_files(predictor, paths, tmp_path / "out", progress=progress)
    assert seen == [{0}, {0, 1}, {0, 1, 2}]
    assert {entry["image_id"] for entry in json.loads(results_file.read_text())} == {0, 1, 2}

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from densevision.data.detection_transforms import Expand, MinIoURandomCrop, PhotometricDistort
from densevision.data.transforms import TorchSeededCompose, build_pipeline
from densevision.registry import TRANSFORMS, ConfigError

SSD_TRAIN = [
    dict(type="PhotometricDistort"),
    dict(type="Expand", fill=(123.675, 116.28, 103.53), max_ratio=4.0, p=0.5),
    dict(type="MinIoURandomCrop"),
    dict(type="Resize", height=300, width=300),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="Normalize"),
]
# Three filled rectangles in unique colours (x1, y1, x2, y2 in continuous pixels) on a grey background.
BOXES = np.array([[4, 6, 20, 30], [30, 10, 58, 24], [40, 32, 70, 52]], dtype=np.float32)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
BACKGROUND = 7


def _scene(height=60, width=80):
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    for (x1, y1, x2, y2), colour in zip(BOXES.astype(int), COLOURS):
        image[y1:y2, x1:x2] = colour
    return image


def _compose(transforms):
    """What build_pipeline(task='detection') builds, with a second label field that must travel with the boxes."""
    return TorchSeededCompose(transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "ids"]))


@pytest.mark.parametrize("name", ["PhotometricDistort", "Expand", "MinIoURandomCrop"])
def test_registered_by_name(name):
    assert TRANSFORMS.get(name).__name__ == name


def test_ssd_pipeline_from_config():
    pipeline = build_pipeline(SSD_TRAIN, task="detection")
    for seed in range(5):
        torch.manual_seed(seed)
        out = pipeline(image=_scene(), bboxes=BOXES, labels=np.arange(3))
        assert out["image"].shape == (300, 300, 3) and out["image"].dtype == np.float32
        boxes = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert len(boxes) == len(out["labels"]) >= 1  # the crop keeps at least one box centre
        assert (boxes >= 0).all() and (boxes <= 300).all() and (boxes[:, 2:] > boxes[:, :2]).all()


@pytest.mark.parametrize("resize", [False, True])
def test_boxes_still_enclose_their_rectangles(resize):
    transforms = [Expand(fill=BACKGROUND, max_ratio=3.0, p=0.7), MinIoURandomCrop(), A.HorizontalFlip(p=0.5)]
    if resize:
        transforms.append(A.Resize(height=50, width=50, interpolation=cv2.INTER_NEAREST))
    pipeline = _compose(transforms)
    tolerance = 1.0 if resize else 0.0
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = pipeline(image=_scene(), bboxes=BOXES, labels=[0, 1, 2], ids=[10, 11, 12])
        image, boxes = out["image"], np.asarray(out["bboxes"]).reshape(-1, 4)
        labels = [int(label) for label in out["labels"]]
        assert [int(i) - 10 for i in out["ids"]] == labels  # every field stays in step
        dropped += 3 - len(boxes)
        for box, label in zip(boxes, labels):
            ys, xs = np.nonzero((image == COLOURS[label]).all(axis=2))
            extent = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_allclose(extent, box, atol=tolerance + 1e-4, err_msg=f"seed {seed}, label {label}")
    assert dropped > 0  # some crops left boxes out, and those never came back mislabelled


def test_crop_keeps_boxes_whose_centre_it_holds():
    # centres (10, 10), (35, 35), (30, 20); the last column is a label field riding along
    boxes = np.array([[0, 0, 20, 20, 7], [25, 25, 45, 45, 8], [10, 10, 50, 30, 9]], dtype=np.float64)
    boxes[:, [0, 2]] /= 80
    boxes[:, [1, 3]] /= 60
    kept = MinIoURandomCrop().apply_to_bboxes(boxes, crop_coords=(15, 15, 60, 50), shape=(60, 80))
    assert kept[:, 4].tolist() == [8, 9]
    np.testing.assert_allclose(kept[:, :4] * [45, 35, 45, 35], [[10, 10, 30, 30], [-5, -5, 35, 15]])


def test_a_crop_of_an_image_without_boxes_has_an_empty_target():
    pipeline = _compose([MinIoURandomCrop(min_ious=(0.5,))])
    shapes = set()
    for seed in range(5):
        torch.manual_seed(seed)
        out = pipeline(image=_scene(), bboxes=np.zeros((0, 4)), labels=[], ids=[])
        assert len(out["bboxes"]) == 0 and len(out["labels"]) == 0
        shapes.add(out["image"].shape)
    assert len(shapes) > 1  # an empty image is still cropped


def test_min_iou_is_respected():
    box = np.array([[20, 15, 60, 45]], dtype=np.float32)  # 40 x 30
    pipeline = _compose([MinIoURandomCrop(min_ious=(0.7,), min_crop_size=0.3)])
    cropped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out = pipeline(image=_scene(), bboxes=box, labels=[0], ids=[0])
        height, width = out["image"].shape[:2]
        if (height, width) == (60, 80):
            continue  # no qualifying patch in the trials: the image stays whole
        cropped += 1
        ((x1, y1, x2, y2),) = np.asarray(out["bboxes"])
        inter = (x2 - x1) * (y2 - y1)  # the kept box is clipped to the crop
        assert inter / (height * width + 40 * 30 - inter) >= 0.7 - 1e-4
    assert cropped > 0


def test_min_iou_one_keeps_the_whole_image():
    out = _compose([MinIoURandomCrop(min_ious=(1.0,))])(image=_scene(), bboxes=BOXES, labels=[0, 1, 2], ids=[0, 1, 2])
    np.testing.assert_array_equal(out["image"], _scene())
    np.testing.assert_allclose(out["bboxes"], BOXES)


def test_expand_pads_with_fill_up_to_max_ratio():
    pipeline = _compose([Expand(fill=(1, 2, 3), max_ratio=4.0, p=1.0)])
    image = np.full((10, 20, 3), 200, np.uint8)
    for seed in range(10):
        torch.manual_seed(seed)
        out = pipeline(image=image, bboxes=[[0, 0, 20, 10]], labels=[0], ids=[0])
        height, width = out["image"].shape[:2]
        assert 10 <= height <= 40 and 20 <= width <= 80
        x1, y1, x2, y2 = np.rint(out["bboxes"][0]).astype(int)
        assert (x2 - x1, y2 - y1) == (20, 10) and (out["image"][y1:y2, x1:x2] == 200).all()
        outside = np.ones((height, width), bool)
        outside[y1:y2, x1:x2] = False
        assert (out["image"][outside] == [1, 2, 3]).all()


def test_photometric_distort_changes_colours_not_shape():
    image = _scene()
    distort = build_pipeline([dict(type="PhotometricDistort", p=1.0)])
    torch.manual_seed(0)
    out = distort(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    with pytest.raises(ValueError, match="uint8 RGB"):
        distort(image=image.astype(np.float32))


@pytest.mark.parametrize(
    "name, factor, kernel",
    [
        ("brightness", 1.1, F.adjust_brightness),
        ("contrast", 0.6, F.adjust_contrast),
        ("saturation", 1.4, F.adjust_saturation),
        ("hue", 0.04, F.adjust_hue),
    ],
)
def test_photometric_kernels_match_torchvision(name, factor, kernel):
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    factors = dict.fromkeys(("brightness", "contrast", "saturation", "hue"))
    ours = PhotometricDistort().apply(image, factors={**factors, name: factor}, contrast_first=True, permutation=None)
    theirs = kernel(torch.from_numpy(image).permute(2, 0, 1), factor).permute(1, 2, 0).numpy()
    tolerance = 6 if name == "hue" else 1  # OpenCV keeps uint8 hue in 180 steps
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= tolerance


def test_randomness_follows_torch_seed():
    pipeline = build_pipeline(SSD_TRAIN, task="detection")

    def run(seed):
        torch.manual_seed(seed)
        return [pipeline(image=_scene(), bboxes=BOXES, labels=[0, 1, 2]) for _ in range(3)]

    first, again, other = run(0), run(0), run(1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["bboxes"], b["bboxes"])
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(type="MinIoURandomCrop", min_ious=(0.5, 1.5)), "min_ious"),
        (dict(type="MinIoURandomCrop", min_crop_size=0), "min_crop_size"),
        (dict(type="MinIoURandomCrop", aspect_ratio_range=(2, 1)), "aspect_ratio_range"),
        (dict(type="Expand", max_ratio=0.5), "max_ratio"),
        (dict(type="Expand", ratio=2), "has no argument 'ratio'"),
    ],
)
def test_bad_arguments_name_the_transform(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_pipeline([cfg], task="detection")


def _voc_like(rng):
    """A VOC-shaped image (375x500 or 500x375 at 1/5 scale) with 1-9 boxes of 0.5-90 % of its area, any aspect."""
    height, width = (75, 100) if rng.random() < 0.7 else (100, 75)
    boxes = []
    for _ in range(1 + min(rng.poisson(1.4), 8)):
        area = np.exp(rng.uniform(np.log(0.005), np.log(0.9))) * height * width
        aspect = np.exp(rng.normal(0, 0.5))
        box_width, box_height = min(np.sqrt(area * aspect), width), min(np.sqrt(area / aspect), height)
        x1, y1 = rng.uniform(0, width - box_width), rng.uniform(0, height - box_height)
        boxes.append([x1, y1, x1 + box_width, y1 + box_height])
    return np.zeros((height, width, 3), np.uint8), np.array(boxes, np.float32)


@pytest.mark.parametrize("expand", [False, True])
def test_whole_image_rate_matches_torchvisions_ssd_crop(expand):
    """Left whole only when the "keep" option is drawn before a minimum IoU that some patch meets: torchvision's
    RandomIoUCrop rate on the same boxes (with the default options 1/7 if every minimum can be met; more when
    0.7 or 0.9 are out of reach of small boxes), not whenever the drawn minimum fails its trials."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import RandomIoUCrop

    draws, rng = 600, np.random.default_rng(0)
    before = _compose([Expand(fill=0, p=0.5) if expand else A.NoOp()])
    ours, theirs = _compose([MinIoURandomCrop()]), RandomIoUCrop(trials=50)
    torch.manual_seed(0)
    kept_whole = {"ours": 0, "torchvision": 0}
    for _ in range(draws):
        image, boxes = _voc_like(rng)
        out = before(image=image, bboxes=boxes, labels=np.zeros(len(boxes)), ids=np.zeros(len(boxes)))
        image, boxes = out["image"], np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        crop = ours(image=image, bboxes=boxes, labels=np.zeros(len(boxes)), ids=np.zeros(len(boxes)))
        kept_whole["ours"] += crop["image"].shape == image.shape
        tv_boxes = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=image.shape[:2])
        kept_whole["torchvision"] += not theirs.make_params(
            [tv_tensors.Image(torch.zeros(3, *image.shape[:2])), tv_boxes]
        )
    ours_rate, their_rate = kept_whole["ours"] / draws, kept_whole["torchvision"] / draws
    pooled = (ours_rate + their_rate) / 2
    tolerance = 4 * np.sqrt(2 * pooled * (1 - pooled) / draws)  # 4 sigma of the difference of two binomial rates
    assert 1 / 7 - 0.03 < their_rate < 0.4  # the reference recipe itself, on these boxes
    assert abs(ours_rate - their_rate) < tolerance, kept_whole


def test_whole_image_rate_is_one_in_seven_when_every_minimum_can_be_met():
    # no boxes: any patch qualifies, so only the "keep" option (1 of the 7 defaults) leaves the image whole
    draws, pipeline = 2000, _compose([MinIoURandomCrop()])
    torch.manual_seed(0)
    whole = sum(
        pipeline(image=_scene(), bboxes=np.zeros((0, 4)), labels=[], ids=[])["image"].shape == (60, 80, 3)
        for _ in range(draws)
    )
    assert abs(whole / draws - 1 / 7) < 4 * np.sqrt(1 / 7 * 6 / 7 / draws)


def test_a_failed_minimum_draws_again_instead_of_keeping_the_image():
    # A 4x4 box cannot overlap any patch (sides >= 30 % of 60x80) with IoU 0.9: every call must end cropped to a
    # patch meeting 0.0, or whole only by drawing "keep"; without "keep" it is never left whole.
    box = np.array([[38, 28, 42, 32]], np.float32)
    pipeline = _compose([MinIoURandomCrop(min_ious=(0.0, 0.9))])
    for seed in range(20):
        torch.manual_seed(seed)
        out = pipeline(image=_scene(), bboxes=box, labels=[0], ids=[0])
        assert out["image"].shape != (60, 80, 3) and len(out["bboxes"]) == 1

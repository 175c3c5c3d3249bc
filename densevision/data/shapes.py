"""Generated quick-start data: triangles, rectangles and ellipses on textured backgrounds, written in the real formats.

The files are what real datasets look like on disk (image + index-PNG mask folders, COCO JSON, class folders), so the
quick-start configs exercise the same loaders as real data, in seconds and without a download::

    root/segmentation/images/<split>/00000.png     root/segmentation/masks/<split>/00000.png (0 = background)
    root/detection/images/<split>/00000.png        root/detection/annotations/instances_<split>.json
    root/classification/<split>/<class>/00000.png  (one shape per image)

``generate_graded_shapes`` writes the classification layout again, one shape on a plain background per image, with a
difficulty per image (smaller, fainter, noisier, partly occluded shapes) recorded in ``root/difficulty_<split>.json``:
the data of the early-exit quick start.

Generation is deterministic in ``seed`` (each split and task draws from its own stream) and atomic: files are written
to a temporary folder that is renamed to ``root`` once complete, with the parameters in ``root/shapes.json``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from densevision.data.coco import CocoDetection
from densevision.data.generated import generate_once
from densevision.data.image_folder import ImageFolderDataset
from densevision.data.io import Colour, write_mask_png
from densevision.data.mask_folder import MaskFolderDataset
from densevision.registry import DATASETS

__all__ = [
    "SHAPE_CLASSES",
    "SEGMENTATION_CLASSES",
    "SHAPES_PALETTE",
    "generate_shapes",
    "generate_graded_shapes",
    "ShapesSegmentation",
    "ShapesClassification",
    "ShapesDetection",
    "GradedShapesClassification",
]

SHAPE_CLASSES = ("triangle", "rectangle", "ellipse")
SEGMENTATION_CLASSES = ("background", *SHAPE_CLASSES)
SHAPES_PALETTE: list[Colour] = [(0, 0, 0), (220, 20, 60), (0, 128, 255), (255, 200, 0)]
SPLITS = ("train", "val", "test")
MARKER = "shapes.json"
_FORMAT_VERSION = 2  # bump whenever the generated content changes, so old folders are regenerated


def _rotated(points: np.ndarray, angle: float, centre: np.ndarray) -> list[tuple[float, float]]:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [(float(x), float(y)) for x, y in points @ rotation.T + centre]


def _polygon(kind: str, centre: np.ndarray, radius: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Vertices of one shape inside the circle (centre, radius): a triangle with well-spread corners, or a rotated
    rectangle or ellipse (48 vertices)."""
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "triangle":
        corners = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        radii = radius * rng.uniform(0.85, 1.0, 3)
        points = np.stack([np.cos(corners), np.sin(corners)], axis=1) * radii[:, None]
    elif kind == "rectangle":
        half_w, half_h = radius * rng.uniform(0.4, 0.7, 2)
        points = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    else:
        semi_axes = radius * rng.uniform(0.5, 1.0, 2)
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([semi_axes[0] * np.cos(t), semi_axes[1] * np.sin(t)], axis=1)
    return _rotated(points, angle, centre)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 float background: a base colour, smooth low-frequency blotches and faint stripes."""
    base = rng.uniform(40, 215, 3)
    coarse = rng.normal(0, 25, (4, 4, 3)).astype(np.float32)
    blotches = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR)) for c in range(3)], axis=2
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    direction = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    stripes = np.sin((xx * np.cos(direction) + yy * np.sin(direction)) * 2 * np.pi / period)
    return base + blotches + rng.uniform(0, 15) * stripes[..., None]


def _shape_colour(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour at least ~80 levels away from the background's mean, so every shape stays visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-6
    colour = np.clip(mean + direction * rng.uniform(90, 160), 0, 255)
    if np.linalg.norm(colour - mean) < 80:  # clipped against the cube's wall: go the other way
        colour = np.clip(mean - direction * 160, 0, 255)
    return colour


def _render(
    size: int, shapes: Sequence[tuple[int, np.ndarray, float]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(class index, centre, radius)`` shapes in order (later ones occlude earlier ones).

    Returns the uint8 RGB image and the instance map (0 background, k = k-th shape where visible).
    """
    background = _background(size, rng)
    instances = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(instances)
    colours = [np.zeros(3)]
    for number, (class_index, centre, radius) in enumerate(shapes, start=1):
        draw.polygon(_polygon(SHAPE_CLASSES[class_index], centre, radius, rng), fill=number)
        colours.append(_shape_colour(background, rng))
    instance_map = np.asarray(instances)
    image = np.where(instance_map[..., None] > 0, np.array(colours)[instance_map], background)
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), instance_map


def _random_shape(size: int, rng: np.random.Generator, low: float, high: float) -> tuple[int, np.ndarray, float]:
    radius = rng.uniform(low, high) * size
    centre = rng.uniform(radius, size - radius, 2)
    return int(rng.integers(len(SHAPE_CLASSES))), centre, radius


def _scene(size: int, rng: np.random.Generator, count: int) -> list[tuple[int, np.ndarray, float]]:
    """Up to ``count`` shapes that may touch but hardly overlap: an occluded shape is ambiguous (a triangle with a
    corner hidden looks like a rectangle), and a quick-start task should be learnable in minutes."""
    shapes: list[tuple[int, np.ndarray, float]] = []
    for _ in range(8 * count):
        candidate = _random_shape(size, rng, 0.14, 0.3)
        _, centre, radius = candidate
        if all(np.linalg.norm(centre - other) >= 0.9 * (radius + r) for _, other, r in shapes):
            shapes.append(candidate)
            if len(shapes) == count:
                break
    return shapes


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _coco_annotation(binary: np.ndarray) -> dict[str, Any]:
    """bbox ``[x, y, w, h]`` (pixel-inclusive), area and RLE segmentation of one instance's visible pixels."""
    from pycocotools import mask as mask_utils

    ys, xs = np.nonzero(binary)
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(binary.sum()),
        "segmentation": rle,
        "iscrowd": 0,
    }


def _write_scenes(out: Path, split: str, count: int, size: int, rng: np.random.Generator) -> None:
    """Segmentation and detection files for ``count`` scenes of 1-3 shapes that hardly overlap."""
    folders = {
        name: out / path
        for name, path in (
            ("seg_images", f"segmentation/images/{split}"),
            ("seg_masks", f"segmentation/masks/{split}"),
            ("det_images", f"detection/images/{split}"),
            ("det_annotations", "detection/annotations"),
        )
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        shapes = _scene(size, rng, int(rng.integers(1, 4)))
        image, instance_map = _render(size, shapes, rng)
        class_of_instance = np.array([0] + [class_index + 1 for class_index, _, _ in shapes], dtype=np.uint8)
        name = f"{index:05d}.png"
        encoded = _png_bytes(image)
        (folders["seg_images"] / name).write_bytes(encoded)
        (folders["det_images"] / name).write_bytes(encoded)
        write_mask_png(folders["seg_masks"] / name, class_of_instance[instance_map], palette=SHAPES_PALETTE)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for number, (class_index, _, _) in enumerate(shapes, start=1):
            visible = instance_map == number
            if visible.any():
                annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": class_index + 1}
                annotations.append({**annotation, **_coco_annotation(visible)})
    coco = {
        "info": {"description": f"densevision generated shapes, {split} split"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)],
    }
    (folders["det_annotations"] / f"instances_{split}.json").write_text(json.dumps(coco))


def _write_classification(out: Path, split: str, count: int, size: int, rng: np.random.Generator) -> None:
    """``count`` images of one large shape each, classes balanced (image i shows class i mod 3)."""
    for name in SHAPE_CLASSES:
        (out / "classification" / split / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        class_index = index % len(SHAPE_CLASSES)
        _, centre, radius = _random_shape(size, rng, 0.25, 0.42)
        image, _ = _render(size, [(class_index, centre, radius)], rng)
        path = out / "classification" / split / SHAPE_CLASSES[class_index] / f"{index:05d}.png"
        path.write_bytes(_png_bytes(image))


def generate_shapes(
    root: str | Path, *, num_train: int, num_val: int, num_test: int, image_size: int = 64, seed: int = 0
) -> Path:
    """Write the shapes datasets under ``root`` (see the module docstring); a no-op when ``root`` already holds a
    completed generation with the same parameters. Returns ``root``."""
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"num_{split} must be a non-negative int, got {count!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    root = Path(root)
    params = {"version": _FORMAT_VERSION, **{f"num_{s}": c for s, c in counts.items()}, "image_size": image_size,
              "seed": seed}  # fmt: skip

    def write(folder: Path) -> None:
        for split_index, (split, count) in enumerate(counts.items()):
            _write_scenes(folder, split, count, image_size, np.random.default_rng([seed, split_index, 0]))
            _write_classification(folder, split, count, image_size, np.random.default_rng([seed, split_index, 1]))

    return generate_once(root, params, write, marker=MARKER, made_by="generate_shapes")


def _graded_image(
    size: int, class_index: int, difficulty: float, rng: np.random.Generator
) -> np.ndarray:  # fmt: skip
    """One shape on a plain grey background, harder to see in proportion to ``difficulty`` (0..1): its radius from
    0.42 down to 0.16 of the image, its contrast from 100 down to 30 grey levels, up to two patches of background over
    its edge, Gaussian noise up to σ = 30 levels. Plain backgrounds keep the easy end easy (the textured ones of the
    other shapes data take a small network far longer to learn)."""
    relative_radius = 0.42 - 0.26 * difficulty
    _, centre, radius = _random_shape(size, rng, relative_radius, relative_radius)
    background = rng.uniform(60, 195)
    contrast = (100 - 70 * difficulty) * rng.choice([-1.0, 1.0])
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(_polygon(SHAPE_CLASSES[class_index], centre, radius, rng), fill=1)
    pixels = np.full((size, size, 3), background) + rng.normal(0, 8, 3)  # a slight tint
    pixels[np.asarray(mask) > 0] += contrast
    for _ in range(int(rng.binomial(2, difficulty))):
        corner = np.clip(centre + rng.uniform(-1, 1, 2) * radius - 0.3 * radius, 0, size - 1).astype(int)
        extent = np.maximum(1, rng.uniform(0.5, 0.9, 2) * radius).astype(int)
        pixels[corner[1] : corner[1] + extent[1], corner[0] : corner[0] + extent[0]] = background
    pixels += rng.normal(0, 4 + 26 * difficulty, pixels.shape)
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def _write_graded_classification(out: Path, split: str, count: int, size: int, rng: np.random.Generator) -> None:
    """``count`` images of one shape each (image i shows class i mod 3) at a drawn difficulty d = u² (u uniform, so
    most images are easy, as in real workloads), drawn by ``_graded_image``."""
    difficulties = []
    for name in SHAPE_CLASSES:
        (out / "classification" / split / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        class_index = index % len(SHAPE_CLASSES)
        difficulty = float(rng.uniform()) ** 2
        path = out / "classification" / split / SHAPE_CLASSES[class_index] / f"{index:05d}.png"
        path.write_bytes(_png_bytes(_graded_image(size, class_index, difficulty, rng)))
        difficulties.append({"file": str(path.relative_to(out)), "difficulty": round(difficulty, 4)})
    (out / f"difficulty_{split}.json").write_text(json.dumps(difficulties))


def generate_graded_shapes(
    root: str | Path, *, num_train: int, num_val: int, num_test: int, image_size: int = 32, seed: int = 0
) -> Path:
    """Write the graded-difficulty classification shapes under ``root`` (see the module docstring), once, like
    ``generate_shapes``. Returns ``root``."""
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"num_{split} must be a non-negative int, got {count!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    params = {"version": 2, "graded": True, **{f"num_{s}": c for s, c in counts.items()}, "image_size": image_size,
              "seed": seed}  # fmt: skip

    def write(folder: Path) -> None:
        for split_index, (split, count) in enumerate(counts.items()):
            rng = np.random.default_rng([seed, split_index, 2])
            _write_graded_classification(folder, split, count, image_size, rng)

    return generate_once(Path(root), params, write, marker=MARKER, made_by="generate_graded_shapes")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; expected one of {SPLITS}")


@DATASETS.register_module()
class ShapesSegmentation(MaskFolderDataset):
    """``generate_shapes`` (if not done yet), then the segmentation split as a ``MaskFolderDataset`` (4 classes)."""

    # Fixed by the generator, so predictors can read them from the class without building a split.
    classes = SEGMENTATION_CLASSES
    palette = SHAPES_PALETTE

    def __init__(
        self,
        root: str | Path = "data/shapes",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        num_train: int = 300,
        num_val: int = 60,
        num_test: int = 60,
        image_size: int = 64,
        seed: int = 0,
    ) -> None:
        _check_split(split)
        root = generate_shapes(
            root, num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size, seed=seed
        )
        super().__init__(
            img_dir=root / "segmentation" / "images" / split,
            mask_dir=root / "segmentation" / "masks" / split,
            classes=SEGMENTATION_CLASSES,
            palette=SHAPES_PALETTE,
            pipeline=pipeline,
        )


@DATASETS.register_module()
class ShapesClassification(ImageFolderDataset):
    """``generate_shapes`` (if not done yet), then the classification split as an ``ImageFolderDataset`` (3 classes)."""

    classes = SHAPE_CLASSES  # fixed by the generator; predictors read it from the class

    def __init__(
        self,
        root: str | Path = "data/shapes",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        num_train: int = 300,
        num_val: int = 60,
        num_test: int = 60,
        image_size: int = 64,
        seed: int = 0,
    ) -> None:
        _check_split(split)
        root = generate_shapes(
            root, num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size, seed=seed
        )
        super().__init__(root / "classification" / split, pipeline=pipeline, classes=SHAPE_CLASSES)


@DATASETS.register_module()
class ShapesDetection(CocoDetection):
    """``generate_shapes`` (if not done yet), then the detection split as a ``CocoDetection`` (3 classes).

    Boxes enclose each shape's visible pixels; the box colours are the segmentation colours of the same classes.
    """

    # Fixed by the generator; predictors read them from the class.
    classes = SHAPE_CLASSES
    palette = SHAPES_PALETTE[1:]

    def __init__(
        self,
        root: str | Path = "data/shapes",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        num_train: int = 300,
        num_val: int = 60,
        num_test: int = 60,
        image_size: int = 64,
        seed: int = 0,
    ) -> None:
        _check_split(split)
        root = generate_shapes(
            root, num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size, seed=seed
        )
        super().__init__(
            ann_file=root / "detection" / "annotations" / f"instances_{split}.json",
            img_dir=root / "detection" / "images" / split,
            pipeline=pipeline,
            palette=SHAPES_PALETTE[1:],
        )


@DATASETS.register_module()
class GradedShapesClassification(ImageFolderDataset):
    """``generate_graded_shapes`` (if not done yet), then one split as an ``ImageFolderDataset`` (3 classes): shapes
    from plain to hard to see, most of them easy, for early-exit classification."""

    classes = SHAPE_CLASSES  # fixed by the generator; predictors read it from the class

    def __init__(
        self,
        root: str | Path = "data/graded_shapes",
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        num_train: int = 3000,
        num_val: int = 600,
        num_test: int = 600,
        image_size: int = 32,
        seed: int = 0,
    ) -> None:
        _check_split(split)
        root = generate_graded_shapes(
            root, num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size, seed=seed
        )
        super().__init__(root / "classification" / split, pipeline=pipeline, classes=SHAPE_CLASSES)

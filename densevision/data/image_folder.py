"""Classification data: one sub-folder per class (ImageNet layout), or CIFAR-10's and CIFAR-100's python batches
read by torchvision."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densevision.contracts import DenseDataset
from densevision.data.base import image_format, image_to_tensor
from densevision.data.checks import DatasetError, DatasetSummary, FileChecker, ProblemHandler
from densevision.data.io import IMAGE_EXTENSIONS, list_files, read_image
from densevision.data.transforms import apply_pipeline, resolve_pipeline
from densevision.registry import DATASETS

__all__ = ["ImageFolderDataset", "CIFAR10Folder", "CIFAR100Folder"]

Pipeline = Sequence[Mapping[str, Any]] | Callable[..., dict] | None
# CIFAR's batches hold 8-bit RGB (what ``image_format`` records for an image file).
_CIFAR_FORMAT = {"dtype": "uint8", "max_value": 255, "channels": 3, "to_rgb": False}


def _classification_sample(image: np.ndarray, label: int, pipeline: Callable[..., dict], meta: dict) -> dict:
    out = apply_pipeline(pipeline, meta["path"], image=image)
    return {"image": image_to_tensor(out["image"]), "label": torch.tensor(label, dtype=torch.int64), "meta": meta}


def held_out_split(count: int, split: str, val_size: int, split_seed: int, *, source: Path) -> np.ndarray:
    """The indices of ``split`` (``'train'`` or ``'val'``) when ``val_size`` of ``count`` training images are held out
    by a permutation seeded with ``split_seed``: ``'val'`` the held-out ones, ``'train'`` the rest (in order), so the
    two are disjoint and cover every image for any seed. ``source``: what the images are, for the error message."""
    if not isinstance(val_size, int) or not 0 <= val_size < count or (split == "val" and val_size == 0):
        raise DatasetError(
            f"val_size must be an int in {int(split == 'val')}..{count - 1} (images held out of the {count} in "
            f"{source}), got {val_size!r}"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(split_seed)).numpy()
    return order[count - val_size :] if split == "val" else np.sort(order[: count - val_size])


@DATASETS.register_module()
class ImageFolderDataset(DenseDataset):
    """``root/<class>/**/<image>``: the label is the class folder's position in ``classes``.

    ``classes`` ``None`` takes every sub-folder, sorted by name (torchvision's order); given, it picks and orders them.
    Hidden files (macOS ``._*``) are left out and listed in ``skipped_files``.

    ``split`` ``None`` takes every image; ``'train'`` and ``'val'`` split the folder's images in two, ``'val'`` holding
    out ``val_size`` of them drawn by a permutation seeded with ``split_seed`` (MSDNet's authors hold out 50,000
    ImageNet training images to calibrate exit thresholds), ``'train'`` the rest.
    """

    def __init__(
        self,
        root: str | Path,
        pipeline: Pipeline = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        *,
        split: str | None = None,
        val_size: int = 0,
        split_seed: int = 0,
    ) -> None:
        if split not in (None, "train", "val"):
            raise DatasetError(
                f"unknown ImageFolderDataset split {split!r}; expected None (every image), 'train' or 'val'"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root} not found: expected one sub-folder of images per class under it")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            if not found:
                raise DatasetError(f"no class sub-folders in {self.root}: expected {self.root}/<class>/<image>")
            classes = found
        missing = [name for name in classes if name not in found]
        if missing:
            raise DatasetError(f"class folder(s) {missing} not found in {self.root} (found {found})")
        self.classes = tuple(classes)
        suffixes = tuple(e.lower() for e in extensions)
        self.samples: list[tuple[Path, int]] = []
        self.skipped_files: list[Path] = []
        empty = []
        for label, name in enumerate(self.classes):
            files, hidden = list_files(self.root / name, suffixes, recursive=True)
            self.skipped_files.extend(hidden)
            if not files:
                empty.append(str(self.root / name))
            self.samples.extend((path, label) for path in files)
        if empty:
            raise DatasetError(f"no images ({', '.join(suffixes)}) in class folder(s): {', '.join(empty)}")
        if split is not None:
            kept = held_out_split(len(self.samples), split, val_size, split_seed, source=self.root)
            self.samples = [self.samples[i] for i in kept]
        self.pipeline = resolve_pipeline(pipeline, task="classification")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metainfo(self) -> dict[str, Any]:
        """Class names and the format of the images (the first one's): what the task, the metric, checkpoints and
        predictors read."""
        return {"classes": self.classes, "image_format": image_format(self.samples[0][0])}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        image = read_image(path)
        return _classification_sample(
            image, label, self.pipeline, {"path": str(path), "ori_shape": tuple(image.shape[:2])}
        )

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Read every image and count images per class. Problems (unreadable file, format unlike the rest or not
        ``channels``, image smaller than the pipeline's crop) go to ``on_problem``; without it the first raises
        ``DatasetError`` naming the file, once all were read."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        counts = [0] * self.num_classes
        for path, label in self.samples:
            with checker.sample(path):
                checker.image(path, read_image(path))
                counts[label] += 1
        return checker.summary(len(self.samples), self.classes, counts, unit="images", skipped=list(self.skipped_files))


class _CIFARBatches(DenseDataset):
    """A CIFAR dataset from the python batches already on disk (``root/<folder>/``), read and md5-checked by
    torchvision; never downloads. Subclasses name the torchvision class, the folder and the files of each split."""

    _name: str
    _folder: str
    _files: Mapping[str, Sequence[str]]  # split -> batch files (the class-names file included)
    _archive: str
    _torchvision_class: str  # its reader in torchvision.datasets

    def __init__(self, root: str | Path, split: str, pipeline: Pipeline, *, train: bool) -> None:
        folder = Path(root) / self._folder
        needed = list(self._files[split])
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise DatasetError(
                f"{self._name} {split} batches not found: expected {', '.join(needed)} in {folder} "
                f"(missing {', '.join(missing)}); unpack {self._archive} into {Path(root)}"
            )
        import torchvision.datasets

        reader = getattr(torchvision.datasets, self._torchvision_class)
        try:
            self._cifar = reader(str(root), train=train, download=False)
        except RuntimeError as err:  # torchvision's md5 check
            raise DatasetError(f"{self._name} batches in {folder} failed torchvision's check: {err}") from err
        self.root = Path(root)
        self.split = split
        self.classes = tuple(self._cifar.classes)
        self.indices = np.arange(len(self._cifar.data))
        self.pipeline = resolve_pipeline(pipeline, task="classification")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metainfo(self) -> dict[str, Any]:
        """Class names and the format of the images (32×32 RGB, 8-bit)."""
        return {"classes": self.classes, "image_format": _CIFAR_FORMAT}

    def __len__(self) -> int:
        return len(self.indices)

    def _path(self, index: int) -> str:
        return f"{self.root / self._folder}[{self.split}:{index}]"

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = int(self.indices[index])
        image = self._cifar.data[source]
        meta = {"path": self._path(source), "ori_shape": tuple(image.shape[:2])}
        return _classification_sample(image, int(self._cifar.targets[source]), self.pipeline, meta)

    def check(self, *, on_problem: ProblemHandler | None = None, channels: int | None = None) -> DatasetSummary:
        """Count images per class (the batches were read and verified on construction); every image is 32×32 RGB,
        so the only problem is a model taking other than 3 ``channels``."""
        checker = FileChecker(pipeline=self.pipeline, channels=channels, on_problem=on_problem)
        checker.image(Path(self._path(int(self.indices[0]))), self._cifar.data[self.indices[0]])
        counts = np.bincount(np.asarray(self._cifar.targets)[self.indices], minlength=self.num_classes)
        return checker.summary(len(self), self.classes, counts, unit="images")


@DATASETS.register_module()
class CIFAR10Folder(_CIFARBatches):
    """CIFAR-10 from the python batches already on disk (``root/cifar-10-batches-py/``); never downloads."""

    _name = "CIFAR-10"
    _folder = "cifar-10-batches-py"
    _files = {
        "train": [*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"],
        "test": ["test_batch", "batches.meta"],
    }
    _archive = "cifar-10-python.tar.gz"
    _torchvision_class = "CIFAR10"

    def __init__(self, root: str | Path, split: str = "train", pipeline: Pipeline = None) -> None:
        if split not in self._files:
            raise ValueError(f"unknown CIFAR-10 split {split!r}; expected 'train' or 'test'")
        super().__init__(root, split, pipeline, train=split == "train")


@DATASETS.register_module()
class CIFAR100Folder(_CIFARBatches):
    """CIFAR-100 (the 100 fine labels) from the python batches already on disk (``root/cifar-100-python/``); never
    downloads.

    CIFAR-100 has no validation split; ``'val'`` holds out ``val_size`` training images, drawn by a permutation
    seeded with ``split_seed`` (the authors of MSDNet hold out 5,000 to calibrate exit thresholds), and ``'train'``
    is the rest; ``val_size=0`` trains on all 50,000.
    """

    _name = "CIFAR-100"
    _folder = "cifar-100-python"
    _files = {"train": ["train", "meta"], "val": ["train", "meta"], "test": ["test", "meta"]}
    _archive = "cifar-100-python.tar.gz"
    _torchvision_class = "CIFAR100"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        pipeline: Pipeline = None,
        *,
        val_size: int = 5000,
        split_seed: int = 0,
    ) -> None:
        if split not in self._files:
            raise DatasetError(f"unknown CIFAR-100 split {split!r}; expected 'train', 'val' or 'test'")
        super().__init__(root, split, pipeline, train=split != "test")
        if split == "test":
            return
        self.indices = held_out_split(
            len(self._cifar.data), split, val_size, split_seed, source=self.root / self._folder / "train"
        )

"""The Medical Segmentation Decathlon layout (``dataset.json``, imagesTr/labelsTr), read by its own description.

The class names, modality and cases come from ``dataset.json``; ``split`` chooses training cases, a seeded validation
fraction of them, or the unlabelled test cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densevision.data.checks import DatasetError
from densevision.data.io import Colour
from densevision.data.medical import NiftiSliceDataset, _decathlon_modality, read_decathlon_json
from densevision.formats.nifti import nifti_stem
from densevision.registry import DATASETS, ConfigError

__all__ = ["DECATHLON_SPLITS", "DecathlonDataset", "validation_cases"]

DECATHLON_SPLITS = ("train", "val", "trainval", "test")


def _decathlon_classes(labels: Any, path: Path) -> tuple[str, ...]:
    """Class names by index from ``labels``: ``{"0": "background", ...}`` (MSD) or ``{"background": 0, ...}``
    (nnU-Net v2); indices must run 0..K-1."""
    if not isinstance(labels, Mapping) or not labels:
        raise DatasetError(f"{path} has no 'labels' mapping of label values to names")
    if all(str(key).isdigit() for key in labels):
        by_index = {int(key): str(name) for key, name in labels.items()}
    elif all(isinstance(value, int) for value in labels.values()):
        by_index = {int(value): str(name) for name, value in labels.items()}
    else:
        raise DatasetError(f"{path}: cannot read 'labels' {dict(labels)} (region labels are not supported)")
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{path}: label values {sorted(by_index)} are not 0..{len(by_index) - 1}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _decathlon_cases(root: Path, entries: Any, key: str, path: Path) -> list[tuple[Path, Path | None]]:
    """``(image, label)`` paths of the ``training`` or ``test`` list (test entries are image paths; their labels are
    looked up in ``labelsTs/``)."""
    if not isinstance(entries, list):
        raise DatasetError(f"{path} has no '{key}' list")
    cases: list[tuple[Path, Path | None]] = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, Mapping) else entry
        label = entry.get("label") if isinstance(entry, Mapping) else None
        if not isinstance(image, str):
            raise DatasetError(f"{path}: entry {entry!r} of '{key}' names no image")
        image_path = (root / image).resolve()
        if label is None:
            candidate = root / "labelsTs" / image_path.name
            label_path = candidate if candidate.is_file() else None
        else:
            label_path = (root / label).resolve()
        cases.append((image_path, label_path))
    return cases


def validation_cases(names: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The names held out for validation: ``round(fraction × n)`` of them (at least one when the fraction is
    positive and there are two cases or more, never all), chosen by a seeded permutation of the sorted names."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction}")
    ordered = sorted(names)
    count = min(max(round(fraction * len(ordered)), 1 if fraction > 0 else 0), max(len(ordered) - 1, 0))
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:count]}


@DATASETS.register_module()
class DecathlonDataset(NiftiSliceDataset):
    """A Medical Segmentation Decathlon task folder: ``root/dataset.json``, ``imagesTr/``, ``labelsTr/``.

    Classes come from ``dataset.json``'s ``labels``; the intensity handling from its ``modality`` (CT, else MR
    z-scoring) unless ``modality`` is given. ``split``: ``'train'`` and ``'val'`` divide the ``training`` cases
    (``val_fraction`` of them, chosen with ``split_seed``), ``'trainval'`` takes them all, ``'test'`` the ``test``
    cases whose labels are in ``labelsTs/`` (the challenge withholds them; generated sets have them).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        *,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        modality: str | None = None,
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        **slicing: Any,
    ) -> None:
        if split not in DECATHLON_SPLITS:
            raise ConfigError(f"unknown Decathlon split {split!r}; expected one of {DECATHLON_SPLITS}")
        self.root = Path(root)
        self.split = split
        description = read_decathlon_json(self.root)
        path = self.root / "dataset.json"
        classes = _decathlon_classes(description.get("labels"), path)
        modality = modality or _decathlon_modality(description.get("modality"), path)
        if split == "test":
            cases = _decathlon_cases(self.root, description.get("test"), "test", path)
            unlabelled = [str(image) for image, label in cases if label is None]
            if unlabelled:
                raise DatasetError(
                    f"{len(unlabelled)} test volume(s) of {path} have no label in {self.root / 'labelsTs'} (e.g. "
                    f"{unlabelled[0]}); the Decathlon withholds test labels: evaluate on split='val'"
                )
        else:
            cases = _decathlon_cases(self.root, description.get("training"), "training", path)
            held_out = validation_cases([nifti_stem(image) for image, _ in cases], val_fraction, split_seed)
            if split != "trainval":
                cases = [case for case in cases if (nifti_stem(case[0]) in held_out) == (split == "val")]
            if not cases:
                raise DatasetError(f"no {split} cases in {path} with val_fraction={val_fraction}")
        missing = [str(p) for case in cases for p in case if p is not None and not p.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} volume(s) listed in {path} are missing: {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}"
            )
        super().__init__(
            [(image, label) for image, label in cases if label is not None],
            classes=classes,
            palette=palette,
            ignore_index=ignore_index,
            pipeline=pipeline,
            modality=modality,
            **slicing,
        )

    def describe(self) -> str:
        return f"{self.root} split {self.split!r}: {super().describe()}"

"""NIfTI volumes: the file-format plug-in behind the medical datasets and whole-volume prediction.

nibabel is imported when a volume is first read or written, never by importing this module. Uncompressed ``.nii``
files are read through nibabel's array proxy (only the slices asked for); a ``.nii.gz`` is decoded once (gzip cannot
seek). Predicting a whole volume slice by slice into a label volume is ``predict_labels`` (``densevision.spatial``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densevision.data.checks import DatasetError
from densevision.formats.registry import FileFormat, register_format

__all__ = [
    "NIFTI",
    "NIFTI_SUFFIXES",
    "NiftiFormat",
    "nibabel",
    "load_nifti",
    "volume_data",
    "read_volume",
    "compressed",
    "nifti_stem",
]


def nibabel() -> Any:
    """The nibabel module, imported on first use."""
    import nibabel as module

    return module


def _read_errors() -> tuple[type[BaseException], ...]:
    from nibabel.filebasedimages import ImageFileError

    return (OSError, EOFError, ValueError, zlib.error, ImageFileError)


NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(path: str | Path) -> str:
    """``case_001`` for ``case_001.nii.gz`` or ``case_001.nii``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: str | Path, what: str = "image") -> Any:
    """The NIfTI image of ``path`` (header only; the data stays on disk); an unreadable file is a ``DatasetError``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} volume not found: {path}")
    try:
        image = nibabel().load(path, mmap=True)
    except _read_errors() as err:
        raise DatasetError(f"cannot read {what} volume {path}: {err}") from err
    if not isinstance(image, (nibabel().Nifti1Image, nibabel().Nifti2Image)):
        raise DatasetError(f"{what} volume {path} is a {type(image).__name__}, not NIfTI")
    if image.ndim not in (3, 4):
        raise DatasetError(f"{what} volume {path} has shape {image.shape}; expected 3-D (X, Y, Z) or 4-D (X, Y, Z, M)")
    return image


def compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def volume_data(image: Any, path: str | Path, what: str = "image") -> Any:
    """What slices are read from: the array proxy of an uncompressed file (reads only what is sliced), the decoded
    array of a compressed one (gzip cannot seek: decode once)."""
    path = Path(path)
    if not compressed(path):
        return image.dataobj
    try:
        return np.asanyarray(image.dataobj)
    except _read_errors() as err:
        raise DatasetError(f"cannot read {what} volume {path}: {err}") from err


def read_volume(data: Any, slicer: tuple, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(data[slicer])
    except _read_errors() as err:
        raise DatasetError(f"cannot read {what} volume {path}: {err}") from err


class NiftiFormat(FileFormat):
    """NIfTI volumes, predicted whole: slice by slice as the config's dataset slices them (``options['slicing']``,
    a ``VolumeSlicing``) into a label volume with the scan's affine and header."""

    name = "nifti"
    suffixes = NIFTI_SUFFIXES

    def predict_labels(
        self,
        path: Path,
        predict_probs: Callable[[Any], Any],
        out_dir: Path,
        *,
        to_tensor: Callable[[np.ndarray], Any],
        palette: Sequence[Sequence[int]],
        options: Mapping[str, Any],
    ) -> list[Path]:
        """``<stem>_mask.nii.gz``: the label volume."""
        from densevision.spatial import predict_nifti

        out = out_dir / f"{self.stem(path)}_mask.nii.gz"
        return [predict_nifti(path, predict_probs, out, slicing=options["slicing"], to_tensor=to_tensor)]


NIFTI = register_format(NiftiFormat())

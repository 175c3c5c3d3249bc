"""The file-format registry: which plug-in reads (and predicts into) a file, chosen by its name.

A format names its suffixes; ``format_for(path, prefer=...)`` gives the registered format a file belongs to. Where two
formats share a suffix (a ``.tif`` is a plain image, or a georeferenced scene), the one read ``by_default`` wins unless
the caller's ``prefer`` names the other: a config trained on scenes prefers ``geotiff``. Formats that hold more than
one image (a volume, a scene larger than memory) predict whole files through ``predict_labels``; plain images are read
and passed to a predictor's ``predict``.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FileFormat", "FORMATS", "register_format", "format_for", "input_suffixes"]


class FileFormat(ABC):
    """One file format: its ``name``, ``suffixes`` (lower case, longest first where one ends another), and whether a
    file with them is this format when nobody says otherwise (``by_default``; a ``.tif`` is a GeoTIFF scene only for
    a config that trains on scenes)."""

    name: str
    suffixes: tuple[str, ...]
    by_default: bool = True

    def matches(self, path: str | Path) -> bool:
        return Path(path).name.lower().endswith(self.suffixes)

    def stem(self, path: str | Path) -> str:
        """The file name without the format's suffix (``case_001`` for ``case_001.nii.gz``)."""
        name = Path(path).name
        suffix = next((s for s in self.suffixes if name.lower().endswith(s)), "")
        return name[: len(name) - len(suffix)]

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
        """Predict the whole file into label files under ``out_dir``; formats of single images do not."""
        raise NotImplementedError(f"{self.name} files are read as one image, not predicted whole")


FORMATS: dict[str, FileFormat] = {}


def register_format(file_format: FileFormat) -> FileFormat:
    """Add ``file_format`` under its name; a second format of the same name is a bug."""
    if file_format.name in FORMATS:
        raise KeyError(f"file format {file_format.name!r} is already registered")
    FORMATS[file_format.name] = file_format
    return file_format


def format_for(path: str | Path, prefer: Iterable[str] = ()) -> FileFormat | None:
    """The format of ``path``: the first of ``prefer`` (format names) that matches it, else the registered format that
    reads it by default; ``None`` for a file no format reads."""
    candidates = [FORMATS[name] for name in prefer if name in FORMATS]
    candidates += [fmt for fmt in FORMATS.values() if fmt.by_default]
    return next((fmt for fmt in candidates if fmt.matches(path)), None)


def input_suffixes() -> tuple[str, ...]:
    """Every suffix a registered format reads: the files a folder of inputs is searched for."""
    return tuple(dict.fromkeys(suffix for fmt in FORMATS.values() for suffix in fmt.suffixes))

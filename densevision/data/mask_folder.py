"""Any segmentation dataset stored as an image folder and a mask folder whose files share their stems.

``images/a/001.tif`` pairs with ``masks/a/001.png`` (``mask_suffix='.png'``) or ``masks/a/001_mask.png``
(``mask_suffix='_mask.png'``); sub-folders are matched by relative path. Images may be RGB, grayscale or
multi-band TIFF; masks are index PNG/TIFF, or RGB-coded when ``palette`` gives each class's colour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.data.base import SegmentationDataset, image_format
from densevision.data.checks import DatasetError
from densevision.data.io import IMAGE_EXTENSIONS, Colour, list_files
from densevision.registry import DATASETS

__all__ = ["MaskFolderDataset", "pair_by_stem"]


# How many files of each kind a pairing error names (the rest are counted).
_NAMED = 5


def _some(paths: Sequence[str]) -> str:
    return ", ".join(paths[:_NAMED]) + (" ..." if len(paths) > _NAMED else "")


def _files_with_suffix(folder: Path, suffixes: Sequence[str]) -> tuple[dict[str, Path], list[Path], list[str]]:
    """``{relative path without suffix: path}`` for files under ``folder`` ending in one of ``suffixes``, the hidden
    files left out (macOS ``._*``), and a line for each stem two files share (the first file keeps the stem)."""
    files, hidden = list_files(folder, suffixes, recursive=True)
    found: dict[str, Path] = {}
    shared = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        suffix = next(s for s in suffixes if relative.lower().endswith(s.lower()))
        stem = relative[: len(relative) - len(suffix)]
        if stem in found:
            shared.append(f"{stem!r} ({found[stem].name} and {path.name})")
            continue
        found[stem] = path
    return found, hidden, shared


def pair_by_stem(
    img_dir: Path, mask_dir: Path, img_suffix: str | Sequence[str] | None, mask_suffix: str
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``(image, mask)`` pairs matched by stem, and the hidden files of both folders that were left out.

    Every pairing problem (stems two files share in either folder, images without a mask) is named in one
    ``DatasetError``, so one run shows them all rather than one kind per rerun."""
    for what, folder in (("image", img_dir), ("mask", mask_dir)):
        if not folder.is_dir():
            raise DatasetError(f"{what} folder {folder} not found")
    suffixes = IMAGE_EXTENSIONS if img_suffix is None else [img_suffix] if isinstance(img_suffix, str) else img_suffix
    images, hidden_images, shared_images = _files_with_suffix(img_dir, suffixes)
    if not images:
        raise DatasetError(f"no images ending in {', '.join(suffixes)} under {img_dir}")
    masks, hidden_masks, shared_masks = _files_with_suffix(mask_dir, [mask_suffix])
    unmatched = [str(images[stem]) for stem in images if stem not in masks]
    problems = [
        f"{len(shared)} stem(s) shared by two files in {folder}: {_some(shared)}"
        for folder, shared in ((img_dir, shared_images), (mask_dir, shared_masks))
        if shared
    ]
    if unmatched:
        problems.append(
            f"{len(unmatched)} image(s) have no mask '<stem>{mask_suffix}' in {mask_dir}: {_some(unmatched)}"
        )
    if problems:
        raise DatasetError("; ".join(problems))
    return [(images[stem], masks[stem]) for stem in images], hidden_images + hidden_masks


@DATASETS.register_module()
class MaskFolderDataset(SegmentationDataset):
    """Images in ``img_dir`` with masks in ``mask_dir``, matched by file stem.

    ``classes`` names the mask values 0..N-1; ``palette`` (one RGB colour per class) both colours predictions and,
    for RGB-coded masks, maps colours to classes. ``img_suffix`` ``None`` accepts every image extension.
    """

    def __init__(
        self,
        img_dir: str | Path,
        mask_dir: str | Path,
        classes: Sequence[str],
        palette: Sequence[Colour] | None = None,
        ignore_index: int = 255,
        img_suffix: str | Sequence[str] | None = None,
        mask_suffix: str = ".png",
        pipeline: Sequence[Mapping[str, Any]] | Callable[..., dict] | None = None,
        reduce_zero_label: bool = False,
    ) -> None:
        self.img_dir = Path(img_dir)
        self.mask_dir = Path(mask_dir)
        samples, self.skipped_files = pair_by_stem(self.img_dir, self.mask_dir, img_suffix, mask_suffix)
        colours = None if palette is None else {tuple(int(c) for c in colour): i for i, colour in enumerate(palette)}
        super().__init__(
            samples,
            classes=classes,
            palette=palette,
            ignore_index=ignore_index,
            pipeline=pipeline,
            colours=colours,
            reduce_zero_label=reduce_zero_label,
        )

    @property
    def metainfo(self) -> dict[str, Any]:
        """The classes, colours and void label, and the format of the images (the first one's) training sees."""
        return {**super().metainfo, "image_format": image_format(self.samples[0][0])}

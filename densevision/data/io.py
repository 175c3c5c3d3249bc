"""Image and mask files to and from numpy: every dataset reads through here, so every format works everywhere.

Images come back H×W×C in their stored dtype (uint8, uint16 for 16-bit PNG/TIFF, float for float TIFF); scaling to
[0, 1] and normalisation are the pipeline's job (``Normalize(max_pixel_value=...)``). Masks come back H×W integer
class indices. TIFF goes through tifffile, which reads multi-band and 16-bit rasters that PIL cannot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from densevision.data.checks import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_files",
    "read_image",
    "read_mask",
    "colour_to_index",
    "colourise_mask",
    "write_mask_png",
    "write_colour_mask",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")

# PIL modes kept as they are; the rest are converted to the nearest of these.
_KEPT_MODES = {"L", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"}
_CONVERTED_MODES = {"1": "L", "LA": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB"}
_INDEX_MASK_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L"}

Colour = tuple[int, int, int]


def list_files(
    folder: str | Path, suffixes: Sequence[str] = IMAGE_EXTENSIONS, *, recursive: bool = False
) -> tuple[list[Path], list[Path]]:
    """Files in ``folder`` (and below it, ``recursive``) whose names end in one of ``suffixes``, sorted, and apart
    from them the hidden ones (a name or folder starting with ``.``): macOS leaves a ``._<name>`` resource fork
    beside every file it copies, which no reader can decode, and editors keep copies in hidden folders."""
    folder = Path(folder)
    endings = tuple(s.lower() for s in suffixes)
    files: list[Path] = []
    hidden: list[Path] = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not path.name.lower().endswith(endings) or not path.is_file():
            continue
        is_hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        (hidden if is_hidden else files).append(path)
    return files, hidden


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF as H×W or H×W×bands, whichever way (interleaved or planar, bands as pages) it stores its bands."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        pages = tif.series
        if len(pages) > 1 and all(p.axes == "YX" and (p.shape, p.dtype) == (series.shape, series.dtype) for p in pages):
            array, axes = np.stack([p.asarray() for p in pages], axis=-1), "YXS"  # one band per page
    keep = [i for i, size in enumerate(array.shape) if size > 1 or axes[i] in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    band_axes = [i for i, axis in enumerate(axes) if axis not in "YX"]
    if "Y" not in axes or "X" not in axes or len(band_axes) > 1:
        raise DatasetError(f"unsupported TIFF layout {series.axes!r} (shape {series.shape}) in {path}")
    order = [axes.index("Y"), axes.index("X"), *band_axes]
    return np.ascontiguousarray(array.transpose(order))


def _read_array(path: str | Path, what: str) -> np.ndarray:
    """The raw pixel array of ``path`` (H×W or H×W×C), PIL for common formats and tifffile for TIFF."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    try:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            return _read_tiff(path)
        with Image.open(path) as img:
            mode = img.mode
            if what == "mask" and mode in _INDEX_MASK_MODES:
                return np.asarray(img)
            if mode not in _KEPT_MODES:
                img = img.convert(_CONVERTED_MODES.get(mode, "RGB"))
            return np.asarray(img)
    except DatasetError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as err:
        raise DatasetError(f"cannot read {what} {path}: {err}") from err


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an H×W×C array (grayscale gives C=1; a 4-band TIFF gives C=4) in its stored dtype."""
    image = _read_array(path, "image")
    return image[..., None] if image.ndim == 2 else image


def colour_to_index(
    rgb: np.ndarray, colours: Mapping[Colour, int] | Sequence[Colour], path: str | Path, dtype: np.dtype = np.uint8
) -> np.ndarray:
    """Map an H×W×3 colour-coded label image to class indices; a colour with no class raises naming it and the file.

    ``colours`` is either ``{(r, g, b): index}`` or a palette (the colour of class i at position i).
    """
    if not isinstance(colours, Mapping):
        colours = {tuple(int(c) for c in colour): index for index, colour in enumerate(colours)}
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    known = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in colours), dtype=np.int64)
    by_code = {(r << 16) | (g << 8) | b: index for (r, g, b), index in colours.items()}
    lookup = np.array([by_code[int(code)] for code in known], dtype=dtype)
    position = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
    unknown = known[position] != codes
    if unknown.any():
        missing = sorted({int(code) for code in np.unique(codes[unknown])})
        shown = ", ".join(str((c >> 16, (c >> 8) & 255, c & 255)) for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"label colour(s) {shown}{more} in {path} match no class colour")
    return lookup[position]


def read_mask(path: str | Path, colours: Mapping[Colour, int] | Sequence[Colour] | None = None) -> np.ndarray:
    """A label file as an H×W integer array of class indices.

    Index PNGs (grayscale, 16-bit, palette) and single-band TIFFs hold the indices themselves (a palette PNG's pixel
    values are its indices). RGB-coded labels need ``colours`` (``{(r, g, b): index}`` or a palette list).
    """
    mask = _read_array(path, "mask")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
            raise DatasetError(f"mask {path} holds {mask.dtype} values; expected integer class indices")
        return mask.astype(np.uint8) if mask.dtype == bool else mask
    if mask.shape[2] in (3, 4):
        if colours is None:
            raise DatasetError(f"mask {path} is colour-coded (RGB); pass a palette to map its colours to classes")
        dtype = np.uint8 if len(colours) <= 256 else np.uint16
        return colour_to_index(mask[..., :3], colours, path, dtype=dtype)
    raise DatasetError(f"mask {path} has {mask.shape[2]} channels; expected 1 (class indices) or 3 (RGB colours)")


def colourise_mask(mask: np.ndarray, palette: Sequence[Colour], ignore_colour: Colour = (0, 0, 0)) -> np.ndarray:
    """An H×W×3 uint8 picture of an index mask; indices without a palette entry (void) get ``ignore_colour``."""
    table = np.array([*palette, ignore_colour], dtype=np.uint8)
    indices = np.where((mask >= 0) & (mask < len(palette)), mask, len(palette))
    return table[indices]


def write_mask_png(path: str | Path, mask: np.ndarray, palette: Sequence[Colour] | None = None) -> None:
    """Save class indices losslessly: 8-bit PNG (palette PNG when ``palette`` is given, so viewers show colours),
    16-bit grayscale PNG when an index exceeds 255."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"write_mask_png expects an H×W integer array, got {mask.dtype} of shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(f"mask values must be in 0..65535 to be saved as PNG, got {mask.min()}..{mask.max()}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if mask.size and mask.max() > 255:
        Image.fromarray(mask.astype(np.uint16)).save(path)
        return
    img = Image.fromarray(mask.astype(np.uint8))
    if palette is not None:
        img.putpalette([int(c) for colour in palette for c in colour])  # L -> P, indices unchanged
    img.save(path)


def write_colour_mask(
    path: str | Path, mask: np.ndarray, palette: Sequence[Colour], ignore_colour: Colour = (0, 0, 0)
) -> None:
    """Save an index mask as an RGB picture (``colourise_mask``) for viewing or for RGB-coded label formats."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colourise_mask(np.asarray(mask), palette, ignore_colour)).save(path)

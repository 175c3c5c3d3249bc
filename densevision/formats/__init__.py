"""File formats as plug-ins: plain images, NIfTI volumes, GeoTIFF scenes (``registry.FORMATS``).

nibabel and rasterio are imported when such a file is first read or written, never by importing this package.
"""

# The datasets first: their modules read through the formats below, which import the data package's errors.
import densevision.data.checks  # noqa: F401, I001
from densevision.formats.registry import FORMATS, FileFormat, format_for, input_suffixes, register_format
from densevision.formats import geotiff, image, nifti  # noqa: F401  (registers them)

__all__ = ["FORMATS", "FileFormat", "format_for", "input_suffixes", "register_format"]

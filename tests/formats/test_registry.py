"""File formats are plug-ins: chosen by name and by what the config trains on, their libraries loaded on use."""

import subprocess
import sys
from pathlib import Path

import pytest

from densevision.formats import FORMATS, format_for, input_suffixes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["densevision.inference", "densevision.tasks", "densevision.data"])
def test_importing_loads_neither_nibabel_nor_rasterio(module):
    code = f"import sys, {module}; print(sorted(m for m in ('nibabel', 'rasterio') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "prefer", "expected"),
    [
        ("scan.nii.gz", (), "nifti"),
        ("scan.NII", (), "nifti"),
        ("photo.jpg", ("geotiff",), "image"),
        ("scene.tif", (), "image"),  # a TIFF is an image unless the config trains on scenes
        ("scene.tif", ("geotiff",), "geotiff"),
        ("notes.txt", (), None),
    ],
)
def test_a_files_format_follows_its_name_and_the_preferred_formats(name, prefer, expected):
    found = format_for(Path("in") / name, prefer=prefer)
    assert (found.name if found else None) == expected


def test_stems_drop_the_whole_suffix_and_inputs_cover_every_format():
    assert FORMATS["nifti"].stem("cases/case_001.nii.gz") == "case_001"
    assert FORMATS["image"].stem("a.b.png") == "a.b"
    assert {".png", ".jpg", ".tif", ".nii.gz", ".nii"} <= set(input_suffixes())
    assert len(input_suffixes()) == len(set(input_suffixes()))

"""The install stamps: an installed tree is not reinstalled by the next `make test` or `make demo`."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif("DENSEVISION_VENV" not in os.environ, reason="needs the venv `make test` runs in")
def test_make_install_is_up_to_date_in_the_running_environment():
    # `make -q` exits 0 only when the target needs no work: nothing would be reinstalled.
    result = subprocess.run(
        ["make", "-q", "install", f"VENV={os.environ['DENSEVISION_VENV']}"], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_install_stamps_are_keyed_on_the_requirement_files():
    makefile = (ROOT / "Makefile").read_text()
    assert "REQ_HASH := $(shell cat requirements.txt | sha256sum" in makefile
    assert "PKG_HASH := $(shell cat requirements.txt setup.cfg pyproject.toml | sha256sum" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test VENV=" in ci and "sha256sum" in ci

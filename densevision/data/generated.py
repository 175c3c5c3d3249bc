"""Generated datasets written once: into a temporary folder, then renamed into place, so an interrupted or concurrent
generation never leaves a half-written dataset, and a folder this code did not make is never replaced."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["generate_once"]


def _marker_matches(root: Path, marker: str, params: Mapping[str, Any]) -> bool:
    try:
        return json.loads((root / marker).read_text()) == dict(params)
    except (OSError, ValueError):
        return False


def generate_once(
    root: str | Path, params: Mapping[str, Any], write: Callable[[Path], None], *, marker: str, made_by: str
) -> Path:
    """``write(folder)`` into a temporary folder renamed to ``root``, unless ``root`` already holds a completed
    generation with the same ``params`` (recorded in its ``marker`` file); an earlier generation is replaced, a folder
    without the marker never is (the error names ``made_by``, the generator). Returns ``root``."""
    root = Path(root)
    if _marker_matches(root, marker, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename and hide the data from other users
    try:
        write(tmp)
        (tmp / marker).write_text(json.dumps(dict(params)))
        old = None
        if root.exists():
            if not (root / marker).is_file() and any(root.iterdir()):
                raise FileExistsError(f"{root} exists and was not made by {made_by} (no {marker}); not replacing it")
            old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex}")
            root.rename(old)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _marker_matches(root, marker, params):  # another process finished the same generation first: fine
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root

"""The root of every error a user fixes (a config value, a data file, a checkpoint, an export), as opposed to a bug.

The tools print a ``DensevisionError`` as one ``error: ...`` line and exit 1 (``densevision.cli.entry_point``); any
other exception is a bug and keeps its traceback. Subclasses also derive from the builtin they refine (``ValueError``,
``RuntimeError``), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = ["DensevisionError"]


class DensevisionError(Exception):
    """A problem with the user's input or environment; the message names the file, key or value at fault."""

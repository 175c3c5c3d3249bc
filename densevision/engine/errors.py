"""Errors the engine raises for problems a user fixes (a file, a directory, a diverging run), not for bugs."""

from __future__ import annotations

from densevision.errors import DensevisionError

__all__ = ["EngineError", "CheckpointError", "WorkDirError", "NonFiniteLossError"]


class EngineError(DensevisionError, RuntimeError):
    """Base of the engine's user-facing errors; the tools print their message on one line and exit 1."""


class CheckpointError(EngineError):
    """A checkpoint could not be written or read; the message names the file."""


class WorkDirError(EngineError):
    """The work directory cannot be created or written to."""


class NonFiniteLossError(EngineError):
    """The training loss became NaN or infinite; the message names the epoch and iteration."""

"""What every tool shares: a user error is one ``error: ...`` line and exit status 1; a bug keeps its traceback.

User errors are ``DensevisionError`` (config, dataset, checkpoint, export) and ``OSError`` (a missing or unwritable
file). ``DENSEVISION_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

from densevision.errors import DensevisionError

__all__ = ["USER_ERRORS", "entry_point", "one_line"]

USER_ERRORS: tuple[type[BaseException], ...] = (DensevisionError, OSError)

Main = Callable[[Sequence[str] | None], int]


def one_line(err: BaseException) -> str:
    """The error's message on one line (messages may quote multi-line values)."""
    return " ".join(str(err).split()) or type(err).__name__


def entry_point(main: Main) -> Main:
    """Wrap a tool's ``main(argv) -> exit status`` so user errors end it with one line and status 1."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as err:
            if os.environ.get("DENSEVISION_DEBUG"):
                raise
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return run

"""The work directory of a training run: writable before anything is trained, held by one run at a time, and
cleared of what a killed run left half-written.

A run holds ``work_dir/.lock`` (its PID and host) while it trains; a second run into the same directory is refused
with one line naming the holder. A lock whose process is gone (same host, PID not running) was left by a killed run:
it is taken over, and the take-over is logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from densevision.engine.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT
from densevision.engine.errors import WorkDirError
from densevision.engine.logging import METRICS_FILE, RunLogger

__all__ = ["prepare_work_dir", "refuse_to_overwrite", "WorkDirLock", "remove_stale_temp_files", "LOCK_FILE"]

LOCK_FILE = ".lock"
# Temporary files that save_checkpoint and RunLogger.discard_after rename into place; a kill mid-write leaves them.
_TEMP_PATTERNS = tuple(f".{name}.*.tmp" for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_FILE))


def prepare_work_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and prove it writable now, rather than failing at the first checkpoint an epoch later."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise WorkDirError(f"work dir {path} is not writable: {err.strerror or err}") from err
    return path


_WRITING_SECONDS = 10.0


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WorkDirLock:
    """Holds ``work_dir/.lock`` from ``__enter__`` to ``__exit__`` (however the run ends); ``taken_over`` describes a
    stale lock that was replaced (``None`` when there was none), for the run log."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.path = Path(work_dir) / LOCK_FILE
        self.taken_over: str | None = None
        self._held = False

    def __enter__(self) -> WorkDirLock:
        host = socket.gethostname()
        holder = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale(host)
                continue
            except OSError as err:
                raise WorkDirError(f"cannot lock work dir {self.path.parent}: {err.strerror or err}") from err
            with os.fdopen(fd, "w") as file:
                json.dump(holder, file)
            self._held = True
            return self
        raise WorkDirError(f"cannot lock work dir {self.path.parent}: another run took {self.path} meanwhile")

    def _take_over_if_stale(self, host: str) -> None:
        """Remove a lock left by a process that is gone; refuse one held by a running process or another host."""
        try:
            holder = json.loads(self.path.read_text())
            pid, holder_host, started = int(holder["pid"]), str(holder["host"]), holder.get("started", "?")
        except (OSError, ValueError, KeyError, TypeError):
            pid, holder_host, started = None, None, "?"
            if _age_seconds(self.path) < _WRITING_SECONDS:  # another run is writing its PID into it right now
                raise WorkDirError(
                    f"work dir {self.path.parent} is being locked by another training run ({self.path})"
                ) from None
        if pid is not None and (holder_host != host or _running(pid)):
            where = "this host" if holder_host == host else f"host {holder_host}"
            raise WorkDirError(
                f"work dir {self.path.parent} is in use by another training run (PID {pid} on {where}, since "
                f"{started}); wait for it to end or train into another --work-dir (if that run no longer exists, "
                f"delete {self.path})"
            )
        self.taken_over = (
            f"took over {self.path}, left by PID {pid} on this host since {started}, which is no longer running"
            if pid is not None
            else f"replaced the unreadable lock file {self.path}"
        )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False


def remove_stale_temp_files(work_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed checkpoint or log write left in ``work_dir`` (call it holding the lock,
    so no live run's file is touched); returns them."""
    removed = []
    for pattern in _TEMP_PATTERNS:
        for path in sorted(Path(work_dir).glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def refuse_to_overwrite(work_dir: Path, run_logger: RunLogger) -> None:
    """A fresh start in a work dir that holds a run would replace its checkpoints and mix its log: refuse."""
    found = [name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT) if (work_dir / name).is_file()]
    if run_logger.has_training_records():
        found.append(METRICS_FILE)
    if found:
        raise WorkDirError(
            f"{work_dir} already holds a run ({', '.join(found)}); nothing was overwritten: continue it with "
            "--resume (resume='auto'), or train from scratch into a new --work-dir (work_dir)"
        )

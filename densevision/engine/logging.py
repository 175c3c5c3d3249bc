"""What a person watching a run sees: a progress bar, a text log, ``metrics.jsonl`` and TensorBoard events.

Only the main process writes; on other ranks every method is a no-op, so the runner calls them unconditionally.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm.auto import tqdm

from densevision.cli import USER_ERRORS, one_line

__all__ = ["RunLogger", "progress_bar", "METRICS_FILE", "TEXT_LOG_FILE"]

METRICS_FILE = "metrics.jsonl"
TEXT_LOG_FILE = "run.log"
TRAINING_MODES = ("train", "train_epoch", "val")  # records of a training run (tools/test.py adds "test" records)
logger = logging.getLogger("densevision")


def progress_bar(iterable: Iterable, *, total: int, desc: str, enabled: bool, leave: bool = True) -> tqdm:
    """A tqdm bar (it/s and ETA built in; the runner adds loss and lr as postfix); silent when not ``enabled``."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=leave, dynamic_ncols=True)


def _json_value(value: Any) -> Any:
    """Floats stay floats (non-finite ones as strings, which strict JSON readers accept); tensors become numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Appends records to ``work_dir/metrics.jsonl`` (one JSON object per line), mirrors numbers to TensorBoard when
    ``torch.utils.tensorboard`` imports, and copies the ``densevision`` log to ``work_dir/run.log``.

    Use as a context manager around a run, so file handles close and the log handler detaches afterwards.
    """

    def __init__(self, work_dir: str | Path, *, enabled: bool = True) -> None:
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self._handler: logging.Handler | None = None
        self._writer: Any = None
        self._purge_step: int | None = None

    def __enter__(self) -> RunLogger:
        if not self.enabled:
            return self
        self._handler = logging.FileHandler(self.work_dir / TEXT_LOG_FILE)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(self._handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("TensorBoard not installed; metrics go to %s only", self.work_dir / METRICS_FILE)
        else:
            self._writer = SummaryWriter(log_dir=str(self.work_dir / "tensorboard"), purge_step=self._purge_step)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._handler is not None and isinstance(error, USER_ERRORS):
            # The line the tool prints to stderr, in run.log too: why the run stopped stays with the run.
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "error: %s", (one_line(error),), None)
            self._handler.handle(record)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def log(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (``mode``, ``epoch``, ``step`` and numbers) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        line = {key: _json_value(value) for key, value in record.items()}
        with open(self.work_dir / METRICS_FILE, "a") as file:
            file.write(json.dumps(line) + "\n")
        if self._writer is not None:
            step = int(record.get("step", record.get("epoch", 0)))
            for key, value in line.items():
                if key not in ("mode", "epoch", "step", "iter") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{record.get('mode', 'run')}/{key}", value, step)

    def _records(self) -> list[tuple[str, dict[str, Any] | None]]:
        """metrics.jsonl's lines with their records (``None`` for a line that is not a JSON object)."""
        path = self.work_dir / METRICS_FILE
        if not path.is_file():
            return []
        lines = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            lines.append((line, record if isinstance(record, dict) else None))
        return lines

    def has_training_records(self) -> bool:
        """Whether metrics.jsonl holds records of a training run (test records alone do not count)."""
        return any(record is None or record.get("mode") in TRAINING_MODES for _, record in self._records())

    def discard_after(self, step: int) -> int:
        """Drop the training records logged after ``step`` (a resume's checkpoint), which a killed run wrote and the
        resumed one writes again; rewrites metrics.jsonl atomically and purges TensorBoard events from the next step.
        Returns how many records were dropped."""
        if not self.enabled:
            return 0
        self._purge_step = step + 1
        lines = self._records()
        kept = [line for line, record in lines if record is None or not _later(record.get("step"), step)]
        if len(kept) == len(lines):
            return 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{METRICS_FILE}.", suffix=".tmp", dir=self.work_dir)
        try:
            with os.fdopen(fd, "w") as file:
                file.write("".join(line + "\n" for line in kept))
            os.replace(tmp_name, self.work_dir / METRICS_FILE)
        except BaseException:
            os.unlink(tmp_name)
            raise
        return len(lines) - len(kept)


def _later(value: Any, step: int) -> bool:
    return isinstance(value, (int, float)) and value > step

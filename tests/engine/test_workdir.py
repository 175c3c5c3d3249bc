"""One training run per work dir at a time, and nothing half-written left behind by a killed one."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from densevision.engine.errors import NonFiniteLossError, WorkDirError
from densevision.engine.runner import Runner
from densevision.engine.workdir import LOCK_FILE, WorkDirLock
from tests.engine.toys import toy_config


def _write_lock(work_dir, pid, host=None):
    work_dir.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01 00:00:00"}
    (work_dir / LOCK_FILE).write_text(json.dumps(holder))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("host", [None, "another-machine"])
def test_a_work_dir_held_by_a_running_process_is_refused_in_one_line(tmp_path, host):
    _write_lock(tmp_path, os.getpid(), host)  # this very process: certainly running
    where = "this host" if host is None else "host another-machine"
    with pytest.raises(WorkDirError, match=rf"in use by another training run \(PID {os.getpid()} on {where}, since"):
        Runner(toy_config(tmp_path)).train()
    assert not (tmp_path / "last.pth").exists()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()  # the holder's lock is left alone


def test_a_stale_lock_is_taken_over_and_said_so(tmp_path, caplog):
    dead = _dead_pid()
    _write_lock(tmp_path, dead)
    with caplog.at_level(logging.INFO, logger="densevision"):
        Runner(toy_config(tmp_path, train_cfg=dict(max_epochs=1))).train()
    line = f"took over {tmp_path / LOCK_FILE}, left by PID {dead} on this host"
    assert line in caplog.text and line in (tmp_path / "run.log").read_text()
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end


def test_the_lock_is_held_during_the_run_and_released_after_an_error(tmp_path, monkeypatch):
    seen = []
    original = WorkDirLock.__enter__

    def enter(self):
        held = original(self)
        seen.append(json.loads(self.path.read_text()))
        return held

    monkeypatch.setattr(WorkDirLock, "__enter__", enter)
    with pytest.raises(NonFiniteLossError):
        Runner(toy_config(tmp_path, model=dict(type="EngineToySegmentor", nan_at_call=2))).train()
    assert seen == [{"pid": os.getpid(), "host": socket.gethostname(), "started": seen[0]["started"]}]
    assert not (tmp_path / LOCK_FILE).exists()


def test_temporary_files_of_a_killed_checkpoint_write_are_removed_on_the_next_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    left = [tmp_path / ".last.pth.k1l2ed.tmp", tmp_path / ".best.pth.x9.tmp"]
    for path in left:
        path.write_bytes(b"")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("mine")
    Runner(toy_config(tmp_path, train_cfg=dict(max_epochs=1))).train()
    assert not any(path.exists() for path in left) and unrelated.exists()
    assert "removed 2 temporary file(s) left by a killed write" in (tmp_path / "run.log").read_text()

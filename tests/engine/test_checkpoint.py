import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from densevision.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
)
from densevision.engine.errors import CheckpointError


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_loads_weights_only_and_leaves_no_temp_file(tmp_path):
    state = {"meta": {"epoch": 3, "best": None}, "state_dict": {"w": torch.arange(4.0)}, "history": [{"loss": 0.5}]}
    save_checkpoint(state, tmp_path / "last.pth")
    loaded = torch.load(tmp_path / "last.pth", weights_only=True)
    assert loaded["meta"] == {"epoch": 3, "best": None}
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    assert leftovers(tmp_path) == []


def test_a_failure_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pth"
    save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"partial checkpoint bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last\.pth: OSError.*No space left"):
        save_checkpoint({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_an_unwritable_directory_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        save_checkpoint({"epoch": 1}, blocker / "last.pth")


@pytest.mark.parametrize("content", [None, b"garbage", "list"])
def test_missing_or_bad_checkpoint_files_name_the_file(tmp_path, content):
    path = tmp_path / "ckpt.pth"
    if content == "list":
        torch.save([1, 2], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"ckpt\.pth"):
        load_checkpoint(path)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    actual = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert actual[:2] == expected[:2]
    assert torch.equal(actual[2], expected[2])


def test_model_weights_load_from_training_and_ddp_checkpoints(tmp_path):
    source, target = nn.Linear(2, 2), nn.Linear(2, 2)
    save_checkpoint({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "a.pth")
    load_model_weights(target, tmp_path / "a.pth")
    assert torch.equal(target.weight, source.weight)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"weight": torch.zeros(2, 2)}, r"missing 1 keys \(e.g. bias\)"),
        ({"weight": torch.zeros(3, 3), "bias": torch.zeros(2)}, "size mismatch for weight"),
        ({"meta": {"epoch": 1}}, "no model weights"),
    ],
)
def test_weights_that_do_not_fit_are_reported(tmp_path, state, message):
    save_checkpoint({"state_dict": state} if "meta" not in state else state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=message):
        load_model_weights(nn.Linear(2, 2), tmp_path / "w.pth")


def test_resolve_resume(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None
    (tmp_path / "last.pth").write_bytes(b"x")
    assert resolve_resume("auto", tmp_path) == tmp_path / "last.pth"
    with pytest.raises(CheckpointError, match="not found: .*missing.pth"):
        resolve_resume(tmp_path / "missing.pth", tmp_path)


def test_damaged_and_foreign_files_say_what_they_are(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"epoch": 1}, legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(legacy) == {"epoch": 1}  # the pre-zip format still loads

    save_checkpoint({"epoch": 2}, tmp_path / "best.pth")
    last = tmp_path / "last.pth"
    save_checkpoint({"epoch": 3, "weights": torch.zeros(1000)}, last)
    last.write_bytes(last.read_bytes()[:-100])
    beside = re.escape(f"checkpoints beside it that load safely: {tmp_path / 'best.pth'}")  # legacy.pth is no zip
    with pytest.raises(CheckpointError, match=rf"checkpoint .*last\.pth is truncated \(\d+ bytes, .*\); {beside}"):
        load_checkpoint(last)
    last.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"checkpoint .*last\.pth is empty \(0 bytes\); {beside}"):
        load_checkpoint(last)
    last.write_text('{"epoch": 3}')
    with pytest.raises(CheckpointError, match=r"last\.pth is not a PyTorch checkpoint \(it starts with b'\{\"ep'"):
        load_checkpoint(last)


class _Pickled:
    """An object of a class: what a checkpoint written with ``torch.save(model)`` holds, and safe loading refuses."""


def test_an_unsafe_checkpoint_is_refused_in_one_whole_sentence_with_only_safe_alternatives(tmp_path):
    torch.save({"model": _Pickled()}, tmp_path / "unsafe.pth")
    torch.save({"model": _Pickled()}, tmp_path / "best.pth")  # beside it, and just as unsafe: not an alternative
    save_checkpoint({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "last.pth")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "unsafe.pth")
    message = str(caught.value)
    assert "refuses, the first being tests.engine.test_checkpoint._Pickled;" in message
    assert message.endswith(f"; checkpoints beside it that load safely: {tmp_path / 'last.pth'}")
    assert "best.pth" not in message and "\x1b" not in message and "\n" not in message

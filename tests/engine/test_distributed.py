import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from densevision.config import Config
from densevision.engine import distributed
from densevision.engine.checkpoint import load_checkpoint
from densevision.engine.launch import run_training
from densevision.engine.runner import Runner, ShardSampler
from densevision.registry import ConfigError
from tests.engine.toys import ToySegmentation, toy_config


def test_single_process_helpers_are_identities():
    context = distributed.init_distributed("none", "cpu")
    assert (context.rank, context.world_size, context.is_main, context.device) == (0, 1, True, torch.device("cpu"))
    assert distributed.all_reduce_mean(torch.tensor([1.5, 2.0])).tolist() == [1.5, 2.0]
    assert distributed.get_world_size() == 1 and distributed.is_main_process()


def test_bad_launcher_and_missing_torchrun_environment_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="launcher must be one of"):
        distributed.init_distributed("slurm")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="missing RANK, WORLD_SIZE, .*torchrun"):
        distributed.init_distributed("pytorch", "cpu")


@pytest.mark.parametrize(("length", "world_size"), [(8, 2), (7, 2), (5, 3)])
def test_evaluation_shards_cover_every_sample_once(length, world_size):
    shards = [list(ShardSampler(length, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(length))


def ddp_config(work_dir, batch_size: int, compile=False, **overrides):
    """No BatchNorm in the toy model and no shuffling: 2 processes × batch 2 see what 1 process × batch 4 sees."""
    cfg = toy_config(work_dir, train_cfg=dict(max_epochs=2, val_interval=1, compile=compile), **overrides)
    cfg["train_dataloader"].update(batch_size=batch_size, shuffle=False)
    return cfg


def _train_in_process_group(rank: int, world_size: int, port: int, work_dir: str, compile) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    run_training(Config(ddp_config(work_dir, batch_size=2, compile=compile, launcher="pytorch")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# train_cfg.compile under DDP: the task's submodules compiled in place inside the DDP wrapper (dynamo's DDPOptimizer
# splits the graph at gradient buckets); aot_eager traces forward and backward as inductor does, without its C++ build.
@pytest.mark.parametrize("compile", [False, {"backend": "aot_eager"}], ids=["eager", "compiled"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, compile):
    Runner(ddp_config(tmp_path / "single", batch_size=4)).train()
    mp.spawn(_train_in_process_group, args=(2, free_port(), str(tmp_path / "ddp"), compile), nprocs=2, join=True)

    single, ddp = load_checkpoint(tmp_path / "single" / "last.pth"), load_checkpoint(tmp_path / "ddp" / "last.pth")
    toy_meta = ToySegmentation().metainfo
    assert ddp["meta"] == {"epoch": 2, "iteration": 4, "world_size": 2, "dataset_meta": single["meta"]["dataset_meta"]}
    assert ddp["meta"]["dataset_meta"]["classes"] == toy_meta["classes"]
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, atol=1e-5, rtol=1e-5)
    # Validation metrics summed over both shards: all 8 images' pixels, the same accuracy.
    assert [r["pixels"] for r in ddp["history"]["val"]] == [512.0, 512.0]
    assert [r["acc"] for r in ddp["history"]["val"]] == pytest.approx([r["acc"] for r in single["history"]["val"]])

    def logged(run):  # only rank 0 logs: one record per iteration, losses averaged over processes
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["mode"] == "train"]

    assert logged("ddp") == pytest.approx(logged("single"), abs=1e-5)
    assert len(logged("ddp")) == 4
    assert (
        "compiling body of ToySegmentor with torch.compile(backend='aot_eager')"
        in (tmp_path / "ddp" / "run.log").read_text()
    ) == bool(compile)

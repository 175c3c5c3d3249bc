"""Every shipped top-level config loads, passes the runner's key checks and builds its task model."""

from pathlib import Path

import pytest
import torch
from torch import nn

import densevision.models  # noqa: F401  (registers the tasks and architectures)
from densevision.config import Config
from densevision.registry import TASKS
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def test_the_documented_configs_are_shipped():
    names = {path.stem for path in CONFIGS}
    assert {
        "tiramisu_camvid",
        "tiramisu_camvid_finetune",
        "fcdensenet56_camvid",
        "fcdensenet67_camvid",
        "densenet121_tiramisu_camvid",
        "fcdensenet_satellite",
        "densenet121_imagenet",
        "densenet_bc100_cifar10",
        "quickstart_shapes_segmentation",
        "quickstart_shapes_classification",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_its_task(path):
    cfg = Config.fromfile(path)
    with torch.device("meta"):  # full-size models: shapes only
        task = TASKS.build(cfg.model)
    assert isinstance(task, nn.Module) and sum(p.numel() for p in task.parameters()) > 0
    assert cfg.train_dataloader.dataset.type and cfg.val_evaluator.type


@pytest.mark.parametrize(
    ("name", "architecture", "optimizer", "lr", "batch_size"),
    [
        ("tiramisu_camvid", "fcdensenet103", "RMSprop", 1e-3, 3),
        ("tiramisu_camvid_finetune", "fcdensenet103", "RMSprop", 1e-4, 1),
        ("fcdensenet56_camvid", "fcdensenet56", "RMSprop", 1e-3, 3),
        ("densenet121_imagenet", "densenet121", "SGD", 0.1, 32),
    ],
)
def test_recipes_follow_the_papers(name, architecture, optimizer, lr, batch_size):
    cfg = Config.fromfile(ROOT / "configs" / f"{name}.py")
    assert cfg.model.model.type == architecture
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.lr) == (optimizer, lr)
    assert cfg.train_dataloader.batch_size == batch_size


def test_tiramisu_recipe_details():
    cfg = Config.fromfile(ROOT / "configs" / "tiramisu_camvid.py")
    assert cfg.param_scheduler == [dict(type="ExponentialLR", gamma=0.995, by_epoch=True)]
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert cfg.optim_wrapper.paramwise == dict(norm_decay_mult=0.0, bias_decay_mult=0.0)  # weights only
    assert cfg.early_stopping == dict(monitor="mIoU", patience=150, mode="max")
    assert cfg.model.loss == dict(type="CrossEntropyLoss", ignore_index=11)  # void masked, no class weights
    assert [step["type"] for step in cfg.train_dataloader.dataset.pipeline] == [
        "RandomCrop",
        "HorizontalFlip",
        "Normalize",
    ]
    finetune = Config.fromfile(ROOT / "configs" / "tiramisu_camvid_finetune.py")
    assert finetune.load_from == "work_dirs/tiramisu_camvid/best.pth"
    assert "RandomCrop" not in [step["type"] for step in finetune.train_dataloader.dataset.pipeline]


def test_missing_camvid_says_which_folders_are_expected_and_where(tmp_path, capsys):
    train = load_tool("train")
    missing = tmp_path / "camvid"
    code = train.main(
        [
            str(ROOT / "configs" / "fcdensenet56_camvid.py"),
            "--work-dir",
            str(tmp_path / "work"),
            "--cfg-options",
            f"train_dataloader.dataset.root={missing}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert str(missing) in err and "trainannot" in err

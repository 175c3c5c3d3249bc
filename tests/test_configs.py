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
        "quickstart_shapes_detection",
        "dsod300_voc",
        "dsod300_coco",
        "ssd300_densenet121_voc",
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
    assert "loss" not in cfg.model and cfg.model.ignore_index == 11  # CE over non-void pixels, no class weights
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


def test_dsod_recipe_is_the_papers_in_optimizer_steps():
    cfg = Config.fromfile(ROOT / "configs" / "dsod300_voc.py")
    optim = cfg.optim_wrapper
    assert (optim.optimizer.type, optim.optimizer.lr, optim.optimizer.momentum) == ("SGD", 0.1, 0.9)
    assert optim.optimizer.weight_decay == 5e-4
    steps = optim.accumulate_steps
    assert cfg.train_dataloader.batch_size * steps == 128  # the paper's effective batch on one GPU
    (multistep,) = [s for s in cfg.param_scheduler if s["type"] == "MultiStepLR"]
    assert [m // steps for m in multistep["milestones"]] == [20_000, 40_000, 60_000, 80_000]
    assert multistep["by_epoch"] is False and cfg.train_cfg.max_iters // steps == 100_000
    assert cfg.train_cfg.max_epochs is None
    assert cfg.train_dataloader.dataset.years == ("2007", "2012") and cfg.test_dataloader.dataset.years == ("2007",)
    assert cfg.test_dataloader.dataset.skip_difficult is False and cfg.val_evaluator.ap_method == "11point"
    assert cfg.model.model.num_classes == 21


def test_missing_vocdevkit_names_the_expected_folder(tmp_path, capsys):
    train = load_tool("train")
    missing = tmp_path / "VOCdevkit"
    code = train.main(
        [
            str(ROOT / "configs" / "dsod300_voc.py"),
            "--work-dir",
            str(tmp_path / "work"),
            "--cfg-options",
            f"train_dataloader.dataset.root={missing}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert str(missing / "VOC2007") in err

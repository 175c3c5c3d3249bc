"""``--cfg-options`` as every tool applies them (``load_config``): an override of a config's variable reaches every
value built from it, ``+key`` adds a key, and a key that is misspelt or cannot take effect is refused in one line."""

import json
import logging
import math
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tests.engine.toys  # noqa: F401  (registers the toy task, dataset and metric)
from densevision.config import Config, load_config
from densevision.engine.launch import write_json
from densevision.registry import ConfigError
from densevision.splits import split_dataset_cfg, split_dataset_key
from tests.tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def layered(tmp_path: Path) -> Path:
    """A base that builds datasets and loaders from its variables, and a child that rebuilds one loader."""
    write(
        tmp_path,
        "base.py",
        """
        data_root = "data/base"
        normalize = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        train_pipeline = [dict(type="HorizontalFlip", p=0.5), normalize]
        test_pipeline = [normalize]
        train_dataset = dict(type="Set", root=data_root, split="train", samples_per_epoch=100, pipeline=train_pipeline)
        val_dataset = dict(type="Set", root=data_root, split="val", pipeline=test_pipeline)
        test_dataset = dict(type="Set", root=f"{data_root}/test", split="test", pipeline=test_pipeline)
        train_dataloader = dict(batch_size=2, dataset=train_dataset)
        val_dataloader = dict(batch_size=1, dataset=val_dataset)
        test_dataloader = dict(batch_size=1, dataset=test_dataset)
        train_cfg = dict(max_epochs=2)
        """,
    )
    return write(
        tmp_path,
        "child.py",
        """
        _base_ = "base.py"
        train_dataloader = dict(batch_size=4, dataset=train_dataset)
        """,
    )


def test_an_override_of_a_dataset_variable_reaches_the_loader_built_from_it(layered: Path) -> None:
    cfg = load_config(layered, ["train_dataset.samples_per_epoch=16"])
    assert cfg.train_dataloader.dataset.samples_per_epoch == 16 == cfg.train_dataset.samples_per_epoch
    assert cfg.train_dataloader.batch_size == 4  # the child's value stays


def test_samples_per_epoch_reaches_the_shipped_train_loader() -> None:
    cfg = load_config(CONFIGS / "fcdensenet_satellite.py", ["train_dataset.samples_per_epoch=16"])
    assert split_dataset_cfg(cfg, "train").samples_per_epoch == 16


def test_data_root_reaches_every_value_built_from_it(layered: Path) -> None:
    cfg = load_config(layered, ["data_root=/x"])
    assert [split_dataset_cfg(cfg, split).root for split in ("train", "val", "test")] == ["/x", "/x", "/x/test"]


@pytest.mark.parametrize(
    ("config", "keys"),
    [
        ("dsod300_voc", ["root"]),
        ("quickstart_shapes_segmentation", ["root"]),
        ("fcdensenet_satellite", ["img_dir", "label_dir"]),
        ("dsod300_coco", ["ann_file", "img_dir"]),
    ],
)
def test_data_root_reaches_the_three_datasets_of_the_shipped_configs(config: str, keys: list[str]) -> None:
    cfg = load_config(CONFIGS / f"{config}.py", ["data_root=/data/elsewhere"])
    for split in ("train", "val", "test"):
        for key in keys:
            assert split_dataset_cfg(cfg, split)[key].startswith("/data/elsewhere"), (split, key)


def test_an_override_wins_over_a_later_assignment_in_a_child(layered: Path, tmp_path: Path) -> None:
    child = write(
        tmp_path, "late.py", '_base_ = "child.py"\ndata_root = "data/child"\nval_dataset["root"] = data_root\n'
    )
    cfg = load_config(child, ["data_root=/x"])
    assert cfg.data_root == "/x" and cfg.val_dataset.root == "/x"


def test_a_shared_step_override_reaches_every_pipeline(layered: Path) -> None:
    cfg = load_config(layered, ["normalize.mean=[0.1,0.2,0.3]"])
    for split in ("train", "val", "test"):
        assert split_dataset_cfg(cfg, split).pipeline[-1].mean == [0.1, 0.2, 0.3]


def test_without_overrides_load_config_equals_the_file(layered: Path) -> None:
    cfg = load_config(layered, [], work_dir="w")
    assert cfg == {**Config.fromfile(layered), "work_dir": "w"}


def test_a_copy_nothing_reads_is_refused_naming_the_key_to_set(layered: Path, tmp_path: Path) -> None:
    child = write(
        tmp_path,
        "inline.py",
        '_base_ = "child.py"\n'
        "train_dataloader = dict(_delete_=True, dataset=dict(val_dataset, samples_per_epoch=100))\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(child, ["train_dataset.samples_per_epoch=16"])
    assert str(err.value) == (
        "override 'train_dataset.samples_per_epoch' cannot take effect: it changes only the variable "
        "'train_dataset'; set 'train_dataloader.dataset.samples_per_epoch' instead"
    )
    names = write(tmp_path, "names.py", 'names = ["a", "b"]\n_count = len(names)\n')
    with pytest.raises(ConfigError, match="changes only the variable 'names'; no value the program reads is built"):
        load_config(names, ["names.0=z"])


def test_a_shipped_config_refuses_a_dataset_its_loader_does_not_read() -> None:
    # fcdensenet_satellite tests on val_dataloader: its test_dataset variable is read by nothing.
    with pytest.raises(ConfigError, match="set 'test_dataloader.dataset.img_dir' instead"):
        load_config(CONFIGS / "fcdensenet_satellite.py", ["test_dataset.img_dir=/x"])


def test_an_override_that_sets_the_value_already_there_is_accepted(layered: Path, tmp_path: Path) -> None:
    child = write(
        tmp_path,
        "inline.py",
        '_base_ = "child.py"\n'
        "train_dataloader = dict(_delete_=True, dataset=dict(val_dataset, samples_per_epoch=100))\n",
    )
    assert load_config(child, ["train_dataset.samples_per_epoch=100"]).train_dataset.samples_per_epoch == 100


def test_plus_adds_a_key_the_config_does_not_state() -> None:
    cfg = load_config(CONFIGS / "fcdensenet_msd_spleen.py", ["+val_dataloader.num_workers=0"])
    assert cfg.val_dataloader.num_workers == 0
    with pytest.raises(ConfigError, match=r"to add it, write \+val_dataloader.num_workers="):
        load_config(CONFIGS / "fcdensenet_msd_spleen.py", ["val_dataloader.num_workers=0"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("+train_cfg.max_epochs=1", r"exists: set it with train_cfg.max_epochs=\.\.\., without '\+'"),
        ("+train_cfg.nested.key=1", r"key '\+train_cfg.nested.key' in --cfg-options: train_cfg has no key 'nested'$"),
        ("train_cfg.max_epoch=1", r"did you mean 'train_cfg.max_epochs'\?$"),
        ("train_dataloader.batch_sise=1", r"did you mean 'train_dataloader.batch_size'\?$"),
        ("train_cfg.val_interval=1", r"has no key 'val_interval'; to add it, write \+train_cfg.val_interval=\.\.\.$"),
    ],
)  # fmt: skip
def test_keys_are_checked_before_anything_is_set(layered: Path, option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(layered, [option])


def test_a_new_constructor_argument_is_accepted_and_plus_adds_it_to_every_copy(layered: Path) -> None:
    cfg = load_config(layered, ["val_dataset.cache=True", "+train_dataset.extra=1"])
    assert split_dataset_cfg(cfg, "val").cache is True and split_dataset_cfg(cfg, "train").extra == 1


def test_the_overrides_are_logged_in_one_line(layered: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="densevision.config"):
        load_config(layered, ["data_root=/x", "train_cfg.max_epochs=1"])
    assert caplog.messages == ["config overrides: data_root='/x', train_cfg.max_epochs=1"]


# ------------------------------------------------------------------------------------------- the dataset of a split


def test_the_dataset_of_a_split_is_the_loaders_else_the_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cfg.py",
        """
        test_dataset = dict(type="Set", split="test")
        val_dataset = dict(type="Set", split="val")
        val_dataloader = dict(dataset=dict(val_dataset, split="other"))
        """,
    )
    cfg = Config.fromfile(path)
    assert split_dataset_key(cfg, "val") == "val_dataloader.dataset" and split_dataset_cfg(cfg, "val").split == "other"
    assert split_dataset_key(cfg, "test") == "test_dataset" and split_dataset_cfg(cfg, "test").split == "test"
    assert split_dataset_cfg(cfg, "test").filename == str(path)
    assert split_dataset_key(cfg, "train") is None
    with pytest.raises(ConfigError, match=r"cfg.py defines neither train_dataloader.dataset nor train_dataset; it "
                                          r"defines \['test_dataset', 'val_dataloader', 'val_dataset'\]"):  # fmt: skip
        split_dataset_cfg(cfg, "train")


TINY_TIRAMISU = dict(type="FCDenseNet", down_layers=(1, 1), bottleneck_layers=1, growth_rate=4, stem_channels=8,
                     num_classes=3, drop_rate=0.0)  # fmt: skip


def test_infer_normalises_with_the_test_loaders_pipeline_and_its_overrides(tmp_path: Path, monkeypatch) -> None:
    """The checkpoint is tested with test_dataloader.dataset: prediction must prepare images the same way."""
    from PIL import Image

    from densevision.engine.checkpoint import save_checkpoint
    from densevision.tasks import Segmentor

    config = write(
        tmp_path,
        "cfg.py",
        f"""
        model = dict(type="Segmentor", model={TINY_TIRAMISU!r})
        test_dataset = dict(type="MaskFolderDataset", img_dir="x", mask_dir="y", classes=["a", "b", "c"],
                            pipeline=[dict(type="Normalize", mean=(0.5,) * 3, std=(0.25,) * 3)])
        test_dataloader = dict(batch_size=1, dataset=dict(test_dataset,
                               pipeline=[dict(type="Normalize", mean=(0.2,) * 3, std=(0.3,) * 3)]))
        """,
    )
    checkpoint = tmp_path / "model.pth"
    save_checkpoint({"state_dict": Segmentor(model=TINY_TIRAMISU).state_dict(), "meta": {}}, checkpoint)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    tool = load_tool("infer")
    used = []
    monkeypatch.setattr(tool, "infer_files", lambda predictor, *_, **__: used.append(predictor) or
                        SimpleNamespace(written=[], failed=[]))  # fmt: skip
    arguments = [str(config), str(checkpoint), str(tmp_path / "in.png"), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--backend", "torch"]  # fmt: skip
    assert tool.main(arguments) == 0
    assert tool.main([*arguments, "--cfg-options", "test_dataloader.dataset.pipeline.0.mean=[0.1,0.1,0.1]"]) == 0
    loader_mean, overridden_mean = (np.asarray(predictor.mean).flatten() for predictor in used)
    np.testing.assert_allclose(loader_mean, [0.2 * 255] * 3, rtol=1e-6)
    np.testing.assert_allclose(overridden_mean, [0.1 * 255] * 3, rtol=1e-6)


# ------------------------------------------------------------------------------------------------- every tool


TOOLS_AND_ARGUMENTS = {
    "train": [],
    "test": ["missing.pth"],
    "infer": ["missing.pth", "missing.png"],
    "export": ["missing.pth", "--out", "unused.onnx"],
    "check_dataset": [],
    "band_stats": [],
}


@pytest.fixture
def toy_config(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "toy.py",
        f"""
        _base_ = [{str(CONFIGS / "_base_" / "default_runtime.py")!r}]
        device = "cpu"
        model = dict(type="EngineToySegmentor")
        test_pipeline = []
        dataset = dict(type="EngineToySegmentation", num_samples=8, pipeline=test_pipeline)
        train_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
        test_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
        """,
    )


@pytest.mark.parametrize("tool_name", TOOLS_AND_ARGUMENTS)
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("devic=cpu", "did you mean 'device'?"),
        ("test_dataloader.batch_sise=2", "did you mean 'test_dataloader.batch_size'?"),
        ("chek_datasets=False", "did you mean 'check_datasets'?"),
        ("test_pipelin=1", "did you mean 'test_pipeline'?"),
    ],
)
def test_every_tool_refuses_a_misspelt_key(toy_config: Path, tool_name: str, option: str, message: str, capsys) -> None:
    arguments = [str(toy_config), *TOOLS_AND_ARGUMENTS[tool_name], "--cfg-options", option]
    assert load_tool(tool_name).main(arguments) == 1
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"error: unknown config key {option.partition('=')[0]!r} in --cfg-options; {message}"
    )


# ------------------------------------------------------------------------------------------------ strict JSON


def test_metrics_json_writes_null_for_nan_and_strict_readers_accept_it(tmp_path: Path) -> None:
    write_json({"mAP": 0.5, "AP_cat": math.nan, "per_class": [1.0, math.inf]}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    assert json.loads(text, parse_constant=refuse) == {"mAP": 0.5, "AP_cat": None, "per_class": [1.0, None]}

import copy
import enum
import pickle
import textwrap
from pathlib import Path

import pytest

from densevision.config import Config, ConfigDict, parse_cfg_options
from densevision.registry import ConfigError


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def segmentation_cfg(tmp_path: Path) -> Config:
    write(
        tmp_path,
        "_base_/model.py",
        """
        model = dict(
            type='Segmentor',
            backbone=dict(type='FCDenseNet', growth_rate=4, depths=[2, 2]),
            heads=[dict(type='Head', num_classes=3), dict(type='Head', num_classes=4)],
        )
        crop_size = (32, 32)
        """,
    )
    path = write(tmp_path, "seg.py", "_base_ = '_base_/model.py'\nlr = 0.1\n")
    return Config.fromfile(path)


def test_base_chain_merges_dicts_key_by_key_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path, "base.py", "model = dict(type='Net', depth=3, widths=[1, 2, 3], head=dict(classes=2, p=0.1))\n")
    write(tmp_path, "mid.py", "_base_ = 'base.py'\nmodel = dict(depth=5, head=dict(classes=7))\nepochs = 10\n")
    child = write(tmp_path, "child.py", "_base_ = 'mid.py'\nmodel = dict(widths=[9])\nepochs = 20\n")

    cfg = Config.fromfile(child)

    assert cfg.to_dict() == {
        "model": {"type": "Net", "depth": 5, "widths": [9], "head": {"classes": 7, "p": 0.1}},
        "epochs": 20,
    }


def test_base_list_merges_in_order_with_paths_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path, "_base_/models/net.py", "model = dict(type='Net', depth=3)\nshared = 'model'\n")
    write(tmp_path, "_base_/schedules/short.py", "_base_ = '../models/net.py'\nepochs = 5\nshared = 'schedule'\n")
    child = write(
        tmp_path,
        "configs/child.py",
        "_base_ = ['../_base_/models/net.py', '../_base_/schedules/short.py']\nmodel = dict(depth=4)\n",
    )

    cfg = Config.fromfile(child)

    assert cfg == {"model": {"type": "Net", "depth": 4}, "shared": "schedule", "epochs": 5}


def test_child_reads_base_values_as_names_without_changing_the_base(tmp_path: Path) -> None:
    write(tmp_path, "data.py", "pipeline = [dict(type='Flip')]\ntrain_dataset = dict(type='Set', pipeline=pipeline)\n")
    child = write(
        tmp_path,
        "child.py",
        "_base_ = 'data.py'\n"
        "train_dataset['root'] = 'x'\n"
        "train_dataloader = dict(batch_size=2, dataset=train_dataset)\n",
    )
    cfg = Config.fromfile(child)
    assert cfg.train_dataloader.dataset == dict(type="Set", pipeline=[dict(type="Flip")], root="x")
    assert Config.fromfile(tmp_path / "data.py").train_dataset == dict(type="Set", pipeline=[dict(type="Flip")])


def test_base_must_be_a_literal(tmp_path: Path) -> None:
    path = write(tmp_path, "child.py", "name = 'a.py'\n_base_ = name\n")
    with pytest.raises(ConfigError, match="child.py, line 2 must be a literal"):
        Config.fromfile(path)


def test_delete_replaces_the_inherited_dict(tmp_path: Path) -> None:
    write(tmp_path, "base.py", "optimizer = dict(type='SGD', lr=0.1, momentum=0.9)\nother = dict(a=1)\n")
    child = write(
        tmp_path,
        "child.py",
        """
        _base_ = 'base.py'
        optimizer = dict(_delete_=True, type='Adam', lr=1e-3)
        other = dict(b=dict(_delete_=False, c=2))
        fresh = dict(_delete_=True, x=1)
        """,
    )

    cfg = Config.fromfile(child)

    assert cfg.optimizer == {"type": "Adam", "lr": 1e-3}
    assert cfg.other == {"a": 1, "b": {"c": 2}}
    assert cfg.fresh == {"x": 1}


def test_only_public_data_names_become_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cfg.py",
        """
        import math
        from collections import OrderedDict

        def double(x):
            return 2 * x

        _depth = 3
        depth = double(_depth)
        scale = math.sqrt(4)
        """,
    )

    assert Config.fromfile(path).to_dict() == {"depth": 6, "scale": 2.0}


def test_attribute_and_item_access_on_nested_config_dicts(segmentation_cfg: Config) -> None:
    cfg = segmentation_cfg

    assert cfg.model.backbone.type == cfg["model"]["backbone"]["type"] == "FCDenseNet"
    assert isinstance(cfg.model, ConfigDict) and isinstance(cfg.model, dict)
    assert all(isinstance(head, ConfigDict) for head in cfg.model.heads)
    assert cfg.model.heads[1].num_classes == 4
    assert dict(**cfg.model.backbone) == {"type": "FCDenseNet", "growth_rate": 4, "depths": [2, 2]}
    assert cfg.get("missing", 7) == 7 and cfg.get("lr") == 0.1
    assert "filename" not in cfg.model


def test_every_node_carries_the_loaded_filename(segmentation_cfg: Config, tmp_path: Path) -> None:
    expected = str(tmp_path / "seg.py")

    assert segmentation_cfg.filename == expected
    assert segmentation_cfg.model.filename == expected
    assert segmentation_cfg.model.backbone.filename == expected
    assert segmentation_cfg.model.heads[0].filename == expected
    segmentation_cfg.model.neck = {"type": "Neck"}
    assert isinstance(segmentation_cfg.model.neck, ConfigDict)
    assert segmentation_cfg.model.neck.filename == expected


def test_missing_attribute_names_the_key_file_and_closest_keys(segmentation_cfg: Config) -> None:
    with pytest.raises(AttributeError, match=r"'backbon'.*seg\.py.*did you mean 'backbone'"):
        _ = segmentation_cfg.model.backbon
    with pytest.raises(KeyError, match="did you mean 'heads'"):
        _ = segmentation_cfg.model["head"]
    assert not hasattr(segmentation_cfg, "missing")


def test_config_dict_assignment_copies_and_wraps_nested_dicts() -> None:
    source = {"a": {"b": [{"c": 1}]}}
    node = ConfigDict(source, filename="x.py", extra=2)

    node.a.b[0].c = 5

    assert source["a"]["b"][0]["c"] == 1
    assert node.to_dict() == {"a": {"b": [{"c": 5}]}, "extra": 2}
    assert type(node.to_dict()["a"]["b"][0]) is dict
    assert node.a.b[0].filename == "x.py"


def test_copy_and_pickle_keep_type_content_and_filename(segmentation_cfg: Config) -> None:
    for clone in (copy.deepcopy(segmentation_cfg), pickle.loads(pickle.dumps(segmentation_cfg))):
        assert type(clone) is Config
        assert clone == segmentation_cfg
        assert clone.filename == segmentation_cfg.filename
        assert clone.model.heads[0].filename == segmentation_cfg.filename


def test_merge_from_dict_sets_dotted_keys_list_items_and_new_leaves(segmentation_cfg: Config) -> None:
    cfg = segmentation_cfg

    cfg.merge_from_dict(
        {
            "lr": 0.01,
            "model.backbone.growth_rate": 8,
            "model.heads.0.num_classes": 5,
            "model.heads.-1.type": "OtherHead",
            "model.backbone.depths.1": 6,
            "crop_size.0": 64,
            "model.backbone.memory_efficient": True,
            "model.neck": {"type": "Neck"},
        }
    )

    assert cfg.lr == 0.01
    assert cfg.model.backbone == {"type": "FCDenseNet", "growth_rate": 8, "depths": [2, 6], "memory_efficient": True}
    assert cfg.model.heads == [{"type": "Head", "num_classes": 5}, {"type": "OtherHead", "num_classes": 4}]
    assert cfg.crop_size == (64, 32)
    assert cfg.model.neck.filename == cfg.filename


def test_merge_from_dict_changes_nested_nodes_in_place(segmentation_cfg: Config) -> None:
    model, heads = segmentation_cfg.model, segmentation_cfg.model.heads

    segmentation_cfg.merge_from_dict({"model.heads.0.num_classes": 9, "model.backbone.growth_rate": 12})

    assert segmentation_cfg.model is model and segmentation_cfg.model.heads is heads
    assert model.heads[0].num_classes == 9 and model.backbone.growth_rate == 12


def test_merge_from_dict_reaches_integer_dict_keys(tmp_path: Path) -> None:
    cfg = Config.fromfile(write(tmp_path, "w.py", "loss = dict(class_weights={0: 1.0, 11: 0.0})\n"))

    cfg.merge_from_dict(parse_cfg_options(["loss.class_weights.11=2.5"]))

    assert cfg.loss.class_weights == {0: 1.0, 11: 2.5}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("modle.type", r"'modle\.type'.*the config has no key 'modle'; closest keys: 'model'"),
        ("model.backbon.depths", r"model has no key 'backbon'; closest keys: 'backbone'"),
        ("model.heads.2.num_classes", r"index 2 is out of range for model\.heads \(length 2\)"),
        ("model.heads.first.num_classes", r"model\.heads is a list, so 'first' must be an index"),
        ("model.heads.--1.num_classes", r"model\.heads is a list, so '--1' must be an index"),
        ("lr.value", r"lr is a float, not a dict or list"),
        ("model..type", r"empty part"),
    ],
)
def test_merge_from_dict_rejects_bad_paths(segmentation_cfg: Config, override: str, message: str) -> None:
    before = segmentation_cfg.to_dict()

    with pytest.raises(ConfigError, match=message):
        segmentation_cfg.merge_from_dict({override: 1})
    assert segmentation_cfg.to_dict() == before


@pytest.mark.parametrize(
    ("item", "key", "value"),
    [
        ("a.b=1", "a.b", 1),
        ("c=[1,2]", "c", [1, 2]),
        ("d=None", "d", None),
        ("e=hello", "e", "hello"),
        ("f='x'", "f", "x"),
        ("g=(1,2)", "g", (1, 2)),
        ("h=True", "h", True),
        ("i=1e-3", "i", 1e-3),
        ("j={'type': 'SGD'}", "j", {"type": "SGD"}),
        ("k=a=b", "k", "a=b"),
        ("l=", "l", ""),
        ("m=data/camvid train", "m", "data/camvid train"),
    ],
)
def test_parse_cfg_options_parses_literals_and_falls_back_to_strings(item: str, key: str, value: object) -> None:
    parsed = parse_cfg_options([item])

    assert parsed == {key: value}
    assert type(parsed[key]) is type(value)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("a.b=[1,", "'[' was never closed"),
        ("a.b=(1, 2", "'(' was never closed"),
        ("a.b={'x': 1", "'{' was never closed"),
        ("a.b='unclosed", "unterminated string literal"),
        ("a.b=224x224", "invalid decimal literal"),
        ("a.b=-lr", "malformed node or string"),
        ("a.b={[1]: 2}", "unhashable type"),
    ],
)
def test_parse_cfg_options_rejects_values_that_start_like_a_literal_but_do_not_parse(item: str, reason: str) -> None:
    raw = item.partition("=")[2]
    with pytest.raises(ConfigError) as caught:
        parse_cfg_options([item])

    message = str(caught.value)
    assert message.startswith(f"cannot parse the value {raw!r} of config option 'a.b': ")
    assert reason in message and message.endswith('quote it: a.b="' + repr(raw) + '"') and "\n" not in message


@pytest.mark.parametrize("item", ["w=hello", "w=data/camvid", "w=./runs/a", "w=~/x", "w=SGD", "w=true", "w=a[1"])
def test_parse_cfg_options_keeps_plain_words_as_strings(item: str) -> None:
    assert parse_cfg_options([item]) == {"w": item[2:]}


@pytest.mark.parametrize("item", ["model.depth", "=3"])
def test_parse_cfg_options_rejects_items_without_key_and_value(item: str) -> None:
    with pytest.raises(ConfigError, match=f"'{item}' must look like key=value"):
        parse_cfg_options(["lr=0.1", item])


def test_cyclic_base_names_the_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "_base_ = 'b.py'\n")
    write(tmp_path, "b.py", "_base_ = 'a.py'\n")

    with pytest.raises(ConfigError, match=r"cyclic _base_.*a\.py -> .*b\.py -> .*a\.py"):
        Config.fromfile(tmp_path / "a.py")


def test_config_that_is_its_own_base_is_a_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"self\.py -> .*self\.py"):
        Config.fromfile(write(tmp_path, "self.py", "_base_ = ['self.py']\n"))


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.py"):
        Config.fromfile(tmp_path / "nowhere.py")


def test_missing_base_names_the_base_and_the_file_referencing_it(tmp_path: Path) -> None:
    child = write(tmp_path, "child.py", "_base_ = ['_base_/gone.py']\n")

    with pytest.raises(FileNotFoundError, match=r"_base_/gone\.py.*of .*child\.py"):
        Config.fromfile(child)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a = 1\nb = dict(c=\n", r"syntax error in config .*broken\.py, line 2: .*: b = dict\(c="),
        ("a = 1\nb = undefined_name + 1\n", r"error while executing config .*broken\.py, line 2: NameError"),
        ("_base_ = 3\n", r"_base_ in config .*broken\.py must be a path or a list of paths, got 3"),
    ],
)
def test_broken_config_names_file_and_line(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.fromfile(write(tmp_path, "broken.py", source))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("cfg.yaml", "model:\n  type: Segmentor\n", r"config .*cfg\.yaml is a \.yaml file; configs are Python files"),
        ("cfg.yml", "a: 1\n", r"is a \.yml file; configs are Python files"),
        ("cfg.json", '{"model": {"type": "Segmentor"}}', r"is a \.json file; configs are Python files"),
        ("yaml.py", "model:\n  type: Segmentor\n", r"syntax error in config .*yaml\.py, line 1: .*configs are Python"),
        ("flat_yaml.py", "lr: 0.1\nepochs: 3\n", r"line 1: 'lr: 0.1' assigns nothing \(YAML syntax\?\); configs are"),
    ],
)
def test_yaml_or_json_given_as_a_config_says_configs_are_python(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.fromfile(write(tmp_path, name, text))


def test_a_binary_file_given_as_a_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "best.pth"
    path.write_bytes(b"PK\x03\x04\x80\xff binary checkpoint")

    with pytest.raises(ConfigError, match=r"best\.pth is not a text file \(a checkpoint or an image\?\); configs are"):
        Config.fromfile(path)


def test_a_yaml_base_is_refused_like_a_yaml_config(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "a: 1\n")

    with pytest.raises(ConfigError, match=r"base\.yaml is a \.yaml file"):
        Config.fromfile(write(tmp_path, "child.py", "_base_ = 'base.yaml'\n"))


ROUND_TRIP_SOURCE = """
model = dict(
    type='Segmentor',
    backbone=dict(type='FCDenseNet', growth_rate=16, down_depths=(4, 5, 7, 10, 12), bottleneck=15, drop_rate=0.2),
    class_weights={0: 1.5, 11: 0.0},
    names=['Sky', 'Building', "it's", 'a "quoted" name', 'Pole', 'Road', 'Sidewalk', 'Tree', 'SignSymbol', 'Fence'],
)
pipeline = [dict(type='RandomCrop', height=224, width=224), dict(type='HorizontalFlip', p=0.5), dict(type='Normalize')]
single = (1,)
empty = dict(a={}, b=[], c=())
numbers = [-1, 0.1, 1e-08, float('inf'), True, None, b'raw']
"""


def test_dump_round_trips_through_fromfile(tmp_path: Path) -> None:
    original = Config.fromfile(write(tmp_path, "original.py", ROUND_TRIP_SOURCE))
    dumped = tmp_path / "dumped.py"

    original.dump(dumped)
    reloaded = Config.fromfile(dumped)

    assert reloaded == original
    assert reloaded.model.backbone.down_depths == (4, 5, 7, 10, 12)
    assert dumped.read_text() == original.pretty_text
    assert all(len(line) <= 120 for line in original.pretty_text.splitlines())
    assert "single = (1,)\n" in original.pretty_text


def test_dump_of_an_inherited_and_overridden_config_round_trips(segmentation_cfg: Config, tmp_path: Path) -> None:
    segmentation_cfg.merge_from_dict(parse_cfg_options(["model.heads.1.num_classes=11", "lr=0.5"]))
    dumped = tmp_path / "dumped.py"

    segmentation_cfg.dump(dumped)

    assert "_base_" not in dumped.read_text()
    assert Config.fromfile(dumped) == segmentation_cfg


@pytest.mark.parametrize(
    ("value", "key"),
    [(dict(act=pytest.raises), "model.act"), (dict(layers=[1, object()]), "model.layers.1")],
)
def test_dump_rejects_values_that_are_not_literals(tmp_path: Path, value: dict, key: str) -> None:
    cfg = Config({"model": value})
    target = tmp_path / "out.py"

    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        cfg.dump(target)
    assert not target.exists()
    assert "model = " in repr(cfg)


@pytest.mark.parametrize("key", ["_private", "not-a-name", "class"])
def test_dump_rejects_top_level_keys_that_are_not_config_names(key: str) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        _ = Config({key: 1}).pretty_text


def test_repr_shows_filename_and_text(segmentation_cfg: Config) -> None:
    text = repr(segmentation_cfg)

    assert text.startswith(f"Config (path: {segmentation_cfg.filename}):\n")
    assert text.endswith(segmentation_cfg.pretty_text)


def test_string_enum_values_are_dumped_as_plain_strings(tmp_path: Path) -> None:
    class Mode(str, enum.Enum):
        TRAIN = "train"

    cfg = Config({"mode": Mode.TRAIN, "modes": [Mode.TRAIN]})

    assert cfg.pretty_text == "mode = 'train'\nmodes = ['train']\n"


def test_in_place_or_wraps_dicts() -> None:
    node = ConfigDict(filename="x.py")

    node |= {"model": {"type": "Net"}}

    assert isinstance(node.model, ConfigDict) and node.model.filename == "x.py"


def test_equality_is_by_content() -> None:
    assert Config({"a": {"b": [1]}}, filename="x.py") == Config({"a": {"b": [1]}}, filename="y.py")
    assert Config({"a": {"b": [1]}}) == {"a": {"b": [1]}}
    assert Config({"a": {"b": [1]}}) != {"a": {"b": (1,)}}

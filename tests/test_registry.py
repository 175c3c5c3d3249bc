import re
from pathlib import Path

import pytest
import torch

from densevision.config import Config
from densevision.registry import LR_SCHEDULERS, OPTIMIZERS, ConfigError, Registry, close_matches


class DenseNet:
    def __init__(self, *, depth: int, growth_rate: int = 32, num_classes: int = 1000) -> None:
        self.depth, self.growth_rate, self.num_classes = depth, growth_rate, num_classes


def densenet_tiny(*, num_classes: int = 10) -> DenseNet:
    return DenseNet(depth=3, growth_rate=4, num_classes=num_classes)


@pytest.fixture
def registry() -> Registry:
    models = Registry("toy_models")
    models.register_module()(DenseNet)
    models.register_module(name="tiny", module=densenet_tiny)
    return models


def test_register_and_build_by_name(registry: Registry) -> None:
    net = registry.build(dict(type="DenseNet", depth=5))

    assert isinstance(net, DenseNet)
    assert (net.depth, net.growth_rate) == (5, 32)
    assert registry.build(dict(type="tiny")).growth_rate == 4
    assert registry.names() == ["DenseNet", "tiny"]
    assert "tiny" in registry and len(registry) == 2
    assert registry.get("DenseNet") is DenseNet


def test_build_fills_defaults_that_the_config_does_not_set(registry: Registry) -> None:
    net = registry.build(dict(type="DenseNet", depth=5, num_classes=11), num_classes=3, growth_rate=12)

    assert (net.num_classes, net.growth_rate) == (11, 12)


def test_build_accepts_a_class_as_type(registry: Registry) -> None:
    assert registry.build(dict(type=DenseNet, depth=2)).depth == 2


def test_build_does_not_modify_the_config(registry: Registry) -> None:
    cfg = dict(type="DenseNet", depth=5)

    registry.build(cfg, num_classes=3)

    assert cfg == {"type": "DenseNet", "depth": 5}


def test_duplicate_name_is_an_error_unless_forced(registry: Registry) -> None:
    class Other:
        pass

    with pytest.raises(KeyError, match="'DenseNet' is already registered in registry 'toy_models'"):
        registry.register_module(name="DenseNet", module=Other)
    registry.register_module(module=DenseNet)  # the same object again is not a conflict
    registry.register_module(name="DenseNet", force=True, module=Other)

    assert registry.get("DenseNet") is Other


def test_register_module_without_parentheses_is_an_error(registry: Registry) -> None:
    with pytest.raises(TypeError, match="with parentheses"):

        @registry.register_module
        class Forgotten:
            pass


def test_get_unknown_name_lists_close_matches(registry: Registry) -> None:
    with pytest.raises(KeyError, match="unknown type 'densenet' in registry 'toy_models'; did you mean 'DenseNet'"):
        registry.get("densenet")


def test_unknown_type_in_a_config_file_is_one_line_naming_registry_name_matches_and_file(
    registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "net.py"
    path.write_text("model = dict(type='DenseNett', depth=3)\n")
    cfg = Config.fromfile(path)

    with pytest.raises(ConfigError) as info:
        registry.build(cfg.model)

    message = str(info.value)
    assert message == f"unknown type 'DenseNett' in registry 'toy_models' (in {path}); did you mean 'DenseNet'?"
    assert "\n" not in message


def test_config_without_type_names_registry_and_file(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text("model = dict(backbone=dict(depth=3))\n")

    with pytest.raises(ConfigError, match=rf"registry 'toy_models' \(in {re.escape(str(path))}\) has no 'type' key"):
        registry.build(Config.fromfile(path).model.backbone)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [(["DenseNet"], "expects a dict with a 'type' key, got list"), ({"type": 3}, "must be a name or class, got 3")],
)
def test_malformed_config_is_a_config_error(registry: Registry, cfg: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry.build(cfg)


def test_constructor_type_error_is_a_config_error_naming_registry_type_and_file(
    registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "net.py"
    path.write_text("model = dict(type='DenseNet', depth=3, grwoth_rate=4)\n")

    expected = rf"while building 'DenseNet' from registry 'toy_models' \(in {re.escape(str(path))}\): .*grwoth"
    with pytest.raises(ConfigError, match=expected):
        registry.build(Config.fromfile(path).model)


@pytest.mark.parametrize(
    ("name", "extra", "cls"),
    [("SGD", {"momentum": 0.9}, torch.optim.SGD), ("Adam", {}, torch.optim.Adam), ("AdamW", {}, torch.optim.AdamW)],
)
def test_torch_optimizers_are_registered_by_name(name: str, extra: dict, cls: type) -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]

    optimizer = OPTIMIZERS.build(dict(type=name, lr=0.1, **extra), params=params)

    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert optimizer.param_groups[0]["params"][0] is params[0]


@pytest.mark.parametrize(
    ("cfg", "lrs"),
    [
        (dict(type="StepLR", step_size=2, gamma=0.5), [1.0, 1.0, 0.5, 0.5]),
        (dict(type="MultiStepLR", milestones=[1, 3], gamma=0.1), [1.0, 0.1, 0.1, 0.01]),
        (dict(type="PolynomialLR", total_iters=4, power=1.0), [1.0, 0.75, 0.5, 0.25]),
    ],
)
def test_torch_lr_schedulers_are_registered_by_name(cfg: dict, lrs: list[float]) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = LR_SCHEDULERS.build(cfg, optimizer=optimizer)
    seen = []

    for _ in lrs:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    assert seen == pytest.approx(lrs)


def test_abstract_bases_are_not_registered() -> None:
    assert "Optimizer" not in OPTIMIZERS
    assert "LRScheduler" not in LR_SCHEDULERS and "_LRScheduler" not in LR_SCHEDULERS
    assert "ReduceLROnPlateau" in LR_SCHEDULERS


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sgd", ["SGD"]), ("DenseNt", ["DenseNet", "densenet_tiny"]), ("zzz", [])],
)
def test_close_matches_is_case_insensitive_and_ranked(name: str, expected: list[str]) -> None:
    assert close_matches(name, ["DenseNet", "densenet_tiny", "SGD", "VGG"]) == expected

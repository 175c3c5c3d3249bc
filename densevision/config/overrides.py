"""``--cfg-options``: parsed (``parse_cfg_options``), checked and applied alike by every tool (``load_config``)."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from densevision.config.files import ADD_PREFIX, Config, child_at, is_int, read_config
from densevision.registry import ConfigError, close_matches

__all__ = ["import_custom_modules", "load_config", "parse_cfg_options"]

logger = logging.getLogger(__name__)

# What a Python literal can start with: such a value must parse; anything else (a word, a path) is taken as a string.
_LITERAL_START = re.compile(r"""[\[({'"0-9+\-]""")


def load_config(
    path: str | os.PathLike,
    cfg_options: Sequence[str] = (),
    *,
    work_dir: str | os.PathLike | None = None,
    **settings: Any,
) -> Config:
    """The config every tool runs: ``path`` with the ``key=value`` overrides checked and applied, then the tools'
    settings (``resume``, ``launcher``: skipped when ``None``). ``work_dir``: the argument, else the config's, else
    ``work_dirs/<config name>``. The overrides are logged in one line. The modules named in ``custom_imports`` are
    imported, so a task, dataset, metric or predictor of the user's own registers before anything is built.

    A key must exist (a close miss names the key meant), except a new argument of a buildable dict (one with a
    ``type``) and a key written ``+key=value``, which adds it. An override of a variable that the config files build
    other values from (``data_root``, ``train_dataset``...) must change one of them; else it is refused, naming the
    key to set instead.
    """
    options = parse_cfg_options(cfg_options)
    baseline, reads = read_config(Config, path, {})
    for key in options:
        _check_override_key(baseline, key)
    cfg = read_config(Config, path, options)[0]
    for key, value in options.items():
        _check_override_reaches(path, baseline, reads, key, value)
    if options:
        logger.info("config overrides: %s", ", ".join(f"{key}={value!r}" for key, value in options.items()))
    if work_dir is not None:
        cfg["work_dir"] = str(work_dir)
    elif not cfg.get("work_dir"):
        cfg["work_dir"] = str(Path("work_dirs") / Path(path).stem)
    for key, value in settings.items():
        if value is not None:
            cfg[key] = value
    import_custom_modules(cfg)
    return cfg


def import_custom_modules(cfg: Mapping[str, Any]) -> None:
    """Import the config's ``custom_imports`` (module names, found on ``sys.path`` or in the working directory), whose
    registrations (``@TASKS.register_module()``...) make the user's own components buildable by name."""
    names = cfg.get("custom_imports") or []
    where = getattr(cfg, "filename", None) or "the config"
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"custom_imports in {where} must be a list of module names, got {names!r}")
    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise
            raise ConfigError(
                f"custom_imports in {where}: no module {name!r} (looked on sys.path and in {os.getcwd()})"
            ) from None


def _check_override_key(cfg: Mapping[str, Any], key: str) -> None:
    """Every part of ``key`` must exist in ``cfg``; only the last may be new: with ``+``, or as a new argument of a
    buildable dict (one with a ``type``: its constructor refuses a misspelt one when it is built). A new key elsewhere
    is almost always a typo (``train_cfg.max_epoch``) that would otherwise be ignored silently."""
    adding = key.startswith(ADD_PREFIX)
    dotted = key.removeprefix(ADD_PREFIX)
    node: Any = cfg
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        last = depth == len(parts) - 1
        if isinstance(node, (list, tuple)):
            if not is_int(part) or not -len(node) <= int(part) < len(node):
                raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} has no item {part!r}")
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} is not a dict")
        if part in node:
            if last and adding:
                raise ConfigError(f"config key {dotted!r} exists: set it with {dotted}=..., without {ADD_PREFIX!r}")
            node = node[part]
            continue
        if last and (adding or "type" in node):  # a constructor refuses an argument it does not take, naming it
            return
        hint = close_matches(part, [str(k) for k in node])
        if hint:
            raise ConfigError(
                f"unknown config key {key!r} in --cfg-options; did you mean {'.'.join([*parts[:depth], hint[0]])!r}?"
            )
        addition = f"; to add it, write {ADD_PREFIX}{dotted}=..." if last else ""
        raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} has no key {part!r}{addition}")


# Sections a program reads by name (the runner's loaders and metrics), never only a variable to build from.
_SECTION_SUFFIXES = ("_dataloader", "_evaluator")
_ABSENT = object()  # a key one config has and the other lacks


def _check_override_reaches(path: str | os.PathLike, baseline: Config, reads: set[str], key: str, value: Any) -> None:
    """Refuse an override of a variable the config builds other values from when none of them changes: it would only
    change a copy that nothing reads (a value built from it in another way, or not at all)."""
    parts = key.removeprefix(ADD_PREFIX).split(".")
    name = parts[0]
    if name not in reads or name.endswith(_SECTION_SUFFIXES) or name not in baseline:
        return
    alone = read_config(Config, path, {key: value})[0]
    changed = {k for k in {*baseline, *alone} if baseline.get(k, _ABSENT) != alone.get(k, _ABSENT)}
    if changed - {name} or not changed:  # it reaches another value, or sets what is already there
        return
    from densevision.splits import SPLITS, split_dataset_key  # the splits module builds on this one

    places = _places_of(baseline[name], baseline, exclude=name)
    places += [split_dataset_key(baseline, s) for s in SPLITS if name == f"{s}_dataset"]  # the split's own dataset
    uses = [  # where the rest of the key fits: its parent is there
        ".".join([place, *parts[1:]])
        for place in dict.fromkeys(places)
        if place and place != name and _has_path(baseline, ".".join([place, *parts[1:-1]]))
    ]
    instead = " or ".join(repr(use if _has_path(baseline, use) else f"{ADD_PREFIX}{use}") for use in uses)
    hint = f"set {instead} instead" if uses else f"no value the program reads is built from {name!r} after it is set"
    raise ConfigError(f"override {key!r} cannot take effect: it changes only the variable {name!r}; {hint}")


def _places_of(target: Any, cfg: Mapping[str, Any], exclude: str) -> list[str]:
    """The dotted keys in ``cfg`` (outside the top-level ``exclude``) whose value equals ``target``."""
    found: list[str] = []

    def visit(node: Any, where: str) -> None:
        if where and node == target:
            found.append(where)
            return
        children = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
        for child_key, child in children:
            if not (not where and child_key == exclude):
                visit(child, f"{where}.{child_key}" if where else str(child_key))

    visit(cfg, "")
    return found


def _has_path(cfg: Mapping[str, Any], dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        node = child_at(node, part)
        if node is None:
            return False
    return True


def parse_cfg_options(items: Iterable[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=[1,2]', 'e=hello']`` -> ``{'a.b': 1, 'c': [1, 2], 'e': 'hello'}``, for ``merge_from_dict``.

    Values are Python literals (``ast.literal_eval``); a value that is not one stays the raw string, so ``e=hello``
    and ``data_root=data/camvid`` need no quotes. A value that starts like a literal (``[ ( { ' "``, a digit or a sign)
    but does not parse, such as ``a.b=[1,``, is a ConfigError naming the key and value rather than a string. Only the
    first ``=`` splits, so values may contain ``=``. Every error is a one-line ConfigError.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"config option {item!r} must look like key=value (e.g. model.num_classes=5)")
        options[key] = _option_value(key, raw)
    return options


def _option_value(key: str, raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        if not _LITERAL_START.match(raw):
            return raw
        reason = " ".join(str(err.msg if isinstance(err, SyntaxError) else str(err).partition(":")[0]).split())
        quoted = f'"{raw!r}"'  # the shell form of a Python string literal
        raise ConfigError(
            f"cannot parse the value {raw!r} of config option {key!r}: it starts like a Python literal but is not one "
            f"({reason or type(err).__name__}); to pass it as a string, quote it: "
            f"{key + '=' if key.isprintable() else ''}{quoted}"
        ) from None

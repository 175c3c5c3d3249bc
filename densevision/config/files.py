"""Loading config files: ``_base_`` chains, merging, dotted overrides set on the files' variables as they run."""

from __future__ import annotations

import ast
import copy
import inspect
import os
import re
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import Any

from densevision.config.dicts import ConfigDict, wrap
from densevision.config.text import format_value, is_name
from densevision.registry import ConfigError, close_matches

__all__ = ["ADD_PREFIX", "Config", "child_at", "is_int", "read_config"]

_BASE_KEY = "_base_"
ADD_PREFIX = "+"  # an override key starting with it adds a key the config does not state (Hydra's convention)
_DELETE_KEY = "_delete_"
_DATA_SUFFIXES = (".yaml", ".yml", ".json", ".toml")  # what people try as configs; densevision reads Python only
_PYTHON_ONLY = "configs are Python files of `key = value` lines, e.g. `model = dict(type='Segmentor', ...)`"


class Config(ConfigDict):
    """A whole config: the top-level ConfigDict, plus loading from files, dotted overrides and dumping."""

    @classmethod
    def fromfile(cls, path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None) -> Config:
        """Execute a Python config file, after loading and merging its ``_base_`` files (the child wins).

        ``overrides`` (``{'a.b': value}``, unchecked: ``load_config`` checks them) are applied to the files'
        variables after every statement that runs, then to the merged result: a value built from an overridden name
        (``dict(root=data_root)``, ``dict(dataset=train_dataset)``) is built from the override, in every file.
        """
        return read_config(cls, path, overrides or {})[0]

    def merge_from_dict(self, options: Mapping[str, Any]) -> None:
        """Apply overrides ``{'a.b.c': value}``; integer parts index lists (``'model.heads.0.num_classes'``).

        The value replaces what is there (a dict value is not merged). Only the last part may be new (a leading ``+``,
        which says so on the command line, is dropped): a missing parent is almost always a typo, so it is an error
        that names the closest existing key.
        """
        for dotted, value in options.items():
            parts = str(dotted).removeprefix(ADD_PREFIX).split(".")
            if not all(parts):
                raise ConfigError(f"config override {dotted!r}{self._source()} has an empty part")
            _set_path(self, parts, value, dotted=str(dotted), done=0, filename=self.filename)

    @property
    def pretty_text(self) -> str:
        """The config as a Python file of ``key = value`` lines, which ``Config.fromfile`` loads back."""
        return self._text(strict=True)

    def dump(self, path: str | os.PathLike) -> None:
        """Write ``pretty_text`` to ``path`` (the text is built first, so a bad value leaves no partial file)."""
        text = self.pretty_text
        Path(path).write_text(text)

    def __repr__(self) -> str:
        return f"Config (path: {self.filename}):\n{self._text(strict=False)}"

    def _text(self, strict: bool) -> str:
        """``key = value`` lines; ``strict`` raises on what a config file cannot hold instead of writing its repr."""
        lines = []
        for key, value in self.items():
            name = str(key)
            if strict and not (isinstance(key, str) and is_name(key) and not key.startswith("_")):
                raise ConfigError(
                    f"config key {key!r}{self._source()} cannot be written as a top-level name of a config file"
                )
            lines.append(f"{name} = {format_value(value, name, depth=0, column=len(name) + 3, strict=strict)}")
        return "\n".join(lines) + "\n"

    def _source(self) -> str:
        return f" (in {self.filename})" if self.filename else ""


def read_config(cls: type[Config], path: str | os.PathLike, overrides: Mapping[str, Any]) -> tuple[Config, set[str]]:
    """The config at ``path`` with ``overrides`` applied (see ``Config.fromfile``), and the names its files read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    reads: set[str] = set()
    cfg = cls(_load(path.resolve(), chain=(), overrides=_Overrides(overrides), reads=reads), filename=str(path))
    cfg.merge_from_dict(overrides)
    return cfg, reads


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it: short messages for the usual ``configs/``."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _load(path: Path, chain: tuple[Path, ...], overrides: _Overrides, reads: set[str]) -> dict[str, Any]:
    """The merged contents of the config at ``path`` (resolved); ``chain`` is the files that led here, for cycles.
    ``reads`` collects the names the files read (the variables other values are built from).

    The bases are loaded first and their values are visible in the child as plain names (copies), so a child can
    compose what its bases define: ``train_dataloader = dict(batch_size=3, dataset=train_dataset)``.
    """
    if path in chain:
        cycle = " -> ".join(_display(p) for p in (*chain[chain.index(path) :], path))
        raise ConfigError(f"cyclic _base_ in config files: {cycle}")
    statements, declared_bases, names_read = _compile(path)
    reads |= names_read
    merged: dict[str, Any] = {}
    for base in _base_paths(declared_bases, path):
        merged = _merge(merged, _load(base, (*chain, path), overrides, reads))
    namespace = _execute(path, statements, copy.deepcopy(merged), overrides)
    own = {
        key: value
        for key, value in namespace.items()
        if not key.startswith("_")
        and not (inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value))
    }
    return _merge(merged, own)


def _compile(path: Path) -> tuple[list[CodeType], Any, set[str]]:
    """The config's top-level statements, compiled one by one, its ``_base_`` value, read before running it (a
    literal: the bases run first), and the names its code reads.

    YAML or JSON given as a config fails here with a message saying that configs are Python: by suffix, as a syntax
    error, or as YAML's ``key: value`` lines, which Python reads as annotations that assign nothing.
    """
    if path.suffix.lower() in _DATA_SUFFIXES:
        raise ConfigError(f"config {_display(path)} is a {path.suffix} file; {_PYTHON_ONLY}")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"config {_display(path)} is not a text file (a checkpoint or an image?); {_PYTHON_ONLY}"
        ) from None
    try:
        tree = ast.parse(source, str(path))
    except SyntaxError as err:
        code_line = f": {err.text.strip()}" if err.text else ""
        raise ConfigError(
            f"syntax error in config {_display(path)}, line {err.lineno}: {err.msg}{code_line} ({_PYTHON_ONLY})"
        ) from err
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is None:
            raise ConfigError(
                f"config {_display(path)}, line {node.lineno}: {ast.unparse(node)!r} assigns nothing (YAML syntax?); "
                f"{_PYTHON_ONLY}"
            )
    bases = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == _BASE_KEY for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                raise ConfigError(
                    f"_base_ in config {_display(path)}, line {node.lineno} must be a literal path or list of paths"
                ) from None
    statements = [compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec") for node in tree.body]
    reads = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return statements, bases, reads


def _execute(
    path: Path, statements: list[CodeType], inherited: dict[str, Any], overrides: _Overrides
) -> dict[str, Any]:
    """Run the statements in one namespace, applying the overrides after each: a name stays overridden when a later
    statement (or file) assigns or changes it, and the next statements build from the overridden value."""
    namespace: dict[str, Any] = {**inherited, "__file__": str(path), "__name__": f"densevision_config.{path.stem}"}
    try:
        for statement in statements:
            exec(statement, namespace)
            overrides.apply_to(namespace)
    except Exception as err:
        lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if frame.filename == str(path)]
        where = f", line {lines[-1]}" if lines else ""
        raise ConfigError(f"error while executing config {_display(path)}{where}: {type(err).__name__}: {err}") from err
    return namespace


class _Overrides:
    """Overrides set on a config file's variables while it runs. Lenient: a key whose parent is not there (yet) is
    skipped, and a key is only added where it carries ``+``; ``load_config`` has checked every key beforehand."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.items: list[tuple[list[str], Any, bool]] = [
            (str(key).removeprefix(ADD_PREFIX).split("."), value, str(key).startswith(ADD_PREFIX))
            for key, value in options.items()
        ]

    def apply_to(self, namespace: dict[str, Any]) -> None:
        for parts, value, adding in self.items:
            node: Any = namespace
            for part in parts[:-1]:
                node = child_at(node, part)
                if node is None:
                    break
            else:  # a new argument of a buildable dict is added like a +key (load_config accepts both)
                new_argument = len(parts) > 1 and isinstance(node, dict) and "type" in node
                _set_if_present(node, parts[-1], value, adding=new_argument or (adding and len(parts) > 1))


def child_at(node: Any, part: str) -> Any:
    """What ``part`` (a dict key, or an index into a list) names under ``node``; ``None`` when there is nothing."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and is_int(part) and -len(node) <= int(part) < len(node):
        return node[int(part)]
    return None


def _set_if_present(node: Any, part: str, value: Any, adding: bool) -> None:
    if isinstance(node, dict) and (part in node or adding) and (part not in node or node[part] != value):
        node[part] = copy.deepcopy(value)
    elif isinstance(node, list) and is_int(part) and -len(node) <= int(part) < len(node) and node[int(part)] != value:
        node[int(part)] = copy.deepcopy(value)


def _base_paths(base: Any, path: Path) -> list[Path]:
    if base is None:
        return []
    names = [base] if isinstance(base, (str, os.PathLike)) else base
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, os.PathLike)) for n in names):
        raise ConfigError(f"_base_ in config {_display(path)} must be a path or a list of paths, got {base!r}")
    paths = []
    for name in names:
        resolved = (path.parent / name).resolve()
        if not resolved.is_file():
            raise FileNotFoundError(
                f"config file not found: {_display(resolved)} (the _base_ {name!r} of {_display(path)})"
            )
        paths.append(resolved)
    return paths


def _merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: dicts merge key by key, other values replace; ``_delete_=True`` replaces a dict."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping):
            value = dict(value)
            replace = value.pop(_DELETE_KEY, False)
            inherited = merged.get(key)
            if isinstance(inherited, Mapping) and not replace:
                value = _merge(dict(inherited), value)
            else:
                value = _merge({}, value)  # strip _delete_ markers nested in a value that has no base
        merged[key] = value
    return merged


def _set_path(node: Any, parts: list[str], value: Any, dotted: str, done: int, filename: str | None) -> Any:
    """Set ``parts`` under ``node`` and return the node (a tuple comes back as a new tuple for its parent to store)."""
    part, rest = parts[0], parts[1:]
    where = ".".join(dotted.split(".")[:done]) or "the config"
    if isinstance(node, Mapping):
        key: Any = part
        if part not in node and is_int(part) and int(part) in node:
            key = int(part)
        if rest:
            if key not in node:
                hint = close_matches(part, [str(k) for k in node])
                suggestion = f"; closest keys: {', '.join(map(repr, hint))}" if hint else ""
                raise ConfigError(f"cannot apply override {dotted!r}: {where} has no key {part!r}{suggestion}")
            child = node[key]
            updated = _set_path(child, rest, value, dotted, done + 1, filename)
            if updated is not child:  # only a tuple is rebuilt; dicts and lists change in place
                node[key] = updated
        else:
            node[key] = value
        return node
    if isinstance(node, (list, tuple)):
        if not is_int(part):
            raise ConfigError(f"cannot apply override {dotted!r}: {where} is a list, so {part!r} must be an index")
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ConfigError(
                f"cannot apply override {dotted!r}: index {index} is out of range for {where} (length {len(node)})"
            )
        items = node if isinstance(node, list) else list(node)
        items[index] = wrap(
            _set_path(items[index], rest, value, dotted, done + 1, filename) if rest else value, filename
        )
        return items if isinstance(node, list) else tuple(items)
    raise ConfigError(f"cannot apply override {dotted!r}: {where} is a {type(node).__name__}, not a dict or list")


def is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None

"""Python config files: plain ``key = value`` modules composed with ``_base_`` and tuned with dotted overrides.

A config is executed as Python, so it can compute values, but what it yields is data: nested dicts, lists and
scalars that ``Registry.build`` turns into objects. Every nested dict is a ``ConfigDict`` that remembers which file it
was loaded from, so a bad value found deep inside a build names the config file to fix.
"""

from __future__ import annotations

import ast
import copy
import inspect
import keyword
import logging
import math
import os
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import CodeType
from typing import Any

from densevision.registry import ConfigError, close_matches

__all__ = ["Config", "ConfigDict", "ConfigError", "load_config", "parse_cfg_options"]

logger = logging.getLogger(__name__)

_BASE_KEY = "_base_"
_ADD = "+"  # an override key starting with it adds a key the config does not state (Hydra's convention)
_DELETE_KEY = "_delete_"
_LINE_WIDTH = 120
_INDENT = "    "
_DATA_SUFFIXES = (".yaml", ".yml", ".json", ".toml")  # what people try as configs; densevision reads Python only
_PYTHON_ONLY = "configs are Python files of `key = value` lines, e.g. `model = dict(type='Segmentor', ...)`"
# What a Python literal can start with: such a value must parse; anything else (a word, a path) is taken as a string.
_LITERAL_START = re.compile(r"""[\[({'"0-9+\-]""")


class ConfigDict(dict):
    """A dict whose keys are also attributes (``cfg.model.type``); nested dicts, also inside lists, are ConfigDicts.

    ``filename`` is an attribute, not a key: the config file this node was loaded from (``None`` when built in code),
    read by ``Registry.build`` for its error messages. Keys that collide with dict methods or ``filename`` (``items``,
    ``update``...) are still reachable by item access.
    """

    filename: str | None = None

    def __init__(
        self,
        data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        /,
        *,
        filename: str | None = None,
        **items: Any,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "filename", filename)
        self.update(data, **items)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            if name.startswith("__"):  # protocol probes (pickle, copy): no suggestion to compute
                raise AttributeError(name) from None
            raise AttributeError(self._missing_message(name)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "filename":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(self._missing_message(name)) from None

    def __missing__(self, key: Any) -> Any:
        raise KeyError(self._missing_message(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _wrap(value, self.filename))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> ConfigDict:
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> ConfigDict:
        return type(self)(self, filename=self.filename)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists, e.g. for logging or JSON."""
        return _unwrap(self)

    def _missing_message(self, key: Any) -> str:
        source = f" (in {self.filename})" if self.filename else ""
        hint = close_matches(str(key), [str(k) for k in self])
        suggestion = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
        return f"config has no key {key!r}{source}{suggestion}"


def _wrap(value: Any, filename: str | None) -> Any:
    """Plain dicts become ConfigDicts carrying ``filename`` (copies); a ConfigDict is stored as it is, like a dict."""
    if isinstance(value, ConfigDict):
        return value
    if isinstance(value, Mapping):
        return ConfigDict(value, filename=filename)
    if isinstance(value, list):
        return [_wrap(v, filename) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # namedtuples are left as they are
        return tuple(_wrap(v, filename) for v in value)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_unwrap(v) for v in value)
    return value


class Config(ConfigDict):
    """A whole config: the top-level ConfigDict, plus loading from files, dotted overrides and dumping."""

    @classmethod
    def fromfile(cls, path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None) -> Config:
        """Execute a Python config file, after loading and merging its ``_base_`` files (the child wins).

        ``overrides`` (``{'a.b': value}``, unchecked: ``load_config`` checks them) are applied to the files'
        variables after every statement that runs, then to the merged result: a value built from an overridden name
        (``dict(root=data_root)``, ``dict(dataset=train_dataset)``) is built from the override, in every file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return _read(cls, path, overrides or {})[0]

    def merge_from_dict(self, options: Mapping[str, Any]) -> None:
        """Apply overrides ``{'a.b.c': value}``; integer parts index lists (``'model.heads.0.num_classes'``).

        The value replaces what is there (a dict value is not merged). Only the last part may be new (a leading ``+``,
        which says so on the command line, is dropped): a missing parent is almost always a typo, so it is an error
        that names the closest existing key.
        """
        for dotted, value in options.items():
            parts = str(dotted).removeprefix(_ADD).split(".")
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
            if strict and not (isinstance(key, str) and _is_name(key) and not key.startswith("_")):
                raise ConfigError(
                    f"config key {key!r}{self._source()} cannot be written as a top-level name of a config file"
                )
            lines.append(f"{name} = {_format(value, name, depth=0, column=len(name) + 3, strict=strict)}")
        return "\n".join(lines) + "\n"

    def _source(self) -> str:
        return f" (in {self.filename})" if self.filename else ""


def load_config(
    path: str | os.PathLike,
    cfg_options: Sequence[str] = (),
    *,
    work_dir: str | os.PathLike | None = None,
    **settings: Any,
) -> Config:
    """The config every tool runs: ``path`` with the ``key=value`` overrides checked and applied, then the tools'
    settings (``resume``, ``launcher``: skipped when ``None``). ``work_dir``: the argument, else the config's, else
    ``work_dirs/<config name>``. The overrides are logged in one line.

    A key must exist (a close miss names the key meant), except a new argument of a buildable dict (one with a
    ``type``) and a key written ``+key=value``, which adds it. An override of a variable that the config files build
    other values from (``data_root``, ``train_dataset``...) must change one of them; else it is refused, naming the
    key to set instead.
    """
    options = parse_cfg_options(cfg_options)
    baseline, reads = _read(Config, path, {})
    for key in options:
        _check_override_key(baseline, key)
    cfg = _read(Config, path, options)[0]
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
    return cfg


def _read(cls: type[Config], path: str | os.PathLike, overrides: Mapping[str, Any]) -> tuple[Config, set[str]]:
    """The config at ``path`` with ``overrides`` applied (see ``Config.fromfile``), and the names its files read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    reads: set[str] = set()
    cfg = cls(_load(path.resolve(), chain=(), overrides=_Overrides(overrides), reads=reads), filename=str(path))
    cfg.merge_from_dict(overrides)
    return cfg, reads


def _check_override_key(cfg: Mapping[str, Any], key: str) -> None:
    """Every part of ``key`` must exist in ``cfg``; only the last may be new: with ``+``, or as a new argument of a
    buildable dict (one with a ``type``: its constructor refuses a misspelt one when it is built). A new key elsewhere
    is almost always a typo (``train_cfg.max_epoch``) that would otherwise be ignored silently."""
    adding = key.startswith(_ADD)
    dotted = key.removeprefix(_ADD)
    node: Any = cfg
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        last = depth == len(parts) - 1
        if isinstance(node, (list, tuple)):
            if not _is_int(part) or not -len(node) <= int(part) < len(node):
                raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} has no item {part!r}")
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} is not a dict")
        if part in node:
            if last and adding:
                raise ConfigError(f"config key {dotted!r} exists: set it with {dotted}=..., without {_ADD!r}")
            node = node[part]
            continue
        if last and (adding or "type" in node):  # a constructor refuses an argument it does not take, naming it
            return
        hint = close_matches(part, [str(k) for k in node])
        if hint:
            raise ConfigError(
                f"unknown config key {key!r} in --cfg-options; did you mean {'.'.join([*parts[:depth], hint[0]])!r}?"
            )
        addition = f"; to add it, write {_ADD}{dotted}=..." if last else ""
        raise ConfigError(f"unknown config key {key!r} in --cfg-options: {where} has no key {part!r}{addition}")


# Sections a program reads by name (the runner's loaders and metrics), never only a variable to build from.
_SECTION_SUFFIXES = ("_dataloader", "_evaluator")


def _check_override_reaches(path: str | os.PathLike, baseline: Config, reads: set[str], key: str, value: Any) -> None:
    """Refuse an override of a variable the config builds other values from when none of them changes: it would only
    change a copy that nothing reads (a value built from it in another way, or not at all)."""
    parts = key.removeprefix(_ADD).split(".")
    name = parts[0]
    if name not in reads or name.endswith(_SECTION_SUFFIXES) or name not in baseline:
        return
    alone = _read(Config, path, {key: value})[0]
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
    instead = " or ".join(repr(use if _has_path(baseline, use) else f"{_ADD}{use}") for use in uses)
    hint = f"set {instead} instead" if uses else f"no value the program reads is built from {name!r} after it is set"
    raise ConfigError(f"override {key!r} cannot take effect: it changes only the variable {name!r}; {hint}")


_ABSENT = object()


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
        node = _child(node, part)
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
            (str(key).removeprefix(_ADD).split("."), value, str(key).startswith(_ADD)) for key, value in options.items()
        ]

    def apply_to(self, namespace: dict[str, Any]) -> None:
        for parts, value, adding in self.items:
            node: Any = namespace
            for part in parts[:-1]:
                node = _child(node, part)
                if node is None:
                    break
            else:  # a new argument of a buildable dict is added like a +key (load_config accepts both)
                new_argument = len(parts) > 1 and isinstance(node, dict) and "type" in node
                _set_if_present(node, parts[-1], value, adding=new_argument or (adding and len(parts) > 1))


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and _is_int(part) and -len(node) <= int(part) < len(node):
        return node[int(part)]
    return None


def _set_if_present(node: Any, part: str, value: Any, adding: bool) -> None:
    if isinstance(node, dict) and (part in node or adding) and (part not in node or node[part] != value):
        node[part] = copy.deepcopy(value)
    elif isinstance(node, list) and _is_int(part) and -len(node) <= int(part) < len(node) and node[int(part)] != value:
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
        if part not in node and _is_int(part) and int(part) in node:
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
        if not _is_int(part):
            raise ConfigError(f"cannot apply override {dotted!r}: {where} is a list, so {part!r} must be an index")
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ConfigError(
                f"cannot apply override {dotted!r}: index {index} is out of range for {where} (length {len(node)})"
            )
        items = node if isinstance(node, list) else list(node)
        items[index] = _wrap(
            _set_path(items[index], rest, value, dotted, done + 1, filename) if rest else value, filename
        )
        return items if isinstance(node, list) else tuple(items)
    raise ConfigError(f"cannot apply override {dotted!r}: {where} is a {type(node).__name__}, not a dict or list")


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def _format_block(value: Any, key: str, depth: int, strict: bool) -> str:
    inner = _INDENT * (depth + 1)
    if isinstance(value, Mapping):
        as_call = _keyword_keys(value)
        lines = []
        for k, v in value.items():
            child_key = f"{key}.{k}"
            label = f"{k}=" if as_call else f"{_format_flat(k, child_key, strict)}: "
            lines.append(f"{inner}{label}{_format(v, child_key, depth + 1, len(inner) + len(label), strict)},")
        opening, closing = ("dict(", ")") if as_call else ("{", "}")
    else:
        lines = [f"{inner}{_format(v, f'{key}.{i}', depth + 1, len(inner), strict)}," for i, v in enumerate(value)]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    return "\n".join([opening, *lines, _INDENT * depth + closing])


def _format(value: Any, key: str, depth: int, column: int, strict: bool) -> str:
    """``value`` as Python source: one line when it fits the line width from ``column``, else one item per line."""
    flat = _format_flat(value, key, strict)
    if column + len(flat) + 1 <= _LINE_WIDTH or not isinstance(value, (Mapping, list, tuple)) or not value:
        return flat
    return _format_block(value, key, depth, strict)


def _format_flat(value: Any, key: str, strict: bool) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (str, bytes)):  # via the base type: a str Enum's repr is no literal
        return repr(str.__str__(value) if isinstance(value, str) else bytes(value))
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        return repr(float(value)) if math.isfinite(value) else f"float('{value}')"
    if isinstance(value, Mapping):
        if _keyword_keys(value):
            return "dict(" + ", ".join(f"{k}={_format_flat(v, f'{key}.{k}', strict)}" for k, v in value.items()) + ")"
        items = (f"{_format_flat(k, key, strict)}: {_format_flat(v, f'{key}.{k}', strict)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_format_flat(v, f"{key}.{i}", strict) for i, v in enumerate(value)) + "]"
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        body = ", ".join(_format_flat(v, f"{key}.{i}", strict) for i, v in enumerate(value))
        return f"({body},)" if len(value) == 1 else f"({body})"
    if strict:
        raise ConfigError(
            f"config key {key!r} holds {value!r} ({type(value).__name__}), which cannot be written as a Python literal"
        )
    return repr(value)


def _keyword_keys(mapping: Mapping) -> bool:
    """Whether ``mapping`` can be written as ``dict(key=value, ...)``."""
    return bool(mapping) and all(isinstance(k, str) and _is_name(k) for k in mapping)


def _is_name(text: str) -> bool:
    return text.isidentifier() and not keyword.iskeyword(text)

"""A config as Python source (``Config.pretty_text``): ``key = value`` lines that ``Config.fromfile`` loads back."""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Any

from densevision.registry import ConfigError

__all__ = ["format_value", "is_name"]

_LINE_WIDTH = 120
_INDENT = "    "


def _format_block(value: Any, key: str, depth: int, strict: bool) -> str:
    inner = _INDENT * (depth + 1)
    if isinstance(value, Mapping):
        as_call = _keyword_keys(value)
        lines = []
        for k, v in value.items():
            child_key = f"{key}.{k}"
            label = f"{k}=" if as_call else f"{_format_flat(k, child_key, strict)}: "
            lines.append(f"{inner}{label}{format_value(v, child_key, depth + 1, len(inner) + len(label), strict)},")
        opening, closing = ("dict(", ")") if as_call else ("{", "}")
    else:
        lines = [f"{inner}{format_value(v, f'{key}.{i}', depth + 1, len(inner), strict)}," for i, v in enumerate(value)]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    return "\n".join([opening, *lines, _INDENT * depth + closing])


def format_value(value: Any, key: str, depth: int, column: int, strict: bool) -> str:
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
    return bool(mapping) and all(isinstance(k, str) and is_name(k) for k in mapping)


def is_name(text: str) -> bool:
    return text.isidentifier() and not keyword.iskeyword(text)

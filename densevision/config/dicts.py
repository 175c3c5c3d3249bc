"""``ConfigDict``: the nested dicts a config yields, with attribute access and the file they were loaded from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from densevision.registry import close_matches

__all__ = ["ConfigDict", "wrap"]


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
        super().__setitem__(key, wrap(value, self.filename))

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


def wrap(value: Any, filename: str | None) -> Any:
    """Plain dicts become ConfigDicts carrying ``filename`` (copies); a ConfigDict is stored as it is, like a dict."""
    if isinstance(value, ConfigDict):
        return value
    if isinstance(value, Mapping):
        return ConfigDict(value, filename=filename)
    if isinstance(value, list):
        return [wrap(v, filename) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # namedtuples are left as they are
        return tuple(wrap(v, filename) for v in value)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_unwrap(v) for v in value)
    return value

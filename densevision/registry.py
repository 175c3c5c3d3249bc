"""Registries: name -> class maps that turn config dicts (``dict(type='Name', ...)``) into objects.

Kept deliberately small (mmengine's idea, a fraction of its size): one ``Registry`` class, one instance per kind of
component, and ``build`` that reports bad types and bad arguments with the registry, the name and the config file named.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from densevision.errors import DensevisionError

__all__ = [
    "Registry",
    "ConfigError",
    "BACKBONES",
    "HEADS",
    "MODELS",
    "DATASETS",
    "TRANSFORMS",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "LR_SCHEDULERS",
    "TASKS",
    "PREDICTORS",
]


class ConfigError(DensevisionError, ValueError):
    """A config value is wrong; the message names the key, value and (when known) the config file."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``name`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def _source_of(cfg: Mapping) -> str:
    source = getattr(cfg, "filename", None)
    return f" (in {source})" if source else ""


class Registry:
    """Maps names to classes or factory functions of one kind (backbones, datasets, ...)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., Any]] = {}

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._entries)} entries)"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def register_module(
        self, name: str | None = None, force: bool = False, module: Callable[..., Any] | None = None
    ) -> Callable[..., Any]:
        """Register a class or function, as a decorator (``@REG.register_module()``) or directly (``module=...``).

        A name already taken is an error unless ``force=True``, so two components never silently shadow each other.
        """

        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"register_module() of registry {self.name!r} takes a name, got {name!r}; "
                "write @register_module() with parentheses"
            )

        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            if not force and key in self._entries and self._entries[key] is not obj:
                raise KeyError(
                    f"{key!r} is already registered in registry {self.name!r} "
                    f"(by {self._entries[key].__module__}); pass force=True to replace it"
                )
            self._entries[key] = obj
            return obj

        if module is not None:
            return add(module)
        return add

    def get(self, name: str) -> Callable[..., Any]:
        """The entry registered as ``name``; an unknown name raises KeyError listing the closest names."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str, source: str = "") -> str:
        hint = close_matches(name, self._entries)
        suggestion = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
        return f"unknown type {name!r} in registry {self.name!r}{source}{suggestion}"

    def build(self, cfg: Mapping[str, Any], **defaults: Any) -> Any:
        """Instantiate ``cfg['type']`` with the other keys as keyword arguments.

        ``defaults`` fill arguments that the config does not set (a dataset's pipeline, a model's num_classes...).
        ``type`` may be a registered name or a class/function itself.
        """
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"registry {self.name!r} expects a dict with a 'type' key, got {type(cfg).__name__}")
        if "type" not in cfg:
            raise ConfigError(f"config for registry {self.name!r}{_source_of(cfg)} has no 'type' key: {dict(cfg)!r}")
        args = dict(defaults)
        args.update({k: v for k, v in cfg.items() if k != "type"})
        kind = cfg["type"]
        if isinstance(kind, str):
            if kind not in self._entries:
                raise ConfigError(self.unknown_message(kind, _source_of(cfg)))
            factory = self._entries[kind]
        elif callable(kind):
            factory = kind
        else:
            raise ConfigError(
                f"'type' in registry {self.name!r}{_source_of(cfg)} must be a name or class, got {kind!r}"
            )
        try:
            return factory(**args)
        except DensevisionError:
            raise
        except (TypeError, ValueError) as err:  # a constructor refusing the config's arguments or values
            label = kind if isinstance(kind, str) else getattr(kind, "__name__", repr(kind))
            raise ConfigError(f"while building {label!r} from registry {self.name!r}{_source_of(cfg)}: {err}") from err


BACKBONES = Registry("backbones")
HEADS = Registry("heads")
MODELS = Registry("models")
DATASETS = Registry("datasets")
TRANSFORMS = Registry("transforms")
LOSSES = Registry("losses")
METRICS = Registry("metrics")
OPTIMIZERS = Registry("optimizers")
LR_SCHEDULERS = Registry("lr_schedulers")
# Task models (Segmentor, Classifier, Detector): an architecture from MODELS plus its loss behind the runner interface.
TASKS = Registry("tasks")
# Predictors for files on disk (densevision.inference): each task class names its own with a ``predictor`` attribute.
PREDICTORS = Registry("predictors")


def _register_torch_classes() -> None:
    """torch.optim optimizers and LR schedulers by their own names: registered, not rewritten."""
    import torch

    for name, obj in vars(torch.optim).items():
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            OPTIMIZERS.register_module(name=name, module=obj)
    base = torch.optim.lr_scheduler.LRScheduler
    for name, obj in vars(torch.optim.lr_scheduler).items():
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and not name.startswith("_"):
            LR_SCHEDULERS.register_module(name=name, module=obj)


_register_torch_classes()

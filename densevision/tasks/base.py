"""What the task wrappers share: building their parts from a config dict or taking a module as it is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from densevision.registry import Registry

__all__ = ["build_part"]


def build_part(part: Mapping[str, Any] | nn.Module, registry: Registry) -> nn.Module:
    """``part`` built from ``registry`` when it is a config dict; a module is used as it is (tests, notebooks)."""
    return part if isinstance(part, nn.Module) else registry.build(part)

"""densevision: DenseNet encoders with Tiramisu segmentation, DSOD detection and classification heads."""

from __future__ import annotations

import fnmatch
import os
from typing import Any

# densevision never reaches the network: albumentations would otherwise look for updates on import (and warn offline).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from torch import nn  # noqa: E402

from densevision.registry import MODELS  # noqa: E402

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]


def _register_all() -> None:
    """Import the modules whose decorators fill the registries."""
    import densevision.models  # noqa: F401


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture by name (timm-style): ``create_model('densenet121', num_classes=10)``."""
    _register_all()
    return MODELS.get(name)(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern`` (``'densenet*'``)."""
    _register_all()
    return [name for name in MODELS.names() if fnmatch.fnmatch(name, pattern)]

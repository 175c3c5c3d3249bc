"""The dataset of a split: the one resolution that training, testing, inference and the data tools share.

A config states a split's data as ``<split>_dataloader = dict(..., dataset=...)``, which the runner loads; the
``<split>_dataset`` variable that configs usually build it from is only that when the loader says so. So the dataset
of split S is ``S_dataloader.dataset``, and ``S_dataset`` only for a config that states no loader for S (an
inference-only config). Whatever reads a split's dataset (its pipeline's ``Normalize``, its classes) asks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from densevision.config import ConfigDict
from densevision.registry import ConfigError

__all__ = ["PREDICTION_SPLITS", "SPLITS", "loader_key", "split_dataset_cfg", "split_dataset_key"]

SPLITS = ("train", "val", "test")
# What prediction prepares images like: the test data, else the validation data, else the training data.
PREDICTION_SPLITS = ("test", "val", "train")


def loader_key(split: str) -> str:
    """The config key of the split's data loader."""
    return f"{split}_dataloader"


def split_dataset_key(cfg: Mapping[str, Any], split: str) -> str | None:
    """The dotted key of the split's dataset: ``<split>_dataloader.dataset``, else ``<split>_dataset``; ``None``
    when the config states neither."""
    loader = cfg.get(loader_key(split))
    if isinstance(loader, Mapping) and isinstance(loader.get("dataset"), Mapping):
        return f"{loader_key(split)}.dataset"
    if isinstance(cfg.get(f"{split}_dataset"), Mapping):
        return f"{split}_dataset"
    return None


def split_dataset_cfg(cfg: Mapping[str, Any], split: str) -> ConfigDict:
    """The dataset config of ``split`` (see the module docstring); a ConfigError naming the config when it has none."""
    key = split_dataset_key(cfg, split)
    if key is None:
        source = getattr(cfg, "filename", None) or "the config"
        defined = sorted(str(k) for k, v in cfg.items() if str(k).endswith(("_dataset", "_dataloader")) and v)
        raise ConfigError(
            f"{source} defines neither {loader_key(split)}.dataset nor {split}_dataset; it defines {defined}"
        )
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node if isinstance(node, ConfigDict) else ConfigDict(node, filename=getattr(cfg, "filename", None))

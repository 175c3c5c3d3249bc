"""Image classification head: global pooling, dropout and a linear layer."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from densevision.registry import HEADS

__all__ = ["ClassifierHead"]

_POOLS = {"avg": F.adaptive_avg_pool2d, "max": F.adaptive_max_pool2d}


@HEADS.register_module()
class ClassifierHead(nn.Linear):
    """N×C×H×W features (or N×C pooled ones) -> N×num_classes logits: global pool, dropout, linear.

    The head *is* its linear layer (a subclass of ``nn.Linear``), so its parameters sit at ``<name>.weight`` and
    ``<name>.bias``: a DenseNet's ``classifier`` keeps torchvision's checkpoint keys while pooling and dropout travel
    with it. ``drop_rate`` is element-wise dropout on the pooled features.
    """

    def __init__(self, in_channels: int, num_classes: int, *, pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        if pool_type not in _POOLS:
            raise ValueError(f"ClassifierHead pool_type must be one of {sorted(_POOLS)}, got {pool_type!r}")
        if num_classes < 1:
            raise ValueError(f"ClassifierHead needs num_classes >= 1, got {num_classes}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"ClassifierHead drop_rate must be in [0, 1), got {drop_rate}")
        super().__init__(in_channels, num_classes)
        self.pool_type = pool_type
        self.drop_rate = float(drop_rate)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() == 4:
            features = _POOLS[self.pool_type](features, 1).flatten(1)
        elif features.dim() != 2:
            raise ValueError(
                f"ClassifierHead expects N×{self.in_features}×H×W or N×{self.in_features} features, "
                f"got shape {tuple(features.shape)}"
            )
        if self.drop_rate > 0:
            features = F.dropout(features, p=self.drop_rate, training=self.training)
        return super().forward(features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool_type={self.pool_type!r}, drop_rate={self.drop_rate}"

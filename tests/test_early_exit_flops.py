"""densevision.flops: multiply-adds per image by the MSDNet authors' convention, checked against hand counts."""

import pytest
import torch
from torch import nn

from densevision.flops import count_flops


class TwoExitNet(nn.Module):
    """conv3x3(3->8) BN ReLU maxpool2 | exit A: global pool + linear(8->5) | conv1x1(8->4, groups 2) | exit B."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.exit_a = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        self.deeper = nn.Sequential(nn.Conv2d(8, 4, 1, groups=2, bias=False), nn.Dropout(0.5))
        self.exit_b = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(4, 5, bias=False))

    def forward(self, x):
        x = self.stem(x)
        first = self.exit_a(x)
        x = self.deeper(x)
        return first, self.exit_b(x)


# Per 3×8×8 image:
STEM = 8 * 8 * 8 * 3 * 3 * 3 + 8 * 8 * 8 + 8 * 4 * 4 * 2 * 2  # conv (bias not counted) + ReLU inputs + 2×2 max pool
EXIT_A = 8 * 4 * 4 + 8 * 5 + 5  # global pool reads every input value; linear: weights and biases
DEEPER = 4 * 4 * 4 * (8 // 2) * 1 * 1  # grouped 1x1 conv: in/groups per output value; dropout counts nothing
EXIT_B = 4 * 1 * 1 * 4 * 4 + 4 * 5  # 4×4 average pool window per output value; linear without bias


@pytest.mark.parametrize("batch", [1, 3])
def test_counts_per_image_with_a_running_total_at_each_exit(batch):
    model = TwoExitNet().eval()
    counted = count_flops(model, torch.randn(batch, 3, 8, 8), exits=[model.exit_a, model.exit_b])
    assert counted.at_exits == [STEM + EXIT_A, STEM + EXIT_A + DEEPER + EXIT_B]
    assert counted.total == STEM + EXIT_A + DEEPER + EXIT_B == 15_361


def test_hooks_are_removed_and_gradients_untouched():
    model = TwoExitNet()
    count_flops(model, torch.randn(1, 3, 8, 8))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert count_flops(model, torch.randn(1, 3, 8, 8)).at_exits == []

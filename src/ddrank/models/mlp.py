"""The DC multilayer perceptron baseline (``fc_1``, ``fc_2``, ``fc_3``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ddrank.models.registry import MODELS, ModelFamily, fixed_name

HIDDEN = 128


class MLP(nn.Module):
    """Flattened image -> 128 -> 128 -> classes with ReLU."""

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        self.fc_1 = nn.Linear(channels * size * size, HIDDEN)
        self.fc_2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc_3 = nn.Linear(HIDDEN, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.fc_1(x.flatten(1)))
        out = F.relu(self.fc_2(out))
        return self.fc_3(out)


MODELS.register("MLP", description="DC MLP: flatten, two hidden layers of 128 with ReLU, linear head")(
    ModelFamily(pattern="MLP", examples=("MLP",), parse=fixed_name("MLP", MLP))
)

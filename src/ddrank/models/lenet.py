"""LeNet in the DC layout (``features``, then ``fc_1``, ``fc_2``, ``fc_3``), for images of 16 px or more."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ddrank.errors import InputError
from ddrank.models.registry import MODELS, ModelFamily, fixed_name


class LeNet(nn.Module):
    """Two 5x5 conv-ReLU-maxpool stages (6 and 16 channels), then 120-84-classes fully connected layers."""

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        side = ((size - 4) // 2 - 4) // 2
        if side < 1:
            raise InputError(
                f"LeNet needs images of at least 16 px (two unpadded 5x5 convolutions), got {size} px"
            )
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc_1 = nn.Linear(16 * side * side, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x).flatten(1)
        out = F.relu(self.fc_1(out))
        out = F.relu(self.fc_2(out))
        return self.fc_3(out)


MODELS.register("LeNet", description="DC LeNet: two 5x5 conv-maxpool stages, 120-84 MLP head")(
    ModelFamily(pattern="LeNet", examples=("LeNet",), parse=fixed_name("LeNet", LeNet))
)

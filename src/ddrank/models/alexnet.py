"""The small-image AlexNet of DC (``features`` then ``fc``), for any image size of 8 px or more."""

from __future__ import annotations

from torch import Tensor, nn

from ddrank.errors import InputError
from ddrank.models.registry import MODELS, ModelFamily, fixed_name


class AlexNet(nn.Module):
    """Five stride-1 convolutions (128-192-256-192-192 channels), three 2x2 max-pools, linear head."""

    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        side = size // 8
        if side < 1:
            raise InputError(f"AlexNet needs images of at least 8 px (three 2x2 max-pools), got {size} px")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc = nn.Linear(192 * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


MODELS.register(
    "AlexNet", description="DC small-image AlexNet: five stride-1 convs, three max-pools, linear head"
)(ModelFamily(pattern="AlexNet", examples=("AlexNet",), parse=fixed_name("AlexNet", AlexNet)))

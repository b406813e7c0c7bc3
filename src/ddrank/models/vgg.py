"""VGG-11/13/16/19 in the DC small-image form (``features`` then a 512-wide ``classifier``).

DC's VGG reaches 1x1 after its five max-pools at 32 px. Here a max-pool that would shrink a
1-pixel map is an identity and the end is a global average pool, so the same state-dict layout
runs at any image size and equals DC's network at 32 px.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from ddrank.models.layers import SUFFIX_OF_NORM, norm_layer
from ddrank.models.registry import MODELS, ModelFamily, ModelSpec

POOL = "M"
CONFIGS: dict[int, list[int | str]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    19: [
        64,
        64,
        POOL,
        128,
        128,
        POOL,
        256,
        256,
        256,
        256,
        POOL,
        512,
        512,
        512,
        512,
        POOL,
        512,
        512,
        512,
        512,
        POOL,
    ],
}
_NAME = re.compile(r"vgg-?(?P<depth>11|13|16|19)(?:-?(?P<norm>bn|in))?")


class VGG(nn.Module):
    """Stacks of conv 3x3 - norm - ReLU separated by 2x2 max-pools, global average pool, linear head."""

    def __init__(
        self, channels: int, num_classes: int, size: int, *, depth: int = 11, norm: str = "instance"
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, side = channels, size
        for item in CONFIGS[depth]:
            if item == POOL:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2) if side >= 2 else nn.Identity())
                side = max(side // 2, 1)
            else:
                layers += [
                    nn.Conv2d(in_channels, item, kernel_size=3, padding=1),
                    norm_layer(norm, item),
                    nn.ReLU(),
                ]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def parse_vgg(name: str) -> ModelSpec | None:
    """Parse ``VGG-11/13/16/19[-BN]`` (and DC's ``VGG11BN``); instance norm unless ``-BN``."""
    match = _NAME.fullmatch(name.lower())
    if match is None:
        return None
    depth = int(match["depth"])
    norm = "batch" if match["norm"] == "bn" else "instance"

    def build(channels: int, num_classes: int, size: int) -> nn.Module:
        return VGG(channels, num_classes, size, depth=depth, norm=norm)

    return ModelSpec(f"VGG-{depth}{SUFFIX_OF_NORM[norm]}", build)


MODELS.register("VGG", description="DC VGG-11/13/16/19: conv-norm-ReLU stacks, max-pools, 512-d linear head")(
    ModelFamily(
        pattern="VGG-11|13|16|19[-BN]",
        examples=tuple(f"VGG-{depth}{suffix}" for depth in CONFIGS for suffix in ("", "-BN")),
        parse=parse_vgg,
    )
)

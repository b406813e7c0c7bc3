"""ResNet-18/34/50 in the DC / DD-Ranking small-image form.

3x3 stride-1 stem without max-pool; attribute names as in DC (``conv1``, ``bn1``,
``layer1``..``layer4``, ``shortcut``, ``classifier``) so that DC / DD-Ranking checkpoints load.
The head averages the final map globally, which equals DC's 4x4 average pool at 32 px.
"""

from __future__ import annotations

import re

import torch.nn.functional as F
from torch import Tensor, nn

from ddrank.models.layers import SUFFIX_OF_NORM, norm_layer
from ddrank.models.registry import MODELS, ModelFamily, ModelSpec

_NAME = re.compile(r"resnet-?(?P<depth>18|34|50)(?:-?(?P<norm>bn|in))?")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm_layer(norm, planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int, norm: str) -> nn.Sequential:
    """Identity (an empty Sequential, as in DC) or a strided 1x1 projection with its norm."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        norm_layer(norm, out_planes),
    )


BLOCKS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """Small-image ResNet: 3x3 stride-1 stem, four stages (64 to 512 planes), global pooling, linear head."""

    def __init__(self, channels: int, num_classes: int, *, depth: int = 18, norm: str = "instance"):
        super().__init__()
        block, counts = BLOCKS[depth]
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(norm, 64)
        in_planes = 64
        stages = []
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            blocks = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(in_planes, planes, stride, norm))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(self.avgpool(out).flatten(1))


def parse_resnet(name: str) -> ModelSpec | None:
    """Parse ``ResNet-18/34/50[-BN]`` (and DC's ``ResNet18BN``); instance norm unless ``-BN``."""
    match = _NAME.fullmatch(name.lower())
    if match is None:
        return None
    depth = int(match["depth"])
    norm = "batch" if match["norm"] == "bn" else "instance"

    def build(channels: int, num_classes: int, size: int) -> nn.Module:
        return ResNet(channels, num_classes, depth=depth, norm=norm)

    return ModelSpec(f"ResNet-{depth}{SUFFIX_OF_NORM[norm]}", build)


MODELS.register(
    "ResNet", description="DC small-image ResNet-18/34/50: 3x3 stride-1 stem, instance norm unless -BN"
)(
    ModelFamily(
        pattern="ResNet-18|34|50[-BN]",
        examples=tuple(f"ResNet-{depth}{suffix}" for depth in BLOCKS for suffix in ("", "-BN")),
        parse=parse_resnet,
    )
)

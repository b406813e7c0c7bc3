"""ConvNet, the standard dataset-distillation student (DC / DSA / DM / MTT / DATM / DD-Ranking).

The state-dict layout matches DD-Ranking / MTT / DATM checkpoints: ``features`` holds
[conv 3x3 pad 1, norm, ReLU, avgpool 2x2] per block (no norm module for ``-NN``), then
``classifier`` is a Linear layer on the flattened (or, with ``-GAP``, globally pooled) features.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from ddrank.errors import InputError
from ddrank.models.layers import NORM_SUFFIXES, SUFFIX_OF_NORM, AvgPool2x2, norm_layer
from ddrank.models.registry import MODELS, ModelFamily, ModelSpec

DEFAULT_DEPTH = 3
DEFAULT_WIDTH = 128

# One suffix token, hyphenated ("-4", "-W64", "-BN", "-GAP") or glued DC style ("D4", "W64", "BN").
_TOKEN = re.compile(r"-?(?:d?(?P<depth>\d+)|w(?P<width>\d+)|(?P<norm>bn|ln|in|nn)|(?P<gap>gap))")


class ConvNet(nn.Module):
    """``depth`` blocks of conv-norm-ReLU-avgpool with ``width`` channels, then a linear classifier."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        size: int,
        *,
        depth: int = DEFAULT_DEPTH,
        width: int = DEFAULT_WIDTH,
        norm: str = "instance",
        global_pool: bool = False,
    ):
        super().__init__()
        max_depth = size.bit_length() - 1
        if depth > max_depth:
            raise InputError(
                f"ConvNet of depth {depth} halves the image {depth} times; "
                f"{size} px images allow a depth of at most {max_depth}"
            )
        layers: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=1))
            if norm != "none":
                layers.append(norm_layer(norm, width))
            layers += [nn.ReLU(), AvgPool2x2()]
            in_channels = width
        side = size >> depth
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(width if global_pool else width * side * side, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def parse_convnet(name: str) -> ModelSpec | None:
    """Parse ``ConvNet[-D][-W<width>][-BN|-LN|-IN|-NN][-GAP]`` and glued DC spellings (``ConvNetD4BN``)."""
    lowered = name.lower()
    if not lowered.startswith("convnet"):
        return None
    found: dict[str, str] = {}
    position = len("convnet")
    while position < len(lowered):
        match = _TOKEN.match(lowered, position)
        if match is None or match.lastgroup in found:
            return None
        found[match.lastgroup] = match.group(match.lastgroup)
        position = match.end()
    depth = int(found.get("depth", DEFAULT_DEPTH))
    width = int(found.get("width", DEFAULT_WIDTH))
    if depth < 1 or width < 1:
        return None
    norm = NORM_SUFFIXES[found.get("norm", "in")]
    global_pool = "gap" in found
    canonical = (
        f"ConvNet-{depth}"
        + (f"-W{width}" if width != DEFAULT_WIDTH else "")
        + SUFFIX_OF_NORM[norm]
        + ("-GAP" if global_pool else "")
    )

    def build(channels: int, num_classes: int, size: int) -> nn.Module:
        return ConvNet(
            channels, num_classes, size, depth=depth, width=width, norm=norm, global_pool=global_pool
        )

    return ModelSpec(canonical, build)


MODELS.register(
    "ConvNet",
    description="DC/MTT ConvNet: depth D (3), width 128, instance norm, ReLU, 2x2 avg-pool, linear head",
)(
    ModelFamily(
        pattern="ConvNet[-D][-W<width>][-BN|-LN|-IN|-NN][-GAP]",
        examples=(
            *(f"ConvNet-{depth}" for depth in range(1, 5)),
            *(f"ConvNet-{depth}-BN" for depth in range(1, 5)),
            "ConvNet-3-LN",
            "ConvNet-3-NN",
            "ConvNet-3-W64",
            "ConvNet-3-GAP",
        ),
        parse=parse_convnet,
    )
)

"""Normalisation choices shared by the DC-style families (ConvNet, VGG, ResNet)."""

from __future__ import annotations

from torch import nn

# Name suffix -> normalisation kind; instance norm is the DC default and has no suffix.
NORM_SUFFIXES = {"in": "instance", "bn": "batch", "ln": "layer", "nn": "none"}
SUFFIX_OF_NORM = {"instance": "", "batch": "-BN", "layer": "-LN", "none": "-NN"}


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation after a convolution: instance = GroupNorm(C, C), layer = GroupNorm(1, C), batch."""
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"no normalisation module for {kind!r}")

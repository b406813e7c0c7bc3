"""Normalisation choices shared by the DC-style families (ConvNet, VGG, ResNet), and their 2x2 pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


# Planes up to this many pixels pool through one matrix product on a CPU (see avg_pool2x2).
MATMUL_POOL_PLANE = 16 * 16
_POOLING_MATRICES: dict[tuple[int, int, torch.dtype], Tensor] = {}


def _pooling_matrix(height: int, width: int, dtype: torch.dtype) -> Tensor:
    """[H*W, H/2*W/2]: 0.25 where an input pixel falls in an output pixel's 2x2 window, else 0."""
    key = (height, width, dtype)
    if key not in _POOLING_MATRICES:
        rows = torch.arange(height).repeat_interleave(width) // 2
        cols = torch.arange(width).repeat(height) // 2
        target = rows * (width // 2) + cols
        matrix = torch.zeros(height * width, (height // 2) * (width // 2), dtype=dtype)
        matrix[torch.arange(height * width), target] = 0.25
        _POOLING_MATRICES[key] = matrix
    return _POOLING_MATRICES[key]


def avg_pool2x2(x: Tensor) -> Tensor:
    """2x2 average pooling with stride 2 (``F.avg_pool2d(x, 2)``), by the fastest exact route.

    On a CPU, PyTorch's kernel for contiguous (NCHW) tensors is several times slower than the
    memory traffic allows on the small planes of distillation students (8x8 to 16x16); there the
    pooling is one matrix product of the flattened planes with a fixed 0.25/0 matrix, whose
    backward is the transposed product. Each output is the sum of its four inputs scaled by a
    power of two, so the result equals the native kernel's (bit for bit where the product sums in
    index order, as MKL does for these sizes). A non-finite input spreads NaN over its plane rather
    than its window: such a student has diverged either way. On CUDA the pooling is a reshape and a
    mean (the native backward kernel took a quarter of a ConvNet ensemble step on an H200).
    """
    height, width = x.shape[-2:]
    even = height % 2 == 0 and width % 2 == 0
    if x.is_cuda and even:
        return x.unflatten(-1, (width // 2, 2)).unflatten(-3, (height // 2, 2)).mean((-1, -3))
    if (
        even
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and height * width <= MATMUL_POOL_PLANE
        and x.is_contiguous()
        and not torch.is_autocast_enabled("cpu")
    ):
        pooled = x.reshape(-1, height * width) @ _pooling_matrix(height, width, x.dtype)
        return pooled.view(*x.shape[:-2], height // 2, width // 2)
    return F.avg_pool2d(x, 2, 2)


class AvgPool2x2(nn.AvgPool2d):
    """``nn.AvgPool2d(kernel_size=2, stride=2)`` (same attributes, no state, an ``nn.AvgPool2d`` for type
    checks) computed by :func:`avg_pool2x2`."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2x2(x)

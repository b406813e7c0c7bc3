"""The ConvNet-3 student's convolutions on the LRS-hard workload's shapes, in each layout and form.

50 members packed into channels, a batch of 100 images (IPC 10), bf16: forward and
forward + backward milliseconds of each convolution as the ensemble runs it (grouped, NCHW), in
channels-last, and (for the first, 3-channel convolution) as one grouped convolution per distinct
batch (the members of an lr grid share their augmented batch) or one dense convolution over shared
images. "dense" rows are the same arithmetic as one convolution with a single weight, the
tensor-core bound a grouped kernel could approach.

    python benchmarks/conv_probe.py [--batch 100] [--members 50] [--distinct 10]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from fused_kernel import milliseconds  # this folder is on the path when a script here runs


def report(name: str, forward, inputs: tuple[torch.Tensor, ...], macs_per_output: int) -> None:
    """Print forward and forward + backward milliseconds of ``forward`` (gradients for ``inputs``)
    and the rate of its arithmetic: each output element costs ``macs_per_output`` multiply-adds per
    pass, two passes backward when the input needs a gradient, one otherwise."""
    y = forward()
    grad = torch.randn_like(y)
    with torch.no_grad():
        fwd = milliseconds(forward, repeat=20)
    both = milliseconds(lambda: torch.autograd.grad(forward(), inputs, grad), repeat=20)
    flop = 2 * y.numel() * macs_per_output * (1 + len(inputs))
    print(f"{name:44s} {fwd:8.3f} {both:9.3f} {flop / both / 1e9:8.1f}", flush=True)


def row(name: str, x: torch.Tensor, w: torch.Tensor, groups: int, input_grad: bool) -> None:
    """A convolution as cuDNN runs it (grouped when ``groups`` > 1)."""
    x = x.detach().requires_grad_(input_grad)
    w = w.detach().requires_grad_(True)
    inputs = (x, w) if input_grad else (w,)
    report(name, lambda: F.conv2d(x, w, None, 1, 1, 1, groups), inputs, w[0].numel())


def gemm_row(name: str, x: torch.Tensor, w: torch.Tensor, k: int) -> None:
    """The engine's first convolution of shared images (ddrank.engine.packed._images_conv)."""
    from torch import nn

    from ddrank.engine.packed import _images_conv

    conv = nn.Conv2d(w.shape[1], w.shape[0] // k, w.shape[-1], padding=w.shape[-1] // 2)
    weight = w.view(k, -1, *w.shape[1:]).detach().requires_grad_(True)
    report(name, lambda: _images_conv(x, weight, None, conv), (weight,), w[0].numel())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("conv_probe needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    dev, bf = torch.device("cuda"), torch.bfloat16
    b, k, d, c = args.batch, args.members, args.distinct, args.width
    cl = torch.channels_last
    print(f"{'convolution (bf16)':44s} {'fwd ms':>8s} {'f+b ms':>9s} {'TFLOP/s':>8s}")
    w1 = torch.randn(k * c, 3, 3, 3, device=dev, dtype=bf)
    x1 = torch.randn(b, k * 3, 32, 32, device=dev, dtype=bf)
    row("first: grouped over members (now)", x1, w1, k, False)
    row(
        "first: grouped, channels-last",
        x1.contiguous(memory_format=cl),
        w1.contiguous(memory_format=cl),
        k,
        False,
    )
    xd = torch.randn(b, d * 3, 32, 32, device=dev, dtype=bf)
    row(f"first: grouped over {d} distinct batches", xd, w1, d, False)
    row(
        f"first: {d} distinct, channels-last",
        xd.contiguous(memory_format=cl),
        w1.contiguous(memory_format=cl),
        d,
        False,
    )
    gemm_row(
        f"first: im2col + GEMM over {d} distinct batches",
        torch.randn(d, b, 3, 32, 32, device=dev, dtype=bf),
        w1,
        k,
    )
    gemm_row(
        "first: im2col + GEMM over shared images", torch.randn(1, b, 3, 32, 32, device=dev, dtype=bf), w1, k
    )
    xs = torch.randn(b, 3, 32, 32, device=dev, dtype=bf)
    row("first: dense over shared images", xs, w1, 1, False)
    for side in (16, 8):
        w = torch.randn(k * c, c, 3, 3, device=dev, dtype=bf)
        x = torch.randn(b, k * c, side, side, device=dev, dtype=bf)
        row(f"{side} px: grouped over members (now)", x, w, k, True)
        row(
            f"{side} px: grouped, channels-last",
            x.contiguous(memory_format=cl),
            w.contiguous(memory_format=cl),
            k,
            True,
        )
        wd = torch.randn(c, c, 3, 3, device=dev, dtype=bf)
        xdn = torch.randn(b * k, c, side, side, device=dev, dtype=bf)
        row(f"{side} px: dense, same arithmetic", xdn, wd, 1, True)
        row(
            f"{side} px: dense, channels-last",
            xdn.contiguous(memory_format=cl),
            wd.contiguous(memory_format=cl),
            1,
            True,
        )
    for side in (32, 16, 8):
        x = torch.randn(b, k * c, side, side, device=dev, dtype=bf)
        t = milliseconds(lambda x=x: x.contiguous(memory_format=cl), repeat=20)
        print(f"{f'NCHW -> NHWC copy, {side} px':44s} {t:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

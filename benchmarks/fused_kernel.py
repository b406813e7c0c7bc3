"""The fused instance norm + ReLU + 2x2 pooling kernel against the eager ops, on the protocol's shapes.

The three ConvNet-3 block tails of the LRS-hard workload (50 members x 128 channels packed, a
batch of 256 images; 32, 16 and 8 px planes), bf16 activations as under autocast: forward and
forward + backward time of each path, the fused path's effective memory bandwidth (its minimal
traffic: the input read once per pass, the pooled output and its gradient, the input gradient
written once) and the largest difference between the paths.

    python benchmarks/fused_kernel.py [--batch 256] [--members 50]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from ddrank.engine import fused


def eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The engine's eager CUDA path: bf16 group norm (fp32 statistics), ReLU, reshape-mean pooling."""
    h = F.relu(F.group_norm(x, x.shape[1], weight.to(x.dtype), bias.to(x.dtype), 1e-5))
    return h.unflatten(-1, (h.shape[-1] // 2, 2)).unflatten(-3, (h.shape[-2] // 2, 2)).mean((-1, -3))


def kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return fused.instance_norm_relu_pool(x, weight, bias, 1e-5)


def milliseconds(fn, repeat: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def compare(side: int, batch: int, channels: int, device: torch.device) -> None:
    """Time both paths on one plane size and print a row for each."""
    gen = torch.Generator(device).manual_seed(side)
    x = (torch.randn(batch, channels, side, side, device=device, generator=gen) * 2 + 1).bfloat16()
    x.requires_grad_(True)
    weight = (1 + 0.1 * torch.randn(channels, device=device, generator=gen)).requires_grad_(True)
    bias = (0.1 * torch.randn(channels, device=device, generator=gen)).requires_grad_(True)
    grad = torch.randn(batch, channels, side // 2, side // 2, device=device, generator=gen).bfloat16()
    inputs = (x, weight, bias)
    outputs = {}
    for name, fn in (("eager", eager), ("fused", kernel)):
        with torch.no_grad():
            forward = milliseconds(lambda fn=fn: fn(*inputs))
        both = milliseconds(lambda fn=fn: torch.autograd.grad(fn(*inputs), inputs, grad))
        y = fn(*inputs)
        outputs[name] = (y, *torch.autograd.grad(y, inputs, grad))
        rate, diff = f"{'':>7}", ""
        if name == "fused":
            # Minimal traffic: forward reads x, writes y; backward reads x and dy, writes dx.
            moved = x.numel() * 2 * 3 + y.numel() * 2 * 2
            rate = f"{moved / (both / 1e3) / 1e9:7.0f}"
            pairs = zip(outputs["eager"], outputs["fused"], strict=True)
            diff = f"{max((a.float() - b.float()).abs().max().item() for a, b in pairs):11.2e}"
        print(f"{side:>5}px {name:>6} {forward:8.2f} {both:11.2f} {rate} {diff}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda")
    print(f"{'plane':>7} {'path':>6} {'fwd ms':>8} {'fwd+bwd ms':>11} {'GB/s':>7} {'max |diff|':>11}")
    for side in (32, 16, 8):
        compare(side, args.batch, args.members * args.width, device)
        torch.cuda.empty_cache()
    if fused.failure() is not None:
        print("fused kernel failed:", fused.failure())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One Triton kernel for a ConvNet block's tail: instance norm (affine) + ReLU + 2x2 average pooling.

In the packed ensemble every (image, member-channel) plane is normalised on its own, so the
block tail is a per-plane operation. Eagerly it is five memory passes forward (norm statistics,
normalise, ReLU, pool) and more backward; here it is one read of the convolution output and one
write of the pooled result forward, and one read of that output plus the pooled gradient and one
write of the input gradient backward. Statistics and arithmetic are fp32 whatever the storage
dtype, so bf16 activations keep the eager path's autocast semantics (bf16 norm, fp32 statistics).

Each program handles ``G`` planes; a plane is read as four strided quadrants (the four pixels of
every pooling window), so pooling is a sum of four registers and odd heights or widths need only
masks (the last row or column joins the statistics, not the pooled output, as in avg_pool2d).
Runs on CUDA, and on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before
this module is imported), which is how its tests run without a GPU.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch's Linux CUDA wheels
    triton = None

# Planes larger than this many pixels are not fused (the whole plane is held in registers).
MAX_PLANE = 128 * 128
# Pixels of one quadrant tile a program aims at (planes per program = this / quadrant pixels).
_TILE = 512

_failure: str | None = None  # set when a kernel failed to compile or launch here: eager from then on


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the fused kernel can run on this activation [B, C, H, W] with per-channel affine."""
    if triton is None or _failure is not None:
        return False
    if not (x.is_cuda or (interpreting() and x.device.type == "cpu")):
        return False
    return (
        x.dim() == 4
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and x.is_contiguous()
        and 2 <= x.shape[-2] * x.shape[-1] <= MAX_PLANE
        and x.shape[-2] >= 2
        and x.shape[-1] >= 2
        and weight.numel() == x.shape[1]
    )


def reference(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The eager computation the kernel replaces."""
    return F.avg_pool2d(F.relu(F.group_norm(x, x.shape[1], weight, bias, eps)), 2)


if triton is not None:

    @triton.jit
    def _quadrant(
        base, plane_mask, i, j, DI: tl.constexpr, DJ: tl.constexpr, H: tl.constexpr, W: tl.constexpr
    ):
        """Offsets and mask of pixels (2i + DI, 2j + DJ) of planes starting at ``base`` [G, 1]."""
        row = 2 * i + DI
        col = 2 * j + DJ
        return base + row * W + col, plane_mask & (row < H) & (col < W)

    @triton.jit
    def _plane_sum(t):
        return tl.sum(t, axis=1)

    @triton.jit
    def _forward_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        mean_ptr,
        rstd_ptr,
        planes,
        channels,
        eps,
        H: tl.constexpr,
        W: tl.constexpr,
        G: tl.constexpr,
        PW: tl.constexpr,
        S: tl.constexpr,
    ):
        OH = H // 2
        OW = W // 2
        plane = tl.program_id(0).to(tl.int64) * G + tl.arange(0, G)[:, None]  # [G, 1]
        live = plane < planes
        s = tl.arange(0, S)[None, :]  # pooled position in a power-of-two tile [1, S]
        i = s // PW
        j = s % PW
        base = plane * (H * W)
        o00, m00 = _quadrant(base, live, i, j, 0, 0, H, W)
        o01, m01 = _quadrant(base, live, i, j, 0, 1, H, W)
        o10, m10 = _quadrant(base, live, i, j, 1, 0, H, W)
        o11, m11 = _quadrant(base, live, i, j, 1, 1, H, W)
        x00 = tl.load(x_ptr + o00, mask=m00, other=0.0).to(tl.float32)
        x01 = tl.load(x_ptr + o01, mask=m01, other=0.0).to(tl.float32)
        x10 = tl.load(x_ptr + o10, mask=m10, other=0.0).to(tl.float32)
        x11 = tl.load(x_ptr + o11, mask=m11, other=0.0).to(tl.float32)
        n = H * W
        mean = (_plane_sum(x00) + _plane_sum(x01) + _plane_sum(x10) + _plane_sum(x11)) / n
        mean2 = mean[:, None]
        d00 = tl.where(m00, x00 - mean2, 0.0)
        d01 = tl.where(m01, x01 - mean2, 0.0)
        d10 = tl.where(m10, x10 - mean2, 0.0)
        d11 = tl.where(m11, x11 - mean2, 0.0)
        var = (
            _plane_sum(d00 * d00) + _plane_sum(d01 * d01) + _plane_sum(d10 * d10) + _plane_sum(d11 * d11)
        ) / n
        rstd = 1.0 / tl.sqrt(var + eps)
        plane1 = tl.arange(0, G) + tl.program_id(0).to(tl.int64) * G
        live1 = plane1 < planes
        channel = plane % channels
        scale = tl.load(w_ptr + channel, mask=live, other=0.0).to(tl.float32) * rstd[:, None]
        shift = tl.load(b_ptr + channel, mask=live, other=0.0).to(tl.float32)
        pooled = (
            tl.maximum(d00 * scale + shift, 0.0)
            + tl.maximum(d01 * scale + shift, 0.0)
            + tl.maximum(d10 * scale + shift, 0.0)
            + tl.maximum(d11 * scale + shift, 0.0)
        ) * 0.25
        out = live & (i < OH) & (j < OW)
        tl.store(y_ptr + plane * (OH * OW) + i * OW + j, pooled.to(y_ptr.dtype.element_ty), mask=out)
        tl.store(mean_ptr + plane1, mean, mask=live1)
        tl.store(rstd_ptr + plane1, rstd, mask=live1)

    @triton.jit
    def _input_grad(xh, da, scale, mean_da, mean_da_xh, m):
        return tl.where(m, scale * (da - mean_da - xh * mean_da_xh), 0.0)

    @triton.jit
    def _backward_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        mean_ptr,
        rstd_ptr,
        dy_ptr,
        dx_ptr,
        dw_ptr,
        db_ptr,
        planes,
        channels,
        H: tl.constexpr,
        W: tl.constexpr,
        G: tl.constexpr,
        PW: tl.constexpr,
        S: tl.constexpr,
    ):
        OH = H // 2
        OW = W // 2
        plane = tl.program_id(0).to(tl.int64) * G + tl.arange(0, G)[:, None]
        live = plane < planes
        s = tl.arange(0, S)[None, :]
        i = s // PW
        j = s % PW
        base = plane * (H * W)
        mean = tl.load(mean_ptr + plane, mask=live, other=0.0)
        rstd = tl.load(rstd_ptr + plane, mask=live, other=0.0)
        channel = plane % channels
        w = tl.load(w_ptr + channel, mask=live, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + channel, mask=live, other=0.0).to(tl.float32)
        out = live & (i < OH) & (j < OW)
        g = tl.load(dy_ptr + plane * (OH * OW) + i * OW + j, mask=out, other=0.0).to(tl.float32) * 0.25
        o00, m00 = _quadrant(base, live, i, j, 0, 0, H, W)
        o01, m01 = _quadrant(base, live, i, j, 0, 1, H, W)
        o10, m10 = _quadrant(base, live, i, j, 1, 0, H, W)
        o11, m11 = _quadrant(base, live, i, j, 1, 1, H, W)
        xh00 = tl.where(m00, (tl.load(x_ptr + o00, mask=m00, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
        xh01 = tl.where(m01, (tl.load(x_ptr + o01, mask=m01, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
        xh10 = tl.where(m10, (tl.load(x_ptr + o10, mask=m10, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
        xh11 = tl.where(m11, (tl.load(x_ptr + o11, mask=m11, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
        # Gradient at the norm's output: the pooled gradient where ReLU passed, zero elsewhere.
        da00 = tl.where(m00 & (xh00 * w + b > 0), g, 0.0)
        da01 = tl.where(m01 & (xh01 * w + b > 0), g, 0.0)
        da10 = tl.where(m10 & (xh10 * w + b > 0), g, 0.0)
        da11 = tl.where(m11 & (xh11 * w + b > 0), g, 0.0)
        db = _plane_sum(da00) + _plane_sum(da01) + _plane_sum(da10) + _plane_sum(da11)
        dw = (
            _plane_sum(da00 * xh00)
            + _plane_sum(da01 * xh01)
            + _plane_sum(da10 * xh10)
            + _plane_sum(da11 * xh11)
        )
        n = H * W
        mean_da = (db / n)[:, None]
        mean_da_xh = (dw / n)[:, None]
        scale = rstd * w
        ty = dx_ptr.dtype.element_ty
        tl.store(dx_ptr + o00, _input_grad(xh00, da00, scale, mean_da, mean_da_xh, m00).to(ty), mask=m00)
        tl.store(dx_ptr + o01, _input_grad(xh01, da01, scale, mean_da, mean_da_xh, m01).to(ty), mask=m01)
        tl.store(dx_ptr + o10, _input_grad(xh10, da10, scale, mean_da, mean_da_xh, m10).to(ty), mask=m10)
        tl.store(dx_ptr + o11, _input_grad(xh11, da11, scale, mean_da, mean_da_xh, m11).to(ty), mask=m11)
        plane1 = tl.arange(0, G) + tl.program_id(0).to(tl.int64) * G
        live1 = plane1 < planes
        tl.store(dw_ptr + plane1, dw, mask=live1)
        tl.store(db_ptr + plane1, db, mask=live1)


def _geometry(h: int, w: int) -> tuple[int, int, int, int]:
    """(planes per program G, pooled tile width PW, quadrant tile size S, num_warps) for a plane."""
    ph = triton.next_power_of_2((h + 1) // 2)
    pw = triton.next_power_of_2((w + 1) // 2)
    size = ph * pw
    planes = max(1, _TILE // size)
    pixels = 4 * planes * size
    warps = 4 if pixels <= 2048 else 8 if pixels <= 4096 else 16
    return planes, pw, size, warps


class InstanceNormReluPool(torch.autograd.Function):
    """``avg_pool2d(relu(group_norm(x, C, weight, bias, eps)), 2)`` as one kernel each way."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        b, c, h, w = x.shape
        planes = b * c
        y = torch.empty(b, c, h // 2, w // 2, device=x.device, dtype=out_dtype)
        mean = torch.empty(planes, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        g, pw, size, warps = _geometry(h, w)
        _forward_kernel[(triton.cdiv(planes, g),)](
            x, weight, bias, y, mean, rstd, planes, c, eps, h, w, g, pw, size, num_warps=warps
        )
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        b, c, h, w = x.shape
        planes = b * c
        dx = torch.empty_like(x)
        dw = torch.empty(planes, device=x.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        g, pw, size, warps = _geometry(h, w)
        _backward_kernel[(triton.cdiv(planes, g),)](
            x, weight, bias, mean, rstd, dy.contiguous(), dx, dw, db, planes, c, h, w, g, pw, size,
            num_warps=warps,
        )  # fmt: skip
        return dx, dw.view(b, c).sum(0).to(weight.dtype), db.view(b, c).sum(0).to(bias.dtype), None, None


def instance_norm_relu_pool(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype | None = None
) -> Tensor:
    """The fused block tail, or the eager one if the kernel cannot be used here (compile failure)."""
    global _failure
    try:
        return InstanceNormReluPool.apply(x, weight, bias, eps, out_dtype or x.dtype)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Triton compile/launch failure means: stay eager
        _failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("fused norm-ReLU-pool kernel unavailable, running eagerly: %s", _failure)
        out = reference(x.float() if out_dtype == torch.float32 else x, weight, bias, eps)
        return out.to(out_dtype or x.dtype)


def failure() -> str | None:
    """Why the fused kernel is off in this process (None while it works)."""
    return _failure

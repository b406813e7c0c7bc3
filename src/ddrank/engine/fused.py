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


def available(x: Tensor) -> bool:
    """Whether the kernel can run on this tensor's device in this process (whatever its shape)."""
    if triton is None or _failure is not None:
        return False
    return x.is_cuda or (interpreting() and x.device.type == "cpu")


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the fused kernel can run on this activation [B, C, H, W] with per-channel affine."""
    if not available(x):
        return False
    return (
        x.dim() == 4
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
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
    def _planes(
        program, G: tl.constexpr, planes, channels, H: tl.constexpr, W: tl.constexpr, CL: tl.constexpr
    ):
        """Plane ids [G, 1] of a program, whether each exists, and each plane's base offset and
        pixel stride in a [B, C, H, W] tensor stored NCHW (CL false) or channels-last (CL true)."""
        plane = program.to(tl.int64) * G + tl.arange(0, G)[:, None]
        if CL:
            image = plane // channels
            base = image * (H * W * channels) + (plane - image * channels)
            step = channels
        else:
            base = plane * (H * W)
            step = 1
        return plane, plane < planes, base, step

    @triton.jit
    def _quadrant(
        base, step, plane_mask, i, j, DI: tl.constexpr, DJ: tl.constexpr, H: tl.constexpr, W: tl.constexpr
    ):
        """Offsets and mask of pixels (2i + DI, 2j + DJ) of planes starting at ``base`` [G, 1]."""
        row = 2 * i + DI
        col = 2 * j + DJ
        return base + (row * W + col) * step, plane_mask & (row < H) & (col < W)

    @triton.jit
    def _pooled_offsets(plane, i, j, channels, OH: tl.constexpr, OW: tl.constexpr, CL: tl.constexpr):
        """Offsets of pooled pixel (i, j) of each plane in the [B, C, OH, OW] output or its gradient."""
        if CL:
            image = plane // channels
            return image * (OH * OW * channels) + (plane - image * channels) + (i * OW + j) * channels
        return plane * (OH * OW) + i * OW + j

    @triton.jit
    def _load(ptr, offset, mask, shift):
        """fp32 values of a quadrant plus a per-plane shift (a folded bias), zero off the plane."""
        return tl.where(mask, tl.load(ptr + offset, mask=mask, other=0.0).to(tl.float32) + shift, 0.0)

    @triton.jit
    def _plane_sum(t):
        return tl.sum(t, axis=1)

    @triton.jit
    def _forward_kernel(
        x_ptr,
        cb_ptr,
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
        HAS_CB: tl.constexpr,
        X_CL: tl.constexpr,
        Y_CL: tl.constexpr,
    ):
        OH = H // 2
        OW = W // 2
        plane, live, base, step = _planes(tl.program_id(0), G, planes, channels, H, W, X_CL)
        s = tl.arange(0, S)[None, :]  # pooled position in a power-of-two tile [1, S]
        i = s // PW
        j = s % PW
        channel = plane % channels
        shift = tl.load(cb_ptr + channel, mask=live, other=0.0).to(tl.float32) if HAS_CB else 0.0
        o00, m00 = _quadrant(base, step, live, i, j, 0, 0, H, W)
        o01, m01 = _quadrant(base, step, live, i, j, 0, 1, H, W)
        o10, m10 = _quadrant(base, step, live, i, j, 1, 0, H, W)
        o11, m11 = _quadrant(base, step, live, i, j, 1, 1, H, W)
        x00 = _load(x_ptr, o00, m00, shift)
        x01 = _load(x_ptr, o01, m01, shift)
        x10 = _load(x_ptr, o10, m10, shift)
        x11 = _load(x_ptr, o11, m11, shift)
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
        scale = tl.load(w_ptr + channel, mask=live, other=0.0).to(tl.float32) * rstd[:, None]
        bias = tl.load(b_ptr + channel, mask=live, other=0.0).to(tl.float32)
        pooled = (
            tl.maximum(d00 * scale + bias, 0.0)
            + tl.maximum(d01 * scale + bias, 0.0)
            + tl.maximum(d10 * scale + bias, 0.0)
            + tl.maximum(d11 * scale + bias, 0.0)
        ) * 0.25
        out = live & (i < OH) & (j < OW)
        offset = _pooled_offsets(plane, i, j, channels, OH, OW, Y_CL)
        tl.store(y_ptr + offset, pooled.to(y_ptr.dtype.element_ty), mask=out)
        tl.store(mean_ptr + plane1, mean, mask=live1)
        tl.store(rstd_ptr + plane1, rstd, mask=live1)

    @triton.jit
    def _input_grad(xh, da, scale, mean_da, mean_da_xh, m):
        return tl.where(m, scale * (da - mean_da - xh * mean_da_xh), 0.0)

    @triton.jit
    def _backward_kernel(
        x_ptr,
        cb_ptr,
        w_ptr,
        b_ptr,
        mean_ptr,
        rstd_ptr,
        dy_ptr,
        dx_ptr,
        dw_ptr,
        db_ptr,
        dcb_ptr,
        planes,
        channels,
        H: tl.constexpr,
        W: tl.constexpr,
        G: tl.constexpr,
        PW: tl.constexpr,
        S: tl.constexpr,
        HAS_CB: tl.constexpr,
        X_CL: tl.constexpr,
        Y_CL: tl.constexpr,
    ):
        OH = H // 2
        OW = W // 2
        plane, live, base, step = _planes(tl.program_id(0), G, planes, channels, H, W, X_CL)
        s = tl.arange(0, S)[None, :]
        i = s // PW
        j = s % PW
        mean = tl.load(mean_ptr + plane, mask=live, other=0.0)
        rstd = tl.load(rstd_ptr + plane, mask=live, other=0.0)
        channel = plane % channels
        shift = tl.load(cb_ptr + channel, mask=live, other=0.0).to(tl.float32) - mean if HAS_CB else -mean
        w = tl.load(w_ptr + channel, mask=live, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + channel, mask=live, other=0.0).to(tl.float32)
        out = live & (i < OH) & (j < OW)
        offset = _pooled_offsets(plane, i, j, channels, OH, OW, Y_CL)
        g = tl.load(dy_ptr + offset, mask=out, other=0.0).to(tl.float32) * 0.25
        o00, m00 = _quadrant(base, step, live, i, j, 0, 0, H, W)
        o01, m01 = _quadrant(base, step, live, i, j, 0, 1, H, W)
        o10, m10 = _quadrant(base, step, live, i, j, 1, 0, H, W)
        o11, m11 = _quadrant(base, step, live, i, j, 1, 1, H, W)
        xh00 = _load(x_ptr, o00, m00, shift) * rstd
        xh01 = _load(x_ptr, o01, m01, shift) * rstd
        xh10 = _load(x_ptr, o10, m10, shift) * rstd
        xh11 = _load(x_ptr, o11, m11, shift) * rstd
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
        dx00 = _input_grad(xh00, da00, scale, mean_da, mean_da_xh, m00)
        dx01 = _input_grad(xh01, da01, scale, mean_da, mean_da_xh, m01)
        dx10 = _input_grad(xh10, da10, scale, mean_da, mean_da_xh, m10)
        dx11 = _input_grad(xh11, da11, scale, mean_da, mean_da_xh, m11)
        ty = dx_ptr.dtype.element_ty
        tl.store(dx_ptr + o00, dx00.to(ty), mask=m00)
        tl.store(dx_ptr + o01, dx01.to(ty), mask=m01)
        tl.store(dx_ptr + o10, dx10.to(ty), mask=m10)
        tl.store(dx_ptr + o11, dx11.to(ty), mask=m11)
        plane1 = tl.arange(0, G) + tl.program_id(0).to(tl.int64) * G
        live1 = plane1 < planes
        tl.store(dw_ptr + plane1, dw, mask=live1)
        tl.store(db_ptr + plane1, db, mask=live1)
        if HAS_CB:  # the folded bias's gradient: the plane's sum of the input gradient
            dcb = _plane_sum(dx00) + _plane_sum(dx01) + _plane_sum(dx10) + _plane_sum(dx11)
            tl.store(dcb_ptr + plane1, dcb, mask=live1)


def _geometry(h: int, w: int, channels_last: bool) -> tuple[int, int, int, int]:
    """(planes per program G, pooled tile width PW, quadrant tile size S, num_warps) for a plane.

    Channels-last planes interleave, so a program takes at least 32 neighbouring channels: each
    pixel's load is then 64 contiguous bytes (bf16) instead of one scattered element per plane.
    """
    ph = triton.next_power_of_2((h + 1) // 2)
    pw = triton.next_power_of_2((w + 1) // 2)
    size = ph * pw
    planes = max(1, _TILE // size, 32 if channels_last else 1)
    pixels = 4 * planes * size
    warps = 4 if pixels <= 2048 else 8 if pixels <= 4096 else 16
    return planes, pw, size, warps


def _channels_last(t: Tensor) -> bool:
    """Whether a 4-d tensor is stored channels-last (and not also plainly contiguous)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class InstanceNormReluPool(torch.autograd.Function):
    """``avg_pool2d(relu(group_norm(x + conv_bias, C, weight, bias, eps)), 2)`` as one kernel each way.

    ``conv_bias`` (or None) is the preceding convolution's bias, folded in here so that neither its
    broadcast addition nor its gradient's reduction is a pass over the activation of its own: the
    gradient is the sum of the input gradient, which this kernel has in registers. ``x`` may be NCHW
    or channels-last; the output is channels-last when ``channels_last_out`` is set.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        conv_bias: Tensor | None,
        weight: Tensor,
        bias: Tensor,
        eps: float,
        out_dtype: torch.dtype,
        channels_last_out: bool = False,
    ) -> Tensor:
        b, c, h, w = x.shape
        planes = b * c
        x_cl = _channels_last(x)
        y = torch.empty(
            b, c, h // 2, w // 2, device=x.device, dtype=out_dtype, memory_format=_layout(channels_last_out)
        )
        mean = torch.empty(planes, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        g, pw, size, warps = _geometry(h, w, x_cl)
        has_cb = conv_bias is not None
        _forward_kernel[(triton.cdiv(planes, g),)](
            x, conv_bias if has_cb else weight, weight, bias, y, mean, rstd, planes, c, eps,
            h, w, g, pw, size, has_cb, x_cl, channels_last_out, num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(x, conv_bias if has_cb else None, weight, bias, mean, rstd)
        ctx.layout = (x_cl, channels_last_out)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, conv_bias, weight, bias, mean, rstd = ctx.saved_tensors
        x_cl, y_cl = ctx.layout
        b, c, h, w = x.shape
        planes = b * c
        dx = torch.empty_like(x, memory_format=_layout(x_cl))
        dw = torch.empty(planes, device=x.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        has_cb = conv_bias is not None
        dcb = torch.empty_like(dw) if has_cb else dw
        g, pw, size, warps = _geometry(h, w, x_cl)
        _backward_kernel[(triton.cdiv(planes, g),)](
            x, conv_bias if has_cb else weight, weight, bias, mean, rstd,
            dy.contiguous(memory_format=_layout(y_cl)), dx, dw, db, dcb, planes, c, h, w, g, pw, size,
            has_cb, x_cl, y_cl, num_warps=warps,
        )  # fmt: skip
        dconv_bias = dcb.view(b, c).sum(0).to(conv_bias.dtype) if has_cb else None
        return (
            dx,
            dconv_bias,
            dw.view(b, c).sum(0).to(weight.dtype),
            db.view(b, c).sum(0).to(bias.dtype),
            None,
            None,
            None,
        )


def instance_norm_relu_pool(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
    conv_bias: Tensor | None = None,
    channels_last_out: bool = False,
) -> Tensor:
    """The fused block tail, or the eager one if the kernel cannot be used here (compile failure)."""
    global _failure
    try:
        return InstanceNormReluPool.apply(
            x, conv_bias, weight, bias, eps, out_dtype or x.dtype, channels_last_out
        )
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Triton compile/launch failure means: stay eager
        _failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("fused norm-ReLU-pool kernel unavailable, running eagerly: %s", _failure)
        if conv_bias is not None:
            x = x + conv_bias.view(1, -1, 1, 1).to(x.dtype)
        out = reference(x.float() if out_dtype == torch.float32 else x, weight, bias, eps)
        return out.to(out_dtype or x.dtype).contiguous(memory_format=_layout(channels_last_out))


def failure() -> str | None:
    """Why the fused kernel is off in this process (None while it works)."""
    return _failure

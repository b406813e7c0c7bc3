"""A faster ensemble forward for chain-shaped students (ConvNet family, MLP).

K members are packed into the channel dimension ([B, K*C, H, W]): convolutions become one
grouped convolution, instance/layer/batch norm one native call over K*C channels, and linear
layers one batched matmul. The arithmetic per member is exactly the member's own forward.
Models without a program here run through torch.func.vmap instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddrank.engine import fused
from ddrank.models.convnet import ConvNet
from ddrank.models.layers import avg_pool2x2
from ddrank.models.mlp import MLP


@dataclass(frozen=True)
class Op:
    """One step of a packed program: a layer kind and the state-dict prefix of its tensors."""

    kind: str
    prefix: str = ""
    module: nn.Module | None = None
    fold_bias: bool = False  # a convolution whose bias the next (fused) norm adds, where it runs


def _convnet_program(model: ConvNet) -> list[Op]:
    ops = []
    for i, layer in enumerate(model.features):
        prefix = f"features.{i}."
        if isinstance(layer, nn.Conv2d):
            ops.append(Op("conv", prefix, layer))
        elif isinstance(layer, nn.GroupNorm):
            ops.append(Op("group_norm", prefix, layer))
        elif isinstance(layer, nn.BatchNorm2d):
            ops.append(Op("batch_norm", prefix, layer))
        elif isinstance(layer, nn.ReLU):
            ops.append(Op("relu"))
        elif isinstance(layer, nn.AvgPool2d):
            ops.append(Op("avg_pool", "", layer))
        else:
            raise TypeError(f"no packed form for {type(layer).__name__}")
    if isinstance(model.pool, nn.AdaptiveAvgPool2d):
        ops.append(Op("global_pool"))
    return [*ops, Op("flatten"), Op("linear", "classifier.")]


def _mlp_program(model: MLP) -> list[Op]:
    return [
        Op("flatten"),
        Op("linear", "fc_1."),
        Op("relu"),
        Op("linear", "fc_2."),
        Op("relu"),
        Op("linear", "fc_3."),
    ]


def packed_program(model: nn.Module, fuse: bool = False) -> list[Op] | None:
    """The packed program of a model, or None when it must run through vmap.

    With ``fuse``, each instance norm + ReLU + 2x2 average pooling becomes one ``norm_relu_pool``
    step, run by the fused kernel where it applies (see :mod:`ddrank.engine.fused`), eagerly elsewhere.
    """
    if type(model) is ConvNet:
        program = _convnet_program(model)
        return _fuse_block_tails(program) if fuse else program
    if type(model) is MLP:
        return _mlp_program(model)
    return None


def _is_square_pool(module: nn.Module | None) -> bool:
    return (
        isinstance(module, nn.AvgPool2d)
        and _pair(module.kernel_size) == _pair(module.stride) == (2, 2)
        and _pair(module.padding) == (0, 0)
        and not module.ceil_mode
    )


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _fuse_block_tails(program: list[Op]) -> list[Op]:
    """Fuse each instance norm + ReLU + square 2x2 pooling; a convolution before it leaves its bias to it."""
    out, i = [], 0
    while i < len(program):
        op = program[i]
        tail = program[i + 1 : i + 3]
        norm = op.module
        if (
            op.kind == "group_norm"
            and norm.num_groups == norm.num_channels
            and norm.affine
            and [t.kind for t in tail] == ["relu", "avg_pool"]
            and _is_square_pool(tail[1].module)
        ):
            if out and out[-1].kind == "conv" and out[-1].module.bias is not None:
                out[-1] = Op("conv", out[-1].prefix, out[-1].module, fold_bias=True)
            out.append(Op("norm_relu_pool", op.prefix, norm))
            i += 3
        else:
            out.append(op)
            i += 1
    return out


def _conv_unfold(h: Tensor, weight: Tensor, bias: Tensor | None, conv: nn.Conv2d) -> Tensor:
    """The grouped convolution as im2col plus one batched matmul over members."""
    k, out_ch = weight.shape[:2]
    b, _, height, width = h.shape
    cols = F.unfold(h, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # [B, K*C*kh*kw, L]
    length = cols.shape[-1]
    cols = cols.view(b, k, -1, length).permute(1, 0, 3, 2).reshape(k, b * length, -1)
    out = torch.bmm(cols, weight.reshape(k, out_ch, -1).transpose(1, 2))
    if bias is not None:
        out = out + bias.unsqueeze(1)
    ho = (height + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[
        0
    ] + 1
    wo = length // ho
    return out.view(k, b, ho, wo, out_ch).permute(1, 0, 4, 2, 3).reshape(b, k * out_ch, ho, wo)


def _avg_pool(h: Tensor, pool: nn.AvgPool2d) -> Tensor:
    """Average pooling; the 2x2 case by the fastest exact route on each device (see avg_pool2x2)."""
    if _is_square_pool(pool):
        return avg_pool2x2(h)
    return F.avg_pool2d(h, pool.kernel_size, pool.stride, pool.padding)


def _norm_relu_pool(
    h: Tensor,
    norm: nn.GroupNorm,
    weight: Tensor,
    bias: Tensor,
    k: int,
    norm_in_bf16: bool,
    conv_bias: Tensor | None,
    channels_last: bool,
) -> Tensor:
    """Instance norm, ReLU and 2x2 average pooling of ``h`` plus the preceding convolution's
    ``conv_bias`` (None when the convolution added it): one fused kernel where it applies, else eagerly."""
    if fused.applies(h, weight):
        upcast = h.dtype == torch.bfloat16 and not norm_in_bf16  # plain autocast runs norms in fp32
        return fused.instance_norm_relu_pool(
            h, weight, bias, norm.eps, torch.float32 if upcast else h.dtype, conv_bias, channels_last
        )
    if conv_bias is not None:
        h = h + conv_bias.view(1, -1, 1, 1).to(h.dtype)
    h = _group_norm(h, k * norm.num_groups, weight, bias, norm.eps, norm_in_bf16)
    return avg_pool2x2(F.relu(h, inplace=True))  # the norm's backward needs its input, not this output


def _group_norm(
    h: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float, norm_in_bf16: bool
) -> Tensor:
    if norm_in_bf16 and h.dtype == torch.bfloat16:
        # Autocast would upcast the activation to fp32 (twice the memory traffic); the
        # kernel keeps its statistics in fp32 either way.
        with torch.autocast(h.device.type, enabled=False):
            return F.group_norm(h, groups, weight.to(h.dtype), bias.to(h.dtype), eps)
    return F.group_norm(h, groups, weight, bias, eps)


def _conv_params(
    op: Op, params: dict[str, Tensor], fold: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A convolution's weight, the bias it adds itself, and the bias it leaves to the next (fused)
    norm: its ``fold_bias`` where the kernel can run (``fold``), else none."""
    weight, bias = params[op.prefix + "weight"], params.get(op.prefix + "bias")
    if fold and op.fold_bias:
        return weight, None, bias.reshape(-1)
    return weight, bias, None


def _images_gemm(first_conv: str, x: Tensor, conv: nn.Module, members: int) -> bool:
    """Whether the first convolution runs as im2col + batched GEMM (see _images_conv).

    "auto" takes it on CUDA for two members or more; a single model (a lone teacher) has no filters
    to stack and keeps cuDNN's dense convolution, as measured for teachers before this route existed.
    """
    plain = (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and isinstance(conv.padding, tuple)
        and conv.padding_mode == "zeros"
    )
    return plain and (first_conv == "gemm" or (first_conv == "auto" and x.is_cuda and members > 1))


def _images_conv(x: Tensor, weight: Tensor, bias: Tensor | None, conv: nn.Conv2d) -> Tensor:
    """The first convolution of D image batches [D, B, C, H, W], each shared by K / D consecutive
    members of ``weight`` [K, O, C, kh, kw], as [B, K * O, Ho, Wo].

    Over image channels (3 for RGB) cuDNN's grouped kernels run one group at a time and convert
    layouts around each (most of the ensemble step, measured on an H200). Here the images are
    unfolded once (im2col, C*kh*kw rows per output pixel, padded to a multiple of 8 for tensor
    cores) and each (image, batch) is one GEMM of the sharing members' stacked filters by those
    columns, written straight into the packed NCHW activation; the weight gradient is the
    matching GEMM summed over images, and no gradient flows to the images.
    """
    d, b = x.shape[:2]
    k, out_ch = weight.shape[:2]
    device = x.device.type
    if torch.is_autocast_enabled(device):
        x = x.to(torch.get_autocast_dtype(device))  # unfold the narrow copy; the GEMM runs in it anyway
    cols = F.unfold(
        x.transpose(0, 1).reshape(b, -1, *x.shape[3:]),
        conv.kernel_size,
        conv.dilation,
        conv.padding,
        conv.stride,
    )  # [B, D * C*kh*kw, L]
    depth, length = cols.shape[1] // d, cols.shape[-1]
    cols = cols.view(b, d, depth, length)
    filters = weight.reshape(d, (k // d) * out_ch, depth)
    pad = -depth % 8
    if pad:
        cols, filters = F.pad(cols, (0, 0, 0, pad)), F.pad(filters, (0, pad))
    out = torch.matmul(filters, cols)  # [B, D, (K / D) * O, L]
    if bias is not None:
        out = out + bias.reshape(1, d, -1, 1).to(out.dtype)
    height = (
        x.shape[-2] + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1
    ) // conv.stride[0] + 1
    return out.view(b, k * out_ch, height, length // height)


def _thin_input(module: nn.Module) -> bool:
    """A convolution over image channels (3 or fewer), where grouped kernels use tensor cores poorly."""
    return isinstance(module, nn.Conv2d) and module.in_channels <= 4


def run_packed(
    program: list[Op],
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Tensor,
    training: bool,
    *,
    conv: str = "grouped",
    channels_last: bool = False,
    norm_in_bf16: bool = False,
    share: int = 1,
    first_conv: str = "auto",
) -> Tensor:
    """Logits [K, B, classes] of K members; x is [K, B, C, H, W], [K / share, B, C, H, W] where each
    batch is shared by ``share`` consecutive members, or, shared by all members, [B, C, H, W].

    Images shared by several members (an lr grid's batches, evaluation, teachers) go through the
    first convolution once per image with the sharing members' filters stacked: the same sums,
    without copying the images per member. On CUDA (``first_conv`` "auto" or "gemm") that is an
    im2col and one batched GEMM per image and batch (see :func:`_images_conv`); elsewhere one dense
    convolution for all-member images, and a per-member copy for shared batches.
    """
    k = next(iter(params.values())).shape[0]
    first = program[0]
    # Biases the fused kernel adds (only where it can run, so other devices keep the plain conv).
    fold = fused.available(x)
    pending = None  # a convolution's bias left to the next norm
    shared = x.dim() == 4 or share > 1
    if shared and first.kind == "conv" and _images_gemm(first_conv, x, first.module, k):
        b = x.shape[-4]
        w, bias, pending = _conv_params(first, params, fold)
        h = _images_conv(x if x.dim() == 5 else x.unsqueeze(0), w, bias, first.module)
        program = program[1:]
    elif x.dim() == 4 and first.kind == "conv" and first.module.groups == 1:
        b = x.shape[0]
        w, bias, pending = _conv_params(first, params, fold)
        layer = first.module
        h = F.conv2d(
            x,
            w.reshape(-1, *w.shape[2:]),
            None if bias is None else bias.reshape(-1),
            layer.stride,
            layer.padding,
            layer.dilation,
        )
        program = program[1:]
    elif x.dim() == 4:
        b = x.shape[0]
        h = x.repeat(1, k, 1, 1)
    else:
        x = x.repeat_interleave(share, 0) if share > 1 else x
        b = x.shape[1]
        h = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
    # Channels-last activations: with the fused kernel the images' convolution stays NCHW (faster for
    # 3 channels) and the kernel writes channels-last; without it everything is converted up front.
    if channels_last and not (fold and any(op.kind == "norm_relu_pool" for op in program)):
        h = h.contiguous(memory_format=torch.channels_last)
    flat = False
    for op in program:
        p = op.prefix
        lowered = conv == "unfold" or (conv == "mixed" and op.module is not None and _thin_input(op.module))
        if op.kind == "conv" and lowered and op.module.groups == 1:
            h = _conv_unfold(h, params[p + "weight"], params.get(p + "bias"), op.module)
        elif op.kind == "conv":
            layer = op.module
            w, bias, pending = _conv_params(op, params, fold)
            h = F.conv2d(
                h,
                w.reshape(-1, *w.shape[2:]),
                None if bias is None else bias.reshape(-1),
                layer.stride,
                layer.padding,
                layer.dilation,
                groups=k * layer.groups,
            )
        elif op.kind == "group_norm":
            norm = op.module
            weight, bias = params[p + "weight"].reshape(-1), params[p + "bias"].reshape(-1)
            h = _group_norm(h, k * norm.num_groups, weight, bias, norm.eps, norm_in_bf16)
        elif op.kind == "norm_relu_pool":
            weight, bias = params[p + "weight"].reshape(-1), params[p + "bias"].reshape(-1)
            h = _norm_relu_pool(h, op.module, weight, bias, k, norm_in_bf16, pending, channels_last)
            pending = None
        elif op.kind == "batch_norm":
            norm = op.module
            if training:
                buffers[p + "num_batches_tracked"].add_(1)
            h = F.batch_norm(
                h,
                buffers[p + "running_mean"].view(-1),
                buffers[p + "running_var"].view(-1),
                params[p + "weight"].reshape(-1),
                params[p + "bias"].reshape(-1),
                training,
                norm.momentum,
                norm.eps,
            )
        elif op.kind == "relu":  # after a conv, norm or linear layer, whose backward keeps its input only
            h = F.relu(h, inplace=True)
        elif op.kind == "avg_pool":
            h = _avg_pool(h, op.module)
        elif op.kind == "global_pool":
            h = F.adaptive_avg_pool2d(h, 1)
        elif op.kind == "flatten":
            h = h.reshape(b, k, -1).transpose(0, 1)
            flat = True
        elif op.kind == "linear":
            assert flat, "linear layers follow a flatten"
            h = torch.baddbmm(params[p + "bias"].unsqueeze(1), h, params[p + "weight"].transpose(1, 2))
    return h

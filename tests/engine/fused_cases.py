"""The fused norm-ReLU-pool kernel against the eager ops: on the CPU under the Triton interpreter,
or compiled on a CUDA device.

Triton reads TRITON_INTERPRET when a kernel is defined, so the CPU cases run in a process started
with it set (``tests/engine/test_fused.py`` does that); this file is not collected on its own.
"""

import os

import pytest
import torch

from ddrank.engine import fused
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import TrainJob
from ddrank.engine.options import EngineOptions

from .test_backends import _data, _spec

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# Under the interpreter the kernels run on CPU tensors; otherwise these cases check the compiled
# kernels on a CUDA device (the GPU session runs this file directly).
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
pytestmark = pytest.mark.skipif(
    fused.triton is None or not (INTERPRETED or torch.cuda.is_available()),
    reason="needs the Triton interpreter or a CUDA device",
)


def _inputs(b: int, c: int, h: int, w: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    # A per-channel offset and scale, as a convolution's output has: the statistics must be centred.
    x = torch.randn(b, c, h, w, generator=gen) * (1 + torch.rand(c, 1, 1, generator=gen) * 3)
    x = (x + torch.randn(c, 1, 1, generator=gen) * 4).to(dtype)
    weight = 1 + 0.5 * torch.randn(c, generator=gen)
    bias = 0.5 * torch.randn(c, generator=gen)
    grad = torch.randn(b, c, h // 2, w // 2, generator=gen)
    return (t.to(DEVICE) for t in (x, weight, bias, grad))


def _run(fn, x, weight, bias, grad):
    x, weight, bias = (t.detach().clone().requires_grad_(True) for t in (x, weight, bias))
    y = fn(x, weight, bias)
    y.backward(grad.to(y.dtype))
    return y, x.grad, weight.grad, bias.grad


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3, 8, 8),  # many planes per program
        (3, 5, 7, 9),  # odd height and width: the last row and column join only the statistics
        (1, 4, 5, 4),
        (2, 6, 32, 32),  # the CIFAR first block's plane
        (3, 7, 6, 34),  # a width that is not a power of two, beyond one tile row
        (1, 2, 2, 2),  # the smallest plane
        (2, 3, 64, 64),  # one plane per program, more warps
    ],
)
def test_forward_and_gradients_match_eager_in_fp32(shape):
    x, weight, bias, grad = _inputs(*shape)
    assert fused.applies(x, weight)
    want = _run(lambda *a: fused.reference(*a, 1e-5), x, weight, bias, grad)
    got = _run(
        lambda x, w, b: fused.InstanceNormReluPool.apply(x, None, w, b, 1e-5, torch.float32),
        x,
        weight,
        bias,
        grad,
    )
    for name, g, w in zip(("output", "input grad", "weight grad", "bias grad"), got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4, msg=name)


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("shape", [(2, 40, 8, 8), (3, 5, 7, 9), (2, 33, 16, 16)])
@pytest.mark.parametrize("x_cl,y_cl", [(False, True), (True, True), (True, False)])
def test_channels_last_and_a_folded_convolution_bias_match_eager(shape, x_cl, y_cl):
    """The preceding convolution's bias added in the kernel, channels-last input and/or output: the
    same output and gradients (the bias's among them) as adding the bias and running the eager ops."""
    x, weight, bias, grad = _inputs(*shape, seed=5)
    conv_bias = torch.randn(shape[1], generator=torch.Generator().manual_seed(9)).to(DEVICE) * 3
    x = _layout(x, x_cl)
    assert fused.applies(x, weight)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, conv_bias, weight, bias)]
    want = fused.reference(leaves[0] + leaves[1].view(1, -1, 1, 1), *leaves[2:], 1e-5)
    want_grads = torch.autograd.grad(want, leaves, grad)
    mine = [t.detach().clone().requires_grad_(True) for t in (x, conv_bias, weight, bias)]
    got = fused.instance_norm_relu_pool(
        mine[0], mine[2], mine[3], 1e-5, conv_bias=mine[1], channels_last_out=y_cl
    )
    assert fused.failure() is None
    assert got.is_contiguous(memory_format=torch.channels_last if y_cl else torch.contiguous_format)
    got_grads = torch.autograd.grad(got, mine, _layout(grad, not y_cl))  # a gradient in the other layout
    assert got_grads[0].is_contiguous(memory_format=torch.channels_last if x_cl else torch.contiguous_format)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    for name, g, w in zip(("input", "conv bias", "weight", "bias"), got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=5e-5, rtol=1e-4, msg=name)


def test_relu_cut_and_planes_per_program_tail():
    # 5 x 9 = 45 planes of 4x4: 32 planes per program, so the second program is partly masked;
    # a strongly negative bias makes ReLU cut most of the values (the gradient mask matters).
    x, weight, bias, grad = _inputs(5, 9, 4, 4, seed=3)
    bias = bias - 0.8
    want = _run(lambda *a: fused.reference(*a, 1e-5), x, weight, bias, grad)
    got = _run(lambda *a: fused.instance_norm_relu_pool(*a, 1e-5), x, weight, bias, grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4)


def test_bf16_activations_keep_fp32_statistics():
    x, weight, bias, grad = _inputs(2, 4, 16, 16, dtype=torch.bfloat16, seed=1)
    y, dx, dw, db = _run(lambda *a: fused.instance_norm_relu_pool(*a, 1e-5), x, weight, bias, grad)
    assert y.dtype == torch.bfloat16 and dx.dtype == torch.bfloat16 and dw.dtype == torch.float32
    # The fp32 computation on the same bf16 values, rounded once at the end.
    want = _run(lambda *a: fused.reference(*a, 1e-5), x.float(), weight, bias, grad.bfloat16().float())
    torch.testing.assert_close(y.float(), want[0], atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(dx.float(), want[1], atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(dw, want[2], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(db, want[3], atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(not INTERPRETED, reason="on CUDA, tests/engine/test_gpu.py covers the ensemble")
@pytest.mark.parametrize("members", [1, 3])  # channels-last activations: the lr-grid case below
def test_fused_ensemble_trains_like_the_eager_one(members):
    data = _data()
    spec = _spec("ConvNet-2-W8", epochs=1)
    jobs = [TrainJob(spec, "ab"[m % 2], "v", 0.01 * (m + 1), m + 1, f"k{m}") for m in range(members)]
    eager = EnsembleTrainer(jobs, data, EngineOptions(fused=False))
    with_kernel = EnsembleTrainer(jobs, data, EngineOptions(fused=True))
    assert [op.kind for op in with_kernel.ensemble.program].count("norm_relu_pool") == 2
    for epoch in range(spec.epochs):
        eager.train_epoch(epoch)
        with_kernel.train_epoch(epoch)
    assert fused.failure() is None
    for name, value in eager.ensemble.params.items():
        torch.testing.assert_close(with_kernel.ensemble.params[name], value, atol=1e-5, rtol=0, msg=name)
    test = data.test.images[:64]
    torch.testing.assert_close(
        with_kernel.logits(test, range(members)), eager.logits(test, range(members)), atol=1e-4, rtol=0
    )


@pytest.mark.skipif(not INTERPRETED, reason="on CUDA, tests/engine/test_gpu.py covers the ensemble")
def test_an_lr_grid_with_every_fast_path_trains_like_the_eager_one():
    """Shared batches through the GEMM first convolution, its bias folded into the kernel, and
    channels-last activations, against per-member batches and eager ops."""
    data = _data()
    spec = _spec("ConvNet-2-W8", epochs=1)
    jobs = [
        TrainJob(spec, name, "v", lr, seed, f"{name}{lr}")
        for name, seed in (("a", 1), ("b", 2))
        for lr in (0.01, 0.03)
    ]
    eager = EnsembleTrainer(jobs, data, EngineOptions(fused=False, first_conv="native"))
    fast = EnsembleTrainer(jobs, data, EngineOptions(fused=True, first_conv="gemm", channels_last=True))
    assert fast.share == 2 and fast.ensemble.program[0].fold_bias
    eager.train_epoch(0)
    fast.train_epoch(0)
    assert fused.failure() is None
    for name, value in eager.ensemble.params.items():
        torch.testing.assert_close(fast.ensemble.params[name], value, atol=1e-5, rtol=0, msg=name)
    test = data.test.images[:64]
    torch.testing.assert_close(fast.logits(test, range(4)), eager.logits(test, range(4)), atol=1e-4, rtol=0)

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
    got = _run(lambda *a: fused.InstanceNormReluPool.apply(*a, 1e-5, torch.float32), x, weight, bias, grad)
    for name, g, w in zip(("output", "input grad", "weight grad", "bias grad"), got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4, msg=name)


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
@pytest.mark.parametrize("members", [1, 3])
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

"""2x2 average pooling by the fastest exact route: the same values and gradients as the native kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddrank.models import layers
from ddrank.models.layers import AvgPool2x2, avg_pool2x2


def _input(shape, dtype=torch.float32, channels_last=False):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(sum(shape)))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


@pytest.mark.parametrize(
    ("shape", "channels_last", "dtype"),
    [
        ((100, 64, 8, 8), False, torch.float32),  # the digits students' planes: pooled by a product
        ((7, 40, 4, 4), False, torch.float32),
        ((3, 16, 16, 16), False, torch.float32),
        ((2, 5, 8, 8), False, torch.float64),
        ((4, 8, 8), False, torch.float32),  # no batch dimension
        ((3, 16, 8, 8), True, torch.float32),  # channels-last: the native kernel
        ((2, 3, 7, 9), False, torch.float32),  # odd: the native kernel drops the last row and column
        ((2, 3, 32, 32), False, torch.float32),  # large planes: the native kernel
    ],
)
def test_values_and_gradients_equal_the_native_kernel(shape, channels_last, dtype):
    x = _input(shape, dtype, channels_last)
    out, reference = avg_pool2x2(x), F.avg_pool2d(x, 2, 2)
    grad_out = torch.randn_like(reference)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    (reference_grad,) = torch.autograd.grad(reference, x, grad_out)
    assert out.shape == reference.shape and out.dtype == reference.dtype
    torch.testing.assert_close(out, reference, rtol=0, atol=4 * torch.finfo(dtype).eps)
    torch.testing.assert_close(grad, reference_grad, rtol=0, atol=0)


def test_small_planes_on_a_cpu_go_through_one_matrix_product(monkeypatch):
    monkeypatch.setattr(layers, "_POOLING_MATRICES", {})
    avg_pool2x2(_input((2, 3, 8, 8)))
    assert list(layers._POOLING_MATRICES) == [(8, 8, torch.float32)]
    avg_pool2x2(_input((2, 3, 32, 32)))
    avg_pool2x2(_input((2, 3, 8, 8), channels_last=True))
    assert list(layers._POOLING_MATRICES) == [(8, 8, torch.float32)]


def test_second_derivatives_for_gradient_matching():
    """DC-style distillation differentiates through the students' gradients (create_graph=True)."""
    x = _input((2, 3, 4, 6), torch.float64)
    assert torch.autograd.gradgradcheck(avg_pool2x2, (x,))


def test_under_cpu_autocast_the_native_kernel_keeps_its_dtype():
    x = _input((2, 4, 8, 8)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, reference = avg_pool2x2(x), F.avg_pool2d(x, 2, 2)
    assert out.dtype == reference.dtype == torch.bfloat16 and torch.equal(out, reference)


def test_the_module_is_a_2x2_avg_pool2d():
    module = AvgPool2x2()
    assert isinstance(module, nn.AvgPool2d)
    assert repr(module) == "AvgPool2x2(kernel_size=2, stride=2, padding=0)"
    assert module.state_dict() == {}
    x = _input((2, 3, 8, 8))
    torch.testing.assert_close(module(x), nn.AvgPool2d(2, 2)(x), rtol=0, atol=1e-7)

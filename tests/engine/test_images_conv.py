"""The first convolution over images shared by several members, as im2col + batched GEMMs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import TrainJob
from ddrank.engine.options import EngineOptions
from ddrank.engine.packed import _images_conv

from .test_backends import _data, _spec


@pytest.mark.parametrize(
    ("channels", "kernel", "padding", "stride", "dilation"),
    [(3, 3, 1, 1, 1), (1, 3, 1, 1, 1), (3, 5, 2, 2, 1), (2, 3, 0, 1, 1), (3, 3, 2, 1, 2)],
)
def test_each_member_gets_its_own_convolution_of_its_batch(channels, kernel, padding, stride, dilation):
    gen = torch.Generator().manual_seed(channels * 10 + kernel)
    d, share, b, out_ch = 2, 3, 4, 5
    conv = nn.Conv2d(channels, out_ch, kernel, stride, padding, dilation)
    x = torch.randn(d, b, channels, 11, 9, generator=gen)
    weight = torch.randn(d * share, out_ch, channels, kernel, kernel, generator=gen, requires_grad=True)
    bias = torch.randn(d * share, out_ch, generator=gen, requires_grad=True)
    got = _images_conv(x, weight, bias, conv)
    want = torch.cat(
        [F.conv2d(x[m // share], weight[m], bias[m], stride, padding, dilation) for m in range(d * share)],
        dim=1,
    )
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, (weight, bias), grad)
    want_grads = torch.autograd.grad(want, (weight, bias), grad)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-5)


def _grid(spec, lr_major: bool = False) -> list[TrainJob]:
    """Two training sets x three learning rates, as the planner lays out an lr grid (or lr-major)."""
    cells = [(name, seed) for name, seed in (("a", 1), ("b", 2))]
    lrs = (0.01, 0.02, 0.04)
    pairs = [(c, lr) for lr in lrs for c in cells] if lr_major else [(c, lr) for c in cells for lr in lrs]
    return [TrainJob(spec, name, "v", lr, seed, f"{name}{lr}") for (name, seed), lr in pairs]


def test_an_lr_grid_reads_each_batch_once_and_trains_as_per_member_batches():
    data = _data()
    spec = _spec("ConvNet-2-W8", epochs=2)
    jobs = _grid(spec)
    native = EnsembleTrainer(jobs, data, EngineOptions(first_conv="native"))
    gemm = EnsembleTrainer(jobs, data, EngineOptions(first_conv="gemm"))
    assert gemm.share == 3
    for epoch in range(spec.epochs):
        native.train_epoch(epoch)
        gemm.train_epoch(epoch)
    for name, value in native.ensemble.params.items():
        torch.testing.assert_close(gemm.ensemble.params[name], value, atol=1e-5, rtol=0, msg=name)
    test = data.test.images[:64]
    torch.testing.assert_close(gemm.logits(test, range(6)), native.logits(test, range(6)), atol=1e-4, rtol=0)


def test_members_sharing_batches_out_of_order_get_copies():
    data = _data()
    spec = _spec("ConvNet-2-W8", epochs=1)
    trainer = EnsembleTrainer(_grid(spec, lr_major=True), data, EngineOptions(first_conv="gemm"))
    assert trainer.share == 1 and trainer.distinct is not None
    reference = EnsembleTrainer(_grid(spec, lr_major=True), data, EngineOptions(first_conv="native"))
    trainer.train_epoch(0)
    reference.train_epoch(0)
    for name, value in reference.ensemble.params.items():
        torch.testing.assert_close(trainer.ensemble.params[name], value, atol=1e-5, rtol=0, msg=name)


def test_cudnn_tunes_only_what_is_not_packed():
    from dataclasses import replace

    from ddrank.engine.runner import autotunes
    from ddrank.engine.units import Unit

    spec = _spec("ConvNet-2-W8", epochs=1)
    job = TrainJob(spec, "a", "v", 0.01, 1, "k")
    packed = Unit("ensemble", (job, job), 50)
    resnet = Unit("ensemble", (replace(job, spec=replace(spec, model="ResNet-18")),) * 2, 50)
    assert not autotunes(packed, EngineOptions())
    assert autotunes(resnet, EngineOptions())
    assert autotunes(Unit("loop", (job,), 50), EngineOptions())
    assert autotunes(packed, EngineOptions(conv="vmap"))
    assert autotunes(packed, EngineOptions(cudnn_benchmark=True))
    assert not autotunes(resnet, EngineOptions(cudnn_benchmark=False))

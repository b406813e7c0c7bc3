"""The two backends implement one training semantics: same job, same seed, same result."""

import pytest
import torch

from ddrank.data.real import load_real, normalize
from ddrank.engine.common import init_model
from ddrank.engine.ensemble import EnsembleTrainer, train_ensemble
from ddrank.engine.job import EvalSet, MemoryCache, RunData, TrainingSet, TrainJob, TrainSpec
from ddrank.engine.loop import LoopTrainer, train_one
from ddrank.engine.options import EngineOptions
from ddrank.engine.runner import run_jobs
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec


def _data(n_per_class: int = 5) -> RunData:
    real = load_real("digits")
    info = real.info
    idx = torch.cat([torch.nonzero(real.train_labels == c)[:n_per_class, 0] for c in range(10)])
    other = torch.cat(
        [torch.nonzero(real.train_labels == c)[n_per_class : 2 * n_per_class, 0] for c in range(10)]
    )
    train = {
        "a": TrainingSet(normalize(real.train_images[idx], info), real.train_labels[idx], "a"),
        "b": TrainingSet(normalize(real.train_images[other], info), real.train_labels[other], "b"),
    }
    val = {"v": EvalSet(normalize(real.train_images[other], info), real.train_labels[other], "v")}
    test = EvalSet(normalize(real.test_images, info), real.test_labels, "t")
    return RunData(train, val, test, torch.device("cpu"))


def _spec(model="ConvNet-2-W16", optimizer=None, epochs=10, dsa="color_crop_cutout_scale_rotate", batch=32):
    return TrainSpec(
        model,
        1,
        10,
        8,
        optimizer or OptimizerSpec(),
        ScheduleSpec(kind="step"),
        epochs,
        batch,
        AugmentSpec(dsa=dsa),
        (),
    )


@pytest.mark.parametrize(
    ("model", "optimizer"),
    [
        ("ConvNet-2-W16", OptimizerSpec(name="sgd", momentum=0.9, weight_decay=5e-4)),
        ("ConvNet-2-W16-BN", OptimizerSpec(name="sgd", momentum=0.9, weight_decay=5e-4)),
        # Adam rescales gradients to unit size, so it is compared on models without a normalised
        # conv bias (whose true gradient is zero and whose float gradient is rounding noise).
        ("ConvNet-2-W16-NN", OptimizerSpec(name="adamw", weight_decay=0.01)),
        ("MLP", OptimizerSpec(name="adam", weight_decay=5e-4)),
        ("MLP", OptimizerSpec(name="sgd", momentum=0.5, nesterov=True)),
    ],
)
def test_parameters_match_after_ten_steps(model, optimizer):
    data = _data()
    # 50 images, batch 32: two steps per epoch, five epochs = ten steps with a schedule step at epoch 2.
    spec = _spec(model, optimizer, epochs=5)
    jobs = [
        TrainJob(spec, "a", "v", 0.05, 1, "k1"),
        TrainJob(spec, "b", "v", 0.01, 2, "k2"),
        TrainJob(spec, "a", "v", 0.002, 3, "k3"),
    ]
    ensemble = EnsembleTrainer(jobs, data)
    loops = [LoopTrainer(job, data) for job in jobs]
    for epoch in range(spec.epochs):
        ensemble.train_epoch(epoch)
        for loop in loops:
            loop.train_epoch(epoch)
    assert ensemble.step == 10
    for k, loop in enumerate(loops):
        state = dict(loop.model.named_parameters()) | dict(loop.model.named_buffers())
        stacked = ensemble.ensemble.params | ensemble.ensemble.buffers
        assert set(state) == set(stacked)
        for name, value in state.items():
            torch.testing.assert_close(
                stacked[name][k].detach().to(value.dtype), value.detach(), atol=1e-4, rtol=0
            )
        # Training moved the parameters away from their initialisation.
        init = dict(init_model(spec, jobs[k].seed).named_parameters())
        assert any((init[n] - p).abs().max() > 1e-5 for n, p in loop.model.named_parameters())


def test_full_digits_training_gives_the_same_accuracy_on_both_backends():
    data = _data(n_per_class=10)
    spec = _spec(epochs=150, batch=256)
    jobs = [TrainJob(spec, "a", "v", lr, seed, f"j{seed}") for seed, lr in ((1, 0.01), (2, 0.03), (3, 0.1))]
    together = train_ensemble(jobs, data)
    for job, ens in zip(jobs, together, strict=True):
        alone = train_one(job, data)
        assert ens.backend == "ensemble" and alone.backend == "loop"
        assert abs(ens.test_acc - alone.test_acc) <= 0.01
        assert abs(ens.val_acc - alone.val_acc) <= 0.01
        assert alone.test_acc > 0.6  # digits is learnable from 100 images: a real training happened


def test_runner_uses_the_cache_and_groups_jobs():
    data = _data()
    spec = _spec(epochs=2)
    jobs = [TrainJob(spec, "a", "v", lr, 7, f"k{lr}") for lr in (0.01, 0.1)]
    cache = MemoryCache()
    first = run_jobs(jobs, data, backend="auto", cache=cache)
    assert set(cache.results) == {"k0.01", "k0.1"} and all(r.backend == "ensemble" for r in first.values())
    again = run_jobs(jobs, data, backend="loop", cache=cache)
    assert again == first  # nothing retrained: cached results returned as they are


def test_reference_curve_records_checkpoints():
    data = _data()
    spec = TrainSpec("ConvNet-2-W16", 1, 10, 8, OptimizerSpec(), ScheduleSpec(), 6, 64, AugmentSpec(), (2, 4))
    (result,) = run_jobs([TrainJob(spec, "a", None, 0.01, 1, "k")], data, backend="loop").values()
    assert [epoch for epoch, _ in result.curve] == [2, 4, 6]
    assert result.val_acc is None and result.curve[-1][1] == result.test_acc


@pytest.mark.parametrize("model", ["ConvNet-2-W16", "ConvNet-2-W16-BN", "MLP"])
def test_packed_and_vmap_ensembles_agree(model):
    data = _data()
    spec = _spec(model, epochs=3)
    jobs = [TrainJob(spec, "a", "v", 0.05, 1, "k1"), TrainJob(spec, "b", "v", 0.01, 2, "k2")]
    packed = EnsembleTrainer(jobs, data, EngineOptions(conv="grouped"))
    unfold = EnsembleTrainer(jobs, data, EngineOptions(conv="unfold"))
    mapped = EnsembleTrainer(jobs, data, EngineOptions(conv="vmap"))
    assert packed.ensemble.program is not None and mapped.ensemble.program is None
    for epoch in range(spec.epochs):
        for trainer in (packed, unfold, mapped):
            trainer.train_epoch(epoch)
    for other in (unfold, mapped):
        for name, value in packed.ensemble.params.items():
            torch.testing.assert_close(other.ensemble.params[name], value, atol=1e-5, rtol=0)


def test_mixed_lowering_matches_grouped():
    data = _data()
    spec = _spec("ConvNet-2-W16", epochs=2)
    jobs = [TrainJob(spec, "a", "v", 0.05, 1, "k1"), TrainJob(spec, "b", "v", 0.01, 2, "k2")]
    grouped = EnsembleTrainer(jobs, data, EngineOptions(conv="grouped"))
    mixed = EnsembleTrainer(jobs, data, EngineOptions(conv="mixed"))
    for epoch in range(spec.epochs):
        grouped.train_epoch(epoch)
        mixed.train_epoch(epoch)
    for name, value in grouped.ensemble.params.items():
        torch.testing.assert_close(mixed.ensemble.params[name], value, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["ensemble", "loop"])
def test_training_on_a_cpu_keeps_freed_memory_for_the_next_step(backend, monkeypatch):
    """Without it glibc unmaps every large activation on free, and each step pays page faults again;
    the teacher (loop backend) and the students (ensemble) both train through ``fit``."""
    from ddrank.engine import common

    calls = []
    monkeypatch.setattr(common, "keep_freed_memory", lambda: calls.append(1) or True)
    data = _data()
    job = TrainJob(_spec(epochs=1), "a", "v", 0.01, 7, "k")
    train_ensemble([job], data) if backend == "ensemble" else train_one(job, data)
    assert calls


def test_a_vmapped_batch_norm_takes_bf16_activations_with_float_statistics():
    """Under bf16 autocast on CUDA a batch norm of a vmapped model (ResNet-18-BN) gets bf16 activations and
    float32 statistics, which vmap's batch rule refuses; the ensemble normalises them in float32."""
    from torch import nn

    from ddrank.engine.ensemble import Ensemble
    from ddrank.engine.options import EngineOptions

    members = [nn.Sequential(nn.BatchNorm2d(3), nn.Flatten()) for _ in range(2)]
    ensemble = Ensemble(members, torch.device("cpu"), EngineOptions(conv="vmap"))
    x = torch.randn(2, 6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = ensemble.forward(ensemble.params, ensemble.buffers, x.bfloat16(), True)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().sum(), list(ensemble.params.values()))
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    fp32 = Ensemble(members, torch.device("cpu"), EngineOptions(conv="vmap"))
    reference = torch.stack([m.train()(x[i]) for i, m in enumerate(members)])
    assert torch.equal(fp32.forward(fp32.params, fp32.buffers, x, True), reference)  # fp32: as before

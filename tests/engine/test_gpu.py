"""The engine on a CUDA device: same semantics as on the CPU, graphs, no host syncs, bf16."""

import statistics
from dataclasses import replace

import pytest
import torch

from ddrank.data.real import load_real, normalize
from ddrank.data.sampling import random_subset, validation_split
from ddrank.engine import fused
from ddrank.engine.common import held_out_metrics
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec
from ddrank.engine.loop import LoopTrainer
from ddrank.engine.options import EngineOptions
from ddrank.engine.runner import run_jobs
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEVICE = torch.device("cuda")
DSA = "color_crop_cutout_scale_rotate"


def _digits(seeds: int = 1) -> tuple[RunData, list[str]]:
    real = load_real("digits")
    info = real.info
    val_idx, pool = validation_split(real.train_labels, 10, 0.1, 0)
    train = {}
    for s in range(seeds):
        idx = random_subset(real.train_labels, pool, 10, 10, s)
        train[f"r{s}"] = TrainingSet(
            normalize(real.train_images[idx], info).to(DEVICE), real.train_labels[idx].to(DEVICE), f"r{s}"
        )
    val = EvalSet(
        normalize(real.train_images[val_idx], info).to(DEVICE), real.train_labels[val_idx].to(DEVICE), "v"
    )
    test = EvalSet(normalize(real.test_images, info).to(DEVICE), real.test_labels.to(DEVICE), "t")
    return RunData(train, {"v": val}, test, DEVICE), list(train)


def _spec(epochs: int, precision: str = "fp32", model: str = "ConvNet-2-W16") -> TrainSpec:
    return TrainSpec(
        model, 1, 10, 8, OptimizerSpec(), ScheduleSpec(), epochs, 32, AugmentSpec(dsa=DSA), (), precision
    )


@pytest.mark.parametrize("graphs", [False, True])
def test_ensemble_matches_loop_on_cuda(graphs):
    data, names = _digits()
    spec = _spec(epochs=3)  # 100 images, batch 32: 4 steps per epoch (the last partial), 12 steps
    jobs = [TrainJob(spec, names[0], "v", lr, seed, str(seed)) for seed, lr in ((1, 0.05), (2, 0.01))]
    ensemble = EnsembleTrainer(jobs, data, EngineOptions(cuda_graphs=graphs))
    loops = [LoopTrainer(job, data) for job in jobs]
    for epoch in range(spec.epochs):
        ensemble.train_epoch(epoch)
        for loop in loops:
            loop.train_epoch(epoch)
    if graphs:
        assert ensemble._graphs, "the step was captured and replayed"
    for k, loop in enumerate(loops):
        for name, value in loop.model.named_parameters():
            torch.testing.assert_close(ensemble.ensemble.params[name][k], value, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fuse,channels_last", [(True, False), (False, False), (True, True)])
def test_graph_replay_equals_eager_steps(fuse, channels_last):
    data, names = _digits()
    spec = _spec(epochs=4)
    jobs = [TrainJob(spec, names[0], "v", 0.03, seed, str(seed)) for seed in (1, 2, 3)]
    eager = EnsembleTrainer(
        jobs, data, EngineOptions(cuda_graphs=False, fused=fuse, channels_last=channels_last)
    )
    graphed = EnsembleTrainer(
        jobs, data, EngineOptions(cuda_graphs=True, fused=fuse, channels_last=channels_last)
    )
    for epoch in range(spec.epochs):
        eager.train_epoch(epoch)
        graphed.train_epoch(epoch)
    for name, value in eager.ensemble.params.items():
        torch.testing.assert_close(graphed.ensemble.params[name], value, atol=1e-5, rtol=0)


def test_an_lr_grid_through_the_gemm_first_convolution_trains_like_cudnn():
    data, names = _digits(2)
    spec = _spec(epochs=3, precision="bf16")
    jobs = [
        TrainJob(spec, names[s], "v", lr, s + 1, f"{s}{lr}") for s in range(2) for lr in (0.01, 0.03, 0.1)
    ]
    gemm = EnsembleTrainer(jobs, data, EngineOptions())  # auto: the GEMM on CUDA
    native = EnsembleTrainer(jobs, data, EngineOptions(first_conv="native"))
    assert gemm.share == 3
    for epoch in range(spec.epochs):
        gemm.train_epoch(epoch)
        native.train_epoch(epoch)
    test = data.test.images[:256]
    agree = (
        (gemm.logits(test, range(6)).argmax(-1) == native.logits(test, range(6)).argmax(-1)).float().mean()
    )
    assert agree >= 0.95, agree  # bf16 rounding differs between the two routes; the predictions do not
    for name, value in native.ensemble.params.items():
        torch.testing.assert_close(gemm.ensemble.params[name], value, atol=5e-2, rtol=5e-2, msg=name)


def test_no_host_synchronisation_inside_an_epoch():
    data, names = _digits()
    spec = _spec(epochs=6, precision="bf16")
    jobs = [TrainJob(spec, names[0], "v", lr, 1, str(lr)) for lr in (0.01, 0.1)]
    trainer = EnsembleTrainer(jobs, data, EngineOptions(cuda_graphs=True))
    for epoch in range(3):  # warm-up and capture of both batch shapes (32 and the last 4)
        trainer.train_epoch(epoch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for epoch in range(3, spec.epochs):
            trainer.train_epoch(epoch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bf16_moves_mean_accuracy_less_than_seed_spread():
    seeds = 8
    data, names = _digits(seeds)
    accs = {}
    for precision in ("fp32", "bf16"):
        spec = _spec(epochs=300, precision=precision)
        jobs = [TrainJob(spec, names[s], "v", 0.03, 100 + s, f"{precision}{s}") for s in range(seeds)]
        results = run_jobs(jobs, data, backend="ensemble")
        accs[precision] = [results[j.key].test_acc for j in jobs]
    spread = statistics.stdev(accs["fp32"])
    shift = abs(statistics.mean(accs["bf16"]) - statistics.mean(accs["fp32"]))
    print(
        f"fp32 {statistics.mean(accs['fp32']):.4f} ± {spread:.4f}, bf16 {statistics.mean(accs['bf16']):.4f}"
    )
    assert shift <= spread


def test_fused_kernel_moves_mean_accuracy_less_than_seed_spread():
    seeds = 8
    data, names = _digits(seeds)
    spec = _spec(epochs=300, precision="bf16")
    jobs = [TrainJob(spec, names[s], "v", 0.03, 100 + s, f"s{s}") for s in range(seeds)]
    variants = {
        "eager": EngineOptions(fused=False),
        "fused": EngineOptions(fused=True),
        "fused, channels-last": EngineOptions(fused=True, channels_last=True),
    }
    accs = {}
    for name, options in variants.items():
        results = run_jobs(jobs, data, backend="ensemble", options=options)
        accs[name] = [results[j.key].test_acc for j in jobs]
    assert fused.failure() is None, fused.failure()
    spread = statistics.stdev(accs["eager"])
    print(
        ", ".join(f"{name} {statistics.mean(a):.4f}" for name, a in accs.items()), f"(eager ± {spread:.4f})"
    )
    for name in ("fused", "fused, channels-last"):
        assert abs(statistics.mean(accs[name]) - statistics.mean(accs["eager"])) <= spread, name


def test_fused_path_is_taken_on_cuda():
    data, names = _digits()
    spec = _spec(epochs=1, precision="bf16")
    trainer = EnsembleTrainer([TrainJob(spec, names[0], "v", 0.03, 1, "a")], data, EngineOptions())
    assert [op.kind for op in trainer.ensemble.program].count("norm_relu_pool") == 2
    x = torch.randn(4, 16, 8, 8, device=DEVICE, dtype=torch.bfloat16)
    assert fused.applies(x, torch.ones(16, device=DEVICE))
    trainer.train_epoch(0)
    assert fused.failure() is None, fused.failure()


def test_checkpoints_scored_beside_training_match_the_weights_at_that_epoch():
    data, names = _digits()
    spec = replace(_spec(epochs=6), eval_epochs=(2, 4))
    jobs = [TrainJob(spec, names[0], "v", lr, 1, str(lr)) for lr in (0.01, 0.05)]
    results = run_jobs(jobs, data, backend="ensemble")
    stopped = EnsembleTrainer(jobs, data, EngineOptions())
    for epoch in range(4):
        stopped.train_epoch(epoch)
        if epoch + 1 in (2, 4):
            accs = [m.top1 for m in held_out_metrics(stopped, data.test, [0, 1], 10)]
            for job, acc in zip(jobs, accs, strict=True):
                assert abs(dict(results[job.key].curve)[epoch + 1] - acc) <= 0.005


@pytest.mark.slow  # compiles with inductor (tens of seconds); run in the GPU session's compile step
def test_compiled_graphed_step_equals_eager_steps():
    data, names = _digits()
    spec = _spec(epochs=4)
    jobs = [TrainJob(spec, names[0], "v", 0.03, seed, str(seed)) for seed in (1, 2, 3)]
    eager = EnsembleTrainer(jobs, data, EngineOptions(cuda_graphs=False, fused=False))
    compiled = EnsembleTrainer(jobs, data, EngineOptions(cuda_graphs=True, compile=True))
    for epoch in range(spec.epochs):
        eager.train_epoch(epoch)
        compiled.train_epoch(epoch)
    assert compiled._graphs, "the compiled step was captured and replayed"
    for name, value in eager.ensemble.params.items():
        torch.testing.assert_close(compiled.ensemble.params[name], value, atol=1e-4, rtol=0)

"""Speed of the LRS-hard protocol workload: ensemble backend against the loop backend.

The CIFAR-10-shaped workload of the reference tool: 5 rounds x 5 learning rates x {synthetic,
random} = 50 ConvNet-3 trainings of 1000 epochs on 100 images (IPC 10) with DSA, each scored on
a validation split and on 10,000 test images at its final epoch. Stand-in tensors replace the
images (speed does not depend on their content). Both backends run in this one process; the
loop backend runs a few jobs for a few epochs and is extrapolated to the whole workload.

    python benchmarks/protocol_speed.py            # full size (a GPU)
    python benchmarks/protocol_speed.py --small    # a size a 2-core CPU finishes in about a minute
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddrank import rng
from ddrank.data.sampling import random_subset, validation_split
from ddrank.engine.common import held_out_metrics, init_model
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec, job_key
from ddrank.engine.loop import train_one
from ddrank.engine.options import EngineOptions, default_precision
from ddrank.engine.runner import run_jobs
from ddrank.progress import Silent
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec

BF16_PEAK_TFLOPS = 790.0  # measured 8192^3 bf16 matmul rate on the H200 this project is benchmarked on
LRS = (0.001, 0.005, 0.01, 0.05, 0.1)
DSA = "color_crop_cutout_flip_scale_rotate"


def workload(args: argparse.Namespace, device: torch.device) -> tuple[list[TrainJob], RunData]:
    """The planner's job grid for one synthetic set: rounds x lrs x {syn, random}."""
    classes, size, ipc = 10, args.size, 10
    gen = torch.Generator().manual_seed(0)
    pool_labels = torch.arange(classes).repeat_interleave(args.pool // classes)
    pool = torch.randn(args.pool, 3, size, size, generator=gen)
    test = EvalSet(
        torch.randn(args.test, 3, size, size, generator=gen).to(device),
        torch.arange(classes).repeat_interleave(args.test // classes).to(device),
        "test",
    )
    syn = TrainingSet(
        torch.randn(classes * ipc, 3, size, size, generator=gen).to(device),
        torch.arange(classes).repeat_interleave(ipc).to(device),
        "syn",
    )
    spec = TrainSpec(
        args.model,
        3,
        classes,
        size,
        OptimizerSpec(),
        ScheduleSpec(),
        args.epochs,
        256,
        AugmentSpec(dsa=DSA),
        tuple(range(args.eval_every, args.epochs, args.eval_every)) if args.eval_every else (),
        args.precision,
    )
    train_sets, val_sets, jobs = {"syn": syn}, {}, []
    for r in range(args.rounds):
        seed = rng.derive_seed(0, r)
        val_idx, rest = validation_split(pool_labels, classes, 0.1, seed)
        val_sets[f"val{r}"] = EvalSet(pool[val_idx].to(device), pool_labels[val_idx].to(device), f"val{r}")
        idx = random_subset(pool_labels, rest, classes, ipc, seed)
        train_sets[f"rand{r}"] = TrainingSet(pool[idx].to(device), pool_labels[idx].to(device), f"rand{r}")
        for name in ("syn", f"rand{r}"):
            for lr in LRS:
                key = job_key(spec, name, f"val{r}", "test", lr, seed)
                jobs.append(TrainJob(spec, name, f"val{r}", lr, seed, key, name[:4], r))
    return jobs, RunData(train_sets, val_sets, test, device)


def workload_flops(
    spec: TrainSpec, jobs: int, train_images: int, eval_images: int, device: torch.device
) -> float:
    """FLOPs of the whole workload, counted on one member's forward and backward."""
    model = init_model(spec, 0).to(device)
    x = torch.randn(train_images, spec.channels, spec.size, spec.size, device=device)
    with FlopCounterMode(display=False) as train_count:
        model(x).sum().backward()
    with FlopCounterMode(display=False) as eval_count, torch.no_grad():
        model(x[:1])
    return jobs * (spec.epochs * train_count.get_total_flops() + eval_images * eval_count.get_total_flops())


def evaluation_seconds(jobs: list[TrainJob], data: RunData, options: EngineOptions) -> float:
    """One final evaluation of all members (test set, then each validation split), timed apart."""
    trainer = EnsembleTrainer(jobs, data, options)
    classes = jobs[0].spec.num_classes

    def run() -> None:
        held_out_metrics(trainer, data.test, list(range(len(jobs))), classes, detailed=True)
        for name in dict.fromkeys(j.val_set for j in jobs):
            held_out_metrics(
                trainer, data.val_sets[name], [i for i, j in enumerate(jobs) if j.val_set == name], classes
            )

    run()  # warm-up: kernel selection and compilation
    sync(data.device)
    start = time.perf_counter()
    run()
    sync(data.device)
    return time.perf_counter() - start


class Timeline(Silent):
    """Wall-clock marks of one run (the device synchronised at each): after the first epochs (eager
    warm-up steps, cuDNN autotuning, Triton compilation, CUDA graph capture), at the end of training,
    and after the final evaluation."""

    FIRST = 3

    def __init__(self, device: torch.device, epochs: int):
        super().__init__()
        self.device, self.epochs, self.done = device, epochs, 0
        self.began = time.perf_counter()
        self.marks: dict[str, float] = {}

    def advance(self, units: int = 1) -> None:
        self.done += 1
        if self.done in (self.FIRST, self.epochs):
            sync(self.device)
            name = f"first_{self.FIRST}_epochs_s" if self.done == self.FIRST else "training_s"
            self.marks[name] = time.perf_counter() - self.began

    def phases(self, total: float) -> dict[str, float]:
        first = self.marks.get(f"first_{self.FIRST}_epochs_s", 0.0)
        trained = self.marks.get("training_s", total)
        return {
            f"first_{self.FIRST}_epochs_s": round(first, 2),
            f"epochs_{self.FIRST + 1}_to_{self.epochs}_s": round(trained - first, 2),
            "final_evaluation_in_run_s": round(total - trained, 2),
        }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="CPU size: 16 px, ConvNet-3-W32, 30 epochs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--loop-jobs", type=int, default=2, help="jobs the loop backend trains (extrapolated)"
    )
    parser.add_argument("--loop-epochs", type=int, default=None, help="epochs per loop job (extrapolated)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--conv", choices=("grouped", "unfold", "mixed", "vmap"), default="grouped")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument(
        "--no-autotune",
        action="store_true",
        help="cuDNN's heuristics for every convolution (by default: where they match tuning)",
    )
    parser.add_argument("--no-fused", action="store_true", help="eager instance norm + ReLU + pooling")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    parser.add_argument(
        "--eval-every", type=int, help="also score the test set every N epochs (the reference selection)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the workload this many times in one process (later runs find kernels compiled and tuned)",
    )
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.precision = default_precision(device) if args.precision == "auto" else args.precision
    args.size, args.model = (16, "ConvNet-3-W32") if args.small else (32, "ConvNet-3")
    args.epochs = args.epochs or (30 if args.small else 1000)
    args.pool, args.test = (5000, 1000) if args.small else (50000, 10000)
    args.loop_epochs = args.loop_epochs or (10 if args.small else 20)
    options = EngineOptions(
        cuda_graphs=not args.no_graphs,
        cudnn_benchmark=False if args.no_autotune else None,
        channels_last=args.channels_last,
        conv=args.conv,
        fused=not args.no_fused,
        compile=args.compile,
    )

    jobs, data = workload(args, device)
    spec = jobs[0].spec
    n_val = data.val_sets["val0"].images.shape[0]
    eval_images = data.test.images.shape[0] + n_val
    flops = workload_flops(spec, len(jobs), 100, eval_images, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = []
    for _ in range(args.repeat):
        sync(device)
        timeline = Timeline(device, spec.epochs)
        start = time.perf_counter()
        results = run_jobs(jobs, data, backend="ensemble", options=options, reporter=timeline)
        sync(device)
        total = time.perf_counter() - start
        runs.append({"wall_s": round(total, 2), **timeline.phases(total)})
        print("run", len(runs), runs[-1], flush=True)
    ensemble_s = runs[0]["wall_s"]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    accs = [results[j.key].test_acc for j in jobs]
    eval_s = evaluation_seconds(jobs, data, options)

    loop_s = None
    if not args.skip_loop:
        short = replace(spec, epochs=args.loop_epochs)
        per_job = []
        for job in jobs[: args.loop_jobs]:
            train_one(replace(job, spec=replace(short, epochs=1)), data)  # warm-up
            sync(device)
            t0 = time.perf_counter()
            train_one(replace(job, spec=short), data)
            sync(device)
            per_job.append(time.perf_counter() - t0)
        per_epoch = sum(per_job) / len(per_job) / args.loop_epochs
        loop_s = per_epoch * spec.epochs * len(jobs)

    figures = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "size": "small" if args.small else "full",
        "jobs": len(jobs),
        "epochs": spec.epochs,
        "model": spec.model,
        "precision": spec.precision,
        "options": vars(options),
        "ensemble_wall_s": round(ensemble_s, 2),
        "runs": runs,
        "of_which_final_evaluation_s": round(eval_s, 2),
        "trained_images_per_s": round(len(jobs) * spec.epochs * 100 / ensemble_s),
        "loop_wall_s_extrapolated": None if loop_s is None else round(loop_s, 1),
        "ratio_loop_over_ensemble": None if loop_s is None else round(loop_s / ensemble_s, 1),
        "peak_device_memory_gib": None if peak is None else round(peak / 2**30, 2),
        "workload_tflop": round(flops / 1e12, 1),
        "achieved_tflops": round(flops / ensemble_s / 1e12, 1),
        "fraction_of_bf16_peak": round(flops / ensemble_s / 1e12 / BF16_PEAK_TFLOPS, 4),
        "mean_test_acc": round(sum(accs) / len(accs), 4),
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

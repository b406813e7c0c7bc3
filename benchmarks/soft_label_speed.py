"""Speed of soft-label (mode M) protocol workloads: ensemble backend against the loop backend.

Every augmented batch is relabelled online by a teacher ensemble and the student minimises KL
at a temperature, with CutMix. Two workloads, each 5 rounds x 5 learning rates x {synthetic,
random} = 50 students scored on a validation split and the test set:

- ``convnet``: the D4M CIFAR-10 IPC-10 protocol (d4m.yaml): ConvNet-3 student and ConvNet-3
  teacher(s), 100 images of 32 px, batch 100, 500 epochs, AdamW, cosine, KL at T=20, CutMix 1.0.
- ``resnet18``: the SRe2L TinyImageNet IPC-10 protocol (sre2l.yaml): torchvision ResNet-18
  student and teacher, 2,000 images of 64 px in 200 classes, batch 256, 400 epochs, random
  resized crop (0.08-1) and flip, CutMix 1.0, KL at T=20, AdamW, cosine.

Stand-in tensors replace images and teacher weights (speed does not depend on them). Each
backend trains a few epochs after a warm-up; the whole workload is extrapolated from the
measured rate, and one final evaluation (test and validation sets) is timed per ensemble. The
teacher's share is its forward pass alone, timed on a batch of the step's shape, over the
measured step time.

    python benchmarks/soft_label_speed.py                    # both workloads, full size (a GPU)
    python benchmarks/soft_label_speed.py --small            # CPU sizes, a few minutes on 2 cores
    python benchmarks/soft_label_speed.py --workload convnet --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ddrank import rng
from ddrank.engine.common import held_out_metrics
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec, job_key
from ddrank.engine.loop import LoopTrainer
from ddrank.engine.options import EngineOptions, autocast, default_precision
from ddrank.engine.runner import max_members
from ddrank.labels.teachers import Teacher, TeacherEnsemble, freeze
from ddrank.models import create_model
from ddrank.protocols import AugmentSpec, LabelSpec, OptimizerSpec, ScheduleSpec

LRS = (0.001, 0.005, 0.01, 0.05, 0.1)


@dataclass(frozen=True)
class Workload:
    model: str
    classes: int
    size: int
    ipc: int
    batch: int
    epochs: int
    test: int
    val: int
    transforms: tuple[dict, ...]
    source: str
    rounds: int = 5


WORKLOADS = {
    "convnet": Workload("ConvNet-3", 10, 32, 10, 100, 500, 10_000, 5_000, (), "d4m.yaml, CIFAR-10 IPC 10"),
    "resnet18": Workload(
        "torchvision:resnet18",
        200,
        64,
        10,
        256,
        400,
        10_000,
        10_000,
        ({"name": "random_resized_crop", "scale": [0.08, 1.0]}, {"name": "flip"}),
        "sre2l.yaml, TinyImageNet IPC 10",
    ),
}
# CPU sizes: the same pipelines on smaller images, narrower ConvNets and fewer classes.
SMALL = {
    "convnet": replace(WORKLOADS["convnet"], model="ConvNet-3-W32", size=16, test=1_000, val=500),
    "resnet18": replace(
        WORKLOADS["resnet18"], classes=20, size=16, ipc=2, batch=40, test=100, val=100, rounds=1
    ),
}


def build(w: Workload, args: argparse.Namespace, device: torch.device) -> tuple[list[TrainJob], RunData]:
    """The job grid of one synthetic set under the workload, with stand-in images and teachers."""
    gen = torch.Generator().manual_seed(0)
    n = w.classes * w.ipc

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, 3, w.size, w.size, generator=gen).to(device)

    def labels(count: int) -> torch.Tensor:
        return torch.arange(count, device=device) % w.classes

    teachers = []
    for t in range(args.teachers):
        torch.manual_seed(1000 + t)
        model = freeze(create_model(w.model, 3, w.classes, w.size)).to(device)
        teachers.append(Teacher(w.model, model, f"stand-in {t}", f"teacher{t}"))
    ensemble = TeacherEnsemble(teachers)
    spec = TrainSpec(
        w.model,
        3,
        w.classes,
        w.size,
        OptimizerSpec(name="adamw", weight_decay=0.01),
        ScheduleSpec(kind="cosine"),
        w.epochs,
        w.batch,
        AugmentSpec(transforms=w.transforms, cutmix=1.0),
        (),
        args.precision,
        LabelSpec(mode="M", loss="kl", temperature=20.0, teachers=(w.model,) * args.teachers),
        ensemble.fingerprint,
    )
    train_sets = {"syn": TrainingSet(images(n), labels(n), "syn")}
    val_sets, jobs = {}, []
    for r in range(args.rounds or w.rounds):
        seed = rng.derive_seed(0, r)
        val_sets[f"val{r}"] = EvalSet(images(w.val), labels(w.val), f"val{r}")
        train_sets[f"rand{r}"] = TrainingSet(images(n), labels(n), f"rand{r}")
        for name in ("syn", f"rand{r}"):
            for lr in LRS:
                key = job_key(spec, name, f"val{r}", "test", lr, seed)
                jobs.append(TrainJob(spec, name, f"val{r}", lr, seed, key, name[:4], r))
    test = EvalSet(images(w.test), labels(w.test), "test")
    return jobs, RunData(train_sets, val_sets, test, device, {ensemble.fingerprint: ensemble})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def teacher_step_seconds(trainer, members: int, spec: TrainSpec, device: torch.device) -> float:
    """The teacher ensemble's relabelling of one step's augmented batch [members, batch, C, H, W]."""
    teachers = trainer.pipeline.teachers
    x = torch.randn(members, min(spec.batch_size, trainer_set_size(trainer)), 3, spec.size, spec.size)
    x = x.to(device)

    def relabel() -> None:
        with autocast(device, spec.precision):
            teachers.target(x, spec.labels.temperature)

    relabel()
    return timed(relabel, device, repeat=5)


def trainer_set_size(trainer) -> int:
    return trainer.n if isinstance(trainer, EnsembleTrainer) else len(trainer.train)


def final_evaluation_seconds(trainer, jobs: list[TrainJob], data: RunData, classes: int) -> float:
    """One final evaluation of the trainer's members: the test set, then each validation set."""

    def run() -> None:
        held_out_metrics(trainer, data.test, list(range(len(jobs))), classes, detailed=True)
        for name in dict.fromkeys(j.val_set for j in jobs):
            chosen = [i for i, j in enumerate(jobs) if j.val_set == name]
            held_out_metrics(trainer, data.val_sets[name], chosen, classes)

    return timed(run, data.device)


def measure(trainer, members: int, spec: TrainSpec, args: argparse.Namespace, device: torch.device) -> dict:
    """Epoch time after a warm-up, and the teacher's share of it."""
    for epoch in range(args.warmup):
        trainer.train_epoch(epoch)
    epoch_s = timed(
        lambda: [trainer.train_epoch(e) for e in range(args.warmup, args.warmup + args.epochs)], device
    )
    epoch_s /= args.epochs
    steps = math.ceil(trainer_set_size(trainer) / spec.batch_size)
    # Members sharing a set and a seed share their batches: the teacher labels each distinct one.
    distinct = getattr(trainer, "distinct", None)
    labelled = members if distinct is None else int(distinct.numel())
    teacher_s = teacher_step_seconds(trainer, labelled, spec, device) * steps
    return {
        "epoch_s": epoch_s,
        "images_per_s": members * trainer_set_size(trainer) / epoch_s,
        "teacher_share": min(1.0, teacher_s / epoch_s),
        "teacher_batches_per_step": labelled,
    }


def run_workload(name: str, w: Workload, args: argparse.Namespace, device: torch.device) -> dict:
    jobs, data = build(w, args, device)
    spec = jobs[0].spec
    n = w.classes * w.ipc
    total_images = len(jobs) * n * spec.epochs  # image-steps of the whole workload
    options = EngineOptions(cuda_graphs=not args.no_graphs, fused=not args.no_fused)
    limit = min(len(jobs), max_members(spec, min(n, spec.batch_size), device, options))
    if args.max_members:
        limit = min(limit, args.max_members)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    unit = jobs[:limit]
    trainer = EnsembleTrainer(unit, data, options)
    ens = measure(trainer, limit, spec, args, device)
    units = math.ceil(len(jobs) / limit)
    eval_s = final_evaluation_seconds(trainer, unit, data, w.classes) * units
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del trainer
    figures = {
        "workload": name,
        "source": w.source,
        "model": w.model,
        "teachers": args.teachers,
        "jobs": len(jobs),
        "epochs": spec.epochs,
        "images": n,
        "batch": spec.batch_size,
        "size": w.size,
        "precision": spec.precision,
        "ensemble_members_per_unit": limit,
        "ensemble_images_per_s": round(ens["images_per_s"]),
        "ensemble_teacher_share": round(ens["teacher_share"], 3),
        "ensemble_teacher_batches_per_step": ens["teacher_batches_per_step"],
        "ensemble_evaluation_s": round(eval_s, 2),
        "ensemble_workload_s_extrapolated": round(total_images / ens["images_per_s"] + eval_s, 1),
        "peak_device_memory_gib": None if peak is None else round(peak, 2),
    }
    if not args.skip_loop:
        rates, shares = [], []
        for job in jobs[: args.loop_jobs]:
            loop = measure(LoopTrainer(job, data), 1, spec, args, device)
            rates.append(loop["images_per_s"])
            shares.append(loop["teacher_share"])
        rate = sum(rates) / len(rates)
        figures |= {
            "loop_images_per_s": round(rate),
            "loop_teacher_share": round(sum(shares) / len(shares), 3),
            "loop_workload_s_extrapolated": round(total_images / rate, 1),
            "ratio_loop_over_ensemble_training": round(ens["images_per_s"] / rate, 1),
        }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--small", action="store_true", help="CPU sizes (16 px, narrower or fewer classes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--teachers", type=int, default=1, help="teachers in the ensemble (D4M, SRe2L: 1)")
    parser.add_argument("--rounds", type=int, help="rounds of 10 jobs (default 5; 1 for the small ResNet)")
    parser.add_argument("--warmup", type=int, default=None, help="epochs before timing")
    parser.add_argument("--epochs", type=int, default=None, help="epochs timed per backend")
    parser.add_argument("--loop-jobs", type=int, default=1)
    parser.add_argument("--max-members", type=int, help="cap the ensemble size")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--no-fused", action="store_true")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.precision = default_precision(device) if args.precision == "auto" else args.precision
    args.warmup = args.warmup if args.warmup is not None else (1 if args.small else 3)
    args.epochs = args.epochs or (2 if args.small else 5)
    sizes = SMALL if args.small else WORKLOADS
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    cuda = device.type == "cuda"
    header = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "scale": "small" if args.small else "full",
    }
    results = []
    for name in names:
        figures = header | run_workload(name, sizes[name], args, device)
        results.append(figures)
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
        print(flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

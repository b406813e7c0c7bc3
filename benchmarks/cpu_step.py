"""The digits ensemble step on a CPU, with and without each of its CPU-specific routes, in one process.

The demo's unit of work: K ConvNet-2-W16 students (4 learning rates x K/4 training sets of IPC 10)
trained as one packed ensemble on scikit-learn's digits with DSA, one step per epoch. The variants
switch the step's CPU routes on one at a time (2x2 pooling as a matrix product, the numpy hash of
the random streams, ReLU in place, DSA computing each family for the members that picked it) and
run alternately on the same trainer, so that all of them meet the same machine load; the figures
are medians over the repetitions.

    python benchmarks/cpu_step.py                 # 40 members, 8 repetitions of 4 epochs per variant
    python benchmarks/cpu_step.py --members 80 --repeat 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ddrank import rng
from ddrank.augment import dsa
from ddrank.data.real import load_real, normalize
from ddrank.engine import packed
from ddrank.engine.allocator import keep_freed_memory
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec, job_key
from ddrank.models import layers
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec

LRS = (0.003, 0.01, 0.03, 0.1)


def trainer(members: int, ipc: int) -> EnsembleTrainer:
    """The digits protocol's students on ``members // 4`` disjoint IPC-``ipc`` subsets of the train split."""
    real = load_real("digits")
    images = normalize(real.train_images, real.info)
    labels = real.train_labels
    spec = TrainSpec(
        "ConvNet-2-W16",
        1,
        10,
        8,
        OptimizerSpec(momentum=0.9, weight_decay=5e-4),
        ScheduleSpec(),
        300,
        256,
        AugmentSpec(dsa="color_crop_cutout_scale_rotate"),
    )
    sets, jobs = {}, []
    for s in range(members // len(LRS)):
        picked = torch.cat([torch.nonzero(labels == c).flatten()[s * ipc : (s + 1) * ipc] for c in range(10)])
        sets[f"set{s}"] = TrainingSet(images[picked], labels[picked], f"set{s}")
        seed = rng.derive_seed(0, s)
        for lr in LRS:
            key = job_key(spec, f"set{s}", "val", "test", lr, seed)
            jobs.append(TrainJob(spec, f"set{s}", "val", lr, seed, key, f"set{s}", s))
    test = EvalSet(normalize(real.test_images, real.info), real.test_labels, "test")
    return EnsembleTrainer(jobs, RunData(sets, {"val": test}, test, torch.device("cpu")))


def _norm_relu_pool_out_of_place(h, norm, weight, bias, k, norm_in_bf16, conv_bias=None, channels_last=False):
    if conv_bias is not None:  # only where the fused kernel runs, never on a CPU
        h = h + conv_bias.view(1, -1, 1, 1)
    h = packed._group_norm(h, k * norm.num_groups, weight, bias, norm.eps, norm_in_bf16)
    return layers.avg_pool2x2(F.relu(h))


@contextmanager
def routes(matmul_pool: bool, numpy_hash: bool, relu_in_place: bool, dsa_subsets: bool):
    saved = layers.MATMUL_POOL_PLANE, rng._operands, packed._norm_relu_pool, dsa._by_subsets
    if not matmul_pool:
        layers.MATMUL_POOL_PLANE = 0
    if not numpy_hash:
        rng._operands = lambda *tensors: tensors
    if not relu_in_place:
        packed._norm_relu_pool = _norm_relu_pool_out_of_place
    if not dsa_subsets:
        dsa._by_subsets = lambda images: False
    try:
        yield
    finally:
        layers.MATMUL_POOL_PLANE, rng._operands, packed._norm_relu_pool, dsa._by_subsets = saved


VARIANTS: dict[str, tuple[bool, bool, bool, bool]] = {
    "none of the CPU routes (before)": (False, False, False, False),
    "pooling as a matrix product only": (True, False, False, False),
    "numpy hash only": (False, True, False, False),
    "ReLU in place only": (False, False, True, False),
    "DSA by member subsets only": (False, False, False, True),
    "all but DSA by subsets": (True, True, True, False),
    "all four (now)": (True, True, True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per variant and repetition")
    args = parser.parse_args()
    if args.members < len(LRS) or min(args.ipc, args.repeat, args.epochs) < 1:
        parser.error(f"--members must be at least {len(LRS)}; --ipc, --repeat and --epochs at least 1")
    keep_freed_memory()  # as training does (fit)
    model = trainer(args.members, args.ipc)
    epoch = 0
    model.train_epoch(epoch)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, switches in VARIANTS.items():
            with routes(*switches):
                started = time.perf_counter()
                for _ in range(args.epochs):
                    epoch += 1
                    model.train_epoch(epoch)
                times[name].append((time.perf_counter() - started) / args.epochs)
    before = statistics.median(times["none of the CPU routes (before)"])
    print(f"digits ensemble step, {args.members} members, IPC {args.ipc}, {torch.get_num_threads()} threads")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:34s} {1e3 * median:6.1f} ms per step   before/this {before / median:.2f}x")


if __name__ == "__main__":
    main()

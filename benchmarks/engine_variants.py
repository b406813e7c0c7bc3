"""Per-epoch time of the ensemble step under each execution variant, on the protocol workload.

Each variant trains the same 50 members (ConvNet-3, IPC 10, DSA) for a few epochs after a
warm-up, then scores them on the test set; the table shows what each speed-up buys.

    python benchmarks/engine_variants.py [--epochs 20] [--members 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

from ddrank.engine.common import held_out_metrics
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.options import EngineOptions

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from protocol_speed import workload  # noqa: E402

VARIANTS = {
    "fp32 eager, no autotune": ("fp32", EngineOptions(cuda_graphs=False, cudnn_benchmark=False)),
    "fp32 eager": ("fp32", EngineOptions(cuda_graphs=False)),
    "bf16 eager, fp32 norm": ("bf16", EngineOptions(cuda_graphs=False, norm_in_bf16=False)),
    "bf16 eager": ("bf16", EngineOptions(cuda_graphs=False)),
    "bf16 eager, channels-last": ("bf16", EngineOptions(cuda_graphs=False, channels_last=True)),
    "bf16 graph (default)": ("bf16", EngineOptions()),
    "bf16 graph, channels-last": ("bf16", EngineOptions(channels_last=True)),
    "bf16 graph, vmap": ("bf16", EngineOptions(conv="vmap")),
    "bf16 graph, unfold first conv": ("bf16", EngineOptions(conv="mixed")),
    "fp32 graph": ("fp32", EngineOptions()),
}


def profile_epochs(trainer: EnsembleTrainer, first: int, epochs: int = 3) -> None:
    """The CUDA kernels that take the time of a few training epochs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for epoch in range(first, first + epochs):
            trainer.train_epoch(epoch)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=32, max_name_column_width=90))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    parser.add_argument("--profile", help="print the top CUDA kernels of this variant")
    args = parser.parse_args()
    device = torch.device("cuda")
    ns = argparse.Namespace(
        size=32,
        model="ConvNet-3",
        epochs=1000,
        pool=50000,
        test=10000,
        rounds=5,
        precision="bf16",
        eval_every=0,
    )
    base_jobs, data = workload(ns, device)
    base_jobs = base_jobs[: args.members]
    rows = []
    for name, (precision, options) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        jobs = [replace(j, spec=replace(j.spec, precision=precision)) for j in base_jobs]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        tuned = options.cudnn_benchmark
        torch.backends.cudnn.benchmark = tuned if tuned is not None else options.conv == "vmap"
        try:
            trainer = EnsembleTrainer(jobs, data, options)
            for epoch in range(args.warmup):
                trainer.train_epoch(epoch)
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            for epoch in range(args.warmup, args.warmup + args.epochs):
                trainer.train_epoch(epoch)
            torch.cuda.synchronize(device)
            per_epoch = (time.perf_counter() - start) / args.epochs
            start = time.perf_counter()
            held_out_metrics(trainer, data.test, list(range(len(jobs))), 10)
            torch.cuda.synchronize(device)
            eval_s = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            if name == args.profile:
                profile_epochs(trainer, args.warmup + args.epochs)
            rows.append((name, f"{per_epoch * 1000:.2f}", "", f"{eval_s:.2f}", f"{peak:.1f}"))
        except RuntimeError as exc:
            rows.append((name, "failed", str(exc).splitlines()[0][:60], "", ""))
        print(*rows[-1], sep="\t", flush=True)
    print()
    print(f"{'variant':36s} {'ms/epoch':>9s} {'1000 ep (s)':>11s} {'test eval s':>11s} {'peak GiB':>8s}")
    for name, ms, _, ev, peak in rows:
        total = f"{float(ms):.1f}" if ms != "failed" else "-"
        print(f"{name:36s} {ms:>9s} {total:>11s} {ev:>11s} {peak:>8s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

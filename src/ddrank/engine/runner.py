"""Run a grid of jobs: skip cached results, group jobs into ensembles, fall back to the loop."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import torch
from torch import Tensor, nn

from ddrank.engine.allocator import keep_freed_memory
from ddrank.engine.common import init_model
from ddrank.engine.ensemble import train_ensemble
from ddrank.engine.job import JobCache, JobResult, MemoryCache, RunData, TrainJob, TrainSpec
from ddrank.engine.loop import train_one
from ddrank.engine.options import EngineOptions
from ddrank.errors import ConfigError
from ddrank.progress import Reporter, Silent

Backend = Literal["auto", "ensemble", "loop"]
BACKENDS: tuple[str, ...] = ("auto", "ensemble", "loop")


CPU_MAX_MEMBERS = 64


def member_bytes(spec: TrainSpec, batch: int) -> int:
    """Device memory one ensemble member needs for a training step, from a forward on the meta device.

    Counts every module output (autograd keeps about that much for the backward pass, and the
    backward pass allocates as much again) plus parameters, gradients and optimiser state.
    """
    model = init_model(spec, 0).to("meta")
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.empty(batch, spec.channels, spec.size, spec.size, device="meta"))
    for hook in hooks:
        hook.remove()
    element = 2 if spec.precision == "bf16" else 4
    params = sum(p.numel() for p in model.parameters())
    return 2 * total * element + 4 * params * 4 + batch * spec.channels * spec.size * spec.size * 4 * 3


def max_members(spec: TrainSpec, batch: int, device: torch.device, options: EngineOptions) -> int:
    """Ensemble size limit: a fraction of free device memory on CUDA, a cache-friendly cap on CPUs."""
    if options.max_members is not None:
        return max(1, options.max_members)
    if device.type != "cuda":
        return CPU_MAX_MEMBERS
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, int(free * options.memory_fraction) // member_bytes(spec, batch))


def run_jobs(
    jobs: list[TrainJob],
    data: RunData,
    *,
    backend: Backend = "auto",
    cache: JobCache | None = None,
    reporter: Reporter | None = None,
    options: EngineOptions | None = None,
) -> dict[str, JobResult]:
    """Results for every job, keyed by job key; finished results are written to ``cache`` at once."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    cache = MemoryCache() if cache is None else cache
    reporter = reporter or Silent()
    unique = {job.key: job for job in jobs}
    results = {key: found for key, job in unique.items() if (found := cache.get(job)) is not None}
    todo = [job for key, job in unique.items() if key not in results]
    if not todo:
        return results
    options = options or EngineOptions()
    if data.device.type == "cpu":
        keep_freed_memory()
    elif data.device.type == "cuda" and options.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
    reporter.start("training students", sum(job.spec.epochs for job in todo))

    def record(batch: list[TrainJob], outcome: list[JobResult]) -> None:
        for job, result in zip(batch, outcome, strict=True):
            results[job.key] = result
            cache.put(job, result)

    groups: dict[tuple, list[TrainJob]] = defaultdict(list)
    for job in todo:
        groups[(job.spec, len(data.train_sets[job.train_set]))].append(job)
    for (spec, n), group in groups.items():
        if backend == "loop" or (backend == "auto" and len(group) == 1):
            for job in group:
                record([job], [train_one(job, data, reporter.advance)])
            continue
        limit = max_members(spec, min(n, spec.batch_size), data.device, options)
        for start in range(0, len(group), limit):
            chunk = group[start : start + limit]
            record(chunk, train_ensemble(chunk, data, reporter.advance, options))
    return results

"""Run a grid of jobs: skip cached results, group jobs into ensembles, fall back to the loop."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from ddrank.engine.allocator import keep_freed_memory
from ddrank.engine.ensemble import train_ensemble
from ddrank.engine.job import JobCache, JobResult, MemoryCache, RunData, TrainJob
from ddrank.engine.loop import train_one
from ddrank.errors import ConfigError
from ddrank.progress import Reporter, Silent

Backend = Literal["auto", "ensemble", "loop"]
BACKENDS: tuple[str, ...] = ("auto", "ensemble", "loop")


def max_members(data: RunData) -> int:
    """Ensemble size limit: small on a CPU (cache-resident activations), large on a GPU."""
    return 256 if data.device.type == "cuda" else 64


def run_jobs(
    jobs: list[TrainJob],
    data: RunData,
    *,
    backend: Backend = "auto",
    cache: JobCache | None = None,
    reporter: Reporter | None = None,
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
    if data.device.type == "cpu":
        keep_freed_memory()
    reporter.start("training students", sum(job.spec.epochs for job in todo))

    def record(batch: list[TrainJob], outcome: list[JobResult]) -> None:
        for job, result in zip(batch, outcome, strict=True):
            results[job.key] = result
            cache.put(job, result)

    groups: dict[tuple, list[TrainJob]] = defaultdict(list)
    for job in todo:
        groups[(job.spec, len(data.train_sets[job.train_set]))].append(job)
    limit = max_members(data)
    for group in groups.values():
        if backend == "loop" or (backend == "auto" and len(group) == 1):
            for job in group:
                record([job], [train_one(job, data, reporter.advance)])
            continue
        for start in range(0, len(group), limit):
            chunk = group[start : start + limit]
            record(chunk, train_ensemble(chunk, data, reporter.advance))
    return results

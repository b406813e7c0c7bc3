"""Run a grid of jobs: skip cached results, group jobs into ensembles, fall back to the loop."""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor, nn

from ddrank import distributed
from ddrank.engine.common import init_model
from ddrank.engine.ensemble import train_ensemble
from ddrank.engine.job import JobCache, JobResult, MemoryCache, RunData, TrainJob, TrainSpec
from ddrank.engine.loop import train_one
from ddrank.engine.options import EngineOptions
from ddrank.engine.packed import packed_program
from ddrank.engine.units import Unit, assign, make_units
from ddrank.errors import ConfigError
from ddrank.progress import Reporter, Silent, phase_of

Backend = Literal["auto", "ensemble", "loop"]
BACKENDS: tuple[str, ...] = ("auto", "ensemble", "loop")


CPU_MAX_MEMBERS = 64


@functools.cache
def image_cost(spec: TrainSpec) -> float:
    """Elements of every module output in one image's forward pass, counted on the meta device.

    A proxy for compute (balancing ranks) and for memory (autograd keeps about that much).
    """
    model = init_model(spec, 0).to("meta")
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.empty(1, spec.channels, spec.size, spec.size, device="meta"))
    for hook in hooks:
        hook.remove()
    return float(total)


def member_bytes(spec: TrainSpec, batch: int) -> int:
    """Device memory one ensemble member needs for a training step: its activations (kept for the
    backward pass, which allocates as much again) plus parameters, gradients and optimiser state."""
    element = 2 if spec.precision == "bf16" else 4
    params = sum(p.numel() for p in init_model(spec, 0).to("meta").parameters())
    inputs = batch * spec.channels * spec.size * spec.size * 4 * 3
    return int(2 * image_cost(spec) * batch * element + 4 * params * 4 + inputs)


def max_members(spec: TrainSpec, batch: int, device: torch.device, options: EngineOptions) -> int:
    """Ensemble size limit: a fraction of free device memory on CUDA, a cache-friendly cap on CPUs."""
    if options.max_members is not None:
        return max(1, options.max_members)
    if device.type != "cuda":
        return CPU_MAX_MEMBERS
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, int(free * options.memory_fraction) // member_bytes(spec, batch))


def member_limits(jobs: list[TrainJob], data: RunData, options: EngineOptions) -> dict[tuple, int]:
    """The ensemble size cap of every (spec, set size) group, the same on every rank."""
    keys = list(dict.fromkeys((job.spec, len(data.train_sets[job.train_set])) for job in jobs))
    local = [max_members(spec, min(n, spec.batch_size), data.device, options) for spec, n in keys]
    return dict(zip(keys, distributed.min_over_ranks(local), strict=True))


def unit_cost(unit: Unit) -> float:
    """A relative cost for balancing ranks: member-steps times images per step times model size."""
    spec = unit.jobs[0].spec
    return len(unit.jobs) * unit.steps * min(unit.images, spec.batch_size) * image_cost(spec)


def autotunes(unit: Unit, options: EngineOptions) -> bool:
    """Whether cuDNN times its algorithms for this unit's convolutions (see EngineOptions.cudnn_benchmark)."""
    if options.cudnn_benchmark is not None:
        return options.cudnn_benchmark
    packed = unit.kind == "ensemble" and options.conv != "vmap"
    return not (packed and packed_program(init_model(unit.jobs[0].spec, 0).to("meta")) is not None)


def train_unit(unit: Unit, data: RunData, reporter: Reporter, options: EngineOptions) -> list[JobResult]:
    if data.device.type != "cuda":
        return _train_unit(unit, data, reporter, options)
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = autotunes(unit, options)  # fixed shapes: each tuned once
    try:
        return _train_unit(unit, data, reporter, options)
    finally:
        torch.backends.cudnn.benchmark = before


def _train_unit(unit: Unit, data: RunData, reporter: Reporter, options: EngineOptions) -> list[JobResult]:
    first = unit.jobs[0]
    phases = " + ".join(dict.fromkeys(phase_of(job.cell) for job in unit.jobs))
    what = f"{phases} · {first.spec.model} · {len(unit.jobs)} student{'s' * (len(unit.jobs) > 1)}"
    reporter.describe(what)
    if unit.kind == "ensemble":
        results = train_ensemble(list(unit.jobs), data, reporter.advance, options)
    else:
        world = distributed.world()
        shard = (world.rank, world.size) if unit.kind == "data_parallel" and world.distributed else None
        results = [train_one(unit.jobs[0], data, reporter.advance, shard)]
    reporter.finished(what)
    return results


def run_jobs(
    jobs: list[TrainJob],
    data: RunData,
    *,
    backend: Backend = "auto",
    cache: JobCache | None = None,
    reporter: Reporter | None = None,
    options: EngineOptions | None = None,
) -> dict[str, JobResult]:
    """Results for every job, keyed by job key; finished results are written to ``cache`` at once.

    Under torchrun the units are shared out between ranks (balanced by estimated cost) and
    trained in waves; after each wave every rank receives every result and rank 0 alone writes
    them to the cache, so an interrupted run loses only the units in flight.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    cache = MemoryCache() if cache is None else cache
    reporter = reporter or Silent()
    world = distributed.world()
    unique = {job.key: job for job in jobs}
    results = {key: found for key, job in unique.items() if (found := cache.get(job)) is not None}
    todo = [job for key, job in unique.items() if key not in results]
    if not todo:
        return results
    options = options or EngineOptions()
    limits = member_limits(todo, data, options)
    units = make_units(
        todo,
        lambda name: len(data.train_sets[name]),
        backend=backend,
        member_limit=lambda job, n: limits[(job.spec, n)],
        data_parallel_images=options.data_parallel_images if world.distributed else None,
    )

    def record(unit_jobs: tuple[TrainJob, ...], outcome: list[JobResult]) -> None:
        for job, result in zip(unit_jobs, outcome, strict=True):
            results[job.key] = result
            if world.main:
                cache.put(job, result)

    if not world.distributed:
        reporter.start("training students", sum(job.spec.epochs for job in todo))
        for unit in units:
            record(unit.jobs, train_unit(unit, data, reporter, options))
        return results

    shared = [i for i, u in enumerate(units) if u.kind == "data_parallel"]
    split = [i for i, u in enumerate(units) if u.kind != "data_parallel"]
    shares = assign([unit_cost(units[i]) for i in split], world.size)
    mine = [split[i] for i in shares[world.rank]]
    epochs = sum(len(units[i].jobs) * units[i].jobs[0].spec.epochs for i in mine + shared)
    reporter.start(f"rank {world.rank}: training students", epochs)
    trained = 0
    for index in shared:  # every rank trains these together; rank 0 counts them
        record(units[index].jobs, train_unit(units[index], data, reporter, options))
        trained += len(units[index].jobs) if world.main else 0
    for wave in range(max(len(s) for s in shares)):
        outcome = []
        if wave < len(mine):
            unit = units[mine[wave]]
            finished = train_unit(unit, data, reporter, options)
            record(unit.jobs, finished)
            outcome = [(job.key, result) for job, result in zip(unit.jobs, finished, strict=True)]
            trained += len(unit.jobs)
        for rank_outcome in distributed.all_gather(outcome):
            for key, result in rank_outcome:
                if key not in results:
                    record((unique[key],), [result])
    reporter.log(f"rank {world.rank}: trained {trained} jobs of {len(todo)}")
    return results

"""Work units: how the planner's jobs are grouped for execution and shared between ranks.

A unit is an ensemble (jobs sharing a spec and a training-set size, up to the device's member
limit), a single loop job, or a data-parallel job trained by every rank together. Units are
what ranks exchange: an ensemble is never split, so every job's numbers are the same whether
the run uses one process or many.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ddrank.engine.job import TrainJob

UnitKind = Literal["ensemble", "loop", "data_parallel"]


@dataclass(frozen=True)
class Unit:
    kind: UnitKind
    jobs: tuple[TrainJob, ...]
    images: int  # training-set size (every job of a unit has the same)

    @property
    def steps(self) -> int:
        """Optimiser steps of one member over the whole training."""
        spec = self.jobs[0].spec
        return spec.epochs * -(-self.images // spec.batch_size)


def make_units(
    jobs: list[TrainJob],
    set_size: Callable[[str], int],
    *,
    backend: str,
    member_limit: Callable[[TrainJob, int], int],
    data_parallel_images: int | None = None,
) -> list[Unit]:
    """Group jobs in plan order into units; ``member_limit(job, set size)`` caps an ensemble."""
    groups: dict[tuple, list[TrainJob]] = defaultdict(list)
    for job in jobs:
        groups[(job.spec, set_size(job.train_set))].append(job)
    units: list[Unit] = []
    for (_spec, n), group in groups.items():
        big = data_parallel_images is not None and n >= data_parallel_images
        if big or backend == "loop" or (backend == "auto" and len(group) == 1):
            units += [Unit("data_parallel" if big else "loop", (job,), n) for job in group]
            continue
        limit = member_limit(group[0], n)
        units += [Unit("ensemble", tuple(group[i : i + limit]), n) for i in range(0, len(group), limit)]
    return units


def assign(costs: list[float], ranks: int) -> list[list[int]]:
    """Longest-processing-time assignment of unit indices to ranks; deterministic for equal inputs."""
    loads = [0.0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(ranks), key=lambda r: (loads[r], r))
        shares[rank].append(index)
        loads[rank] += costs[index]
    return shares

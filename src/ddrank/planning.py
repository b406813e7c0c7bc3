"""Sizing a run before asking for machines: the work units, their measured costs, and how they
split over W ranks (``ddrank plan``).

Each distinct kind of unit is timed for a few optimiser steps on this machine's device, on
stand-in images of the unit's shape, with its members and batch capped so one probe stays
short (then scaled linearly). A unit's time is its steps times that step time plus its
evaluation passes. Ranks get units longest first, as the distributed runner assigns them;
data-parallel units are shared by every rank.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from ddrank.data.real import DATASETS
from ddrank.engine.allocator import keep_freed_memory
from ddrank.engine.common import augment_key, epoch_batches
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainSpec
from ddrank.engine.options import EngineOptions
from ddrank.engine.runner import image_cost
from ddrank.engine.units import Unit, assign
from ddrank.labels.teachers import Teacher, TeacherEnsemble, freeze
from ddrank.models import create_model

PROBE_ELEMENTS = 5e7  # members x batch x activation elements per image, for one probe step
PROBE_STEPS = 5  # at least this many timed steps ...
PROBE_SECONDS = 1.0  # ... and at least this long, so millisecond steps are timed at a steady clock
PROBE_WARMUP = 2

# Training-set sizes of the named datasets, for planning full-data jobs without the data
# (derived from DatasetInfo.train_size, where the sizes now live).
TRAIN_IMAGES = {
    e.name: e.value.info.train_size for e in DATASETS.entries() if e.value.info.train_size is not None
}


@dataclass(frozen=True)
class UnitEstimate:
    unit: Unit
    label: str
    seconds: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Seconds per optimiser step of a unit, measured once per (spec, probe members, probe batch)."""

    def __init__(self, device: torch.device, options: EngineOptions):
        self.device, self.options = device, replace(options, cuda_graphs=False)
        self._seen: dict[tuple, float] = {}
        if device.type == "cpu":
            keep_freed_memory()  # as the runner does, so probes pay no page faults it would not

    def __call__(self, unit: Unit) -> float:
        spec = unit.jobs[0].spec
        members, batch = len(unit.jobs), min(unit.images, spec.batch_size)
        cost = image_cost(spec) * (1 + len(spec.labels.teachers))
        probe_members = max(1, min(members, int(PROBE_ELEMENTS // (cost * batch))))
        probe_batch = max(1, min(batch, int(PROBE_ELEMENTS // (cost * probe_members))))
        key = (spec, probe_members, probe_batch)
        if key not in self._seen:
            self._seen[key] = self._measure(spec, probe_members, probe_batch)
        return self._seen[key] * (members / probe_members) * (batch / probe_batch)

    def _measure(self, spec: TrainSpec, members: int, batch: int) -> float:
        device = self.device
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(batch, spec.channels, spec.size, spec.size, generator=gen).to(device)
        labels = torch.arange(batch, device=device) % spec.num_classes
        soft = torch.randn(batch, spec.num_classes, generator=gen).to(device)
        data = RunData(
            {"probe": TrainingSet(images, labels, "probe", soft)},
            {},
            EvalSet(images, labels, "probe"),
            device,
        )
        if spec.labels.mode == "M":
            stand_ins = [
                Teacher(
                    name, freeze(create_model(name, spec.channels, spec.num_classes, spec.size)), "", name
                )
                for name in spec.labels.teachers
            ]
            data.teachers[spec.teachers] = TeacherEnsemble(stand_ins, spec.labels.ensemble).to(device)
        from ddrank.engine.job import TrainJob

        jobs = [TrainJob(spec, "probe", None, 0.01, seed, f"probe{seed}") for seed in range(members)]
        trainer = EnsembleTrainer(jobs, data, self.options)
        idx = epoch_batches(trainer.keys, batch, batch, 0)[0]
        for step in range(PROBE_WARMUP):
            trainer._train_step(idx, augment_key(trainer.keys, step), 1.0)
        times: list[float] = []
        step = PROBE_WARMUP
        while len(times) < PROBE_STEPS or (sum(times) < PROBE_SECONDS and len(times) < 20 * PROBE_STEPS):
            step += 1
            _sync(device)
            start = time.perf_counter()
            trainer._train_step(idx, augment_key(trainer.keys, step), 1.0)
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)  # a busy neighbour process slows single steps, not the median


def estimate_units(
    units: list[Unit], labels: list[str], timer: StepTimer, eval_images: int
) -> list[UnitEstimate]:
    """Each unit's estimated seconds: steps x measured step time, plus its evaluation passes."""
    out = []
    for unit, label in zip(units, labels, strict=True):
        spec = unit.jobs[0].spec
        step = timer(unit)
        batch = min(unit.images, spec.batch_size)
        # A forward pass costs about a third of a training step per image.
        evaluation = step / (3 * batch) * eval_images * (1 + len(spec.eval_epochs))
        out.append(UnitEstimate(unit, label, unit.steps * step + evaluation))
    return out


def split(estimates: list[UnitEstimate], world_size: int) -> tuple[list[list[UnitEstimate]], float]:
    """The units each rank trains, and the seconds every rank spends on shared data-parallel units."""
    own = [e for e in estimates if e.unit.kind != "data_parallel"]
    shared = sum(e.seconds for e in estimates if e.unit.kind == "data_parallel") / world_size
    shares = assign([e.seconds for e in own], world_size)
    return [[own[i] for i in share] for share in shares], shared

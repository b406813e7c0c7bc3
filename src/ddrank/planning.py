"""Sizing a run before asking for machines: the work units, their measured costs, and how they
split over W ranks (``ddrank plan``).

An evaluation is planned by its evaluator (a dry run: real data, no teachers); a sweep by the same
job planner on stand-in sets sized from the presets and the datasets' shapes, so a cluster can be
sized before any data is at hand.

Each distinct kind of unit is timed for a few optimiser steps on this machine's device, on
stand-in images of the unit's shape, with its members and batch capped so one probe stays
short (then scaled linearly). A unit's time is its steps times that step time plus its
evaluation passes. Ranks get units longest first, as the distributed runner assigns them;
data-parallel units are shared by every rank.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from ddrank.data.real import DATASETS, dataset_info
from ddrank.data.synthetic import SyntheticSet
from ddrank.engine.allocator import keep_freed_memory
from ddrank.engine.common import augment_key, epoch_batches
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec
from ddrank.engine.options import EngineOptions
from ddrank.engine.runner import image_cost, max_members
from ddrank.engine.units import Unit, assign, make_units
from ddrank.errors import InputError
from ddrank.evaluation import Evaluator
from ddrank.evaluation.jobs import PlanEntry, plan_jobs
from ddrank.labels.teachers import Teacher, TeacherEnsemble, freeze
from ddrank.models import create_model
from ddrank.protocols import load_protocol
from ddrank.settings import RunSettings
from ddrank.sweep import SweepEntry

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
            keep_freed_memory()  # as training does, so probes pay no page faults it would not

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


# -- what to size --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """A run to size: what it is, its jobs, its training-set sizes, and the images each student is
    evaluated on (validation + test)."""

    what: str
    jobs: list[TrainJob]
    set_sizes: dict[str, int]
    eval_images: int


def plan_evaluation(settings: RunSettings, syn: SyntheticSet | None, method: str = "synthetic") -> PlannedRun:
    """The jobs of one evaluation, planned by its evaluator without teachers; without a set, a stand-in
    of ``settings.ipc`` images per class."""
    evaluator = Evaluator(settings)
    if syn is None:
        if settings.ipc is None:
            raise InputError("planning without a synthetic set needs its images per class (settings.ipc)")
        info = evaluator.real.info
        n = info.num_classes * settings.ipc
        images = torch.zeros(n, info.channels, info.size, info.size)
        syn = SyntheticSet(images, None, None, "normalized", "<stand-in>", "tensor")
    validated = evaluator.validate(syn)
    jobs, data, _ = evaluator.plan({method: validated}, dry_run=True)
    set_sizes = {name: len(t) for name, t in data.train_sets.items()}
    eval_images = data.test.images.shape[0] + max(
        (v.images.shape[0] for v in data.val_sets.values()), default=0
    )
    protocol = evaluator.protocol_for(validated.ipc).name
    what = f"{evaluator.info.name} · protocol {protocol} · IPC {validated.ipc}"
    return PlannedRun(what, jobs, set_sizes, eval_images)


def train_images(dataset: str) -> int:
    """The training-set size of a named dataset, for planning without its data."""
    info = dataset_info(dataset)
    return TRAIN_IMAGES.get(info.name, info.num_classes * 1000)


class _ShapeSets:
    """Stand-in sets named after what they would hold and sized from the datasets' shapes."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def _sized(self, name: str, size: int) -> tuple[str, str]:
        self.sizes[name] = size
        return name, name

    def test(self, entry: PlanEntry) -> tuple[str, str]:
        return "test", f"test:{entry.info.name}"

    def test_view(self, entry: PlanEntry, transforms: tuple[dict, ...]) -> tuple[str, str]:
        name = f"test:{entry.info.name}:{json.dumps(list(transforms), sort_keys=True)}"
        return name, name

    def validation(
        self, entry: PlanEntry, round: int, seed: int, transforms: tuple[dict, ...] = ()
    ) -> tuple[str, str]:
        name = f"val:{entry.info.name}:{round}"
        if transforms:
            name += f":{json.dumps(list(transforms), sort_keys=True)}"
        return name, name

    def synthetic(self, entry: PlanEntry) -> tuple[str, str]:
        return self._sized(f"syn:{entry.name}", entry.info.num_classes * entry.ipc)

    def random(self, entry: PlanEntry, round: int, seed: int) -> tuple[str, str]:
        # shared by every method with the same dataset, IPC, round and label mode
        name = f"random:{entry.info.name}:{entry.ipc}:{round}:{entry.protocol.labels.mode}"
        return self._sized(name, entry.info.num_classes * entry.ipc)

    def real(self, entry: PlanEntry) -> tuple[str, str]:
        return self._sized(f"real:{entry.info.name}", train_images(entry.info.name))


def plan_sweep(entries: Sequence[SweepEntry], settings: RunSettings) -> PlannedRun:
    """The jobs of every entry from presets and dataset shapes alone (each shared job once), with
    ``settings``' metric, rounds, seed and acc(real, hard) choice."""
    planned: list[PlanEntry] = []
    eval_images = 0
    for entry in entries:
        info = dataset_info(entry.dataset)
        protocol = load_protocol(
            entry.protocol or entry.method, dataset=info.name, ipc=entry.ipc, fidelity=settings.fidelity
        )
        given = settings.real_acc
        if given is None and protocol.full_data.source == "published":
            given = "published"
        train_real = given is None or (given == "published" and protocol.full_data.published_acc is None)
        rounds = settings.rounds or protocol.rounds
        planned.append(PlanEntry(entry.name, protocol, info, entry.ipc, rounds, train_real=train_real))
        n = train_images(info.name)
        held_out = int(n * protocol.val_fraction) if protocol.selection == "honest" else 0
        eval_images = max(eval_images, held_out + n // 5)
    sets = _ShapeSets()
    jobs, _ = plan_jobs(
        planned, sets, metric=settings.metric, base_seed=settings.seed, precision=settings.precision_for
    )
    unique: dict[str, TrainJob] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    return PlannedRun(f"{len(entries)} evaluations", list(unique.values()), sets.sizes, eval_images)


def plan_report(run: PlannedRun, world_sizes: Sequence[int], settings: RunSettings) -> Iterator[str]:
    """Lines of the plan: the job count, then per world size its units, estimated wall time and total
    work (and each rank's share up to 8 ranks). Units are timed on ``settings``' device as they come."""
    device, options = settings.torch_device, settings.options
    limits: dict[tuple, int] = {}

    def limit(job: TrainJob, n: int) -> int:
        key = (job.spec, n)
        if key not in limits:
            limits[key] = max_members(job.spec, min(n, job.spec.batch_size), device, options)
        return limits[key]

    yield f"{run.what}: {len(run.jobs)} jobs; timing each kind of unit on {device} …"
    timer = StepTimer(device, options)
    for world_size in world_sizes:
        units = make_units(
            run.jobs,
            run.set_sizes.__getitem__,
            backend=settings.backend,
            member_limit=limit,
            data_parallel_images=options.data_parallel_images if world_size > 1 else None,
        )
        labels = [f"{u.jobs[0].spec.model} ×{len(u.jobs)}" for u in units]
        estimates = estimate_units(units, labels, timer, run.eval_images)
        shares, shared = split(estimates, world_size)
        loads = [shared + sum(e.seconds for e in share) for share in shares]
        total = sum(e.seconds for e in estimates)
        kinds = {k: sum(u.kind == k for u in units) for k in ("ensemble", "loop", "data_parallel")}
        yield (  # two short lines: each fits 80 columns
            f"world size {world_size}: estimated wall time {duration(max(loads))}, "
            f"total work {duration(total)}"
        )
        yield (
            f"  {len(units)} units ({kinds['ensemble']} ensembles, {kinds['loop']} single, "
            f"{kinds['data_parallel']} data-parallel); idlest rank {duration(min(loads))}"
        )
        if world_size <= 8:
            for rank, (share, load) in enumerate(zip(shares, loads, strict=True)):
                jobs_here = sum(len(e.unit.jobs) for e in share)
                yield f"  rank {rank}: {len(share)} units, {jobs_here} jobs, {duration(load)}"


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- evaluate --dry-run ----------------------------------------------------------------------------


def dry_run(
    settings: RunSettings,
    syn: SyntheticSet | None = None,
    method: str = "synthetic",
    *,
    resize: bool = False,
    strict: bool = False,
) -> dict:
    """What ``ddrank evaluate`` would do, without real data or training: the resolved protocol (with its
    fidelity and hash), where acc(real, hard) comes from, the deviations, and the job plan per cell.

    A set is validated as a real run validates it (shape, values, labels, IPC; ``resize`` and ``strict``
    as there), against the dataset's registered shape, so a plan is never printed for a set the run
    would refuse; its warnings are in ``warnings``. The IPC is the set's, else the settings'. Refusals
    (a protocol DD-Ranking cannot run, a model that cannot take the images) raise as in a real run.
    """
    from ddrank.evaluation.evaluator import _check_buildable, check_soft_labels
    from ddrank.protocols.protocol import describe_full_data

    evaluator = Evaluator(settings)
    validated = None
    if syn is not None:
        validated = evaluator.validate(syn, resize=resize, strict=strict, read_data=False)
    info = evaluator.info
    ipc = validated.ipc if validated is not None else settings.ipc
    if ipc is None:
        raise InputError("a dry run needs the synthetic set's images per class: give --ipc or --images")
    protocol = evaluator.protocol_for(ipc)
    _check_buildable(protocol, info)
    if validated is not None:
        check_soft_labels(protocol, validated, method)
    definition = evaluator.definition
    real_acc, real_source = (None, None)
    if definition.needs_real:
        real_acc, real_source = evaluator.real_accuracy(protocol)
        if real_acc is None:
            real_source = describe_full_data(protocol.full_data)
    rounds = settings.rounds or protocol.rounds
    set_lr = validated.lr if validated is not None else None
    counts = validated.uneven_counts if validated is not None else ()
    entry = PlanEntry(method, protocol, info, ipc, rounds, set_lr, None, real_acc is None, counts)
    jobs, plans = plan_jobs(
        [entry],
        _ShapeSets(),
        metric=settings.metric,
        base_seed=settings.seed,
        precision=settings.precision_for,
    )
    cells = []
    first = plans[method].rounds[0].cells if plans[method].rounds else {}
    for name, planned in first.items():
        spec = planned.spec
        cells.append(
            {
                "cell": name,
                "set": planned.cell.source,
                "variant": planned.cell.variant,
                "model": spec.model,
                "labels": spec.labels.mode,
                "loss": spec.labels.loss,
                "augment": spec.augment.model_dump(mode="json", exclude_defaults=True),
                "optimizer": spec.optimizer.name,
                "schedule": spec.schedule.model_dump(mode="json", exclude_defaults=True),
                "epochs": spec.epochs,
                "batch_size": spec.batch_size,
                "learning_rates": list(planned.learning_rates),
                "checkpoints": list(spec.eval_epochs),
                "selection": "validation split, final epoch"
                if planned.val_set
                else "best test accuracy over lrs and checkpoints"
                if protocol.selection == "reference"
                else "final epoch",
                "test_transforms": list(protocol.test_transforms_for(planned.cell.variant))
                if planned.cell.source != "real"
                else [],
                "random_data": protocol.random_data if planned.cell.source == "random" else None,
                "jobs_per_round": len(planned.keys),
            }
        )
    return {
        "dataset": info.name,
        "ipc": ipc,
        "metric": settings.metric,
        "rounds": rounds,
        "fidelity": protocol.fidelity,
        "protocol": protocol.model_dump(mode="json", exclude={"deviations"})
        | {"content_hash": protocol.content_hash()},
        "reference_source": protocol.reference_source,
        "full_data": {"accuracy": real_acc, "source": real_source},
        "training_space": "zca" if protocol.zca else "normalized",
        "deviations": [d.model_dump() for d in evaluator.deviations(protocol)],
        "warnings": [w.message for w in validated.warnings] if validated is not None else [],
        "plan": {"jobs": len(jobs), "cells": cells},
    }


def dry_run_lines(report: dict, width: int = 80) -> Iterator[str]:
    """The dry-run report for a terminal, one fact per line and each cell on a few short lines (wrapped
    at ``width``), with augmentation, optimiser and schedule in words; ``--json`` keeps the raw form."""
    proto = report["protocol"]
    reference = report["reference_source"] or "no published reference"
    yield f"protocol {proto['name']} ({report['fidelity']}, hash {proto['content_hash']})"
    yield f"  {report['dataset']} · IPC {report['ipc']} · {report['metric']} · {report['rounds']} rounds"
    yield from _wrapped(f"reproduces: {reference}", width)
    yield from _wrapped(f"training space: {space_words(report)}", width)
    full = report["full_data"]
    if full["source"] is not None:
        shown = "trained" if full["accuracy"] is None else f"{full['accuracy']:g}"
        yield from _wrapped(f"acc(real, hard): {shown} ({full['source']})", width)
    yield f"deviations: {len(report['deviations'])} (listed on stderr)"
    yield f"plan: {report['plan']['jobs']} jobs"
    for cell in report["plan"]["cells"]:
        lrs = ", ".join(f"{lr:g}" for lr in cell["learning_rates"])
        yield from _wrapped(
            f"  {cell['cell']} ({cell['set']}, {cell['variant']}): {cell['model']}, labels {cell['labels']} "
            f"({cell['loss']}), {cell['epochs']} epochs, batch {cell['batch_size']}",
            width,
        )
        details = [
            f"augmentation: {augment_words(cell['augment'])}",
            f"optimiser: {OPTIMISERS.get(cell['optimizer'], cell['optimizer'])}, "
            f"{schedule_words(cell['schedule'])}, lr {lrs}",
            f"selection: {cell['selection']}",
        ]
        if cell["checkpoints"]:
            details.append(f"test checkpoints every {cell['checkpoints'][0]} epochs")
        if cell["test_transforms"]:
            details.append("test transforms: " + ", ".join(map(_step_words, cell["test_transforms"])))
        if cell["random_data"]:
            details.append(f"random data as {cell['random_data']}")
        for detail in details:
            yield from _wrapped("    " + detail, width, indent="      ")


OPTIMISERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def space_words(report: dict) -> str:
    """What every image (set, random subsets, test) is turned into before a student sees it: ZCA-whitened
    changes what a set's values mean, so a plan says it."""
    proto = report["protocol"]
    if report["training_space"] == "zca":
        return f"ZCA-whitened (regularisation {proto['zca_regularization']:g})"
    return f"normalised ({proto['stats'] or report['dataset']} mean and std)"


def _wrapped(line: str, width: int, indent: str = "    ") -> Iterator[str]:
    import textwrap

    if len(line) <= width:
        yield line
        return
    yield from textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)


def _step_words(step: dict) -> str:
    """A transform step ({name: random_resized_crop, scale: [0.08, 1]}) as "random resized crop
    scale=[0.08, 1]"."""
    values = [f"{k}={json.dumps(v)}" for k, v in step.items() if k != "name"]
    return " ".join([str(step.get("name", "?")).replace("_", " "), *values])


def augment_words(augment: dict) -> str:
    """An augmentation (the non-default fields of an AugmentSpec) in words: "DSA color, crop, ...; CutMix
    β=1"."""
    parts = [_step_words(step) for step in augment.get("transforms", ())]
    if augment.get("dsa"):
        mode = augment.get("dsa_mode", "S")
        parts.append("DSA " + ", ".join(augment["dsa"].split("_")) + (" (mode M)" if mode == "M" else ""))
    mix = ""
    if augment.get("mixup") is not None:
        mix = f"Mixup α={augment['mixup']:g}"
    elif augment.get("cutmix") is not None:
        mix = f"CutMix β={augment['cutmix']:g}"
    if mix and augment.get("mix_prob", 1.0) != 1.0:
        mix += f" with probability {augment['mix_prob']:g}"
    text = "; ".join(part for part in (", ".join(parts), mix) if part)
    return text or "none"


def schedule_words(schedule: dict) -> str:
    """A schedule (the non-default fields of a ScheduleSpec) in words: "step ×0.1 at 50%" (of the epochs)."""
    kind = schedule.get("kind", "step")
    if kind == "constant":
        return "constant lr"
    if kind == "cosine":
        period, horizon = schedule.get("period", 1.0), schedule.get("horizon")
        extra = [f"period {period:g}" if period != 1.0 else "", f"over {horizon} epochs" if horizon else ""]
        return " ".join(["cosine schedule", *filter(None, extra)])
    milestones = schedule.get("milestones", (0.5,))
    at = ", ".join(f"{100 * m:g}%" for m in milestones)
    return f"step ×{schedule.get('gamma', 0.1):g} at {at}"

"""The one job planner: evaluations → the grid of training jobs (round × cell × learning rate).

The evaluator plans with real sets (tensors on the device); ``ddrank plan`` and sweeps plan with
stand-ins named after what they would hold, to size a run before any data is at hand. Both go
through :func:`plan_jobs`, so they choose the same learning rates and key jobs the same way
(:func:`ddrank.engine.job.job_key`): jobs with equal keys are trained once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Protocol as Interface

from ddrank import rng
from ddrank.data.real import DatasetInfo
from ddrank.engine.job import TrainJob, TrainSpec, job_key
from ddrank.metrics.definitions import Cell, metric_definition
from ddrank.protocols import Protocol


@dataclass(frozen=True)
class PlanEntry:
    """One evaluation to plan: a named set of ``ipc`` images per class under a resolved protocol."""

    name: str
    protocol: Protocol
    info: DatasetInfo
    ipc: int
    rounds: int
    set_lr: float | None = None  # the set's own learning rate (used when the protocol allows it)
    teachers: str | None = None  # the loaded teacher ensemble's fingerprint (None: a placeholder)
    train_real: bool = True  # False when acc(real, hard) is given or published
    class_counts: tuple[int, ...] = ()  # images per class of a set whose classes differ in size


@dataclass(frozen=True)
class PlannedCell:
    """A cell of one round: how it trains, on which sets, over which learning rates, under which keys."""

    cell: Cell
    spec: TrainSpec
    train_set: str
    val_set: str | None
    learning_rates: tuple[float, ...]
    keys: tuple[str, ...]


@dataclass
class PlannedRound:
    round: int
    seed: int
    cells: dict[str, PlannedCell] = field(default_factory=dict)


@dataclass
class PlannedEvaluation:
    """What one entry's rounds need, kept between planning and scoring."""

    protocol: Protocol
    cells: list[Cell]
    rounds: list[PlannedRound] = field(default_factory=list)


class SetSource(Interface):
    """Where the planner's sets come from; each method returns the set's (name, fingerprint)."""

    def test(self, entry: PlanEntry) -> tuple[str, str]: ...

    def test_view(self, entry: PlanEntry, transforms: tuple[dict, ...]) -> tuple[str, str]: ...

    def validation(
        self, entry: PlanEntry, round: int, seed: int, transforms: tuple[dict, ...] = ()
    ) -> tuple[str, str]: ...

    def synthetic(self, entry: PlanEntry) -> tuple[str, str]: ...

    def random(self, entry: PlanEntry, round: int, seed: int) -> tuple[str, str]: ...

    def real(self, entry: PlanEntry) -> tuple[str, str]: ...


def cell_learning_rates(protocol: Protocol, cell: Cell, set_lr: float | None = None) -> list[float]:
    """The learning rates a cell trains with: the synthetic set's hard-label run (``hard``), the random
    subsets (``random``) and the synthetic set under the protocol (``syn``) each follow the protocol's
    ``lr_search`` (see :meth:`ddrank.protocols.Protocol.learning_rates`)."""
    if cell.source == "random":
        return list(protocol.learning_rates("random"))
    run = "hard" if cell.variant == "hard" else "syn"
    return list(protocol.learning_rates(run, set_lr))


def student_spec(
    protocol: Protocol,
    info: DatasetInfo,
    variant: str,
    precision: str,
    teachers: str | None = None,
    test_view: str = "",
) -> TrainSpec:
    """How a student of ``protocol`` trains in a cell variant (P, hard labels, or no augmentation).

    Augmentation follows :meth:`~ddrank.protocols.Protocol.augment_for` (e.g. a ``hard_augment:
    transforms`` protocol trains the hard-label run without DSA or mixing). Mode-M jobs carry the
    teacher ensemble's fingerprint; without teachers (a dry run or a plan) a placeholder derived from
    the teacher names stands in for it. ``test_view`` names the test images it is scored on when the
    variant has test transforms.
    """
    eval_epochs: tuple[int, ...] = ()
    if protocol.selection == "reference":
        eval_epochs = checkpoint_epochs(protocol.eval_every, protocol.epochs)
    labels = protocol.labels.hard() if variant == "hard" else protocol.labels
    augment = protocol.augment_for(variant)  # type: ignore[arg-type]
    teacher_fp = ""
    if labels.mode == "M":
        teacher_fp = teachers if teachers is not None else "dry-run:" + ",".join(labels.teachers)
    return TrainSpec(
        protocol.model,
        info.channels,
        info.num_classes,
        info.size,
        protocol.optimizer,
        protocol.schedule,
        protocol.epochs,
        protocol.batch_size,
        augment,
        eval_epochs,
        precision,
        labels,
        teacher_fp,
        test_view,
    )


def full_data_spec(protocol: Protocol, info: DatasetInfo, precision: str) -> TrainSpec:
    """How acc(real, hard) is trained: the protocol's full-data recipe (a reference protocol also records
    test checkpoints every ``eval_every`` epochs and keeps the best, as DD-Ranking's full-data loop does)."""
    recipe = protocol.full_data
    model = recipe.model or protocol.model
    spec = TrainSpec.from_recipe(recipe, model, info.channels, info.num_classes, info.size, precision)
    if protocol.selection == "reference":
        spec = replace(spec, eval_epochs=checkpoint_epochs(protocol.eval_every, recipe.epochs))
    return spec


def checkpoint_epochs(every: int, epochs: int) -> tuple[int, ...]:
    """The epochs (1-based) before the last at which reference selection records test accuracy."""
    return tuple(range(every, epochs, every))


def plan_jobs(
    entries: list[PlanEntry],
    sets: SetSource,
    *,
    metric: str,
    base_seed: int,
    precision: Callable[[Protocol], str],
    sources: Collection[str] | None = None,
) -> tuple[list[TrainJob], dict[str, PlannedEvaluation]]:
    """Every job of every entry in plan order (round, entry, cell, learning rate), and per entry what
    scoring needs. Round r of every entry uses the seed derived from (base_seed, r); its students
    train in ``precision(protocol)`` (fp32 or bf16). ``sources``
    (e.g. ``{"random", "real"}`` for calibration) keeps only the cells trained on those sets.

    Entries that share a job (the same random subset or full-data run) list it each; the runner
    trains every key once.
    """
    definition = metric_definition(metric)
    plans = {
        e.name: PlannedEvaluation(
            e.protocol,
            [
                c
                for c in definition.cells_for(e.protocol.labels.mode != "hard")
                if sources is None or c.source in sources
            ],
        )
        for e in entries
    }
    jobs: list[TrainJob] = []
    for r in range(max((e.rounds for e in entries), default=0)):
        seed = rng.derive_seed(base_seed, r)
        for entry in entries:
            if r >= entry.rounds:
                continue
            protocol, info, floats = entry.protocol, entry.info, precision(entry.protocol)
            _, test_fp = sets.test(entry)
            val_name, val_fp = None, None  # reference selection holds nothing out
            if protocol.selection == "honest":
                val_name, val_fp = sets.validation(entry, r, seed)
            planned = PlannedRound(r, seed)
            for cell in plans[entry.name].cells:
                if cell.source == "real":
                    if not entry.train_real:
                        continue
                    (set_name, set_fp), val, cell_val_fp = sets.real(entry), None, None
                    spec, rates = full_data_spec(protocol, info, floats), [protocol.full_data.lr]
                    cell_test_fp = test_fp
                else:
                    view, cell_test_fp, val, cell_val_fp = "", test_fp, None, None
                    if protocol.selection == "honest":
                        val, cell_val_fp = val_name, val_fp
                    if transforms := protocol.test_transforms_for(cell.variant):
                        view, cell_test_fp = sets.test_view(entry, transforms)
                        if val is not None:  # the lr is chosen on the view the test set is scored on
                            val, cell_val_fp = sets.validation(entry, r, seed, transforms)
                    spec = student_spec(protocol, info, cell.variant, floats, entry.teachers, view)
                    rates = cell_learning_rates(protocol, cell, entry.set_lr)
                    if cell.source == "syn":
                        set_name, set_fp = sets.synthetic(entry)
                    else:
                        set_name, set_fp = sets.random(entry, r, seed)
                keys = [job_key(spec, set_fp, cell_val_fp, cell_test_fp, lr, seed) for lr in rates]
                for lr, key in zip(rates, keys, strict=True):
                    jobs.append(TrainJob(spec, set_name, val, lr, seed, key, cell.name, r))
                planned.cells[cell.name] = PlannedCell(cell, spec, set_name, val, tuple(rates), tuple(keys))
            plans[entry.name].rounds.append(planned)
    return jobs, plans

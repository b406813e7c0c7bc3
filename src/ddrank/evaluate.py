"""The public entry point: score synthetic sets against random real subsets under one protocol.

``evaluate`` scores one set; :class:`Evaluator` scores several sets at once so that shared
work (random subsets, the full-data baseline, teacher labels) is planned and trained once.

A metric is a set of *cells*, each a (set, protocol variant) pair trained over the lr grid:

- ``lrs``: syn and random under the protocol P, syn with hard labels (for HLR, when P's labels
  are soft) and the full-data baseline;
- ``ars``: syn and random under P with and without its training-time augmentation;
- ``acc``: syn under P ("general evaluation").
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ddrank import __version__, rng
from ddrank.augment import DSA, ZCA, transforms_from_spec
from ddrank.data.real import DatasetInfo, RealData, dataset_info, load_real, normalize
from ddrank.data.sampling import random_subset, validation_split
from ddrank.data.synthetic import SyntheticSet, ValidatedSet, load_synthetic, validate_synthetic
from ddrank.engine.job import (
    EvalSet,
    JobCache,
    JobResult,
    MemoryCache,
    RunData,
    TrainingSet,
    TrainJob,
    TrainSpec,
    job_key,
)
from ddrank.engine.options import EngineOptions, default_precision
from ddrank.engine.runner import Backend, run_jobs
from ddrank.errors import ConfigError, InputError
from ddrank.labels import get_loss
from ddrank.labels.teachers import TeacherEnsemble, load_teacher, resolve_teachers
from ddrank.metrics import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    summarize,
)
from ddrank.metrics.stats import Summary
from ddrank.models import canonical_model_name, create_model
from ddrank.paths import cache_dir
from ddrank.progress import Reporter, Silent
from ddrank.protocols import Protocol, load_protocol

Metric = Literal["lrs", "ars", "acc"]
METRICS: tuple[str, ...] = ("lrs", "ars", "acc")

# Per-round values summarised for each metric (accuracies and scores are fractions).
SCORE_FIELDS: dict[str, tuple[str, ...]] = {
    "lrs": ("acc_syn", "acc_random", "acc_syn_hard", "acc_real", "hlr", "ior", "lrs"),
    "ars": ("acc_syn_aug", "acc_random_aug", "acc_syn_noaug", "acc_random_noaug", "ars"),
    "acc": ("acc_syn",),
}


@dataclass(frozen=True)
class Cell:
    """One column of an evaluation: a set (syn, random or real) trained under a protocol variant."""

    name: str
    source: Literal["syn", "random", "real"]
    variant: Literal["P", "hard", "noaug", "full"]


def cells_for(metric: str, protocol: Protocol) -> list[Cell]:
    if metric == "lrs":
        cells = [Cell("syn", "syn", "P"), Cell("random", "random", "P")]
        if protocol.labels.mode != "hard":
            cells.append(Cell("syn_hard", "syn", "hard"))
        return [*cells, Cell("real", "real", "full")]
    if metric == "ars":
        return [
            Cell("syn_aug", "syn", "P"),
            Cell("random_aug", "random", "P"),
            Cell("syn_noaug", "syn", "noaug"),
            Cell("random_noaug", "random", "noaug"),
        ]
    if metric == "acc":
        return [Cell("syn", "syn", "P")]
    raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class Run:
    """One trained student: its learning rate and final accuracies."""

    lr: float
    test_acc: float
    val_acc: float | None
    best_test_acc: float  # best over test checkpoints (used only by reference selection)


@dataclass
class RoundResult:
    """Cell accuracies, chosen learning rates, scores and every run behind them, for one round."""

    round: int
    seed: int
    values: dict[str, float]
    lrs: dict[str, float]
    runs: dict[str, list[Run]]

    def __getattr__(self, name: str) -> float:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Evaluation:
    """Scores of one synthetic set under one protocol and metric, over several rounds."""

    method: str
    dataset: str
    ipc: int
    protocol: Protocol
    metric: str
    weight: float
    rounds: list[RoundResult]
    acc_real_source: str | None
    provenance: dict[str, Any]
    summaries: dict[str, Summary] = field(init=False)

    def __post_init__(self) -> None:
        names = [n for n in SCORE_FIELDS[self.metric] if all(n in r.values for r in self.rounds)]
        self.summaries = {name: summarize([r.values[name] for r in self.rounds]) for name in names}

    def row(self) -> dict[str, Any]:
        """The flat summary: means, standard deviations (ddof 1) and 95% CIs, all fractions."""
        out: dict[str, Any] = {"method": self.method, "dataset": self.dataset, "ipc": self.ipc}
        for name, s in self.summaries.items():
            d = s.as_dict()
            out |= {f"{name}_mean": d["mean"], f"{name}_std": d["std"]}
            out |= {f"{name}_ci_low": d["ci_low"], f"{name}_ci_high": d["ci_high"]}
        out |= {
            "metric": self.metric,
            "rounds": len(self.rounds),
            "weight": self.weight,
            "protocol": self.protocol.name,
            "protocol_hash": self.protocol.content_hash(),
            "student": self.protocol.model,
            "labels": self.protocol.labels.mode,
            "selection": self.protocol.selection,
            "optimistic": self.protocol.optimistic,
            "std_ddof": 1,
            "confidence": 0.95,
        }
        if self.acc_real_source is not None:
            out["acc_real_source"] = self.acc_real_source
        return out

    def to_dict(self) -> dict[str, Any]:
        """The row plus every round's raw accuracies, chosen learning rates and seeds."""
        rounds = []
        for r in self.rounds:
            d: dict[str, Any] = {"round": r.round, "seed": r.seed, **r.values}
            d |= {f"lr_{cell}": lr for cell, lr in r.lrs.items()}
            d["runs"] = {cell: [vars(run) for run in runs] for cell, runs in r.runs.items()}
            rounds.append(d)
        return self.row() | {"per_round": rounds, "provenance": self.provenance}


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TrainingSpace:
    """Maps real and synthetic images into the space students train in: normalised or ZCA-whitened."""

    def __init__(self, real: RealData, zca: ZCA | None):
        self.info, self.zca = real.info, zca
        self.tag = "normalized" if zca is None else f"zca:{zca.fingerprint}"

    def real(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 real images → training space (ZCA is fitted and applied on [0, 1] pixels, as MTT does)."""
        if self.zca is None:
            return normalize(images, self.info)
        return self.zca.apply(images.float() / 255.0)

    def synthetic(self, images: torch.Tensor, space: str, protocol: str) -> torch.Tensor:
        mean = torch.tensor(self.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std).view(1, -1, 1, 1)
        if self.zca is None:
            if space == "normalized":
                return images
            if space == "pixel":
                return (images - mean) / std
            raise ConfigError(
                f"images in space {space!r} need a protocol with ZCA whitening; {protocol!r} has none"
            )
        if space == "zca":
            return images
        pixels = images if space == "pixel" else images * std + mean
        return self.zca.apply(pixels)


def fitted_zca(real: RealData, regularization: float) -> ZCA:
    """ZCA fitted on the whole real training set in [0, 1] pixels, cached on disk per dataset."""
    path = cache_dir("zca") / f"{real.info.name}-{real.fingerprint[:16]}-{regularization:g}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return ZCA(**stored)
    zca = ZCA.fit(real.train_images.float() / 255.0, regularization)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "mean": zca.mean,
            "transform": zca.transform,
            "inverse": zca.inverse,
            "regularization": zca.regularization,
            "fingerprint": zca.fingerprint,
        },
        tmp,
    )
    tmp.replace(path)
    return zca


@dataclass
class _Planned:
    """What a set's rounds need, kept between planning and scoring."""

    protocol: Protocol
    cells: list[Cell]
    rounds: list[dict[str, Any]]  # per round: seed, and per cell (spec, set name, val name, lrs)


class Evaluator:
    """Scores synthetic sets on one real dataset under one protocol (resolved per IPC)."""

    def __init__(
        self,
        dataset: str = "digits",
        protocol: str | os.PathLike | Protocol | None = None,
        *,
        metric: Metric = "lrs",
        data_root: str | os.PathLike | None = None,
        rounds: int | None = None,
        seed: int = 0,
        weight: float = 0.5,
        real_acc: float | str | None = None,
        teacher_dir: str | os.PathLike | None = None,
        teachers: Sequence[str | os.PathLike] = (),
        backend: Backend = "auto",
        device: str | torch.device | None = None,
        precision: str = "auto",
        options: EngineOptions | None = None,
        cache: JobCache | None = None,
        reporter: Reporter | None = None,
    ):
        self.info = dataset_info(dataset)
        self.protocol_source = protocol if protocol is not None else self.info.name
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.metric = metric
        self.data_root = data_root
        self.rounds, self.seed, self.weight = rounds, int(seed), float(weight)
        if not 0.0 <= self.weight <= 1.0:
            raise InputError(f"weight must lie in [0, 1], got {weight!r}")
        if rounds is not None and rounds < 1:
            raise InputError(f"rounds must be at least 1, got {rounds}")
        if real_acc not in (None, "published"):
            _check_real_accuracy(real_acc)
        self.real_acc = real_acc
        self.teacher_dir, self.teacher_paths = teacher_dir, list(teachers)
        self.backend: Backend = backend
        self.device = _device(device)
        if precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if precision == "bf16" and self.device.type == "cpu":
            raise InputError("bf16 training is for CUDA devices; use --precision fp32 on the CPU")
        self.precision = default_precision(self.device) if precision == "auto" else precision
        self.options = options or EngineOptions()
        self.cache: JobCache = MemoryCache() if cache is None else cache
        self.reporter = reporter or Silent()
        self._real: RealData | None = None
        self._spaces: dict[float | None, TrainingSpace] = {}
        self._teachers: dict[tuple[str, ...], TeacherEnsemble] = {}

    # ----------------------------------------------------------------- inputs
    def protocol_for(self, ipc: int | None) -> Protocol:
        """The protocol for ``ipc``, with its names checked (no training yet)."""
        if isinstance(self.protocol_source, Protocol):
            protocol = self.protocol_source
            if protocol.dataset not in (None, self.info.name):
                raise ConfigError(
                    f"protocol {protocol.name!r} was resolved for dataset {protocol.dataset!r}, "
                    f"not {self.info.name!r}"
                )
            if ipc is not None and protocol.ipc not in (None, ipc):
                raise ConfigError(
                    f"protocol {protocol.name!r} was resolved for IPC {protocol.ipc}, "
                    f"but the set has IPC {ipc}"
                )
            # Filled in as a preset resolves them, so the same settings hash the same either way.
            resolved_ipc = protocol.ipc if ipc is None else ipc
            protocol = protocol.model_copy(update={"dataset": self.info.name, "ipc": resolved_ipc})
        else:
            protocol = load_protocol(self.protocol_source, dataset=self.info.name, ipc=ipc)
        _check_names(protocol)
        return protocol

    @property
    def real(self) -> RealData:
        if self._real is None:
            stats = self.protocol_for(None).stats
            self._real = load_real(self.info.name, self.data_root, stats=stats)
        return self._real

    def validate(self, syn: SyntheticSet, ipc: int | None = None, resize: bool = False) -> ValidatedSet:
        info = self.real.info
        return validate_synthetic(
            syn, num_classes=info.num_classes, channels=info.channels, size=info.size, ipc=ipc, resize=resize
        )

    def space(self, protocol: Protocol) -> TrainingSpace:
        key = protocol.zca_regularization if protocol.zca else None
        if key not in self._spaces:
            zca = fitted_zca(self.real, key).to(torch.device("cpu")) if key is not None else None
            self._spaces[key] = TrainingSpace(self.real, zca)
        return self._spaces[key]

    def teachers_for(self, protocol: Protocol) -> TeacherEnsemble | None:
        """The protocol's teacher ensemble on the device (trained and cached on first use for digits)."""
        names = protocol.labels.teachers
        if not names or (protocol.labels.mode == "hard"):
            return None
        key = _teacher_key(protocol)
        if key in self._teachers:
            return self._teachers[key]
        info = self.real.info
        if not self.teacher_paths and self.teacher_dir is None and info.name == "digits" and not protocol.zca:
            from ddrank.labels.train import cached_teacher

            paths = [
                cached_teacher(
                    self.real, name, protocol.full_data, device=self.device, reporter=self.reporter
                )
                for name in names
            ]
        else:
            paths = resolve_teachers(
                names, dataset=info.name, teacher_dir=self.teacher_dir, explicit=self.teacher_paths
            )
        loaded = [
            load_teacher(n, p, info.channels, info.num_classes, info.size)
            for n, p in zip(names, paths, strict=True)
        ]
        ensemble = TeacherEnsemble(loaded, protocol.labels.ensemble).to(self.device)
        self._teachers[key] = ensemble
        return ensemble

    def _real_accuracy(self, protocol: Protocol) -> tuple[float | None, str]:
        if self.real_acc is None:
            return None, "trained"
        if self.real_acc == "published":
            recipe = protocol.full_data
            if recipe.published_acc is None:
                raise ConfigError(
                    f"protocol {protocol.name!r} has no published full-data accuracy for {self.info.name!r}; "
                    "give acc(real, hard) as a fraction (e.g. 0.9) or leave it out to train it"
                )
            return recipe.published_acc, f"published: {recipe.published_source}"
        return _check_real_accuracy(self.real_acc), "given"

    # ----------------------------------------------------------------- plan
    def plan(
        self, sets: Mapping[str, ValidatedSet], *, dry_run: bool = False
    ) -> tuple[list[TrainJob], RunData, dict[str, _Planned]]:
        """Every job the sets need (nothing trained), the data they reference, and the plan per set.

        A dry run loads no teacher: jobs that need one carry a placeholder teacher fingerprint
        and random subsets get no teacher labels, so presets can be checked without checkpoints.
        """
        real, device = self.real, self.device
        info = real.info
        protocols = {name: self.protocol_for(vs.ipc) for name, vs in sets.items()}
        for name, proto in protocols.items():
            _check_buildable(proto, info)
            if proto.labels.mode == "S" and sets[name].soft_labels is None:
                raise InputError(
                    f"protocol {proto.name!r} trains on stored soft labels (mode S) but set {name!r} has "
                    "none; give its [N, classes] soft labels (--labels) or use a hard-label protocol"
                )
        spaces = {name: self.space(p) for name, p in protocols.items()}
        teachers = {name: None if dry_run else self.teachers_for(p) for name, p in protocols.items()}
        rounds = self.rounds or max(p.rounds for p in protocols.values())
        val_fraction = _one({p.val_fraction for p in protocols.values()}, "validation fraction")
        space_tags = {s.tag for s in spaces.values()}
        test_space = next(iter(spaces.values()))
        if len(space_tags) > 1:
            raise ConfigError("sets evaluated together must share one training space (ZCA or not)")
        test = EvalSet(
            test_space.real(real.test_images).to(device),
            real.test_labels.to(device),
            _fingerprint(real.fingerprint, "test", test_space.tag),
        )
        data = RunData({}, {}, test, device)
        jobs: list[TrainJob] = []

        def add_set(name: str, images: torch.Tensor, labels: torch.Tensor, fp: str, soft=None) -> str:
            if name not in data.train_sets:
                data.train_sets[name] = TrainingSet(
                    images.to(device), labels.to(device), fp, None if soft is None else soft.to(device)
                )
            return name

        plans: dict[str, _Planned] = {}
        for name, vs in sets.items():
            proto, space = protocols[name], spaces[name]
            images = space.synthetic(vs.images, vs.space or proto.space, proto.name)
            fp = _fingerprint(vs.fingerprint, "syn", space.tag)
            add_set(f"syn:{name}", images, vs.hard_labels, fp, vs.soft_labels)
            for ensemble in filter(None, [teachers[name]]):
                data.teachers[ensemble.fingerprint] = ensemble
            plans[name] = _Planned(proto, cells_for(self.metric, proto), [])

        for r in range(rounds):
            seed = rng.derive_seed(self.seed, r)
            val_idx, pool = validation_split(real.train_labels, info.num_classes, val_fraction, seed)
            val_name = f"val:{r}"
            data.val_sets[val_name] = EvalSet(
                test_space.real(real.train_images[val_idx]).to(device),
                real.train_labels[val_idx].to(device),
                _fingerprint(real.fingerprint, "val", test_space.tag, val_idx),
            )
            for name, vs in sets.items():
                proto, space, ensemble = protocols[name], spaces[name], teachers[name]
                planned = plans[name]
                round_plan: dict[str, Any] = {"seed": seed}
                for cell in planned.cells:
                    if cell.source == "real":
                        published, _ = self._real_accuracy(proto)
                        if published is not None:
                            continue
                        set_name = add_set(
                            "real",
                            space.real(real.train_images),
                            real.train_labels,
                            _fingerprint(real.fingerprint, "real", space.tag),
                        )
                        spec, lrs, val = self._full_data_spec(proto), [proto.full_data.lr], None
                    else:
                        spec = self._student_spec(proto, cell.variant, ensemble)
                        val = val_name if proto.selection == "honest" else None
                        if cell.source == "syn":
                            set_name, lrs = f"syn:{name}", self._lrs(proto, vs.lr)
                        else:
                            set_name = self._random_set(
                                add_set, space, proto, ensemble, vs.ipc, r, seed, pool
                            )
                            lrs = self._lrs(proto, None)
                    fp = data.train_sets[set_name].fingerprint
                    vfp = data.val_sets[val].fingerprint if val else None
                    for lr in lrs:
                        key = job_key(spec, fp, vfp, test.fingerprint, lr, seed)
                        jobs.append(TrainJob(spec, set_name, val, lr, seed, key, cell.name, r))
                    round_plan[cell.name] = (spec, set_name, val, lrs)
                planned.rounds.append(round_plan)
        return jobs, data, plans

    def _random_set(self, add_set, space, proto, ensemble, ipc, r, seed, pool) -> str:
        """A class-balanced random subset of the pool (with teacher soft labels under mode S)."""
        real, info = self.real, self.real.info
        idx = random_subset(real.train_labels, pool, info.num_classes, ipc, seed)
        images = space.real(real.train_images[idx])
        fp = _fingerprint(real.fingerprint, "subset", space.tag, idx)
        soft = None
        if proto.labels.mode == "S" and ensemble is not None:
            # The random baseline gets its soft labels from the teachers, on its own images.
            soft = ensemble.stored_labels(images.to(self.device)).cpu()
            fp = _fingerprint(fp, "teacher-labels", ensemble.fingerprint)
        name = f"random:{ipc}:{r}:{fp[:12]}"
        return add_set(name, images, real.train_labels[idx], fp, soft)

    # ----------------------------------------------------------------- run and score
    def evaluate_sets(self, sets: Mapping[str, ValidatedSet]) -> list[Evaluation]:
        """Plan every job of every set, train what is not cached, and score each set."""
        jobs, data, plans = self.plan(sets)
        results = run_jobs(
            jobs, data, backend=self.backend, cache=self.cache, reporter=self.reporter, options=self.options
        )
        evaluations = []
        for name, vs in sets.items():
            planned = plans[name]
            proto = planned.protocol
            published, source = self._real_accuracy(proto) if self.metric == "lrs" else (None, None)
            round_results = []
            for r, round_plan in enumerate(planned.rounds):
                values: dict[str, float] = {}
                chosen: dict[str, float] = {}
                runs: dict[str, list[Run]] = {}
                for cell in planned.cells:
                    if cell.name not in round_plan:
                        continue
                    spec, set_name, val, lrs = round_plan[cell.name]
                    cell_runs = [
                        _run(lr, results[self._key(data, spec, set_name, val, lr, round_plan["seed"])])
                        for lr in lrs
                    ]
                    best = _select(cell_runs, proto)
                    values[f"acc_{cell.name}"] = _reported(best, proto)
                    chosen[cell.name] = best.lr
                    runs[cell.name] = cell_runs
                if published is not None:
                    values["acc_real"] = published
                values |= self._scores(values, proto)
                round_results.append(RoundResult(r, round_plan["seed"], values, chosen, runs))
            evaluations.append(
                Evaluation(
                    name,
                    self.info.name,
                    vs.ipc,
                    proto,
                    self.metric,
                    self.weight,
                    round_results,
                    source,
                    self._provenance(vs, proto),
                )
            )
        return evaluations

    @staticmethod
    def _key(data: RunData, spec: TrainSpec, set_name: str, val: str | None, lr: float, seed: int) -> str:
        vfp = data.val_sets[val].fingerprint if val else None
        return job_key(spec, data.train_sets[set_name].fingerprint, vfp, data.test.fingerprint, lr, seed)

    def _scores(self, values: dict[str, float], protocol: Protocol) -> dict[str, float]:
        if self.metric == "lrs":
            acc_syn_hard = values.get("acc_syn_hard", values["acc_syn"])
            out = {"acc_syn_hard": acc_syn_hard}
            out["hlr"] = hard_label_recovery(values["acc_real"], acc_syn_hard)
            out["ior"] = improvement_over_random(values["acc_syn"], values["acc_random"])
            out["lrs"] = label_robust_score(out["hlr"], out["ior"], self.weight)
            return out
        if self.metric == "ars":
            gap_aug = improvement_over_random(values["acc_syn_aug"], values["acc_random_aug"])
            gap_noaug = improvement_over_random(values["acc_syn_noaug"], values["acc_random_noaug"])
            return {"ars": augmentation_robust_score(gap_aug, gap_noaug, self.weight)}
        return {}

    # ----------------------------------------------------------------- specs
    @staticmethod
    def _lrs(protocol: Protocol, set_lr: float | None) -> list[float]:
        if set_lr is not None and protocol.use_set_lr:
            return [float(set_lr)]
        if protocol.lr is not None:
            return [protocol.lr]
        return list(protocol.lr_grid)

    def _student_spec(self, protocol: Protocol, variant: str, teachers: TeacherEnsemble | None) -> TrainSpec:
        fingerprint = teachers.fingerprint if teachers is not None else None
        return student_spec(protocol, self.real.info, variant, self.precision, fingerprint)

    def _full_data_spec(self, protocol: Protocol) -> TrainSpec:
        return full_data_spec(protocol, self.real.info, self.precision)

    def _provenance(self, vs: ValidatedSet, protocol: Protocol) -> dict[str, Any]:
        hardware = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor()
        )
        teachers = self._teachers.get(_teacher_key(protocol))
        return {
            "ddrank_version": __version__,
            "torch_version": torch.__version__,
            "protocol_hash": protocol.content_hash(),
            "data_fingerprint": self.real.fingerprint,
            "synthetic_fingerprint": vs.fingerprint,
            "synthetic_source": vs.source,
            "teachers": [t.source for t in teachers.teachers] if teachers else [],
            "base_seed": self.seed,
            "device": self.device.type,
            "hardware": hardware or platform.machine(),
            "backend": self.backend,
            "precision": self.precision,
        }


def student_spec(
    protocol: Protocol, info: DatasetInfo, variant: str, precision: str, teachers: str | None = None
) -> TrainSpec:
    """How a student of ``protocol`` trains in a cell variant (P, hard labels, or no augmentation).

    Mode-M jobs carry the teacher ensemble's fingerprint; without teachers (a dry run or a plan)
    a placeholder derived from the teacher names stands in for it.
    """
    eval_epochs: tuple[int, ...] = ()
    if protocol.selection == "reference":
        eval_epochs = tuple(range(protocol.eval_every, protocol.epochs, protocol.eval_every))
    labels = protocol.labels.hard() if variant == "hard" else protocol.labels
    augment = protocol.augment.none() if variant == "noaug" else protocol.augment
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
    )


def full_data_spec(protocol: Protocol, info: DatasetInfo, precision: str) -> TrainSpec:
    """How acc(real, hard) is trained: the protocol's full-data recipe."""
    recipe = protocol.full_data
    model = recipe.model or protocol.model
    return TrainSpec.from_recipe(recipe, model, info.channels, info.num_classes, info.size, precision)


def _teacher_key(protocol: Protocol) -> tuple[str, ...]:
    """What makes two protocols share one loaded teacher ensemble."""
    return (*protocol.labels.teachers, protocol.labels.ensemble, str(protocol.zca))


def _one(values: set, what: str):
    if len(values) > 1:
        raise ConfigError(f"sets evaluated together must share one {what}")
    return values.pop()


def _check_real_accuracy(value: float | str) -> float:
    """A given acc(real, hard) as a fraction; percentages are refused with a hint."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"real accuracy must be a fraction in [0, 1] or 'published', got {value!r}"
        ) from None
    if not 0.0 <= fraction <= 1.0:
        hint = f" (accuracies are fractions, not percentages: {fraction:g}% is {fraction / 100:g})"
        raise InputError(
            f"real accuracy must be a fraction in [0, 1], got {value!r}" + (hint if fraction > 1 else "")
        )
    return fraction


def _check_names(protocol: Protocol) -> None:
    """Unknown model, teacher, loss or augmentation names fail here with the closest valid name."""
    for model in (protocol.model, protocol.full_data.model, *protocol.labels.teachers):
        if model is not None:
            canonical_model_name(model)
    get_loss(protocol.labels.loss)
    for augment in (protocol.augment, protocol.full_data.augment):
        if augment.dsa:
            DSA(augment.dsa, mode=augment.dsa_mode)
        if augment.transforms:
            transforms_from_spec([dict(t) for t in augment.transforms])


def _check_buildable(protocol: Protocol, info: DatasetInfo) -> None:
    """Build the student, full-data and teacher models without memory, so a model that cannot take
    the dataset's images (e.g. too deep for 8 px) fails before any training starts."""
    names = (protocol.model, protocol.full_data.model or protocol.model, *protocol.labels.teachers)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        for model in dict.fromkeys(names):
            create_model(model, info.channels, info.num_classes, info.size)


def _fingerprint(base: str, kind: str, tag: str, idx: torch.Tensor | None = None) -> str:
    digest = hashlib.sha256(f"{base}:{kind}:{tag}".encode())
    if idx is not None:
        digest.update(np.ascontiguousarray(idx.numpy().astype(np.int64)).tobytes())
    return digest.hexdigest()


def _run(lr: float, result: JobResult) -> Run:
    return Run(lr, result.test_acc, result.val_acc, max(acc for _, acc in result.curve))


def _select(runs: list[Run], protocol: Protocol) -> Run:
    """Honest: best validation accuracy (first lr on ties). Reference: best test accuracy anywhere."""
    if protocol.selection == "reference" or runs[0].val_acc is None:
        return max(runs, key=lambda r: r.best_test_acc if protocol.selection == "reference" else r.test_acc)
    return max(runs, key=lambda r: r.val_acc or 0.0)


def _reported(run: Run, protocol: Protocol) -> float:
    return run.best_test_acc if protocol.selection == "reference" else run.test_acc


def evaluate(
    images: Any,
    labels: Any = None,
    *,
    dataset: str = "digits",
    protocol: str | os.PathLike | Protocol | None = None,
    metric: Metric = "lrs",
    method: str = "synthetic",
    format: str = "auto",
    ipc: int | None = None,
    lr: float | None = None,
    space: str | None = None,
    resize: bool = False,
    allow_pickle: bool = False,
    data_root: str | os.PathLike | None = None,
    rounds: int | None = None,
    seed: int = 0,
    weight: float = 0.5,
    real_acc: float | str | None = None,
    teacher_dir: str | os.PathLike | None = None,
    teachers: Sequence[str | os.PathLike] = (),
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    cache: JobCache | None = None,
    progress: bool = False,
) -> Evaluation:
    """Score one synthetic set: LRS (HLR, IOR), ARS, or plain accuracy, with 95% CIs over rounds.

    ``images`` is a tensor/array or a path in any supported format (see ddrank.data.synthetic);
    every input is validated before any training starts.
    """
    syn = load_synthetic(images, labels, format=format, lr=lr, space=space, allow_pickle=allow_pickle)
    with Reporter(enabled=progress) as reporter:
        evaluator = Evaluator(
            dataset,
            protocol,
            metric=metric,
            data_root=data_root,
            rounds=rounds,
            seed=seed,
            weight=weight,
            real_acc=real_acc,
            teacher_dir=teacher_dir,
            teachers=teachers,
            backend=backend,
            device=device,
            cache=cache,
            reporter=reporter,
        )
        validated = evaluator.validate(syn, ipc=ipc, resize=resize)
        evaluator.protocol_for(validated.ipc)
        return evaluator.evaluate_sets({method: validated})[0]


class _CallableModule(types.ModuleType):
    """Lets ``ddrank.evaluate(...)`` call :func:`evaluate` while ``ddrank.evaluate`` stays this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Evaluation:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""The public entry point: score synthetic sets against random real subsets under one protocol.

``evaluate`` scores one set; :class:`Evaluator` scores several sets at once so that shared
work (random subsets, the full-data baseline) is planned and trained once.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ddrank import __version__, rng
from ddrank.augment import DSA
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
from ddrank.metrics import hard_label_recovery, improvement_over_random, label_robust_score, summarize
from ddrank.metrics.stats import Summary
from ddrank.models import canonical_model_name, create_model
from ddrank.progress import Reporter, Silent
from ddrank.protocols import Protocol, load_protocol

SCORE_FIELDS = ("acc_syn", "acc_random", "acc_real", "hlr", "ior", "lrs")


@dataclass(frozen=True)
class Run:
    """One trained student: its learning rate and final accuracies."""

    lr: float
    test_acc: float
    val_acc: float | None
    best_test_acc: float  # best over test checkpoints (used only by reference selection)


@dataclass
class RoundResult:
    """Components and score of one evaluation round, with every run behind them."""

    round: int
    seed: int
    acc_syn: float
    acc_random: float
    acc_real: float
    lr_syn: float
    lr_random: float
    hlr: float
    ior: float
    lrs: float
    runs: dict[str, list[Run]]


@dataclass
class Evaluation:
    """Scores of one synthetic set under one protocol, over several rounds."""

    method: str
    dataset: str
    ipc: int
    protocol: Protocol
    weight: float
    rounds: list[RoundResult]
    acc_real_source: str
    provenance: dict[str, Any]
    summaries: dict[str, Summary] = field(init=False)

    def __post_init__(self) -> None:
        self.summaries = {name: summarize([getattr(r, name) for r in self.rounds]) for name in SCORE_FIELDS}

    def row(self) -> dict[str, Any]:
        """The flat summary: means, standard deviations (ddof 1) and 95% CIs, all fractions."""
        out: dict[str, Any] = {"method": self.method, "dataset": self.dataset, "ipc": self.ipc}
        for name, s in self.summaries.items():
            d = s.as_dict()
            out |= {f"{name}_mean": d["mean"], f"{name}_std": d["std"]}
            out |= {f"{name}_ci_low": d["ci_low"], f"{name}_ci_high": d["ci_high"]}
        out |= {
            "rounds": len(self.rounds),
            "weight": self.weight,
            "protocol": self.protocol.name,
            "protocol_hash": self.protocol.content_hash(),
            "selection": self.protocol.selection,
            "optimistic": self.protocol.optimistic,
            "acc_real_source": self.acc_real_source,
            "std_ddof": 1,
            "confidence": 0.95,
        }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The row plus every round's raw accuracies, chosen learning rates and seeds."""
        rounds = []
        for r in self.rounds:
            d = {k: getattr(r, k) for k in ("round", "seed", *SCORE_FIELDS, "lr_syn", "lr_random")}
            d["runs"] = {cell: [vars(run) for run in runs] for cell, runs in r.runs.items()}
            rounds.append(d)
        return self.row() | {"per_round": rounds, "provenance": self.provenance}


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Evaluator:
    """Scores synthetic sets on one real dataset under one protocol (resolved per IPC)."""

    def __init__(
        self,
        dataset: str = "digits",
        protocol: str | os.PathLike | Protocol | None = None,
        *,
        data_root: str | os.PathLike | None = None,
        rounds: int | None = None,
        seed: int = 0,
        weight: float = 0.5,
        real_acc: float | str | None = None,
        backend: Backend = "auto",
        device: str | torch.device | None = None,
        precision: str = "auto",
        options: EngineOptions | None = None,
        cache: JobCache | None = None,
        reporter: Reporter | None = None,
    ):
        self.info = dataset_info(dataset)
        self.protocol_source = protocol if protocol is not None else self.info.name
        self.data_root = data_root
        self.rounds, self.seed, self.weight = rounds, int(seed), float(weight)
        if not 0.0 <= self.weight <= 1.0:
            raise InputError(f"weight must lie in [0, 1], got {weight!r}")
        if rounds is not None and rounds < 1:
            raise InputError(f"rounds must be at least 1, got {rounds}")
        if real_acc not in (None, "published"):
            _check_real_accuracy(real_acc)
        self.real_acc = real_acc
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

    def protocol_for(self, ipc: int | None) -> Protocol:
        """The protocol for ``ipc``, with its model and augmentation names checked (no training yet)."""
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

    def evaluate_sets(self, sets: Mapping[str, ValidatedSet]) -> list[Evaluation]:
        """Plan every job of every set, train what is not cached, and score each set."""
        real, device = self.real, self.device
        info = real.info
        protocols = {name: self.protocol_for(vs.ipc) for name, vs in sets.items()}
        for proto in protocols.values():
            if proto.labels.mode != "hard":
                raise ConfigError(
                    f"protocol {proto.name!r} needs soft labels, which this evaluation does not support"
                )
        for proto in protocols.values():
            _check_buildable(proto, info)
        rounds = self.rounds or max(p.rounds for p in protocols.values())
        test = EvalSet(
            normalize(real.test_images, info).to(device), real.test_labels.to(device), real.fingerprint
        )
        train_sets: dict[str, TrainingSet] = {}
        val_sets: dict[str, EvalSet] = {}
        jobs: list[TrainJob] = []

        def add_train_set(name: str, images: torch.Tensor, labels: torch.Tensor, fingerprint: str) -> None:
            if name not in train_sets:
                train_sets[name] = TrainingSet(images.to(device), labels.to(device), fingerprint)

        def add_jobs(
            spec: TrainSpec, set_name: str, val: str | None, lrs: list[float], seed: int, cell: str, r: int
        ) -> None:
            for lr in lrs:
                fp = train_sets[set_name].fingerprint
                vfp = val_sets[val].fingerprint if val else None
                key = job_key(spec, fp, vfp, test.fingerprint, lr, seed)
                jobs.append(TrainJob(spec, set_name, val, lr, seed, key, cell, r))

        for name, vs in sets.items():
            add_train_set(
                f"syn:{name}", self._to_normalized(vs, protocols[name]), vs.hard_labels, vs.fingerprint
            )

        seeds = [rng.derive_seed(self.seed, r) for r in range(rounds)]
        plans: dict[str, list[dict[str, Any]]] = {name: [] for name in sets}
        for r, seed in enumerate(seeds):
            val_idx, pool = validation_split(
                real.train_labels, info.num_classes, self._val_fraction(protocols), seed
            )
            val_name = f"val:{r}"
            val_sets[val_name] = EvalSet(
                normalize(real.train_images[val_idx], info).to(device),
                real.train_labels[val_idx].to(device),
                _index_fingerprint(real.fingerprint, "val", val_idx),
            )
            for name, vs in sets.items():
                proto = protocols[name]
                selection_val = val_name if proto.selection == "honest" else None
                spec = self._student_spec(proto)
                rand_name = f"random:{vs.ipc}:{r}"
                if rand_name not in train_sets:
                    idx = random_subset(real.train_labels, pool, info.num_classes, vs.ipc, seed)
                    add_train_set(
                        rand_name,
                        normalize(real.train_images[idx], info),
                        real.train_labels[idx],
                        _index_fingerprint(real.fingerprint, "subset", idx),
                    )
                syn_lrs = self._lrs(proto, vs.lr)
                rand_lrs = self._lrs(proto, None)
                add_jobs(spec, f"syn:{name}", selection_val, syn_lrs, seed, "syn", r)
                add_jobs(spec, rand_name, selection_val, rand_lrs, seed, "random", r)
                plan = {"spec": spec, "val": selection_val, "seed": seed, "rand": rand_name}
                plan |= {"syn_lrs": syn_lrs, "rand_lrs": rand_lrs, "real": None}
                published, _ = self._real_accuracy(proto)
                if published is None:
                    real_spec, real_lr = self._full_data_spec(proto), proto.full_data.lr
                    add_train_set(
                        "real", normalize(real.train_images, info), real.train_labels, real.fingerprint
                    )
                    add_jobs(real_spec, "real", None, [real_lr], seed, "real", r)
                    plan["real"] = (real_spec, real_lr)
                plans[name].append(plan)

        data = RunData(train_sets, val_sets, test, device)
        results = run_jobs(
            jobs, data, backend=self.backend, cache=self.cache, reporter=self.reporter, options=self.options
        )

        def result(spec: TrainSpec, set_name: str, val: str | None, lr: float, seed: int) -> JobResult:
            vfp = val_sets[val].fingerprint if val else None
            return results[job_key(spec, train_sets[set_name].fingerprint, vfp, test.fingerprint, lr, seed)]

        evaluations = []
        for name, vs in sets.items():
            proto = protocols[name]
            published, source = self._real_accuracy(proto)
            round_results = []
            for r, plan in enumerate(plans[name]):
                spec, val, seed = plan["spec"], plan["val"], plan["seed"]
                runs = {
                    "syn": [_run(lr, result(spec, f"syn:{name}", val, lr, seed)) for lr in plan["syn_lrs"]],
                    "random": [
                        _run(lr, result(spec, plan["rand"], val, lr, seed)) for lr in plan["rand_lrs"]
                    ],
                }
                if plan["real"] is not None:
                    real_spec, real_lr = plan["real"]
                    runs["real"] = [_run(real_lr, result(real_spec, "real", None, real_lr, seed))]
                syn_run, rand_run = _select(runs["syn"], proto), _select(runs["random"], proto)
                acc_real = (
                    published if published is not None else _reported(_select(runs["real"], proto), proto)
                )
                acc_syn, acc_rand = _reported(syn_run, proto), _reported(rand_run, proto)
                hlr = hard_label_recovery(acc_real, acc_syn)
                ior = improvement_over_random(acc_syn, acc_rand)
                round_results.append(
                    RoundResult(
                        r,
                        seed,
                        acc_syn,
                        acc_rand,
                        acc_real,
                        syn_run.lr,
                        rand_run.lr,
                        hlr,
                        ior,
                        label_robust_score(hlr, ior, self.weight),
                        runs,
                    )
                )
            evaluations.append(
                Evaluation(
                    name,
                    info.name,
                    vs.ipc,
                    proto,
                    self.weight,
                    round_results,
                    source,
                    self._provenance(vs, proto),
                )
            )
        return evaluations

    def _to_normalized(self, vs: ValidatedSet, protocol: Protocol) -> torch.Tensor:
        space = vs.space or protocol.space
        if space == "normalized":
            return vs.images
        if space == "pixel":
            mean = torch.tensor(self.real.info.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.real.info.std).view(1, -1, 1, 1)
            return (vs.images - mean) / std
        raise ConfigError(
            f"images in space {space!r} need a protocol with ZCA whitening; {protocol.name!r} has none"
        )

    @staticmethod
    def _val_fraction(protocols: Mapping[str, Protocol]) -> float:
        fractions = {p.val_fraction for p in protocols.values()}
        if len(fractions) > 1:
            raise ConfigError("sets evaluated together must share one validation fraction")
        return fractions.pop()

    @staticmethod
    def _lrs(protocol: Protocol, set_lr: float | None) -> list[float]:
        if set_lr is not None and protocol.use_set_lr:
            return [float(set_lr)]
        if protocol.lr is not None:
            return [protocol.lr]
        return list(protocol.lr_grid)

    def _student_spec(self, protocol: Protocol) -> TrainSpec:
        info = self.real.info
        eval_epochs: tuple[int, ...] = ()
        if protocol.selection == "reference":
            eval_epochs = tuple(range(protocol.eval_every, protocol.epochs, protocol.eval_every))
        return TrainSpec(
            protocol.model,
            info.channels,
            info.num_classes,
            info.size,
            protocol.optimizer,
            protocol.schedule,
            protocol.epochs,
            protocol.batch_size,
            protocol.augment,
            eval_epochs,
            self.precision,
        )

    def _full_data_spec(self, protocol: Protocol) -> TrainSpec:
        info, recipe = self.real.info, protocol.full_data
        return TrainSpec(
            recipe.model or protocol.model,
            info.channels,
            info.num_classes,
            info.size,
            recipe.optimizer,
            recipe.schedule,
            recipe.epochs,
            recipe.batch_size,
            recipe.augment,
            (),
            self.precision,
        )

    def _provenance(self, vs: ValidatedSet, protocol: Protocol) -> dict[str, Any]:
        hardware = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor()
        )
        return {
            "ddrank_version": __version__,
            "torch_version": torch.__version__,
            "protocol_hash": protocol.content_hash(),
            "data_fingerprint": self.real.fingerprint,
            "synthetic_fingerprint": vs.fingerprint,
            "synthetic_source": vs.source,
            "base_seed": self.seed,
            "device": self.device.type,
            "hardware": hardware or platform.machine(),
            "backend": self.backend,
            "precision": self.precision,
        }


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
    """Unknown model or augmentation names fail here, with the closest valid name, not inside training."""
    for model in (protocol.model, protocol.full_data.model):
        if model is not None:
            canonical_model_name(model)
    for augment in (protocol.augment, protocol.full_data.augment):
        if augment.dsa:
            DSA(augment.dsa, mode=augment.dsa_mode)


def _check_buildable(protocol: Protocol, info: DatasetInfo) -> None:
    """Build the student and full-data models without memory, so a model that cannot take the
    dataset's images (e.g. too deep for 8 px) fails before any training starts."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        for model in dict.fromkeys((protocol.model, protocol.full_data.model or protocol.model)):
            create_model(model, info.channels, info.num_classes, info.size)


def _index_fingerprint(base: str, kind: str, idx: torch.Tensor) -> str:
    import hashlib

    digest = hashlib.sha256(f"{base}:{kind}:".encode())
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
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Evaluation:
    """Label-robust score (HLR, IOR, LRS with 95% CIs) of one synthetic set.

    ``images`` is a tensor/array or a path in any supported format (see ddrank.data.synthetic);
    every input is validated before any training starts.
    """
    syn = load_synthetic(images, labels, format=format, lr=lr, space=space, allow_pickle=allow_pickle)
    with Reporter(enabled=progress) as reporter:
        evaluator = Evaluator(
            dataset,
            protocol,
            data_root=data_root,
            rounds=rounds,
            seed=seed,
            weight=weight,
            real_acc=real_acc,
            backend=backend,
            device=device,
            reporter=reporter,
        )
        validated = evaluator.validate(syn, ipc=ipc, resize=resize)
        evaluator.protocol_for(validated.ipc)
        return evaluator.evaluate_sets({method: validated})[0]

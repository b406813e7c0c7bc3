"""The evaluator: synthetic sets scored against random real subsets under one protocol.

:class:`Evaluator` owns the whole path for the sets it is given: validate (before anything trains)
→ plan (the job grid of :mod:`ddrank.evaluation.jobs`) → run (the engine, skipping jobs its store
already holds) → score (the metric's definition) → record (into its results store, on rank 0).
:func:`evaluate` does it for one set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ddrank import __version__, distributed
from ddrank.augment import DSA, transforms_from_spec
from ddrank.calibration import (
    Calibration,
    CalibrationRow,
    PublishedTable,
    calibration_entry,
    compare,
    published_table,
)
from ddrank.data.real import DatasetInfo, RealData, dataset_info, load_real
from ddrank.data.sampling import random_subset, validation_split
from ddrank.data.synthetic import (
    SyntheticSet,
    ValidatedSet,
    ValueWarning,
    check_values,
    load_synthetic,
    protocol_warnings,
    refuse_warnings,
    validate_synthetic,
)
from ddrank.engine.job import EvalSet, JobCache, JobResult, MemoryCache, RunData, TrainingSet, TrainJob
from ddrank.engine.runner import run_jobs
from ddrank.errors import ConfigError, InputError
from ddrank.evaluation.jobs import PlanEntry, PlannedCell, PlannedEvaluation, plan_jobs
from ddrank.evaluation.results import Evaluation, RoundResult, Run
from ddrank.evaluation.space import (
    TrainingSpace,
    fitted_zca,
    jpeg_round_trip,
    round_trips,
    set_fingerprint,
    view_images,
)
from ddrank.evaluation.teachers import protocol_teachers, teacher_key
from ddrank.labels import get_loss
from ddrank.labels.teachers import TeacherEnsemble
from ddrank.metrics.definitions import metric_definition
from ddrank.models import canonical_model_name, create_model
from ddrank.names import check_name, default_method
from ddrank.progress import Reporter, Silent
from ddrank.protocols import Deviation, Protocol, load_protocol
from ddrank.protocols.protocol import precision_deviation
from ddrank.settings import RunSettings
from ddrank.store import ResultStore


class Evaluator:
    """Scores synthetic sets on one real dataset under one protocol (resolved per IPC).

    ``store`` is where finished jobs are looked up and written (default: memory); a
    :class:`~ddrank.store.ResultStore` also records every evaluation. ``say`` receives each
    :class:`~ddrank.protocols.Deviation` of each protocol after planning and before anything trains
    (``str()`` of one is its full line; the command line prints a one-line summary on stderr).
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        store: JobCache | None = None,
        reporter: Reporter | None = None,
        say: Callable[[Deviation], None] | None = None,
    ):
        self.settings = settings
        self.say = say
        self.definition = metric_definition(settings.metric)
        self.info: DatasetInfo = dataset_info(settings.dataset)
        self.device = settings.torch_device
        self.store: JobCache = MemoryCache() if store is None else store
        self.reporter = reporter or Silent()
        self.extra_provenance: dict[str, Any] = {}  # recorded with every evaluation (e.g. a smoke run's)
        self._real: RealData | None = None
        self._protocols: dict[int | None, Protocol] = {}
        self._spaces: dict[float | None, TrainingSpace] = {}
        self._teachers: dict[tuple[str, ...], TeacherEnsemble] = {}
        self._published: PublishedTable | None = None

    # ----------------------------------------------------------------- inputs
    def protocol_for(self, ipc: int | None) -> Protocol:
        """The protocol for ``ipc``, resolved once, with its names checked (no training yet)."""
        if ipc not in self._protocols:
            self._protocols[ipc] = self._resolve(ipc)
        return self._protocols[ipc]

    def _resolve(self, ipc: int | None) -> Protocol:
        source, dataset = self.settings.protocol_source, self.info.name
        if isinstance(source, Protocol):
            if source.dataset not in (None, dataset):
                raise ConfigError(
                    f"protocol {source.name!r} was resolved for dataset {source.dataset!r}, not {dataset!r}"
                )
            if ipc is not None and source.ipc not in (None, ipc):
                raise ConfigError(
                    f"protocol {source.name!r} was resolved for IPC {source.ipc}, but the set has IPC {ipc}"
                )
            fidelity = self.settings.fidelity
            if fidelity is not None and source.fidelity != fidelity:
                raise ConfigError(
                    f"protocol {source.name!r} is a {source.fidelity} protocol, not {fidelity}; resolve it "
                    f"with fidelity {fidelity!r} (load_protocol(..., fidelity={fidelity!r})) or drop fidelity"
                )
            # Filled in as a preset resolves them, so the same settings hash the same either way.
            resolved_ipc = source.ipc if ipc is None else ipc
            protocol = source.model_copy(update={"dataset": dataset, "ipc": resolved_ipc})
        else:
            protocol = load_protocol(source, dataset=dataset, ipc=ipc, fidelity=self.settings.fidelity)
        refusal = protocol.reference_refusal(self.settings.metric)
        if refusal:
            raise ConfigError(f"protocol {protocol.name!r}: {refusal}")
        _check_names(protocol)
        return _canonical_models(protocol)

    def deviations(self, protocol: Protocol) -> tuple[Deviation, ...]:
        """Every way ``protocol`` differs from its source under this run's metric and precision (said
        before training)."""
        found = protocol.deviations_for(self.settings.metric)
        precision = precision_deviation(protocol, self.settings.precision_for(protocol))
        return found if precision is None else (*found, precision)

    @property
    def real(self) -> RealData:
        if self._real is None:
            stats = self.protocol_for(None).stats
            self._real = load_real(
                self.info.name, self.settings.data_root, stats=stats, download=self.settings.download
            )
        return self._real

    def validate(
        self,
        syn: SyntheticSet,
        ipc: int | None = None,
        resize: bool = False,
        *,
        strict: bool = False,
        read_data: bool = True,
    ) -> ValidatedSet:
        """``syn`` checked against the dataset and the protocol of its IPC (``ipc`` defaults to the
        settings'), before anything trains. Its ``warnings`` (values that contradict the set's space,
        or the protocol's when the set names none; soft labels a hard-label protocol ignores) become
        an InputError under ``strict``. ``read_data=False`` (a dry run) checks against the dataset's
        registered shape without reading it, except an image folder, whose classes only its tree knows;
        the dataset's own warnings (an incomplete split) then wait for the run."""
        info = self.real.info if read_data or not self.info.num_classes else self.info
        validated = validate_synthetic(
            syn,
            num_classes=info.num_classes,
            channels=info.channels,
            size=info.size,
            ipc=self.settings.ipc if ipc is None else ipc,
            resize=resize,
        )
        protocol = self.protocol_for(validated.ipc)
        found = list(validated.warnings)
        if syn.space is None:
            found += check_values(validated.images, protocol.space, syn.source)
        found += protocol_warnings(validated, label_mode=protocol.labels.mode, protocol=protocol.name)
        if read_data:
            found += self._dataset_warnings()
        refuse_warnings(found, strict)
        return dataclasses.replace(validated, warnings=tuple(found))

    def _dataset_warnings(self) -> list[ValueWarning]:
        """A named dataset whose training split is not the standard one's size (a partial download or
        extraction): its scores are not comparable with anyone else's."""
        expected, held = self.info.train_size, len(self.real.train_labels)
        if expected is None or held == expected:
            return []
        return [
            ValueWarning(
                f"dataset {self.info.name!r} holds {held:,} training images, not the {expected:,} of its "
                "standard split (an incomplete download or extraction?): its scores compare with no "
                "published ones"
            )
        ]

    def space(self, protocol: Protocol) -> TrainingSpace:
        key = protocol.zca_regularization if protocol.zca else None
        if key not in self._spaces:
            zca = fitted_zca(self.real, key).to(torch.device("cpu")) if key is not None else None
            self._spaces[key] = TrainingSpace(self.real, zca)
        return self._spaces[key]

    def teachers_for(self, protocol: Protocol) -> TeacherEnsemble | None:
        """The protocol's teacher ensemble on the device (trained and cached on first use for digits)."""
        if not protocol.labels.teachers or protocol.labels.mode == "hard":
            return None
        key = teacher_key(protocol)
        if key not in self._teachers:
            self._teachers[key] = protocol_teachers(
                protocol,
                self.real,
                teacher_dir=self.settings.teacher_dir,
                checkpoints=self.settings.teachers,
                device=self.device,
                reporter=self.reporter,
            )
        return self._teachers[key]

    def real_accuracy(self, protocol: Protocol) -> tuple[float | None, str]:
        """A given or published acc(real, hard) and its source, or (None, "trained"). A protocol whose
        full-data recipe is ``source: published`` (DD-Ranking's cached accuracies) uses that value."""
        given = self.settings.real_acc
        recipe = protocol.full_data
        if given is None and recipe.source == "published":
            given = "published"
        if given is None:
            return None, "trained"
        if given == "published":
            if recipe.published_acc is None:
                raise ConfigError(
                    f"protocol {protocol.name!r} has no published full-data accuracy for {self.info.name!r}; "
                    "give acc(real, hard) as a fraction (e.g. 0.9) or leave it out to train it"
                )
            return recipe.published_acc, f"published: {recipe.published_source}"
        return given, "given"

    def published(self) -> PublishedTable:
        """The published baselines that accuracies are compared with (the settings' table or the packaged
        one), read on first use."""
        if self._published is None:
            self._published = published_table(self.settings.calibration)
        return self._published

    # ----------------------------------------------------------------- plan
    def plan(
        self, sets: Mapping[str, ValidatedSet], *, dry_run: bool = False
    ) -> tuple[list[TrainJob], RunData, dict[str, PlannedEvaluation]]:
        """Every job the sets need (nothing trained), the data they reference, and the plan per set.

        A dry run loads no teacher: jobs that need one carry a placeholder teacher fingerprint
        and random subsets get no teacher labels, so presets can be checked without checkpoints; and its
        real sets keep their uint8 pixels on the host (their sizes and identities are the run's).
        """
        info = self.real.info
        self.published()  # a bad table fails before anything trains
        protocols = {name: self.protocol_for(vs.ipc) for name, vs in sets.items()}
        for name, proto in protocols.items():
            _check_buildable(proto, info)
            check_soft_labels(proto, sets[name], name)
        spaces = {name: self.space(p) for name, p in protocols.items()}
        if len({s.tag for s in spaces.values()}) > 1:
            raise ConfigError("sets evaluated together must share one training space (ZCA or not)")
        if len({p.val_fraction for p in protocols.values()}) > 1:
            raise ConfigError("sets evaluated together must share one validation fraction")
        teachers = {name: None if dry_run else self.teachers_for(p) for name, p in protocols.items()}
        rounds = self.settings.rounds or max(p.rounds for p in protocols.values())
        entries = []
        for name, vs in sets.items():
            proto = protocols[name]
            ensemble = teachers[name]
            train_real = not self.definition.needs_real or self.real_accuracy(proto)[0] is None
            fingerprint = ensemble.fingerprint if ensemble is not None else None
            entries.append(
                PlanEntry(name, proto, info, vs.ipc, rounds, vs.lr, fingerprint, train_real, vs.uneven_counts)
            )
        source = _DeviceSets(self.real, sets, protocols, spaces, teachers, self.device, not dry_run)
        jobs, plans = plan_jobs(
            entries,
            source,
            metric=self.settings.metric,
            base_seed=self.settings.seed,
            precision=self.settings.precision_for,
        )
        return jobs, source.data, plans

    # ----------------------------------------------------------------- run, score, record
    def evaluate_sets(self, sets: Mapping[str, ValidatedSet]) -> list[Evaluation]:
        """Plan every job of every set, train what the store lacks, score each set and record it."""
        for name in sets:
            check_name("method name", name)
        jobs, data, plans = self.plan(sets)
        if self.say is not None and distributed.world().main:
            said = set()
            for plan in plans.values():
                if plan.protocol.content_hash() not in said:
                    said.add(plan.protocol.content_hash())
                    for found in self.deviations(plan.protocol):
                        self.say(found)
        results = run_jobs(
            jobs,
            data,
            backend=self.settings.backend,
            cache=self.store,
            reporter=self.reporter,
            options=self.settings.options,
        )
        evaluations = [self._score(name, vs, plans[name], results) for name, vs in sets.items()]
        if isinstance(self.store, ResultStore) and distributed.world().main:
            for evaluation in evaluations:
                self.store.record_evaluation(evaluation.to_dict())
        return evaluations

    def evaluate_set(
        self, syn: SyntheticSet, method: str = "synthetic", *, ipc: int | None = None, resize: bool = False
    ) -> Evaluation:
        """Validate one set, then score and record it as ``method``."""
        return self.evaluate_sets({method: self.validate(syn, ipc=ipc, resize=resize)})[0]

    def _score(
        self, name: str, vs: ValidatedSet, planned: PlannedEvaluation, results: Mapping[str, JobResult]
    ) -> Evaluation:
        proto = planned.protocol
        published, source = self.real_accuracy(proto) if self.definition.needs_real else (None, None)
        round_results = []
        keys: set[str] = set()
        for planned_round in planned.rounds:
            values: dict[str, float] = {}
            chosen: dict[str, float] = {}
            runs: dict[str, list[Run]] = {}
            for cell in planned.cells:
                if cell.name not in planned_round.cells:
                    continue
                planned_cell = planned_round.cells[cell.name]
                cell_runs = _cell_runs(planned_cell, results, proto)
                keys.update(planned_cell.keys)
                best = _select(cell_runs, proto)
                values[f"acc_{cell.name}"] = _reported(best, proto)
                chosen[cell.name] = best.lr
                runs[cell.name] = cell_runs
            if published is not None:
                values["acc_real"] = published
            values |= self.definition.scores(values, self.settings.weight)
            round_results.append(RoundResult(planned_round.round, planned_round.seed, values, chosen, runs))
        calibration = self._calibration(proto, vs.ipc, round_results, trained_real=published is None)
        deviations = [d.model_dump() for d in self.deviations(proto)]
        return Evaluation(
            name,
            self.info.name,
            vs.ipc,
            self.settings.metric,
            self.settings.weight,
            proto.name,
            proto.content_hash(),
            proto.model,
            proto.labels.mode,
            proto.selection,
            round_results,
            source,
            self._provenance(vs, proto) | {"fidelity": proto.fidelity, "deviations": deviations},
            sum(1 for key in keys if results[key].diverged),
            fidelity=proto.fidelity,
            deviations=deviations,
            calibration=calibration,
        )

    def _calibration(
        self, proto: Protocol, ipc: int, rounds: list[RoundResult], *, trained_real: bool
    ) -> list[dict[str, Any]]:
        """The trained random-subset (under the protocol's augmentation) and whole-data (``acc_real``)
        accuracies, each as a mean over rounds beside its published value; cells without one are left out."""
        random_field = self.definition.random_accuracy or "acc_random"
        measured: list[tuple[str, int | None, str, str]] = [("random", ipc, random_field, proto.model)]
        if trained_real:
            measured.append(("real", None, "acc_real", proto.full_data.model or proto.model))
        entries = []
        for cell, cell_ipc, field, model in measured:
            values = [r.values[field] for r in rounds if r.values.get(field) is not None]
            published = self.published().lookup(self.info.name, model, proto.name, cell_ipc)
            if not values or published is None:
                continue
            comparison = compare(sum(values) / len(values), published, ipc=cell_ipc)
            entries.append(calibration_entry(cell, comparison))
        return entries

    # ----------------------------------------------------------------- calibration
    def calibrate(self, ipcs: Sequence[int]) -> Calibration:
        """Train the random-subset baselines at each IPC and the whole-dataset baseline under the
        protocol, and compare each with its published value.

        The jobs are planned exactly as an evaluation plans its random and real cells (same sets,
        seeds and keys), so the store keeps them and a later evaluation under the same settings
        trains neither again.
        """
        if not ipcs:
            raise InputError("calibration needs at least one IPC")
        info = self.real.info
        self.published()  # a bad table fails before anything trains
        protocols = {f"random@{ipc}": self.protocol_for(ipc) for ipc in dict.fromkeys(ipcs)}
        for proto in protocols.values():
            _check_buildable(proto, info)
            if proto.labels.mode != "hard":
                raise ConfigError(
                    f"protocol {proto.name!r} trains with soft labels (mode {proto.labels.mode}); published "
                    "baselines are hard-label accuracies, so calibrate under a hard-label protocol"
                )
        first = next(iter(protocols.values()))
        spaces = {name: self.space(p) for name, p in protocols.items()}
        if len({s.tag for s in spaces.values()}) > 1 or len({p.val_fraction for p in protocols.values()}) > 1:
            raise ConfigError(
                f"protocol {first.name!r} resolves to different training spaces or validation splits "
                "per IPC; calibrate one IPC at a time"
            )
        rounds = self.settings.rounds or max(p.rounds for p in protocols.values())
        entries = [
            PlanEntry(name, proto, info, int(name.removeprefix("random@")), rounds)
            for name, proto in protocols.items()
        ]
        teachers = dict.fromkeys(protocols)
        source = _DeviceSets(self.real, {}, protocols, spaces, teachers, self.device)
        jobs, plans = plan_jobs(
            entries,
            source,
            metric="lrs",
            base_seed=self.settings.seed,
            precision=self.settings.precision_for,
            sources=("random", "real"),
        )
        results = run_jobs(
            jobs,
            source.data,
            backend=self.settings.backend,
            cache=self.store,
            reporter=self.reporter,
            options=self.settings.options,
        )
        rows: list[CalibrationRow] = []
        whole: dict[tuple[str, ...], CalibrationRow] = {}
        for entry in entries:
            planned, proto = plans[entry.name], entry.protocol
            for cell_name, ipc, model in (
                ("random", entry.ipc, proto.model),
                ("real", None, proto.full_data.model or proto.model),
            ):
                if cell_name not in planned.rounds[0].cells:
                    continue  # a published whole-data accuracy: nothing trained to compare
                per_round, keys = [], []
                for planned_round in planned.rounds:
                    cell = planned_round.cells[cell_name]
                    runs = _cell_runs(cell, results, proto)
                    per_round.append(_reported(_select(runs, proto), proto))
                    keys.extend(cell.keys)
                published = self.published().lookup(info.name, model, proto.name, ipc)
                mean = sum(per_round) / len(per_round)
                row = CalibrationRow(cell_name, model, tuple(per_round), compare(mean, published, ipc=ipc))
                if cell_name == "random":
                    rows.append(row)
                else:
                    whole.setdefault(tuple(keys), row)  # one whole-data row per distinct recipe
        return Calibration(
            dataset=info.name,
            protocol=first.name,
            protocol_hash=first.content_hash(),
            rounds=rounds,
            rows=tuple(rows + list(whole.values())),
            table=self.published().path,
            provenance={
                "ddrank_version": __version__,
                "torch_version": torch.__version__,
                "data_fingerprint": self.real.fingerprint,
                "protocol_hashes": {e.ipc: e.protocol.content_hash() for e in entries},
                "base_seed": self.settings.seed,
                "device": self.device.type,
                "backend": self.settings.backend,
                "precision": self.settings.precision_for(first),
            },
        )

    def _provenance(self, vs: ValidatedSet, protocol: Protocol) -> dict[str, Any]:
        hardware = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor()
        )
        teachers = self._teachers.get(teacher_key(protocol))
        return {
            "ddrank_version": __version__,
            "torch_version": torch.__version__,
            "protocol_hash": protocol.content_hash(),
            "data_fingerprint": self.real.fingerprint,
            "synthetic_fingerprint": vs.fingerprint,
            "synthetic_source": vs.source,
            "teachers": [t.source for t in teachers.teachers] if teachers else [],
            "base_seed": self.settings.seed,
            "device": self.device.type,
            "hardware": hardware or platform.machine(),
            "backend": self.settings.backend,
            "precision": self.settings.precision_for(protocol),
            **({"class_counts": list(vs.uneven_counts)} if vs.uneven_counts else {}),
            **self.extra_provenance,
        }


class _DeviceSets:
    """The planner's sets as tensors in their training space on the device, registered in one RunData.

    For a dry run (``materialise`` false) the real images stay as they are, uint8 on the host: a plan
    needs each set's identity and size, not its pixels (normalising ImageNet-sized test, validation and
    view sets took most of a dry run's time). Identities are the same either way: they derive from the
    data's fingerprint, the training space and the chosen indices, never from the converted pixels.
    """

    def __init__(
        self,
        real: RealData,
        sets: Mapping[str, ValidatedSet],
        protocols: Mapping[str, Protocol],
        spaces: Mapping[str, TrainingSpace],
        teachers: Mapping[str, TeacherEnsemble | None],
        device: torch.device,
        materialise: bool = True,
    ):
        self.real_data, self.spaces, self.teachers, self.device = real, spaces, teachers, device
        self.materialise = materialise
        self.test_space = next(iter(spaces.values()))
        test = EvalSet(
            self._moved(self._space_real(self.test_space, real.test_images)),
            self._moved(real.test_labels),
            set_fingerprint(real.fingerprint, "test", self.test_space.tag),
        )
        self.data = RunData({}, {}, test, device)
        self._pools: dict[int, torch.Tensor] = {}
        self._val_indices: dict[int, torch.Tensor] = {}
        for name, vs in sets.items():
            proto, space = protocols[name], spaces[name]
            images = space.synthetic(vs.images, vs.space or proto.space, proto.name)
            fp = set_fingerprint(vs.fingerprint, "syn", space.tag)
            self._add(f"syn:{name}", images, vs.hard_labels, fp, vs.soft_labels)
            if teachers[name] is not None:
                self.data.teachers[teachers[name].fingerprint] = teachers[name]

    def _space_real(self, space: TrainingSpace, images: torch.Tensor) -> torch.Tensor:
        return space.real(images) if self.materialise else images

    def _moved(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device) if self.materialise else tensor

    def _viewed(self, images: torch.Tensor, transforms: tuple[dict, ...]) -> torch.Tensor:
        """``images`` through test transforms in the test space; a dry run checks the transforms' output
        shape on one image and keeps the images as they are."""
        size = self.real_data.info.size
        if not self.materialise:
            view_images(images[:1], transforms, size)
            return images
        return self.test_space.real(view_images(images, transforms, size))

    def _add(
        self, name: str, images: torch.Tensor, labels: torch.Tensor, fp: str, soft=None
    ) -> tuple[str, str]:
        if name not in self.data.train_sets:
            self.data.train_sets[name] = TrainingSet(
                self._moved(images),
                self._moved(labels),
                fp,
                None if soft is None else self._moved(soft),
            )
        return name, self.data.train_sets[name].fingerprint

    def test(self, entry: PlanEntry) -> tuple[str, str]:
        return "test", self.data.test.fingerprint

    def test_view(self, entry: PlanEntry, transforms: tuple[dict, ...]) -> tuple[str, str]:
        """The test images through the protocol's test transforms (e.g. Resize(256), CenterCrop(224))."""
        fp = set_fingerprint(self.data.test.fingerprint, f"view:{json.dumps(list(transforms))}", "")
        name = f"test:{fp[:12]}"
        if name not in self.data.test_views:
            real = self.real_data
            images = self._viewed(real.test_images, transforms)
            self.data.test_views[name] = EvalSet(self._moved(images), self._moved(real.test_labels), fp)
        return name, fp

    def validation(
        self, entry: PlanEntry, round: int, seed: int, transforms: tuple[dict, ...] = ()
    ) -> tuple[str, str]:
        """The round's validation split of the real training set (its rest is the random-subset pool),
        seen through ``transforms`` when the cell's test images are (so the lr is chosen on the view the
        test set is scored on)."""
        name = f"val:{round}"
        real = self.real_data
        if name not in self.data.val_sets:
            val_idx, self._pools[round] = validation_split(
                real.train_labels, real.info.num_classes, entry.protocol.val_fraction, seed
            )
            self._val_indices[round] = val_idx
            self.data.val_sets[name] = EvalSet(
                self._moved(self._space_real(self.test_space, real.train_images[val_idx])),
                self._moved(real.train_labels[val_idx]),
                set_fingerprint(real.fingerprint, "val", self.test_space.tag, val_idx),
            )
        plain = self.data.val_sets[name]
        if not transforms:
            return name, plain.fingerprint
        fp = set_fingerprint(plain.fingerprint, f"view:{json.dumps(list(transforms))}", "")
        view = f"{name}:{fp[:12]}"
        if view not in self.data.val_sets:
            images = self._viewed(real.train_images[self._val_indices[round]], transforms)
            self.data.val_sets[view] = EvalSet(self._moved(images), plain.labels, fp)
        return view, fp

    def synthetic(self, entry: PlanEntry) -> tuple[str, str]:
        name = f"syn:{entry.name}"
        return name, self.data.train_sets[name].fingerprint

    def random(self, entry: PlanEntry, round: int, seed: int) -> tuple[str, str]:
        """A class-balanced random subset (with teacher soft labels under mode S): of the round's pool,
        the training set outside its validation split, under honest selection; of the whole training
        set under reference selection, as DD-Ranking draws them."""
        real, space, ensemble = self.real_data, self.spaces[entry.name], self.teachers[entry.name]
        pool = self._pools[round] if entry.protocol.selection == "honest" else None
        # as many images of each class as the set holds: IPC of each, or the set's own counts
        idx = random_subset(
            real.train_labels, pool, real.info.num_classes, entry.class_counts or entry.ipc, seed
        )
        proto = entry.protocol
        pixels = real.train_images[idx]
        fp = set_fingerprint(real.fingerprint, "subset", space.tag, idx)
        if round_trips(real.info, proto.random_data):  # stored as JPEG and reloaded
            fp = set_fingerprint(fp, f"jpeg:{proto.jpeg_quality}", space.tag)
            if self.materialise:
                pixels = jpeg_round_trip(pixels, real.info, proto.jpeg_quality)
        images = self._space_real(space, pixels)
        soft = None
        if entry.protocol.labels.mode == "S" and ensemble is not None:
            # The random baseline gets its soft labels from the teachers, on its own images.
            soft = ensemble.stored_labels(images.to(self.device)).cpu()
            fp = set_fingerprint(fp, "teacher-labels", ensemble.fingerprint)
        return self._add(f"random:{entry.ipc}:{round}:{fp[:12]}", images, real.train_labels[idx], fp, soft)

    def real(self, entry: PlanEntry) -> tuple[str, str]:
        """The whole real training set (one training space per run, so one set)."""
        if "real" not in self.data.train_sets:
            space = self.spaces[entry.name]
            fp = set_fingerprint(self.real_data.fingerprint, "real", space.tag)
            self._add(
                "real", self._space_real(space, self.real_data.train_images), self.real_data.train_labels, fp
            )
        return "real", self.data.train_sets["real"].fingerprint


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


def _canonical_models(protocol: Protocol) -> Protocol:
    """``protocol`` with its student, full-data and teacher models under their registered spelling
    (names match case-insensitively), so ``convnet-3`` and ``ConvNet-3`` hash, group and share jobs
    as one protocol."""
    labels, full = protocol.labels, protocol.full_data
    changes: dict[str, Any] = {}
    if protocol.model != (model := canonical_model_name(protocol.model)):
        changes["model"] = model
    if full.model is not None and full.model != (full_model := canonical_model_name(full.model)):
        changes["full_data"] = full.model_copy(update={"model": full_model})
    teachers = tuple(canonical_model_name(t) for t in labels.teachers)
    if teachers != tuple(labels.teachers):
        changes["labels"] = labels.model_copy(update={"teachers": teachers})
    return protocol.model_copy(update=changes) if changes else protocol


def check_soft_labels(protocol: Protocol, vs: ValidatedSet, name: str) -> None:
    """Refuse a set without soft labels under a protocol that trains on stored ones (mode S)."""
    if protocol.labels.mode == "S" and vs.soft_labels is None:
        raise InputError(
            f"protocol {protocol.name!r} trains on stored soft labels (mode S) but set {name!r} has "
            "none; give its [N, classes] soft labels (--labels) or use a hard-label protocol"
        )


def _check_buildable(protocol: Protocol, info: DatasetInfo) -> None:
    """Build the student, full-data and teacher models without memory, so a model that cannot take
    the dataset's images (e.g. too deep for 8 px) fails before any training starts."""
    names = (protocol.model, protocol.full_data.model or protocol.model, *protocol.labels.teachers)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        for model in dict.fromkeys(names):
            create_model(model, info.channels, info.num_classes, info.size)


def _cell_runs(cell: PlannedCell, results: Mapping[str, JobResult], protocol: Protocol) -> list[Run]:
    """A planned cell's trained jobs, one per learning rate, as candidates for selection."""
    reference = protocol.selection == "reference"
    pairs = zip(cell.learning_rates, cell.keys, strict=True)
    return [_run(lr, results[key], protocol.eval_every, reference) for lr, key in pairs]


def _run(lr: float, result: JobResult, every: int, reference: bool = False) -> Run:
    """A trained job as a candidate for selection. Its best test accuracy is taken, as DD-Ranking's loops
    test, at the epochs that are multiples of ``every`` (so the final epoch only when it is one), or
    at the final epoch when the run is shorter than ``every``.

    ``reference``: a diverged student's checkpoints from its divergence on score as DD-Ranking's would.
    There nothing stops a non-finite step, the weights turn NaN and every image gets the same class, 1/C
    of a balanced test set; ddrank freezes the student instead, and its frozen state must not count."""
    curve = result.curve
    classes = len(result.test_per_class)
    if reference and result.diverged_epoch is not None and classes:
        curve = tuple((epoch, 1 / classes if epoch >= result.diverged_epoch else acc) for epoch, acc in curve)
    tested = [acc for epoch, acc in curve if epoch % every == 0]
    best = max(tested) if tested else curve[-1][1]
    return Run(lr, result.test_acc, result.val_acc, best, result.diverged, result.diverged_epoch)


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
    settings: RunSettings | None = None,
    method: str | None = None,
    format: str = "auto",
    lr: float | None = None,
    space: str | None = None,
    resize: bool = False,
    allow_pickle: bool = False,
    store: JobCache | bool | None = True,
    progress: bool = True,
    strict: bool = False,
    max_bytes: int | None = None,
    **setting_fields: Any,
) -> Evaluation:
    """Score one synthetic set: LRS (HLR, IOR), ARS, or plain accuracy, with 95% CIs over rounds.

    ``images`` is a tensor/array or a path in any supported format (see ddrank.data.synthetic) and
    ``labels``, ``format``, ``lr``, ``space`` and ``allow_pickle`` say how to read it. The run is
    described by ``settings`` or by :class:`~ddrank.settings.RunSettings` fields given by name
    (``dataset``, ``protocol``, ``metric``, ``rounds``, ``seed``, ``device``, ...). Every input is
    validated before any training starts. As on the command line, finished jobs are kept and the
    evaluation is recorded in the default results store (``store=True``; a ResultStore or JobCache of
    your own, or False for none), and a progress bar is drawn on a terminal (``progress=False``: none).
    ``method`` defaults to the file or folder name of ``images`` when it is a path. ``strict`` refuses a
    set with warnings (see :meth:`Evaluator.validate`); ``max_bytes`` raises the size limit on input files.
    """
    if settings is not None and setting_fields:
        settings = settings.replace(**setting_fields)
    elif settings is None:
        settings = RunSettings(**setting_fields)
    reading = {} if max_bytes is None else {"max_bytes": max_bytes}
    syn = load_synthetic(
        images, labels, format=format, lr=lr, space=space, allow_pickle=allow_pickle, **reading
    )
    if method is None:
        method = default_method(images) if isinstance(images, str | os.PathLike) else "synthetic"
    if store is True:
        store = ResultStore()
    elif store is False:
        store = None
    with Reporter(enabled=progress) as reporter:
        evaluator = Evaluator(settings, store=store, reporter=reporter)
        validated = evaluator.validate(syn, resize=resize, strict=strict)
        return evaluator.evaluate_sets({method: validated})[0]


def calibrate(
    ipcs: Sequence[int] = (1, 10, 50),
    *,
    settings: RunSettings | None = None,
    store: JobCache | None = None,
    progress: bool = False,
    **setting_fields: Any,
) -> Calibration:
    """Train the random-subset baselines at ``ipcs`` and the whole-dataset baseline under the protocol of
    ``settings`` (or of :class:`~ddrank.settings.RunSettings` fields given by name: ``dataset``,
    ``protocol``, ``download``, ``calibration``, ...) and compare each with its published value.
    ``store`` keeps the jobs, so later evaluations under the same settings reuse them."""
    if settings is not None and setting_fields:
        settings = settings.replace(**setting_fields)
    elif settings is None:
        settings = RunSettings(**setting_fields)
    with Reporter(enabled=progress) as reporter:
        return Evaluator(settings, store=store, reporter=reporter).calibrate(list(ipcs))

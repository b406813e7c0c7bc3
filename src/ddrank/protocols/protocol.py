"""The Protocol: a typed, validated, hashable description of everything that affects a score.

Presets are YAML files in ``protocols/presets``; each holds a base protocol and optional
overrides that apply to a dataset and/or an IPC (see :func:`ddrank.protocols.load_protocol`).

Every protocol has a **fidelity**: ``reference`` reproduces a published evaluation protocol
(DD-Ranking v0.2.0's, or a method's own scripts) exactly, except where it cannot, and ``honest`` is
ddrank's corrected protocol (validation-split selection, final epoch, the corrections listed in
FIDELITY.md). Each way a protocol differs from its source is a :class:`Deviation`, carried with the
protocol (outside its content hash) so that every output can say it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ddrank.errors import ConfigError
from ddrank.protocols.limits import (
    MAX_LOSS_WEIGHT,
    MAX_LR,
    MAX_TEMPERATURE,
    MAX_WEIGHT_DECAY,
    over_limit,
)

Space = Literal["pixel", "normalized", "zca"]
Fidelity = Literal["reference", "honest"]
FIDELITIES: tuple[Fidelity, ...] = ("reference", "honest")
CellVariant = Literal["P", "hard", "noaug", "full"]

# Fields that describe a protocol without affecting any number: excluded from its content hash.
METADATA_FIELDS = frozenset({"name", "description", "reference_source", "sources", "deviations"})


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_limit(name: str, value: int | None, what: str | None = None) -> None:
    if value is not None and (message := over_limit(name, value, what)):
        raise ValueError(message)


def _at_most(value: float, bound: float, what: str) -> float:
    if value > bound:
        raise ValueError(f"{what} {value:g} is above the sanity bound {bound:g}")
    return value


class Deviation(_Spec):
    """One way a protocol differs from its source (a published protocol or a configuration).

    ``kind``: ``changed`` (ddrank computes something else), ``ignored`` (a source key that has no
    effect, reported rather than dropped), ``repaired`` (the source crashes here; ddrank follows
    the behaviour its own code shows was intended) or ``note`` (ddrank does what the source does,
    but the user should know). ``moves_score`` says whether the difference can change an accuracy
    or score.
    """

    key: str
    source_value: str
    ddrank_value: str
    reason: str
    moves_score: bool
    kind: Literal["changed", "ignored", "repaired", "note"] = "changed"

    def line(self) -> str:
        """One line for a terminal or a log."""
        effect = "moves scores" if self.moves_score else "same scores"  # the words of summary()
        if self.kind == "ignored":
            return f"{self.key}: {self.source_value} ignored [{effect}]: {self.reason}"
        if self.kind == "note":
            return f"{self.key}: {self.source_value} [note]: {self.reason}"
        return (
            f"{self.key}: source {self.source_value} → ddrank {self.ddrank_value} [{effect}]: {self.reason}"
        )

    def __str__(self) -> str:
        return self.line()

    def summary(self, width: int = 60) -> str:
        """At most ``width`` characters (where the key allows): the key, whether it moves scores, and
        source → ddrank, long values cut to what differs; :meth:`line` adds the reason."""
        effect = "moves scores" if self.moves_score else "same scores"
        head = f"{self.key} [{effect}{', ' + self.kind if self.kind in ('ignored', 'note') else ''}]"
        if self.kind in ("ignored", "note"):
            return head + " " + _cut(" ".join(self.source_value.split()), width - len(head) - 1)
        source, ddrank = _differing(" ".join(self.source_value.split()), " ".join(self.ddrank_value.split()))
        for value in (source, ddrank):  # "selection=reference → selection=honest": the key once
            if not value.startswith(f"{self.key}="):
                break
        else:
            source, ddrank = source[len(self.key) + 1 :], ddrank[len(self.key) + 1 :]
        room = width - len(head) - len(" ") - len(" → ")
        if len(source) + len(ddrank) > room:  # asides in parentheses go first, then words from the end
            source, ddrank = _without_asides(source), _without_asides(ddrank)
        if len(source) + len(ddrank) > room:
            if len(source) <= min(len(ddrank), room // 2 + 2):  # the shorter whole, the longer cut
                ddrank = _cut(ddrank, room - len(source))
            elif len(ddrank) <= room // 2 + 2:
                source = _cut(source, room - len(ddrank))
            else:
                source, ddrank = _cut(source, room // 2), _cut(ddrank, room - room // 2)
        return f"{head} {source} → {ddrank}"


_NEEDS_OBJECT = frozenset({"from", "of", "by", "to", "in", "with", "on", "per", "for"})


def _without_asides(text: str) -> str:
    """``text`` less its parenthesised asides ("whole batches (per-GPU statistics)" → "whole batches"),
    except those a word needs as its object ("seeds derived from (base seed, round)" keeps its pair)."""
    import re

    def drop(aside: re.Match[str]) -> str:
        before = text[: aside.start()].split()
        return aside.group() if before and before[-1] in _NEEDS_OBJECT else ""

    return " ".join(re.sub(r"\s*\([^()]*\)", drop, text).split()) or text


def _cut(text: str, room: int) -> str:
    """``text`` in at most ``room`` characters (at least 8), cut after a word and ending in "…"."""
    room = max(room, 8)
    if len(text) <= room:
        return text
    cut = text[: room - 1]
    if text[room - 1] != " " and " " in cut[2 * room // 3 :]:  # after a word, unless that loses a third
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:(") + "…"


def _differing(source: str, ddrank: str) -> tuple[str, str]:
    """The comma-separated parts of two values that differ ("sgd, 1000 epochs" and "sgd, 200 epochs" give
    "…1000 epochs" and "…200 epochs"); the values themselves when they share no leading part."""
    a, b = source.split(", "), ddrank.split(", ")
    same = 0
    while same < min(len(a), len(b)) - 1 and a[same] == b[same]:
        same += 1
    if same == 0:
        return source, ddrank
    return "…" + ", ".join(a[same:]), "…" + ", ".join(b[same:])


def shown(value: Any) -> str:
    """A compact one-line rendering of a configuration value."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def deviation(
    key: str,
    source_value: Any,
    ddrank_value: Any,
    reason: str,
    *,
    moves_score: bool = True,
    kind: Literal["changed", "ignored", "repaired", "note"] = "changed",
) -> Deviation:
    return Deviation(
        key=key,
        source_value=shown(source_value),
        ddrank_value=shown(ddrank_value),
        reason=reason,
        moves_score=moves_score,
        kind=kind,
    )


STANDARD_DEVIATIONS: tuple[Deviation, ...] = (
    deviation(
        "scores",
        "percent accuracies fed to exp()",
        "fractions in [0, 1]",
        "DD-Ranking computes LRS/ARS from percentages, so its scores leave [0, 1] (they saturate or reach "
        "the thousands); ddrank computes them from fractions, as the LRS/ARS definitions intend",
    ),
    deviation(
        "seed",
        "set_seed() from the clock every round",
        "seeds derived from (base seed, round)",
        "DD-Ranking's rounds are not reproducible; ddrank's are, with the same expected result",
        moves_score=False,
    ),
    deviation(
        "std",
        "np.std (ddof 0)",
        "sample std (ddof 1) and a 95% confidence interval",
        "ddrank reports the sample spread and an interval; means are unchanged",
        moves_score=False,
    ),
)
"""Deviations of every ddrank protocol from DD-Ranking's scoring, in both fidelities."""


class OptimizerSpec(_Spec):
    """Optimiser family and its hyper-parameters (PyTorch semantics)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)

    @field_validator("weight_decay")
    @classmethod
    def _decay(cls, v: float) -> float:
        return _at_most(v, MAX_WEIGHT_DECAY, "weight decay")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(not 0.0 <= b < 1.0 for b in v):
            raise ValueError("betas must each lie in [0, 1)")
        return v


class ScheduleSpec(_Spec):
    """Learning-rate multiplier per epoch: ``constant``, ``step`` (× gamma at milestones) or ``cosine``.

    ``milestones`` are fractions of the run's epochs. A cosine schedule multiplies the lr in epoch
    ``t`` (0-based) by ``0.5 · (1 + cos(π · t / (period · T)))`` for ``t <= T`` and by 0 after, with
    ``T = horizon`` or the run's epochs: ``period: 1`` decays to zero at the end (CosineAnnealingLR);
    ``period: 2`` is DD-Ranking's ``lr_scheduler: cosine``, a half period ending at 0.5 × lr.
    """

    kind: Literal["constant", "step", "cosine"] = "step"
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    period: float = Field(1.0, gt=0.0, le=100.0)
    horizon: int | None = Field(None, ge=1)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) > 10_000:
            raise ValueError("at most 10000 milestones")
        if any(not 0.0 < m < 1.0 for m in v):
            raise ValueError("milestones are fractions of the epochs, each in (0, 1)")
        return tuple(sorted(v))

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, v: int | None) -> int | None:
        _check_limit("epochs", v, "epochs of cosine horizon")
        return v

    @model_validator(mode="after")
    def _cosine_only(self) -> ScheduleSpec:
        if self.kind != "cosine" and (self.period != 1.0 or self.horizon is not None):
            raise ValueError("period and horizon apply to cosine schedules only")
        return self

    def factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base learning rate during ``epoch`` (0-based) of ``epochs``."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** sum(epoch >= int(m * epochs) for m in self.milestones)
        span = self.horizon or epochs
        if epoch > span:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * epoch / (self.period * span)))


class AugmentSpec(_Spec):
    """Training-time augmentation; ``none()`` is the same protocol with all of it switched off.

    ``transforms`` are image-folder style steps applied first, e.g.
    ``[{name: random_resized_crop, scale: [0.5, 1.0]}, {name: flip}, {name: patch_shuffle, grid: 2}]``;
    then DSA; then Mixup (``mixup`` = α) or CutMix (``cutmix`` = β), which mix labels too.
    """

    transforms: tuple[dict[str, Any], ...] = ()
    dsa: str | None = None
    dsa_mode: Literal["S", "M"] = "S"
    mixup: float | None = Field(None, gt=0.0)
    cutmix: float | None = Field(None, gt=0.0)
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)

    @property
    def enabled(self) -> bool:
        return bool(self.transforms) or self.dsa is not None or self.mixes

    def __hash__(self) -> int:  # transforms hold dicts, so hash the canonical JSON form
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @property
    def mixes(self) -> bool:
        return self.mixup is not None or self.cutmix is not None

    def none(self) -> AugmentSpec:
        return AugmentSpec()

    def transforms_only(self) -> AugmentSpec:
        """The image transforms without DSA or mixing (DD-Ranking's hard-label run)."""
        return AugmentSpec(transforms=self.transforms)


class LabelSpec(_Spec):
    """How students are labelled and which loss they minimise.

    ``hard``: cross-entropy on class labels. ``S``: one stored soft label per image (the set's
    own; teachers label the random baseline). ``M``: every augmented batch relabelled online by
    the teacher ensemble (``ensemble``: average of probabilities or of logits).
    """

    mode: Literal["hard", "S", "M"] = "hard"
    loss: str = "ce"
    temperature: float = Field(1.0, gt=0.0)
    t2_scale: bool = False
    teachers: tuple[str, ...] = ()
    ensemble: Literal["prob", "logit"] = "prob"
    mse_weight: float = Field(1.0, ge=0.0)
    ce_weight: float = Field(0.025, ge=0.0)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        return _at_most(v, MAX_TEMPERATURE, "temperature")

    @field_validator("mse_weight", "ce_weight")
    @classmethod
    def _weights(cls, v: float) -> float:
        return _at_most(v, MAX_LOSS_WEIGHT, "loss weight")

    @field_validator("teachers")
    @classmethod
    def _teachers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _check_limit("teachers", len(v))
        return v

    def hard(self) -> LabelSpec:
        """The same protocol's hard-label variant (for acc(syn, hard))."""
        return LabelSpec()


class _Training(_Spec):
    """Bounds shared by everything that trains (a protocol's students, the full-data recipe): the
    learning rate, epochs and batch size are checked against the limits before anything allocates."""

    @field_validator("lr", check_fields=False)
    @classmethod
    def _lr(cls, v: float | None) -> float | None:
        return None if v is None else _at_most(v, MAX_LR, "learning rate")

    @field_validator("epochs", "eval_every", check_fields=False)
    @classmethod
    def _epochs(cls, v: int) -> int:
        _check_limit("epochs", v)
        return v

    @field_validator("batch_size", check_fields=False)
    @classmethod
    def _batch(cls, v: int) -> int:
        _check_limit("batch_size", v, "images per batch")
        return v


class FullDataRecipe(_Training):
    """How ``acc(real, hard)`` is obtained: trained with this recipe, or a published value.

    ``source: published`` uses ``published_acc`` (labelled with ``published_source``) instead of
    training; with ``source: trained`` the published value is only used when a run asks for it.
    """

    model: str | None = None
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    lr: float = Field(0.01, gt=0.0)
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(512, ge=1)
    augment: AugmentSpec = AugmentSpec()
    source: Literal["trained", "published"] = "trained"
    published_acc: float | None = Field(None, ge=0.0, le=1.0)
    published_source: str | None = None

    @model_validator(mode="after")
    def _published(self) -> FullDataRecipe:
        if self.source == "published" and (self.published_acc is None or not self.published_source):
            raise ValueError("source 'published' needs published_acc and published_source")
        return self


class LrSearch(_Spec):
    """Which learning rates each kind of run tries.

    ``auto``: the set's own lr when it ships one (and ``use_set_lr``), else the protocol's ``lr``,
    else every lr of ``lr_grid``. ``grid``: always the whole grid. ``syn`` covers the synthetic set
    under the protocol (with and without augmentation), ``random`` the random real subsets and
    ``hard`` the synthetic set's hard-label run of LRS.
    """

    syn: Literal["auto", "grid"] = "auto"
    random: Literal["auto", "grid"] = "grid"
    hard: Literal["auto", "grid"] = "grid"


TEST_TRANSFORMS = {"resize": "shorter side resized to size (a pair: exact size)", "center_crop": "size"}


def _size(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return len(value) == 2 and all(_size(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096


class Protocol(_Training):
    """Everything that affects a score, validated; ``content_hash`` identifies it in results.

    Cell conventions (what the planner does per cell variant): ``P`` trains with ``labels`` and
    ``augment``; ``hard`` (acc(syn, hard) of LRS) with hard labels and ``augment`` when
    ``hard_augment`` is ``all``, only its ``transforms`` when ``transforms``; ``noaug`` (ARS) without
    augmentation; ``full`` (acc(real, hard)) with ``full_data``. ``test_transforms`` apply to the test
    (and validation) images of ``P`` and ``noaug`` cells. ``random_data: image`` stores each random
    subset as JPEG files (PIL, ``jpeg_quality``) and reloads them before training, as DD-Ranking's
    ``random_data_format: image`` does for datasets held as arrays; image-folder datasets copy their
    original files, which leaves the pixels unchanged.
    """

    name: str
    version: int = 1
    description: str = ""
    fidelity: Fidelity = "honest"
    dataset: str | None = None
    ipc: int | None = None
    model: str
    labels: LabelSpec = LabelSpec()
    augment: AugmentSpec = AugmentSpec()
    hard_augment: Literal["all", "transforms"] = "all"
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    epochs: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr_grid: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1)
    lr: float | None = Field(None, gt=0.0)
    use_set_lr: bool = True
    lr_search: LrSearch = LrSearch()
    selection: Literal["honest", "reference"] = "honest"
    eval_every: int = Field(100, ge=1)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    rounds: int = Field(5, ge=1)
    space: Space = "normalized"
    stats: str | None = None
    zca: bool = False
    zca_regularization: float = Field(0.1, gt=0.0)
    test_transforms: tuple[dict[str, Any], ...] = ()
    random_data: Literal["tensor", "image"] = "tensor"
    jpeg_quality: int = Field(75, ge=1, le=100)
    full_data: FullDataRecipe = FullDataRecipe()
    reference_source: str | None = None
    sources: dict[str, str] = {}
    deviations: tuple[Deviation, ...] = ()

    @field_validator("lr_grid")
    @classmethod
    def _positive_grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(lr <= 0 for lr in v):
            raise ValueError("lr_grid needs at least one positive learning rate")
        _check_limit("lr_grid", len(v), "learning rates in lr_grid")
        for lr in v:
            _at_most(lr, MAX_LR, "learning rate")
        return tuple(v)

    @field_validator("rounds")
    @classmethod
    def _rounds(cls, v: int) -> int:
        _check_limit("rounds", v)
        return v

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("ipc must be at least 1")
        _check_limit("ipc", v, "images per class")
        return v

    @field_validator("test_transforms")
    @classmethod
    def _test_transforms(cls, v: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for step in v:
            name = step.get("name") if isinstance(step, dict) else None
            if name not in TEST_TRANSFORMS or set(step) != {"name", "size"} or not _size(step["size"]):
                raise ValueError(
                    f"test transform {step!r} is not one of {{name: resize|center_crop, size: N or [H, W]}}"
                )
        return tuple(v)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        labels = self.labels
        if labels.mode == "hard" and labels.loss != "ce":
            raise ValueError(f"hard labels train with loss 'ce', not {labels.loss!r}")
        if labels.mode == "M" and not labels.teachers:
            raise ValueError(
                "labels mode 'M' relabels every batch with teachers; list them in labels.teachers"
            )
        if labels.mode == "hard" and labels.teachers:
            raise ValueError("hard labels use no teachers; remove labels.teachers or pick mode 'S' or 'M'")
        if self.fidelity == "honest" and self.selection != "honest":
            raise ValueError("fidelity 'honest' selects on a validation split: selection must be 'honest'")
        return self

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    @property
    def optimistic(self) -> bool:
        """True for the reference selection mode (best test accuracy over lrs and checkpoints)."""
        return self.selection == "reference"

    def content_hash(self) -> str:
        """A stable hash of every field that affects a number (name, description and metadata excluded)."""
        payload = canonical_dump(self)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, **fields: Any) -> Protocol:
        """A validated copy with some fields replaced (nested specs as dicts or specs).

        Asking for ``selection: reference`` without a fidelity makes the copy a ``reference`` protocol:
        an honest protocol never selects on the test set.
        """
        if fields.get("selection") == "reference" and "fidelity" not in fields:
            fields["fidelity"] = "reference"
        data = self.model_dump()
        data.update({k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in fields.items()})
        return validated_protocol(data)

    # --- what the planner does per cell ------------------------------------------------------------

    def learning_rates(
        self, run: Literal["syn", "random", "hard"], set_lr: float | None = None
    ) -> tuple[float, ...]:
        """The learning rates a run of kind ``run`` trains with (see :class:`LrSearch`)."""
        policy = getattr(self.lr_search, run)
        if policy == "auto":
            if run != "random" and set_lr is not None and self.use_set_lr:
                return (float(set_lr),)
            if self.lr is not None:
                return (self.lr,)
        return self.lr_grid

    def augment_for(self, variant: CellVariant) -> AugmentSpec:
        """The training augmentation of a cell variant (``full`` is the full-data recipe's)."""
        if variant == "noaug":
            return self.augment.none()
        if variant == "hard" and self.hard_augment == "transforms":
            return self.augment.transforms_only()
        if variant == "full":
            return self.full_data.augment
        return self.augment

    def test_transforms_for(self, variant: CellVariant) -> tuple[dict[str, Any], ...]:
        """Test-time transforms of a cell variant: the protocol's for P and noaug, none otherwise."""
        return self.test_transforms if variant in ("P", "noaug") else ()

    def reference_refusal(self, metric: str) -> str | None:
        """Why DD-Ranking v0.2.0 cannot run ``metric`` under this reference protocol, else None."""
        if self.fidelity != "reference":
            return None
        if metric == "ars" and self.labels.mode == "hard":
            return (
                "DD-Ranking v0.2.0's AugmentationRobustScore crashes with hard labels (it tests on a "
                "test_loader_real it deleted and passes teacher_models it never built); use fidelity honest"
            )
        if metric == "ars" and self.schedule.kind == "step":
            return (
                "DD-Ranking v0.2.0's AugmentationRobustScore passes no step_size to a step scheduler "
                "(AssertionError); use a cosine schedule or fidelity honest"
            )
        return None

    def deviations_for(self, metric: str) -> tuple[Deviation, ...]:
        """The protocol's deviations plus those that depend on the metric, each once (plain accuracy
        computes no LRS or ARS, so DD-Ranking's percent-into-exp does not concern it)."""
        found = (*self.deviations, *metric_deviations(self, metric))
        return unique_deviations(d for d in found if not (metric == "acc" and d.key == "scores"))


def precision_deviation(protocol: Protocol, precision: str) -> Deviation | None:
    """The deviation of training a reference protocol in ``precision`` bf16 (asked for explicitly:
    ``auto`` is fp32 for reference protocols, as every published evaluation trains), else None."""
    if protocol.fidelity != "reference" or precision != "bf16":
        return None
    return deviation(
        "precision",
        "fp32 (no autocast)",
        "bf16 autocast",
        "bf16 was asked for; the reference trains in fp32 (precision auto keeps fp32 for reference "
        "protocols)",
    )


def metric_deviations(protocol: Protocol, metric: str) -> list[Deviation]:
    """Deviations from DD-Ranking v0.2.0 that depend on which of its metric classes runs (the repairs
    of its crashing code paths are said for reference protocols, which claim to reproduce it)."""
    found: list[Deviation] = []
    soft = protocol.labels.mode != "hard"
    reference = protocol.fidelity == "reference"
    if reference and protocol.random_data == "tensor" and (metric == "ars" or (metric == "lrs" and soft)):
        found.append(
            deviation(
                "random_data_format",
                "tensor: TypeError (get_random_data_tensors called without class_map)",
                "class-balanced random subset as LabelRobustScoreHard draws it",
                "LabelRobustScoreSoft and AugmentationRobustScore v0.2.0 crash drawing tensor random "
                "subsets; ddrank draws them as the working LabelRobustScoreHard call does",
                moves_score=False,
                kind="repaired",
            )
        )
    if reference and metric == "lrs" and not soft:
        found.append(
            deviation(
                "results",
                "ValueError in save_results (each round's LRS appended twice: lists of unequal length)",
                "every round's HLR, IOR and LRS once",
                "LabelRobustScoreHard v0.2.0 trains every round, then fails in save_results before it "
                "returns; ddrank reports the scores its code computes (the duplicated LRS list has the "
                "same mean and population std)",
                moves_score=False,
                kind="repaired",
            )
        )
    if reference and metric == "lrs" and protocol.labels.mode == "S":
        found.append(
            deviation(
                "soft_label_mode",
                "S: AttributeError (self.teacher_model) labelling the random subset",
                "teacher ensemble's mean logits on the random subset",
                "LabelRobustScoreSoft v0.2.0 labels the random baseline with an attribute it never sets; "
                "ddrank labels it as AugmentationRobustScore does (mean of the teachers' logits)",
                moves_score=False,
                kind="repaired",
            )
        )
    if metric == "acc":
        found.append(
            deviation(
                "metric",
                "GeneralEvaluator: NameError (use_torchvision) at construction",
                "the synthetic-set run of the LRS class of the same labels",
                "GeneralEvaluator v0.2.0 cannot run (undefined use_torchvision, test_interval, "
                "syn_batch_size; accuracies never collected); ddrank trains and selects as the LRS classes "
                "do",
                moves_score=False,
                kind="repaired",
            )
        )
    return found


DDRANKING_BUILT_TORCHVISION = r"resnet(18|34|50)|vgg\d+(_bn)?|alexnet"
"""torchvision models DD-Ranking's build_model makes from its own names (ResNet-18, VGG-11-BN,
AlexNet with use_torchvision); it hands any other model name to torchvision with pretrained=True."""

IMAGENET_FAMILY = (
    "imagenet1k",
    "imagenette",
    "imagewoof",
    "imagemeow",
    "imagesquawk",
    "imagefruit",
    "imageyellow",
)


def derived_deviations(protocol: Protocol) -> list[Deviation]:
    """Deviations from DD-Ranking v0.2.0 that follow from the protocol's own fields."""
    found: list[Deviation] = []
    augment, labels = protocol.augment, protocol.labels
    if augment.transforms:
        found.append(
            deviation(
                "custom_train_trans",
                "applied to image-folder inputs only (a synthetic set given as a tensor, and tensor random "
                "subsets, are not transformed)",
                "applied to every training set of the protocol's cells",
                "ddrank has one augmentation per cell; it matches DD-Ranking when the synthetic set is an "
                "image folder and random subsets are stored as images",
            )
        )
    hard_mixes = labels.mode != "hard" and protocol.hard_augment == "all"
    unmixed = labels.mode in ("hard", "S") or labels.loss == "mse_gt" or hard_mixes
    if augment.mixes and unmixed:
        found.append(
            deviation(
                "data_aug_func",
                "Mixup / CutMix mix images only (hard and stored targets, MSE-GT's class targets, stay "
                "unmixed)",
                "labels mixed with the images by the same lambda",
                "DD-Ranking's Mixup / Cutmix return images only; ddrank mixes the labels of hard and stored "
                "targets too (mode-M teachers label the mixed images in both)",
            )
        )
    if protocol.dataset in IMAGENET_FAMILY:
        found.append(
            deviation(
                "dataset",
                "images resized to im_size as a pair (aspect ratio not kept) after normalising",
                "shorter side resized to the size, then centre-cropped, decoded once to uint8",
                "the full-data run, the hard-label runs' test images and tensor random subsets see slightly "
                "different pixels"
                + (
                    "; the test transforms start from those decoded images, not the original files"
                    if protocol.test_transforms
                    else ""
                ),
            )
        )
        if protocol.random_data == "image":
            found.append(
                deviation(
                    "random_data_format",
                    "image: original full-resolution JPEG files through custom_train_trans (through "
                    "Resize(im_size) as a pair in AugmentationRobustScore's run without augmentation)",
                    "images decoded at the dataset's size (shorter side resized, centre crop)",
                    "ddrank holds the dataset decoded at one size; DD-Ranking crops random subsets from the "
                    "originals",
                )
            )
    if protocol.selection == "reference":
        runs = [("num_epochs", protocol.epochs), ("full_data.epochs", protocol.full_data.epochs)]
        for key, epochs in runs:
            if epochs < protocol.eval_every:
                found.append(
                    deviation(
                        key,
                        f"{epochs} epochs, under the test interval of {protocol.eval_every}: never tested, "
                        "best accuracy 0",
                        "the final epoch's test accuracy",
                        "DD-Ranking tests every test_interval epochs only, so a shorter run reports its "
                        "initial best of 0; ddrank tests the final epoch",
                        kind="repaired",
                    )
                )
    size = _image_size(protocol.dataset)
    for name in dict.fromkeys((protocol.model, *labels.teachers)):
        found += _model_deviations(name, size)
    for name in dict.fromkeys(labels.teachers if labels.mode != "hard" else ()):
        plain = name.removeprefix("torchvision:")
        if not name.startswith("torchvision:") or re.fullmatch(DDRANKING_BUILT_TORCHVISION, plain):
            continue
        classes = _num_classes(protocol.dataset)
        if classes not in (None, 1000):
            found.append(
                deviation(
                    f"teacher_model_names.{plain}",
                    f"get_model(num_classes={classes}, pretrained=True): ValueError",
                    f"the {name} checkpoint in the teacher directory",
                    "torchvision's pretrained weights have 1000 classes; ddrank loads a teacher trained on "
                    "this dataset",
                    moves_score=False,
                    kind="repaired",
                )
            )
            continue
        found.append(
            deviation(
                f"teacher_model_names.{plain}",
                "torchvision's pretrained ImageNet-1K weights (pretrained=True; teacher_dir is not read)",
                f"the {name} checkpoint in the teacher directory",
                "DD-Ranking's build_model hands models outside its own families to torchvision with "
                "pretrained=True; ddrank loads every teacher from a checkpoint: save torchvision's "
                f"IMAGENET1K_V1 weights of {plain} there to reproduce DD-Ranking's teacher",
            )
        )
    return found


def _image_size(dataset: str | None) -> int | None:
    info = _dataset_info(dataset)
    return None if info is None else info.size


def _num_classes(dataset: str | None) -> int | None:
    info = _dataset_info(dataset)
    return None if info is None else info.num_classes


def _dataset_info(dataset: str | None) -> Any:
    from ddrank.data.real import dataset_info
    from ddrank.errors import UnknownNameError

    try:
        return dataset_info(dataset) if dataset else None
    except UnknownNameError:
        return None


def _model_deviations(name: str, size: int | None) -> list[Deviation]:
    """How DD-Ranking's build_model would make ``name`` differently at ``size`` px."""
    if size is None:
        return []
    if name.startswith("ResNet-") and size >= 128:
        return [
            deviation(
                "model",
                f"{name} (DC form) at {size} px: RuntimeError (a 4x4 average pool of the last feature map "
                "does not fit its 512-input classifier)",
                f"{name} with global average pooling",
                "DD-Ranking's DC ResNet pools 4x4 and only fits 32 and 64 px; ddrank pools globally, as the "
                "AdaptiveAvgPool2d the DC ResNet defines (and leaves unused) does",
                moves_score=False,
                kind="repaired",
            )
        ]
    if name.startswith("ResNet-") and size == 64:
        return [
            deviation(
                "model",
                f"{name} (DC form) with a stride-2 stem at 64 px",
                "stride-1 stem",
                "DD-Ranking's DC ResNet halves 64-px inputs in its first convolution; ddrank's does not",
            )
        ]
    plain = name.removeprefix("torchvision:")
    if name == "torchvision:alexnet" and size in (32, 64):
        return [
            deviation(
                "model",
                "torchvision alexnet with its first convolution replaced by a 3x3 stride-1 one without bias",
                "torchvision:alexnet with its 11x11 first convolution at stride 1",
                "DD-Ranking and ddrank adapt AlexNet's stem to small images differently",
            )
        ]
    if name.startswith("torchvision:") and size <= 64 and not plain.startswith(("resnet", "alexnet")):
        return [
            deviation(
                "model",
                f"torchvision {plain} built as is",
                f"{name} with a full-resolution stem",
                f"DD-Ranking builds torchvision's {plain} unchanged; ddrank keeps {size}-px inputs at full "
                "resolution in the stem",
            )
        ]
    return []


def unique_deviations(deviations: Iterable[Deviation]) -> tuple[Deviation, ...]:
    """Deviations in order, each (key, reason) once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for d in deviations:
        if (d.key, d.reason) not in seen:
            seen.add((d.key, d.reason))
            out.append(d)
    return tuple(out)


# --- reference versus honest ------------------------------------------------------------------------

FIDELITY_REASONS: dict[str, tuple[str, bool]] = {
    "selection": (
        "reference picks the best test accuracy over the lr grid and over test checkpoints, so the test "
        "set chooses the model (optimistic); honest picks the lr on a validation split held out from the "
        "training set and reports the final epoch",
        True,
    ),
    "schedule": (
        "DD-Ranking's lr_scheduler 'cosine' is LambdaLR(0.5 (1 + cos(pi t / 2T))), half a period ending at "
        "0.5 x lr; honest decays to zero over the run, as the methods' own training scripts do",
        True,
    ),
    "random_data": (
        "DD-Ranking stores random subsets as image files and reloads them (CIFAR: re-encoded as JPEG by "
        "PIL at quality 75, a lossy round trip the synthetic sets are spared; image-folder datasets: "
        "copies of the originals); honest samples the subset from the decoded dataset directly",
        True,
    ),
    "full_data": (
        "DD-Ranking trains acc(real, hard) for the metric's num_epochs with real_batch_size (its "
        "REAL_DATA_TRAINING_CONFIG epochs and batch size are never read) and keeps the best test "
        "checkpoint, or takes a cached accuracy of undocumented provenance (eval_full_data: false); "
        "honest trains the recipe as written and reports the final epoch",
        True,
    ),
    "stats": (
        "DD-Ranking normalises CIFAR-100 with CIFAR-10's mean and std; honest uses CIFAR-100's own "
        "(give synthetic sets stored in the other normalisation as pixels)",
        True,
    ),
    "hard_augment": (
        "DD-Ranking (use_aug_for_hard: false) trains acc(syn, hard) without its data_aug_func; honest "
        "trains the hard-label run with the protocol's whole augmentation",
        True,
    ),
}
"""Why a reference field and its honest counterpart differ, by dotted field path (longest prefix wins)."""


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping flattened to dotted paths (lists and scalars are leaves)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def canonical_dump(protocol: Protocol) -> dict[str, Any]:
    """The fields that affect a number, as JSON values: metadata and fields the protocol never reads
    dropped, and a published full-data accuracy without the training recipe it replaces."""
    payload = protocol.model_dump(mode="json", exclude=set(METADATA_FIELDS) | _unused(protocol))
    recipe = payload["full_data"]
    if recipe["source"] == "published":
        payload["full_data"] = {k: recipe[k] for k in ("source", "published_acc", "published_source")}
    return payload


def describe_full_data(recipe: FullDataRecipe) -> str:
    """One line: where acc(real, hard) comes from."""
    if recipe.source == "published":
        return f"published {recipe.published_acc:g} ({recipe.published_source})"
    opt = recipe.optimizer
    return (
        f"trained: {opt.name} lr {recipe.lr:g} wd {opt.weight_decay:g}, {recipe.schedule.kind} schedule, "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}"
        + (", augmented" if recipe.augment.enabled else "")
    )


def _unused(protocol: Protocol) -> set[str]:
    """Dotted fields the protocol never reads, so that a difference in them changes nothing."""
    unused = set()
    if protocol.selection == "honest":
        unused.add("eval_every")
    if protocol.random_data == "tensor":
        unused.add("jpeg_quality")
    if protocol.labels.mode == "hard":
        unused.add("hard_augment")
    return unused


def fidelity_deviations(
    reference: Protocol, honest: Protocol, reasons: Mapping[str, str | tuple[str, bool]] = {}
) -> list[Deviation]:
    """Each difference between a reference protocol and its honest form, with its reason.

    ``reasons`` (dotted field path → reason, or (reason, moves_score)) extends
    :data:`FIDELITY_REASONS`; a difference with no reason is a ConfigError, so none is silent.
    """
    before, after = leaves(canonical_dump(reference)), leaves(canonical_dump(honest))
    # A field only one form reads (eval_every, jpeg_quality) differs in the form that reads it alone.
    skip = {"fidelity"} | {p for p in set(before) ^ set(after) if p in ("eval_every", "jpeg_quality")}
    table: dict[str, tuple[str, bool]] = dict(FIDELITY_REASONS)
    table.update({k: v if isinstance(v, tuple) else (v, True) for k, v in reasons.items()})
    grouped: dict[str, list[str]] = {}
    for path in sorted(set(before) | set(after)):
        if before.get(path) == after.get(path) or path in skip:
            continue
        parts = path.split(".")
        key = next(
            (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in table), None
        )
        if key is None:
            raise ConfigError(
                f"protocol {honest.name!r}: its honest form differs from the reference form in {path!r} "
                "with no stated reason; add one under 'reasons'"
            )
        grouped.setdefault(key, []).append(path)
    found = []
    for key, paths in grouped.items():

        def side(values: dict[str, Any], paths: list[str] = paths, key: str = key) -> str:
            return "; ".join(f"{p[len(key) + 1 :] or p}={shown(values.get(p))}" for p in paths)

        source_value, ddrank_value = side(before), side(after)
        if key == "full_data":
            source_value, ddrank_value = (
                describe_full_data(reference.full_data),
                describe_full_data(honest.full_data),
            )
        reason, moves = table[key]
        found.append(
            Deviation(
                key=key,
                source_value=source_value,
                ddrank_value=ddrank_value,
                reason=reason,
                moves_score=moves,
            )
        )
    return found


def validated_protocol(fields: dict[str, Any]) -> Protocol:
    """``Protocol.model_validate`` with the first problem raised as a one-line ConfigError."""
    try:
        return Protocol.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "protocol"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"protocol {fields.get('name', 'custom')!r}: {where}: {message}") from None

"""The one table of metrics: what each trains (its cells), what it computes per round, and how it is
shown and ranked. Evaluation, leaderboards, plots, the DD-Ranking classes and the command line all
read it, so adding a metric means adding one entry here.

A *cell* is a (set, protocol variant) pair trained over the learning-rate grid; a round's cell
accuracies are named ``acc_<cell>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ddrank.errors import UnknownNameError
from ddrank.metrics.scores import (
    NEUTRAL_SCORE,
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)


@dataclass(frozen=True)
class Cell:
    """One column of an evaluation: a set (syn, random or real) trained under a protocol variant."""

    name: str
    source: Literal["syn", "random", "real"]
    variant: Literal["P", "hard", "noaug", "full"]
    soft_labels_only: bool = False  # trained only when the protocol's labels are soft (S or M)


@dataclass(frozen=True)
class Quantity:
    """A per-round value, or the difference ``field − minus`` of two, with its label and direction."""

    field: str
    label: str
    higher_is_better: bool = True
    minus: str | None = None

    def of(self, values: Mapping[str, float | None]) -> float | None:
        """This quantity in a round's values (None when a value is missing)."""
        value = values.get(self.field)
        if self.minus is None or value is None:
            return value
        other = values.get(self.minus)
        return None if other is None else value - other


Scores = Callable[[Mapping[str, float], float], dict[str, float]]


@dataclass(frozen=True)
class MetricDefinition:
    """Everything ddrank knows about one metric (lrs, ars or acc)."""

    name: str
    label: str
    description: str
    cells: tuple[Cell, ...]
    fields: tuple[str, ...]  # per-round values summarised over rounds (mean, std, 95% CI)
    score: Quantity  # the ranked value; its ``field`` is a per-round value
    scores: Scores  # a round's score values from its cell accuracies and the weight (w or γ)
    components: tuple[Quantity, ...]  # shown next to the score in leaderboards
    syn_accuracy: str  # the acc(syn) shown in tables
    random_accuracy: str | None  # the acc(rand) shown in tables; None: the metric measures none
    accuracy_bars: tuple[Quantity, ...]  # the accuracy plot's series (leaderboard row keys)
    scatter: tuple[Quantity, Quantity, str] | None  # x, y and caption of the components plot
    ddranking: tuple[tuple[str, Quantity], ...]  # DD-Ranking's result names for the per-round values
    ranks_every_evaluation: bool = False  # ranks any evaluation that has its score, not only its own
    neutral: float | None = None  # the score at a = 0 / b = 0 (None: no such point); see neutral_meaning
    neutral_meaning: str = ""  # what a set scoring exactly ``neutral`` is, in words
    weight_symbol: str | None = None  # the name of the weight its scores take (w, γ); None: it takes none

    def cells_for(self, soft_labels: bool) -> list[Cell]:
        """The cells trained for a protocol whose labels are soft (mode S or M) or hard."""
        return [c for c in self.cells if soft_labels or not c.soft_labels_only]

    @property
    def needs_real(self) -> bool:
        """Whether the metric uses acc(real, hard), the full-data baseline."""
        return any(c.source == "real" for c in self.cells)


def _lrs_scores(values: Mapping[str, float], weight: float) -> dict[str, float]:
    acc_syn_hard = values.get("acc_syn_hard", values["acc_syn"])  # hard-label protocols: the same cell
    out = {"acc_syn_hard": acc_syn_hard}
    out["hlr"] = hard_label_recovery(values["acc_real"], acc_syn_hard)
    out["ior"] = improvement_over_random(values["acc_syn"], values["acc_random"])
    out["lrs"] = label_robust_score(out["hlr"], out["ior"], weight)
    return out


def _ars_scores(values: Mapping[str, float], weight: float) -> dict[str, float]:
    gap_aug = improvement_over_random(values["acc_syn_aug"], values["acc_random_aug"])
    gap_noaug = improvement_over_random(values["acc_syn_noaug"], values["acc_random_noaug"])
    return {"ars": augmentation_robust_score(gap_aug, gap_noaug, weight)}


def _no_scores(values: Mapping[str, float], weight: float) -> dict[str, float]:
    return {}


_HLR = Quantity("hlr", "HLR", higher_is_better=False)
_IOR = Quantity("ior", "IOR")
_ARS_CELLS = (
    Quantity("acc_syn_aug", "acc(syn, +aug)"),
    Quantity("acc_random_aug", "acc(rand, +aug)"),
    Quantity("acc_syn_noaug", "acc(syn, −aug)"),
    Quantity("acc_random_noaug", "acc(rand, −aug)"),
)
_SYN_RANDOM_BARS = (Quantity("acc_syn", "synthetic"), Quantity("acc_random", "random real"))

METRICS: dict[str, MetricDefinition] = {
    "lrs": MetricDefinition(
        name="lrs",
        label="LRS",
        description="label-robust score: hard-label recovery (HLR, lower is better) against improvement "
        "over random (IOR, higher is better)",
        cells=(
            Cell("syn", "syn", "P"),
            Cell("random", "random", "P"),
            Cell("syn_hard", "syn", "hard", soft_labels_only=True),
            Cell("real", "real", "full"),
        ),
        fields=("acc_syn", "acc_random", "acc_syn_hard", "acc_real", "hlr", "ior", "lrs"),
        score=Quantity("lrs", "LRS"),
        scores=_lrs_scores,
        components=(_HLR, _IOR),
        syn_accuracy="acc_syn",
        random_accuracy="acc_random",
        accuracy_bars=_SYN_RANDOM_BARS,
        scatter=(
            Quantity("hlr", "HLR (%), lower is better", higher_is_better=False),
            Quantity("ior", "IOR (%), higher is better"),
            "HLR against IOR",
        ),
        neutral=NEUTRAL_SCORE,
        neutral_meaning="a = 0: the improvement over random exactly offsets the hard-label gap "
        "(w·IOR = (1 − w)·HLR, e.g. IOR = HLR = 0); a random real subset (IOR = 0, HLR > 0) scores below it",
        weight_symbol="w",
        ddranking=(
            ("hard_label_recovery", _HLR),
            ("improvement_over_random", _IOR),
            ("label_robust_score", Quantity("lrs", "LRS")),
        ),
    ),
    "ars": MetricDefinition(
        name="ars",
        label="ARS",
        description="augmentation-robust score: synthetic minus random accuracy with and without "
        "augmentation",
        cells=(
            Cell("syn_aug", "syn", "P"),
            Cell("random_aug", "random", "P"),
            Cell("syn_noaug", "syn", "noaug"),
            Cell("random_noaug", "random", "noaug"),
        ),
        fields=("acc_syn_aug", "acc_random_aug", "acc_syn_noaug", "acc_random_noaug", "ars"),
        score=Quantity("ars", "ARS"),
        scores=_ars_scores,
        components=_ARS_CELLS,
        syn_accuracy="acc_syn_aug",
        random_accuracy="acc_random_aug",
        accuracy_bars=(
            Quantity("acc_syn_aug", "synthetic, +aug"),
            Quantity("acc_random_aug", "random, +aug"),
            Quantity("acc_syn_noaug", "synthetic, −aug"),
            Quantity("acc_random_noaug", "random, −aug"),
        ),
        scatter=(
            Quantity("acc_syn_noaug", "syn − rand without augmentation (%)", minus="acc_random_noaug"),
            Quantity("acc_syn_aug", "syn − rand with augmentation (%)", minus="acc_random_aug"),
            "improvement over random with and without augmentation",
        ),
        ddranking=(
            ("with_aug_scores", Quantity("acc_syn_aug", "with augmentation", minus="acc_random_aug")),
            (
                "without_aug_scores",
                Quantity("acc_syn_noaug", "without augmentation", minus="acc_random_noaug"),
            ),
            ("augmentation_robust_score", Quantity("ars", "ARS")),
        ),
        neutral=NEUTRAL_SCORE,
        neutral_meaning="b = 0: no better than random, synthetic = random with and without augmentation",
        weight_symbol="γ",
    ),
    "acc": MetricDefinition(
        name="acc",
        label="acc(syn)",
        description="test accuracy of the synthetic set under its protocol",
        cells=(Cell("syn", "syn", "P"),),
        fields=("acc_syn",),
        score=Quantity("acc_syn", "acc(syn)"),
        scores=_no_scores,
        components=(),
        syn_accuracy="acc_syn",
        # an accuracy evaluation trains no random subset: its tables show acc(syn) alone, also for the LRS
        # evaluations it ranks, so that every row of an accuracy leaderboard shows the same measurement
        random_accuracy=None,
        accuracy_bars=(Quantity("acc_syn", "synthetic"),),
        scatter=None,
        ddranking=(("acc", Quantity("acc_syn", "acc(syn)")),),
        ranks_every_evaluation=True,
    ),
}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)


# The range each per-round value cannot leave: accuracies and scores are fractions, gaps differences of two.
_BOUNDS = {"hlr": (-1.0, 1.0), "ior": (-1.0, 1.0), "lrs": (0.0, 1.0), "ars": (0.0, 1.0)}


def field_bounds(name: str) -> tuple[float, float] | None:
    """The bounds of per-round value ``name`` (accuracies [0, 1], HLR and IOR [-1, 1]); None if unbounded."""
    if name.startswith("acc_"):
        return (0.0, 1.0)
    return _BOUNDS.get(name)


def metric_definition(name: str) -> MetricDefinition:
    """The definition of metric ``name`` (lrs, ars or acc)."""
    if name not in METRICS:
        raise UnknownNameError("metric", name, METRICS)
    return METRICS[name]

"""The one result schema: an :class:`Evaluation` and its dict form (``to_dict`` / ``from_dict``), which
the JSON output, the results store, the leaderboard, the HTML page and the DD-Ranking classes share.

Accuracies and scores are fractions; summaries are means, standard deviations (ddof 1) and 95%
Student-t intervals over rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddrank.errors import DDRankError, InputError, one_line, shown
from ddrank.metrics import summarize
from ddrank.metrics.definitions import metric_definition
from ddrank.metrics.stats import Summary

if TYPE_CHECKING:
    from ddrank.store import ResultStore

STD_DDOF = 1
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Run:
    """One trained student: its learning rate and final accuracies; ``diverged`` when its training went
    non-finite at ``diverged_epoch`` (its accuracies are then what the frozen student predicts)."""

    lr: float
    test_acc: float
    val_acc: float | None
    best_test_acc: float  # best over test checkpoints (used only by reference selection)
    diverged: bool = False
    diverged_epoch: int | None = None


@dataclass
class RoundResult:
    """One round: its seed, cell accuracies and scores (``values``), the learning rate chosen per cell,
    and every run behind them."""

    round: int
    seed: int
    values: dict[str, float]
    learning_rates: dict[str, float]
    runs: dict[str, list[Run]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, "seed": self.seed, **self.values}
        out |= {f"lr_{cell}": lr for cell, lr in self.learning_rates.items()}
        out["runs"] = {cell: [vars(run) for run in runs] for cell, runs in self.runs.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundResult:
        """The round ``to_dict`` wrote: ``lr_<cell>`` keys are chosen learning rates, the rest values."""
        runs = {cell: [Run(**run) for run in cell_runs] for cell, cell_runs in data["runs"].items()}
        rest = {k: v for k, v in data.items() if k not in ("round", "seed", "runs")}
        learning_rates = {k.removeprefix("lr_"): v for k, v in rest.items() if k.startswith("lr_")}
        values = {k: v for k, v in rest.items() if not k.startswith("lr_")}
        return cls(data["round"], data["seed"], values, learning_rates, runs)


# Row fields that come from an Evaluation's own attributes, in their order after the summaries.
_REQUIRED = ("method", "dataset", "ipc", "metric", "weight", "protocol", "protocol_hash", "student")
_REQUIRED += ("labels", "selection", "per_round", "provenance")


@dataclass
class Evaluation:
    """Scores of one synthetic set under one protocol and metric, over several rounds.

    ``protocol`` is the protocol's name and ``protocol_hash`` its content hash; ``student`` and
    ``labels`` (hard, S or M) and ``selection`` (honest or reference) say how students trained.
    ``diverged`` counts the distinct training jobs behind it whose training diverged.
    """

    method: str
    dataset: str
    ipc: int
    metric: str
    weight: float
    protocol: str
    protocol_hash: str
    student: str
    labels: str
    selection: str
    rounds: list[RoundResult]
    acc_real_source: str | None
    provenance: dict[str, Any]
    diverged: int = 0
    summaries: dict[str, Summary] = field(init=False)

    def __post_init__(self) -> None:
        names = [n for n in metric_definition(self.metric).fields if all(n in r.values for r in self.rounds)]
        self.summaries = {name: summarize([r.values[name] for r in self.rounds]) for name in names}

    @property
    def optimistic(self) -> bool:
        """Reference selection (best test accuracy over the lr grid and checkpoints) is optimistic."""
        return self.selection == "reference"

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
            "protocol": self.protocol,
            "protocol_hash": self.protocol_hash,
            "student": self.student,
            "labels": self.labels,
            "selection": self.selection,
            "optimistic": self.optimistic,
            "std_ddof": STD_DDOF,
            "confidence": CONFIDENCE,
            "diverged": self.diverged,
        }
        if self.acc_real_source is not None:
            out["acc_real_source"] = self.acc_real_source
        return out

    def to_dict(self) -> dict[str, Any]:
        """The row plus every round's raw accuracies, chosen learning rates, seeds and runs."""
        rounds = [r.to_dict() for r in self.rounds]
        return self.row() | {"per_round": rounds, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """The evaluation that ``to_dict`` wrote (summaries are recomputed from the rounds); InputError
        (one line) for anything else."""
        if not isinstance(data, Mapping):
            raise InputError(
                f"an evaluation record is a {type(data).__name__}, not Evaluation.to_dict() output"
            )
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise InputError(
                f"an evaluation record lacks {', '.join(missing)}; it is not Evaluation.to_dict() output"
            )
        try:
            return cls(
                data["method"],
                data["dataset"],
                data["ipc"],
                data["metric"],
                data["weight"],
                data["protocol"],
                data["protocol_hash"],
                data["student"],
                data["labels"],
                data["selection"],
                [RoundResult.from_dict(r) for r in data["per_round"]],
                data.get("acc_real_source"),
                dict(data["provenance"]),
                int(data.get("diverged", 0)),
            )
        except DDRankError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise InputError(
                f"evaluation record of method {shown(data.get('method'))!r} is malformed "
                f"({type(exc).__name__}: {one_line(exc)}); it is not Evaluation.to_dict() output"
            ) from exc

    def per_round(self, field: str) -> list[float]:
        """A per-round value in round order, rounds without it left out."""
        ordered = sorted(self.rounds, key=lambda r: r.round)
        return [float(r.values[field]) for r in ordered if r.values.get(field) is not None]


def recorded_evaluations(store: ResultStore, **filters: Any) -> list[Evaluation]:
    """The evaluations recorded in ``store`` that match ``filters`` (dataset, ipc, metric, method), newest
    first; a damaged record is a one-line StoreError naming the store."""
    from ddrank.store import StoreError

    out = []
    for payload in store.evaluations(**filters):
        try:
            out.append(Evaluation.from_dict(payload))
        except InputError as exc:
            where = ":memory:" if store.path is None else shown(store.path)
            raise StoreError(
                f"results database {where}: {exc}; it is damaged: move it aside and start a new store"
            ) from exc
    return out

"""The one result schema: an :class:`Evaluation` and its dict form (``to_dict`` / ``from_dict``), which
the JSON output, the results store, the leaderboard, the HTML page and the DD-Ranking classes share.

Accuracies and scores are fractions; summaries are means, standard deviations (ddof 1) and 95%
Student-t intervals over rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddrank.errors import DDRankError, InputError, one_line, shown
from ddrank.metrics import summarize
from ddrank.metrics.definitions import field_bounds, metric_definition
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
    ``calibration`` compares its random-subset and whole-data accuracies with published values: one
    ``{"cell", "ipc", "measured", "published_mean", "published_std", "z", "source"}`` per cell.
    ``fidelity`` (reference or honest) is the protocol's, and ``deviations`` every way it differs from
    its source (``Deviation.model_dump()`` dicts), as printed before training.
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
    calibration: list[dict[str, Any]] = field(default_factory=list)
    fidelity: str = ""  # empty: taken from the selection (records written before fidelity existed)
    deviations: list[dict[str, Any]] = field(default_factory=list)
    # Where the results store keeps this evaluation (its row id and when it was recorded), once recorded.
    record_id: int | None = field(default=None, compare=False)
    recorded: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.fidelity:
            self.fidelity = "reference" if self.selection == "reference" else "honest"
        names = [n for n in metric_definition(self.metric).fields if all(n in r.values for r in self.rounds)]
        self.summaries = {
            name: summarize([r.values[name] for r in self.rounds], bounds=field_bounds(name))
            for name in names
        }

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
        definition = metric_definition(self.metric)
        score = self.summaries.get(definition.score.field)
        if definition.neutral is not None and score is not None:
            out[f"{definition.score.field}_vs_neutral"] = score.mean - definition.neutral
            out["neutral"] = definition.neutral
        out |= {
            "metric": self.metric,
            "rounds": len(self.rounds),
            "weight": self.weight,
            "protocol": self.protocol,
            "protocol_hash": self.protocol_hash,
            "student": self.student,
            "labels": self.labels,
            "selection": self.selection,
            "fidelity": self.fidelity,
            "optimistic": self.optimistic,
            "smoke": self.smoke,
            "std_ddof": STD_DDOF,
            "confidence": CONFIDENCE,
            "diverged": self.diverged,
        }
        if self.acc_real_source is not None:
            out["acc_real_source"] = self.acc_real_source
        if self.calibration:
            out["calibration"] = [dict(entry) for entry in self.calibration]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The row plus every round's raw accuracies, chosen learning rates, seeds and runs."""
        rounds = [r.to_dict() for r in self.rounds]
        return self.row() | {
            "deviations": self.deviations,
            "per_round": rounds,
            "provenance": self.provenance,
        }

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
                calibration=[dict(entry) for entry in data.get("calibration") or []],
                fidelity=data.get("fidelity") or "",
                deviations=list(data.get("deviations") or []),
            )
        except DDRankError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise InputError(
                f"evaluation record of method {shown(data.get('method'))!r} is malformed "
                f"({type(exc).__name__}: {one_line(exc)}); it is not Evaluation.to_dict() output"
            ) from exc

    @property
    def smoke(self) -> bool:
        """A smoke run (fewer epochs than the protocol's): labelled, and never ranked with full runs."""
        return bool(self.provenance.get("smoke", False))

    def __repr__(self) -> str:
        definition = metric_definition(self.metric)
        score = self.summaries.get(definition.score.field)
        shown = "–" if score is None else f"{100 * score.mean:.2f}%"
        if score is not None and not math.isnan(score.ci_low):
            shown += f" [{100 * score.ci_low:.2f}, {100 * score.ci_high:.2f}]"
        return (
            f"<Evaluation {self.method!r} {self.dataset} IPC {self.ipc} · {definition.label} {shown} · "
            f"{len(self.rounds)} rounds · protocol {self.protocol} ({self.protocol_hash[:8]}) · "
            f"{self.labels} labels · {self.student}>"
        )

    def to_pandas(self) -> Any:
        """One row per round: seed, accuracies and scores (fractions), chosen learning rates. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise InputError("Evaluation.to_pandas needs pandas; pip install pandas") from exc
        rows = []
        for r in sorted(self.rounds, key=lambda r: r.round):
            lrs = {f"lr_{cell}": lr for cell, lr in r.learning_rates.items()}
            rows.append({"method": self.method, "round": r.round, "seed": r.seed, **r.values, **lrs})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        """A notebook's view: the group, then each summary as mean ± CI in percent."""
        from html import escape

        head = escape(repr(self).strip("<>"))
        cells = "".join(
            f"<tr><td>{escape(name)}</td><td>{100 * s.mean:.2f}</td>"
            + (
                "<td>–</td>"
                if math.isnan(s.ci_low)
                else f"<td>[{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]</td>"
            )
            + "</tr>"
            for name, s in self.summaries.items()
        )
        return (
            f"<div><p>{head}</p><table><thead><tr><th>value</th><th>mean %</th><th>95% CI %</th></tr>"
            f"</thead><tbody>{cells}</tbody></table></div>"
        )

    def per_round(self, field: str) -> list[float]:
        """A per-round value in round order, rounds without it left out."""
        ordered = sorted(self.rounds, key=lambda r: r.round)
        return [float(r.values[field]) for r in ordered if r.values.get(field) is not None]


def recorded_evaluations(store: ResultStore, **filters: Any) -> list[Evaluation]:
    """The evaluations recorded in ``store`` that match ``filters`` (dataset, ipc, metric, method), newest
    first, each with its ``record_id`` and ``recorded`` time; a damaged record is a one-line StoreError
    naming the store."""
    from ddrank.store import StoreError

    out = []
    for record in store.evaluation_records(**filters):
        try:
            evaluation = Evaluation.from_dict(record["payload"])
        except InputError as exc:
            where = ":memory:" if store.path is None else shown(store.path)
            raise StoreError(
                f"results database {where}: {exc}; it is damaged: move it aside and start a new store"
            ) from exc
        evaluation.record_id, evaluation.recorded = record["id"], record["created"]
        out.append(evaluation)
    return out

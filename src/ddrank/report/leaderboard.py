"""Leaderboards: methods ranked per (dataset, IPC) by LRS, ARS or accuracy, with CIs and rank stability,
and paired comparisons of two methods; all read :class:`~ddrank.evaluation.Evaluation` objects.

Rows are plain dicts of fractions, so one list feeds every renderer (:mod:`ddrank.report.render`):
the terminal table, Markdown, CSV, JSON and the self-contained HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ddrank.errors import DDRankError
from ddrank.evaluation.results import Evaluation
from ddrank.metrics.definitions import MetricDefinition, metric_definition
from ddrank.metrics.stats import PairedComparison, bootstrap_ci, paired_comparison, rank_stability


class LeaderboardError(DDRankError):
    """The recorded evaluations cannot answer the question asked (no such method, no shared rounds...)."""


def _number(value: Any) -> float | None:
    """A finite float, or None for missing and NaN values (so that JSON stays strict)."""
    if value is None:
        return None
    x = float(value)
    return None if math.isnan(x) else x


def _eligible(
    evaluations: Iterable[Evaluation], definition: MetricDefinition, dataset: str | None, ipc: int | None
) -> list[Evaluation]:
    """Evaluations that score the metric in the requested dataset and IPC, newest of each measurement.

    A metric ranks its own kind of evaluation; accuracy ranks any evaluation with acc(syn, P).
    """
    newest: dict[tuple[Any, ...], Evaluation] = {}
    for evaluation in evaluations:
        if dataset is not None and evaluation.dataset != dataset:
            continue
        if ipc is not None and evaluation.ipc != int(ipc):
            continue
        if definition.score.field not in evaluation.summaries:
            continue
        if not definition.ranks_every_evaluation and evaluation.metric != definition.name:
            continue
        key = (evaluation.method, evaluation.dataset, evaluation.ipc, evaluation.protocol_hash)
        newest.setdefault(key, evaluation)
    return list(newest.values())


def _mean(evaluation: Evaluation, field: str | None) -> float | None:
    summary = evaluation.summaries.get(field) if field is not None else None
    return None if summary is None else _number(summary.mean)


def _row(evaluation: Evaluation, definition: MetricDefinition) -> dict[str, Any]:
    field = definition.score.field
    values = evaluation.per_round(field)
    boot_low, boot_high = bootstrap_ci(values) if len(values) >= 2 else (None, None)
    summary = evaluation.summaries[field]
    own = metric_definition(evaluation.metric)  # where this evaluation keeps acc(syn) and acc(rand)
    return {
        "rank": 0,
        "method": evaluation.method,
        "dataset": evaluation.dataset,
        "ipc": evaluation.ipc,
        "metric": definition.name,
        "mean": _number(summary.mean),
        "std": _number(summary.std),
        "ci_low": _number(summary.ci_low),
        "ci_high": _number(summary.ci_high),
        "boot_ci_low": _number(boot_low),
        "boot_ci_high": _number(boot_high),
        **{q.field: _mean(evaluation, q.field) for q in definition.components},
        "acc_syn": _mean(evaluation, own.syn_accuracy),
        "acc_random": _mean(evaluation, own.random_accuracy),
        "acc_real": _mean(evaluation, "acc_real"),
        "rounds": len(evaluation.rounds),
        "stability_tau": None,
        "stability_min_tau": None,
        "selection": evaluation.selection,
        "optimistic": evaluation.optimistic,
        "protocol": evaluation.protocol,
        "protocol_hash": evaluation.protocol_hash,
    }


def _rank(rows: list[dict[str, Any]], definition: MetricDefinition) -> None:
    """Competition ranks by mean, best first: tied scores share a rank (1, 2, 2, 4)."""
    sign = -1.0 if definition.score.higher_is_better else 1.0
    rows.sort(key=lambda r: (sign * r["mean"] if r["mean"] is not None else math.inf, r["method"]))
    for i, row in enumerate(rows):
        tied = i > 0 and row["mean"] == rows[i - 1]["mean"]
        row["rank"] = rows[i - 1]["rank"] if tied else i + 1


def _stability(rows: list[dict[str, Any]], per_round: list[list[float]]) -> None:
    """Kendall tau of each round's ranking against the overall one, when every method has the same rounds."""
    lengths = {len(values) for values in per_round}
    if len(rows) < 2 or len(lengths) != 1 or lengths.pop() < 2:
        return
    scores = {
        f"{i}:{row['method']}": values for i, (row, values) in enumerate(zip(rows, per_round, strict=True))
    }
    stability = rank_stability(scores)
    for row in rows:
        row["stability_tau"] = _number(stability["mean_tau"])
        row["stability_min_tau"] = _number(stability["min_tau"])


def build_leaderboard(
    evaluations: Iterable[Evaluation],
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
) -> list[dict[str, Any]]:
    """Rank methods per (dataset, IPC) by the mean of ``metric`` (lrs, ars or acc).

    ``evaluations`` are newest first, as :func:`~ddrank.evaluation.recorded_evaluations` returns
    them: of several evaluations of one method, dataset, IPC and protocol the first one wins.
    Rows are fractions, grouped by dataset and IPC, best first.
    """
    definition = metric_definition(metric)
    groups: dict[tuple[str, int], list[Evaluation]] = {}
    for evaluation in _eligible(evaluations, definition, dataset, ipc):
        groups.setdefault((evaluation.dataset, evaluation.ipc), []).append(evaluation)
    board: list[dict[str, Any]] = []
    for key in sorted(groups):
        rows = [_row(e, definition) for e in groups[key]]
        _stability(rows, [e.per_round(definition.score.field) for e in groups[key]])
        _rank(rows, definition)
        board += rows
    return board


@dataclass(frozen=True)
class Comparison:
    """Method a minus method b on the rounds both ran with the same seed."""

    method_a: str
    method_b: str
    dataset: str
    ipc: int
    metric: str
    seeds: tuple[int, ...]
    result: PairedComparison


def compare_methods(
    evaluations: Iterable[Evaluation],
    a: str,
    b: str,
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
) -> Comparison:
    """Paired comparison of the newest evaluations of ``a`` and ``b`` over their shared round seeds."""
    definition = metric_definition(metric)
    field = definition.score.field
    if a == b:
        raise LeaderboardError(f"compare needs two different methods, got {a!r} twice")
    eligible = _eligible(evaluations, definition, dataset, ipc)
    where = "".join(
        [f" on {dataset}" if dataset is not None else "", f" at IPC {ipc}" if ipc is not None else ""]
    )
    newest: dict[str, dict[tuple[str, int], Evaluation]] = {}
    for evaluation in eligible:
        group = (evaluation.dataset, evaluation.ipc)
        newest.setdefault(evaluation.method, {}).setdefault(group, evaluation)
    for method in (a, b):
        if method not in newest:
            known = ", ".join(sorted(newest)) or "none"
            raise LeaderboardError(
                f"no {definition.label} evaluation of method {method!r} is recorded{where} "
                f"(recorded methods: {known})"
            )
    shared_groups = sorted(set(newest[a]) & set(newest[b]))
    if not shared_groups:
        raise LeaderboardError(f"{a!r} and {b!r} have no evaluation on the same dataset and IPC{where}")
    if len(shared_groups) > 1:
        listed = ", ".join(f"{d} IPC {i}" for d, i in shared_groups)
        raise LeaderboardError(
            f"{a!r} and {b!r} are both evaluated on {listed}; choose one with --dataset and --ipc"
        )
    group = shared_groups[0]
    by_seed = [
        {r.seed: float(r.values[field]) for r in newest[m][group].rounds if field in r.values} for m in (a, b)
    ]
    seeds = tuple(seed for seed in by_seed[0] if seed in by_seed[1])
    if len(seeds) < 2:
        raise LeaderboardError(
            f"{a!r} and {b!r} share {len(seeds)} round(s) with the same seed on {group[0]} IPC {group[1]}; "
            "a paired comparison needs at least 2 (evaluate both with the same --seed and rounds)"
        )
    result = paired_comparison([by_seed[0][s] for s in seeds], [by_seed[1][s] for s in seeds])
    return Comparison(a, b, group[0], group[1], definition.name, seeds, result)

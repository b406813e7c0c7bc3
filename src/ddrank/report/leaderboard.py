"""Leaderboards: methods ranked per (dataset, IPC) by LRS, ARS or accuracy, with CIs and rank stability,
and paired comparisons of two methods; all read :class:`~ddrank.evaluation.Evaluation` objects.

Rows are plain dicts of fractions, so one list feeds every renderer (:mod:`ddrank.report.render`):
the terminal table, Markdown, CSV, JSON and the self-contained HTML page.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ddrank.errors import DDRankError
from ddrank.evaluation.results import Evaluation
from ddrank.metrics.definitions import MetricDefinition, metric_definition
from ddrank.metrics.stats import (
    MIN_BOOTSTRAP_ROUNDS,
    PairedComparison,
    bootstrap_ci,
    paired_comparison,
    rank_stability,
)
from ddrank.report.columns import acc_real_words, weight_words


class LeaderboardError(DDRankError):
    """The recorded evaluations cannot answer the question asked (no such method, no shared rounds...)."""


def _number(value: Any) -> float | None:
    """A finite float, or None for missing and NaN values (so that JSON stays strict)."""
    if value is None:
        return None
    x = float(value)
    return None if math.isnan(x) else x


# What one leaderboard group holds fixed: only evaluations equal in all of these are ranked together.
# ``weight`` is the w (LRS) or γ (ARS) the ranked score was computed with; ``acc_real_source`` where its
# acc(real, hard) came from (trained, given, or published: ...) and ``acc_real_given`` that value when it was
# not trained; each None for a score that does not use it. ``smoke``: a smoke run (fewer epochs, labelled)
# never shares a group with a full run, even when its protocol's content equals a full run's.
GROUP_FIELDS = (
    "dataset",
    "ipc",
    "protocol",
    "protocol_hash",
    "fidelity",
    "labels",
    "student",
    "weight",
    "acc_real_source",
    "acc_real_given",
    "smoke",
)
# The group fields in words, for messages.
GROUP_WORDS = "dataset, IPC, protocol, fidelity, labels, student, weight, acc(real) source, smoke run"


def fidelity_of(evaluation: Evaluation) -> str:
    """How faithful the evaluation is to its protocol's source: reference or honest."""
    return evaluation.fidelity


def weight_of(evaluation: Evaluation, definition: MetricDefinition) -> float | None:
    """The weight (w or γ) behind the ranked score of ``definition``; None when that score takes none."""
    return None if definition.weight_symbol is None else float(evaluation.weight)


def acc_real_of(evaluation: Evaluation, definition: MetricDefinition) -> tuple[str | None, float | None]:
    """Where the acc(real, hard) behind the ranked score of ``definition`` came from (trained, given, or
    published: ...) and, unless trained, its value; (None, None) when that score does not use it."""
    source = evaluation.acc_real_source if definition.needs_real else None
    if source is None or source == "trained":
        return source, None
    values = evaluation.per_round("acc_real")
    return source, (values[0] if values else None)


def group_of(evaluation: Evaluation, metric: str | None = None) -> tuple[Any, ...]:
    """The leaderboard group of an evaluation ranked by ``metric`` (default: its own), in the order of
    :data:`GROUP_FIELDS`."""
    e = evaluation
    definition = metric_definition(metric or e.metric)
    return (
        e.dataset,
        e.ipc,
        e.protocol,
        e.protocol_hash,
        fidelity_of(e),
        e.labels,
        e.student,
        weight_of(e, definition),
        *acc_real_of(e, definition),
        e.smoke,
    )


def group_label(group: Mapping[str, Any] | Sequence[Any], metric: str | None = None) -> str:
    """A group in words, e.g. ``digits · IPC 10 · protocol digits (c4a7bf02) · honest · hard labels ·
    ConvNet-2-W16``, with the weight when it is not the default, acc(real) when it was not trained and
    "smoke run" for a smoke run; a row dict or a :func:`group_of` tuple (``metric`` names the weight: w or
    γ; a row says its own)."""
    values = dict(zip(GROUP_FIELDS, group, strict=True)) if not isinstance(group, Mapping) else group
    digest = str(values.get("protocol_hash") or "")[:8]
    parts = [
        f"{values['dataset']} · IPC {values['ipc']}",
        f"protocol {values.get('protocol') or '–'}" + (f" ({digest})" if digest else ""),
        str(values.get("fidelity") or "honest"),
        f"{values.get('labels') or '–'} labels",
        str(values.get("student") or "–"),
    ]
    weight = weight_words(values.get("weight"), metric or values.get("metric"))
    if weight:
        parts.append(weight)
    real = acc_real_words(values.get("acc_real_source"), values.get("acc_real_given"))
    if real:
        parts.append(real)
    if values.get("smoke"):
        parts.append("smoke run")
    return " · ".join(parts)


@dataclass(frozen=True)
class Selection:
    """Which evaluations a leaderboard or comparison considers: every given filter must match."""

    dataset: str | None = None
    ipc: int | None = None
    protocol: str | None = None  # a protocol name, or the start of its content hash
    student: str | None = None
    labels: str | None = None
    fidelity: str | None = None
    weight: float | None = None  # the w (LRS) or γ (ARS) the scores were computed with
    acc_real: str | None = None  # where acc(real, hard) came from: trained, given or published
    smoke: bool | None = None  # True: only smoke runs; False: only full runs

    def matches(self, e: Evaluation) -> bool:
        protocol = self.protocol
        checks = (
            self.dataset is None or e.dataset == self.dataset,
            self.ipc is None or e.ipc == int(self.ipc),
            protocol is None
            or e.protocol == protocol
            or (len(protocol) >= 4 and str(e.protocol_hash).startswith(protocol)),
            self.student is None or e.student.lower() == self.student.lower(),
            self.labels is None or e.labels.lower() == self.labels.lower(),
            self.fidelity is None or fidelity_of(e) == self.fidelity,
            self.weight is None or math.isclose(float(e.weight), float(self.weight)),
            self.acc_real is None or str(e.acc_real_source or "").startswith(self.acc_real),
            self.smoke is None or e.smoke == self.smoke,
        )
        return all(checks)

    def words(self) -> str:
        """The filters in words, for messages (empty when none is given)."""
        parts = [
            f" on {self.dataset}" if self.dataset else "",
            f" at IPC {self.ipc}" if self.ipc is not None else "",
            f" under protocol {self.protocol}" if self.protocol else "",
            f" with student {self.student}" if self.student else "",
            f" with {self.labels} labels" if self.labels else "",
            f" ({self.fidelity})" if self.fidelity else "",
            f" with weight {self.weight:g}" if self.weight is not None else "",
            f" with acc(real) {self.acc_real}" if self.acc_real else "",
            "" if self.smoke is None else (" (smoke runs)" if self.smoke else " (full runs)"),
        ]
        return "".join(parts)


# The filters a typo can leave matching nothing, and how each is named in a hint.
_HINTED = (("dataset", "dataset"), ("ipc", "IPC"), ("protocol", "protocol"), ("student", "student"))


def filter_hints(
    recorded: Iterable[Evaluation], selection: Selection, known: Mapping[str, Iterable[str]] | None = None
) -> str:
    """For each filter of ``selection`` that no recorded evaluation matches, the closest recorded (else
    ``known``: registered) name and the recorded values, e.g. ``; no dataset 'cifra10' is recorded: did you
    mean 'cifar10'? (recorded: digits)``; empty when every filter matches something."""
    recorded = list(recorded)
    hints = []
    for field, words in _HINTED:
        wanted = getattr(selection, field)
        if wanted is None or any(Selection(**{field: wanted}).matches(e) for e in recorded):
            continue
        values = {getattr(e, field) for e in recorded}
        names = [str(v) for v in sorted(values, key=lambda v: (v if isinstance(v, int) else 0, str(v)))]
        close = None
        if field != "ipc":
            for candidates in (names, sorted((known or {}).get(field, ()))):
                close = _closest(str(wanted), candidates)
                if close is not None:
                    break
        listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        hint = f"; no IPC {wanted} is recorded" if field == "ipc" else f"; no {words} {wanted!r} is recorded"
        hints.append(
            hint + (f": did you mean {close!r}?" if close else "") + f" (recorded: {listed or 'none'})"
        )
    return "".join(hints)


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``name`` (case aside when nothing is close as typed), or None."""
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if found:
        return found[0]
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[found[0]] if found else None


def _scored(
    evaluations: Iterable[Evaluation], definition: MetricDefinition, selection: Selection
) -> list[Evaluation]:
    """Evaluations that score the metric and match the selection (a metric ranks its own kind of
    evaluation; accuracy ranks any evaluation with acc(syn, P))."""
    return [
        e
        for e in evaluations
        if selection.matches(e)
        and definition.score.field in e.summaries
        and (definition.ranks_every_evaluation or e.metric == definition.name)
    ]


def _history(
    evaluations: list[Evaluation], definition: MetricDefinition
) -> dict[tuple[Any, ...], list[Evaluation]]:
    """Every evaluation of each (method, group), newest first (the order the store returns them in)."""
    history: dict[tuple[Any, ...], list[Evaluation]] = {}
    for evaluation in evaluations:
        history.setdefault((evaluation.method, *group_of(evaluation, definition.name)), []).append(evaluation)
    return history


def _mean(evaluation: Evaluation, field: str | None) -> float | None:
    summary = evaluation.summaries.get(field) if field is not None else None
    return None if summary is None else _number(summary.mean)


def _ci(evaluation: Evaluation, field: str | None) -> tuple[float | None, float | None]:
    summary = evaluation.summaries.get(field) if field is not None else None
    return (None, None) if summary is None else (_number(summary.ci_low), _number(summary.ci_high))


def _row(evaluation: Evaluation, definition: MetricDefinition) -> dict[str, Any]:
    field = definition.score.field
    values = evaluation.per_round(field)
    # Below MIN_BOOTSTRAP_ROUNDS a "95%" bootstrap interval covers far less than 95%: none is given.
    boot_low, boot_high = bootstrap_ci(values) if len(values) >= MIN_BOOTSTRAP_ROUNDS else (None, None)
    summary = evaluation.summaries[field]
    own = metric_definition(evaluation.metric)  # where this evaluation keeps acc(syn) and acc(rand)
    # only what the ranked metric measures: an accuracy leaderboard shows no acc(rand) or acc(real), even for
    # the LRS evaluations it ranks, as an accuracy evaluation has neither
    random = own.random_accuracy if definition.random_accuracy is not None else None
    real = "acc_real" if definition.needs_real else None
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
        "acc_random": _mean(evaluation, random),
        "acc_real": _mean(evaluation, real),
        **dict(zip(("acc_syn_ci_low", "acc_syn_ci_high"), _ci(evaluation, own.syn_accuracy), strict=True)),
        **dict(zip(("acc_random_ci_low", "acc_random_ci_high"), _ci(evaluation, random), strict=True)),
        "rounds": len(evaluation.rounds),
        "stability_tau": None,
        "stability_min_tau": None,
        "neutral": definition.neutral,
        "vs_neutral": None
        if definition.neutral is None or summary.mean is None
        else _number(summary.mean - definition.neutral),
        "selection": evaluation.selection,
        "optimistic": evaluation.optimistic,
        "protocol": evaluation.protocol,
        "protocol_hash": evaluation.protocol_hash,
        "fidelity": fidelity_of(evaluation),
        "labels": evaluation.labels,
        "student": evaluation.student,
        "weight": weight_of(evaluation, definition),
        **dict(zip(("acc_real_source", "acc_real_given"), acc_real_of(evaluation, definition), strict=True)),
        "smoke": evaluation.smoke,
        "precision": evaluation.provenance.get("precision"),
        "images": sum(evaluation.provenance.get("class_counts", ())) or None,  # only a set of uneven classes
        "deviations": len(evaluation.deviations),
        "diverged": evaluation.diverged,
        "evaluation_id": evaluation.record_id,
        "recorded": evaluation.recorded,
        "latest": True,
        "earlier_rounds": None,
    }


def _rank(rows: list[dict[str, Any]], definition: MetricDefinition) -> None:
    """Competition ranks by mean, best first: tied scores share a rank (1, 2, 2, 4)."""
    sign = -1.0 if definition.score.higher_is_better else 1.0
    rows.sort(key=lambda r: (sign * r["mean"] if r["mean"] is not None else math.inf, r["method"]))
    for i, row in enumerate(rows):
        tied = i > 0 and row["mean"] == rows[i - 1]["mean"]
        row["rank"] = rows[i - 1]["rank"] if tied else i + 1


def _stability(rows: list[dict[str, Any]], by_seed: list[dict[int, float]]) -> None:
    """Kendall tau of each round's ranking against the overall one, rounds paired by seed: over the seeds
    every method ran (at least two), so a round's ranking compares methods trained on the same seed."""
    shared = sorted(set.intersection(*(set(values) for values in by_seed))) if by_seed else []
    if len(rows) < 2 or len(shared) < 2:
        return
    scores = {
        f"{i}:{row['method']}": [values[seed] for seed in shared]
        for i, (row, values) in enumerate(zip(rows, by_seed, strict=True))
    }
    stability = rank_stability(scores)
    for row in rows:
        row["stability_tau"] = _number(stability["mean_tau"])
        row["stability_min_tau"] = _number(stability["min_tau"])


def _values_by_seed(evaluation: Evaluation, field: str) -> dict[int, float]:
    return {r.seed: float(r.values[field]) for r in evaluation.rounds if r.values.get(field) is not None}


def build_leaderboard(
    evaluations: Iterable[Evaluation],
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
    selection: Selection | None = None,
    history: bool = False,
) -> list[dict[str, Any]]:
    """Rank methods within each group (:data:`GROUP_FIELDS`) by the mean of ``metric`` (lrs, ars or acc).

    ``evaluations`` are newest first, as :func:`~ddrank.evaluation.recorded_evaluations` returns them:
    the newest evaluation of a method in a group is ranked; a row whose earlier evaluations had more
    rounds says so (``earlier_rounds``). With ``history`` the earlier evaluations follow their group's
    ranked rows (``latest`` false, no rank). Rows are fractions, groups in sorted order, best first.
    """
    definition = metric_definition(metric)
    selection = selection or Selection()
    if dataset is not None or ipc is not None:
        selection = replace(selection, dataset=dataset or selection.dataset, ipc=ipc or selection.ipc)
    groups: dict[tuple[Any, ...], list[list[Evaluation]]] = {}
    scored = _scored(evaluations, definition, selection)
    for (_, *group), evaluations_of_method in _history(scored, definition).items():
        groups.setdefault(tuple(group), []).append(evaluations_of_method)
    board: list[dict[str, Any]] = []
    for key in sorted(groups, key=lambda g: (str(g[0]), int(g[1]), *map(str, g[2:]))):
        latest = [found[0] for found in groups[key]]
        rows = [_row(e, definition) for e in latest]
        for row, found in zip(rows, groups[key], strict=True):
            most = max(len(e.rounds) for e in found)
            row["earlier_rounds"] = most if most > row["rounds"] else None
        _stability(rows, [_values_by_seed(e, definition.score.field) for e in latest])
        _rank(rows, definition)
        board += rows
        if history:
            earlier = [
                _row(e, definition) | {"rank": None, "latest": False}
                for found in sorted(groups[key], key=lambda f: f[0].method)
                for e in found[1:]
            ]
            board += earlier
    return board


def group_candidates(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct groups of some leaderboard rows, in words."""
    return list(dict.fromkeys(group_label(row) for row in rows))


@dataclass(frozen=True)
class Comparison:
    """Method a minus method b on the rounds both ran with the same seed, within one group."""

    method_a: str
    method_b: str
    dataset: str
    ipc: int
    metric: str
    seeds: tuple[int, ...]
    result: PairedComparison
    group: tuple[Any, ...] = ()
    optimistic: bool = False  # either evaluation used reference selection (overstated accuracies)
    # Seeds of the rounds of a (first) and b (second) that the other has no round with: left out of the
    # comparison, though the leaderboard ranks each method on all of its rounds.
    left_out: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    @property
    def group_label(self) -> str:
        """The group both evaluations belong to, in words."""
        return group_label(self.group, self.metric) if self.group else f"{self.dataset} · IPC {self.ipc}"


def compare_methods(
    evaluations: Iterable[Evaluation],
    a: str,
    b: str,
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
    selection: Selection | None = None,
) -> Comparison:
    """Paired comparison of the newest evaluations of ``a`` and ``b`` in one group over their shared seeds;
    LeaderboardError listing the candidate groups when the selection leaves more than one."""
    definition = metric_definition(metric)
    field = definition.score.field
    if a == b:
        raise LeaderboardError(f"compare needs two different methods, got {a!r} twice")
    selection = selection or Selection()
    if dataset is not None or ipc is not None:
        selection = replace(selection, dataset=dataset or selection.dataset, ipc=ipc or selection.ipc)
    where = selection.words()
    newest: dict[str, dict[tuple[Any, ...], Evaluation]] = {}
    scored = _scored(evaluations, definition, selection)
    for (method, *group), found in _history(scored, definition).items():
        newest.setdefault(method, {})[tuple(group)] = found[0]
    for method in (a, b):
        if method not in newest:
            known = ", ".join(sorted(newest)) or "none"
            raise LeaderboardError(
                f"no {definition.label} evaluation of method {method!r} is recorded{where} "
                f"(recorded methods: {known})"
            )
    shared_groups = sorted(set(newest[a]) & set(newest[b]), key=lambda g: tuple(map(str, g)))
    if not shared_groups:
        groups_a = "; ".join(group_label(g, definition.name) for g in newest[a])
        groups_b = "; ".join(group_label(g, definition.name) for g in newest[b])
        raise LeaderboardError(
            f"{a!r} and {b!r} have no evaluation in the same group ({GROUP_WORDS}){where}: "
            f"{a!r} has {groups_a}; {b!r} has {groups_b}"
        )
    if len(shared_groups) > 1:
        listed = "; ".join(group_label(g, definition.name) for g in shared_groups)
        raise LeaderboardError(
            f"{a!r} and {b!r} are both evaluated in {len(shared_groups)} groups ({listed}); choose one with "
            "--dataset, --ipc, --protocol, --labels, --student, --weight, --acc-real or --smoke/--no-smoke"
        )
    group = shared_groups[0]
    by_seed = [
        {r.seed: float(r.values[field]) for r in newest[m][group].rounds if field in r.values} for m in (a, b)
    ]
    seeds = tuple(seed for seed in by_seed[0] if seed in by_seed[1])
    if len(seeds) < 2:
        raise LeaderboardError(
            f"{a!r} and {b!r} share {len(seeds)} round(s) with the same seed in "
            f"{group_label(group, definition.name)}; "
            "a paired comparison needs at least 2 (evaluate both with the same --seed and rounds)"
        )
    result = paired_comparison([by_seed[0][s] for s in seeds], [by_seed[1][s] for s in seeds])
    optimistic = any(newest[m][group].optimistic for m in (a, b))
    left_a, left_b = (
        tuple(r.seed for r in sorted(newest[m][group].rounds, key=lambda r: r.round) if r.seed not in seeds)
        for m in (a, b)
    )
    return Comparison(
        a, b, group[0], group[1], definition.name, seeds, result, group, optimistic, (left_a, left_b)
    )

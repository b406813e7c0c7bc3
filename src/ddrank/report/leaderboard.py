"""Leaderboards: methods ranked per (dataset, IPC) by LRS, ARS or accuracy, with CIs and rank stability.

Rows are plain dicts of fractions, so one list feeds every renderer: the terminal table, Markdown,
CSV, JSON and the self-contained HTML page.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ddrank.errors import DDRankError, UnknownNameError
from ddrank.metrics.stats import PairedComparison, bootstrap_ci, paired_comparison, rank_stability

FORMATS = ("table", "md", "csv", "json", "html")


class LeaderboardError(DDRankError):
    """The recorded evaluations cannot answer the question asked (no such method, no shared rounds...)."""


@dataclass(frozen=True)
class Metric:
    """A ranking score: where its per-round values and means live in an evaluation dict."""

    name: str
    label: str
    field: str  # the evaluation's ``<field>_mean`` and per-round ``<field>``
    components: tuple[tuple[str, str], ...]  # (evaluation field, label) shown next to the score
    description: str


METRICS: dict[str, Metric] = {
    "lrs": Metric(
        "lrs",
        "LRS",
        "lrs",
        (("hlr", "HLR"), ("ior", "IOR")),
        "label-robust score: hard-label recovery (HLR, lower is better) against improvement over "
        "random (IOR, higher is better)",
    ),
    "ars": Metric(
        "ars",
        "ARS",
        "ars",
        (
            ("acc_syn_aug", "acc(syn, +aug)"),
            ("acc_random_aug", "acc(rand, +aug)"),
            ("acc_syn_noaug", "acc(syn, −aug)"),
            ("acc_random_noaug", "acc(rand, −aug)"),
        ),
        "augmentation-robust score: synthetic minus random accuracy with and without augmentation",
    ),
    "acc": Metric("acc", "acc(syn)", "acc_syn", (), "test accuracy of the synthetic set under its protocol"),
}


@dataclass(frozen=True)
class Column:
    """A displayed leaderboard column: the row key it shows, its header and how to format it."""

    key: str
    header: str
    # text, int, pct (a fraction as percent), pm (mean ± CI half-width), ci (interval), tau, selection,
    # protocol (name and short hash), flagged (the method, marked when optimistic)
    kind: str
    ci: tuple[str, str] | None = None

    @property
    def is_text(self) -> bool:
        """Left-aligned and sorted as text (the others are numbers)."""
        return self.kind in ("text", "selection", "protocol", "flagged")


def metric_spec(metric: str) -> Metric:
    """The :class:`Metric` named ``metric`` (lrs, ars or acc)."""
    if metric not in METRICS:
        raise UnknownNameError("metric", metric, METRICS)
    return METRICS[metric]


def columns(metric: str) -> list[Column]:
    """The columns shown for a leaderboard of ``metric``, in order."""
    spec = metric_spec(metric)
    shown = [
        Column("rank", "rank", "int"),
        Column("method", "method", "text"),
        Column("dataset", "dataset", "text"),
        Column("ipc", "IPC", "int"),
        Column("mean", f"{spec.label} %", "pct"),
        Column("ci_low", "95% CI (t) %", "ci", ("ci_low", "ci_high")),
        Column("boot_ci_low", "95% CI (boot) %", "ci", ("boot_ci_low", "boot_ci_high")),
        *(Column(field, f"{label} %", "pct") for field, label in spec.components),
    ]
    if spec.name != "acc":
        shown.append(Column("acc_syn", "acc(syn) %", "pct"))
    shown += [
        Column("acc_random", "acc(rand) %", "pct"),
        Column("rounds", "rounds", "int"),
        Column("stability_tau", "rank τ", "tau"),
        Column("selection", "selection", "selection"),
        Column("protocol", "protocol", "protocol"),
    ]
    return shown


def terminal_columns(metric: str) -> list[Column]:
    """A narrower column set for terminals: dataset and IPC head each section, the score carries its CI."""
    spec = metric_spec(metric)
    shown = [
        Column("rank", "#", "int"),
        Column("method", "method", "flagged"),
        Column("mean", f"{spec.label} % ± 95% CI", "pm", ("ci_low", "ci_high")),
        Column("boot_ci_low", "bootstrap CI", "ci", ("boot_ci_low", "boot_ci_high")),
        *(Column(field, label, "pct") for field, label in spec.components),
    ]
    if spec.name != "acc":
        shown.append(Column("acc_syn", "acc(syn)", "pct"))
    shown += [
        Column("acc_random", "acc(rand)", "pct"),
        Column("rounds", "n", "int"),
        Column("stability_tau", "rank τ", "tau"),
        Column("protocol", "protocol", "text"),
    ]
    return shown


# -- building ----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or None for missing and NaN values (so that JSON stays strict)."""
    if value is None:
        return None
    x = float(value)
    return None if math.isnan(x) else x


def _metric_of(evaluation: Mapping[str, Any]) -> str:
    return evaluation.get("metric") or "lrs"


def _eligible(
    evaluations: Iterable[Mapping[str, Any]], metric: str, dataset: str | None, ipc: int | None
) -> list[Mapping[str, Any]]:
    """Evaluations that score ``metric`` in the requested dataset and IPC, newest of each measurement.

    LRS and ARS rank their own kind of evaluation; accuracy ranks any evaluation with acc(syn, P).
    """
    spec = metric_spec(metric)
    newest: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for evaluation in evaluations:
        if dataset is not None and evaluation["dataset"] != dataset:
            continue
        if ipc is not None and int(evaluation["ipc"]) != int(ipc):
            continue
        if f"{spec.field}_mean" not in evaluation:
            continue
        if metric != "acc" and _metric_of(evaluation) != metric:
            continue
        protocol = evaluation.get("protocol_hash") or evaluation.get("protocol")
        newest.setdefault(
            (evaluation["method"], evaluation["dataset"], int(evaluation["ipc"]), protocol), evaluation
        )
    return list(newest.values())


def _per_round(evaluation: Mapping[str, Any], field: str) -> list[float]:
    """The metric's per-round values in round order (empty when the evaluation carries no rounds)."""
    rounds = sorted(evaluation.get("per_round") or [], key=lambda r: r.get("round", 0))
    return [float(r[field]) for r in rounds if r.get(field) is not None]


def _row(evaluation: Mapping[str, Any], spec: Metric) -> dict[str, Any]:
    field = spec.field
    values = _per_round(evaluation, field)
    boot_low, boot_high = bootstrap_ci(values) if len(values) >= 2 else (None, None)
    selection = evaluation.get("selection")
    acc_syn = evaluation.get("acc_syn_mean", evaluation.get("acc_syn_aug_mean"))
    acc_random = evaluation.get("acc_random_mean", evaluation.get("acc_random_aug_mean"))
    return {
        "rank": 0,
        "method": str(evaluation["method"]),
        "dataset": str(evaluation["dataset"]),
        "ipc": int(evaluation["ipc"]),
        "metric": spec.name,
        "mean": _number(evaluation[f"{field}_mean"]),
        "std": _number(evaluation.get(f"{field}_std")),
        "ci_low": _number(evaluation.get(f"{field}_ci_low")),
        "ci_high": _number(evaluation.get(f"{field}_ci_high")),
        "boot_ci_low": _number(boot_low),
        "boot_ci_high": _number(boot_high),
        **{name: _number(evaluation.get(f"{name}_mean")) for name, _ in spec.components},
        "acc_syn": _number(acc_syn),
        "acc_random": _number(acc_random),
        "acc_real": _number(evaluation.get("acc_real_mean")),
        "rounds": int(evaluation.get("rounds") or len(values)),
        "stability_tau": None,
        "stability_min_tau": None,
        "selection": selection,
        "optimistic": bool(evaluation.get("optimistic") or selection == "reference"),
        "protocol": evaluation.get("protocol"),
        "protocol_hash": evaluation.get("protocol_hash"),
    }


def _rank(rows: list[dict[str, Any]]) -> None:
    """Competition ranks by mean, best first: tied scores share a rank (1, 2, 2, 4)."""
    rows.sort(key=lambda r: (-(r["mean"] if r["mean"] is not None else -math.inf), r["method"]))
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
    evaluations: Iterable[Mapping[str, Any]],
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
) -> list[dict[str, Any]]:
    """Rank methods per (dataset, IPC) by the mean of ``metric`` (lrs, ars or acc).

    ``evaluations`` are ``Evaluation.to_dict()`` dicts, newest first as ``ResultStore.evaluations``
    returns them: of several evaluations of one method, dataset, IPC and protocol the first one wins.
    Rows are fractions, grouped by dataset and IPC, best first.
    """
    spec = metric_spec(metric)
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for evaluation in _eligible(evaluations, metric, dataset, ipc):
        groups.setdefault((str(evaluation["dataset"]), int(evaluation["ipc"])), []).append(evaluation)
    board: list[dict[str, Any]] = []
    for key in sorted(groups):
        rows = [_row(e, spec) for e in groups[key]]
        _stability(rows, [_per_round(e, spec.field) for e in groups[key]])
        _rank(rows)
        board += rows
    return board


# -- paired comparison -------------------------------------------------------------------------


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
    evaluations: Iterable[Mapping[str, Any]],
    a: str,
    b: str,
    *,
    metric: str = "lrs",
    dataset: str | None = None,
    ipc: int | None = None,
) -> Comparison:
    """Paired comparison of the newest evaluations of ``a`` and ``b`` over their shared round seeds."""
    spec = metric_spec(metric)
    if a == b:
        raise LeaderboardError(f"compare needs two different methods, got {a!r} twice")
    eligible = _eligible(evaluations, metric, dataset, ipc)
    where = "".join(
        [f" on {dataset}" if dataset is not None else "", f" at IPC {ipc}" if ipc is not None else ""]
    )
    newest: dict[str, dict[tuple[str, int], Mapping[str, Any]]] = {}
    for evaluation in eligible:
        group = (str(evaluation["dataset"]), int(evaluation["ipc"]))
        newest.setdefault(evaluation["method"], {}).setdefault(group, evaluation)
    for method in (a, b):
        if method not in newest:
            known = ", ".join(sorted(newest)) or "none"
            raise LeaderboardError(
                f"no {spec.label} evaluation of method {method!r} is recorded{where} "
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
        {
            int(r["seed"]): float(r[spec.field])
            for r in newest[m][group].get("per_round") or []
            if spec.field in r
        }
        for m in (a, b)
    ]
    seeds = tuple(seed for seed in by_seed[0] if seed in by_seed[1])
    if len(seeds) < 2:
        raise LeaderboardError(
            f"{a!r} and {b!r} share {len(seeds)} round(s) with the same seed on {group[0]} IPC {group[1]}; "
            "a paired comparison needs at least 2 (evaluate both with the same --seed and rounds)"
        )
    result = paired_comparison([by_seed[0][s] for s in seeds], [by_seed[1][s] for s in seeds])
    return Comparison(a, b, group[0], group[1], spec.name, seeds, result)


# -- rendering ---------------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def cell_text(row: Mapping[str, Any], column: Column) -> str:
    """The human-readable text of one cell (percentages for fractions, "–" for missing values)."""
    value = row.get(column.key)
    if column.kind == "pct":
        return _pct(value)
    if column.kind == "ci":
        low, high = (row.get(k) for k in column.ci or ())
        return "–" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"
    if column.kind == "pm":
        low, high = (row.get(k) for k in column.ci or ())
        return _pct(value) if low is None or high is None else f"{_pct(value)} ± {_pct((high - low) / 2)}"
    if column.kind == "flagged":
        return f"{value} (optimistic)" if row.get("optimistic") else str(value)
    if column.kind == "tau":
        return "–" if value is None else f"{value:.2f}"
    if column.kind == "selection":
        return f"{value or 'honest'} (optimistic)" if row.get("optimistic") else str(value or "honest")
    if column.kind == "protocol":
        digest = row.get("protocol_hash")
        return f"{value or '–'} ({digest[:8]})" if digest else str(value or "–")
    return "–" if value is None else str(value)


def _metric_of_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return rows[0]["metric"] if rows else "lrs"


def leaderboard_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich table of the leaderboard in percent, one section per (dataset, IPC) under its own heading."""
    metric = _metric_of_rows(rows)
    shown = terminal_columns(metric)
    table = Table(
        title=title or f"leaderboard · {metric_spec(metric).label} (percent; CIs are 95%)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in shown:
        table.add_column(column.header, justify="left" if column.is_text else "right")
    last_group = None
    for row in rows:
        group = (row["dataset"], row["ipc"])
        if group != last_group:
            if last_group is not None:
                table.add_section()
            table.add_row("", f"{group[0]} · IPC {group[1]}", style="bold")
            last_group = group
        table.add_row(*(cell_text(row, c) for c in shown))
    return table


def _markdown_cell(text: str) -> str:
    """Table-safe Markdown: pipes and HTML-significant characters escaped, one line."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return " ".join(escaped.split())


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table: a header row, then one row per method and group, in percent."""
    shown = columns(_metric_of_rows(rows))
    lines = [
        "| " + " | ".join(_markdown_cell(c.header) for c in shown) + " |",
        "|" + "|".join(":---" if c.is_text else "---:" for c in shown) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(cell_text(row, c)) for c in shown) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fieldnames(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every row field, fractions unrounded; missing values are empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_fieldnames(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a JSON list (fractions; missing values are null)."""
    return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"


def render(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """The leaderboard as text in ``fmt``: table, md, csv, json or html."""
    if fmt == "table":
        console = Console(file=io.StringIO(), width=200, force_terminal=False, color_system=None)
        console.print(leaderboard_table(rows))
        return console.file.getvalue()
    if fmt == "md":
        return to_markdown(rows)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "json":
        return to_json(rows)
    if fmt == "html":
        from ddrank.report.html import render_html

        return render_html(rows)
    raise UnknownNameError("format", fmt, FORMATS)

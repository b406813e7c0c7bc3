"""The columns a leaderboard shows for a metric, and the text of each cell (fractions as percentages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddrank.metrics.definitions import metric_definition


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


def columns(metric: str) -> list[Column]:
    """The columns shown for a leaderboard of ``metric``, in order (Markdown and HTML)."""
    definition = metric_definition(metric)
    shown = [
        Column("rank", "rank", "int"),
        Column("method", "method", "text"),
        Column("dataset", "dataset", "text"),
        Column("ipc", "IPC", "int"),
        Column("mean", f"{definition.label} %", "pct"),
        Column("ci_low", "95% CI (t) %", "ci", ("ci_low", "ci_high")),
        Column("boot_ci_low", "95% CI (boot) %", "ci", ("boot_ci_low", "boot_ci_high")),
        *(Column(q.field, f"{q.label} %", "pct") for q in definition.components),
    ]
    if definition.score.field != definition.syn_accuracy:
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
    definition = metric_definition(metric)
    shown = [
        Column("rank", "#", "int"),
        Column("method", "method", "flagged"),
        Column("mean", f"{definition.label} % ± 95% CI", "pm", ("ci_low", "ci_high")),
        Column("boot_ci_low", "bootstrap CI", "ci", ("boot_ci_low", "boot_ci_high")),
        *(Column(q.field, q.label, "pct") for q in definition.components),
    ]
    if definition.score.field != definition.syn_accuracy:
        shown.append(Column("acc_syn", "acc(syn)", "pct"))
    shown += [
        Column("acc_random", "acc(rand)", "pct"),
        Column("rounds", "n", "int"),
        Column("stability_tau", "rank τ", "tau"),
        Column("protocol", "protocol", "text"),
    ]
    return shown


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

"""The columns a leaderboard shows for a metric, and the text of each cell (fractions as percentages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddrank.metrics.definitions import MetricDefinition, metric_definition
from ddrank.metrics.scores import DEFAULT_WEIGHT
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS


@dataclass(frozen=True)
class Column:
    """A displayed leaderboard column: the row key it shows, its header and how to format it."""

    key: str
    header: str
    # text, int, pct (a fraction as percent), real (acc(real) in percent, marked when given or published),
    # pm (mean ± CI half-width, or mean [low, high] when the CI is clipped), ci (interval), tau, selection,
    # protocol (name and short hash), flagged (the method, marked when optimistic), delta (a signed
    # difference in percentage points), notes (caveats)
    kind: str
    ci: tuple[str, str] | None = None

    @property
    def is_text(self) -> bool:
        """Left-aligned and sorted as text (the others are numbers)."""
        return self.kind in ("text", "selection", "protocol", "flagged", "notes")


BOOTSTRAP_HEADER = f"95% CI (boot, n ≥ {MIN_BOOTSTRAP_ROUNDS}) %"


def _accuracies(definition: MetricDefinition, *, components_shown: bool) -> tuple[bool, bool, bool]:
    """Whether acc(syn), acc(rand) and acc(real) get their own columns: not when the score or a shown
    component already is that value (ARS's acc(syn, +aug)), nor acc(rand) or acc(real) for a score that
    measures none (accuracy)."""
    own = {definition.score.field, *(q.field for q in definition.components if components_shown)}
    return (
        definition.syn_accuracy not in own,
        definition.random_accuracy is not None and definition.random_accuracy not in own,
        definition.needs_real,
    )


def columns(metric: str) -> list[Column]:
    """The columns shown for a leaderboard of ``metric``, in order (Markdown and HTML)."""
    definition = metric_definition(metric)
    shown = [
        Column("rank", "rank", "int"),
        Column("method", "method", "text"),
        Column("dataset", "dataset", "text"),
        Column("ipc", "IPC", "int"),
        Column("mean", f"{definition.label} %", "pct"),
        *([Column("vs_neutral", "Δ neutral (pp)", "delta")] if definition.neutral is not None else []),
        Column("ci_low", "95% CI (t) %", "ci", ("ci_low", "ci_high")),
        Column("boot_ci_low", BOOTSTRAP_HEADER, "ci", ("boot_ci_low", "boot_ci_high")),
        *(Column(q.field, f"{q.label} %", "pct") for q in definition.components),
    ]
    syn, rand, real = _accuracies(definition, components_shown=True)
    shown += [Column("acc_syn", "acc(syn) %", "pct")] if syn else []
    shown += [Column("acc_random", "acc(rand) %", "pct")] if rand else []
    shown += [Column("acc_real", "acc(real) %", "real")] if real else []
    shown += [
        Column("rounds", "rounds", "int"),
        Column("stability_tau", "rank τ", "tau"),
        Column("selection", "selection", "selection"),
        Column("protocol", "protocol", "protocol"),
        Column("labels", "labels", "text"),
        Column("student", "student", "text"),
        Column("notes", "notes", "notes"),
    ]
    return shown


def terminal_columns(metric: str, wide: bool = False) -> list[Column]:
    """The terminal's columns: compact by default (fits 80 columns; each group is its own table, so the
    group's fields are in its title), ``wide`` adds the bootstrap CI (from MIN_BOOTSTRAP_ROUNDS rounds on),
    acc(real), rank τ and the protocol."""
    definition = metric_definition(metric)
    shown = [
        Column("rank", "#", "int"),
        Column("method", "method", "text"),
        Column("mean", f"{definition.label} ± CI", "pm", ("ci_low", "ci_high")),
    ]
    if definition.neutral is not None:
        shown.append(Column("vs_neutral", "Δneutral", "delta"))
    if wide:
        header = f"bootstrap CI (n ≥ {MIN_BOOTSTRAP_ROUNDS})"
        shown.append(Column("boot_ci_low", header, "ci", ("boot_ci_low", "boot_ci_high")))
    components = wide or metric != "ars"
    shown += [Column(q.field, q.label, "pct") for q in definition.components if components]
    syn, rand, real = _accuracies(definition, components_shown=components)
    shown += [Column("acc_syn", "syn", "pct")] if syn else []
    shown += [Column("acc_random", "rand", "pct")] if rand else []
    shown += [Column("acc_real", "real", "real")] if real and wide else []
    shown.append(Column("rounds", "n", "int"))
    if wide:
        shown += [Column("stability_tau", "rank τ", "tau"), Column("protocol", "protocol", "protocol")]
        shown.append(Column("evaluation_id", "id", "int"))  # what ddrank rm takes
    shown.append(Column("notes", "notes", "notes"))
    return shown


def weight_words(weight: float | None, metric: str | None) -> str:
    """A weight that is not the default, in words (``w = 0.9``, ``γ = 0.7``); empty for the default."""
    if weight is None or weight == DEFAULT_WEIGHT:
        return ""
    symbol = (metric_definition(metric).weight_symbol if metric else None) or "weight"
    return f"{symbol} = {weight:g}"


def acc_real_words(source: str | None, given: float | None) -> str:
    """An acc(real, hard) that was given or published rather than trained, in words (``acc(real) 70.00%
    given``); empty when it was trained or is not used."""
    if source is None or source == "trained":
        return ""
    return f"acc(real) {_pct(given)}% {source}"


def _real_kind(row: Mapping[str, Any]) -> str:
    """ " (given)" or " (published)" after an acc(real) that was not trained; empty otherwise."""
    source = row.get("acc_real_source")
    return "" if source is None or source == "trained" else f" ({str(source).split(':')[0]})"


def notes(row: Mapping[str, Any], *, in_heading: bool = False) -> str:
    """What a reader must know before trusting a row: optimistic selection, a weight other than the default,
    protocol deviations, diverged students, a smoke run, a set whose classes differ in size, training in
    bf16, an earlier evaluation with more rounds, or that the row is history. ``in_heading``: the row's
    group is its table's title, which says the weight and the smoke run already."""
    parts = []
    if row.get("optimistic"):
        parts.append("optimistic")
    weight = "" if in_heading else weight_words(row.get("weight"), row.get("metric"))
    if weight:
        parts.append(weight)
    if row.get("deviations"):
        parts.append(f"{row['deviations']} deviation{'s' if row['deviations'] != 1 else ''}")
    if row.get("diverged"):
        parts.append(f"{row['diverged']} diverged")
    if row.get("smoke") and not in_heading:
        parts.append("smoke")
    if row.get("images"):  # listed as IPC of its largest class, beside sets of IPC images in every class
        parts.append(f"{row['images']} images, classes uneven")
    if row.get("precision") not in (None, "fp32"):  # ranked beside fp32 rows: the reader should know
        parts.append(f"trained in {row['precision']}")
    if row.get("earlier_rounds"):
        parts.append(f"an earlier evaluation had {row['earlier_rounds']} rounds (--all)")
    if row.get("latest") is False:
        parts.append(f"earlier #{row.get('evaluation_id')}" if row.get("evaluation_id") else "earlier")
    return ", ".join(parts)


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def cell_text(row: Mapping[str, Any], column: Column, *, in_heading: bool = False) -> str:
    """The human-readable text of one cell (percentages for fractions, "–" for missing values);
    ``in_heading``: the table sits under its group's heading (see :func:`notes`)."""
    value = row.get(column.key)
    if column.kind == "pct":
        return _pct(value)
    if column.kind == "real":
        return _pct(value) + ("" if value is None else _real_kind(row))
    if column.kind == "ci":
        low, high = (row.get(k) for k in column.ci or ())
        return "–" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"
    if column.kind == "pm":
        low, high = (row.get(k) for k in column.ci or ())
        if value is None or low is None or high is None:
            return _pct(value)
        below, above = _pct(value - low), _pct(high - value)
        # ± only for an interval symmetric about the mean as printed; one clipped to its bounds (accuracies
        # near 1, say) is asymmetric and shown as it is
        return f"{_pct(value)} ± {below}" if below == above else f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"
    if column.kind == "delta":
        return "–" if value is None else f"{100 * value:+.2f}"
    if column.kind == "notes":
        return notes(row, in_heading=in_heading)
    if column.kind == "flagged":
        return f"{value} (optimistic)" if row.get("optimistic") else str(value)
    if column.kind == "int" and value is None:
        return "–"
    if column.kind == "tau":
        return "–" if value is None else f"{value:.2f}"
    if column.kind == "selection":
        return f"{value or 'honest'} (optimistic)" if row.get("optimistic") else str(value or "honest")
    if column.kind == "protocol":
        digest = row.get("protocol_hash")
        return f"{value or '–'} ({digest[:8]})" if digest else str(value or "–")
    return "–" if value is None else str(value)

"""Leaderboard rows rendered: a rich terminal table, Markdown, CSV, JSON or the self-contained HTML page."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ddrank.errors import UnknownNameError
from ddrank.metrics.definitions import metric_definition
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS
from ddrank.names import csv_cell
from ddrank.report.columns import Column, cell_text, columns, notes, terminal_columns
from ddrank.report.leaderboard import group_label
from ddrank.report.payload import dumps, leaderboard_document

FORMATS = ("table", "md", "paper-md", "csv", "json", "latex", "html")
OPTIMISTIC_NOTE = (
    "optimistic: reference selection (the best test accuracy over learning rates and checkpoints), "
    "which overstates accuracy"
)
BOOTSTRAP_NOTE = (
    f"bootstrap CI: from {MIN_BOOTSTRAP_ROUNDS} rounds on; with fewer a 95% bootstrap interval covers the "
    "mean much less often (about 50% with 2 rounds, 92% with 5), so none is shown."
)


def _metric_of_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return rows[0]["metric"] if rows else "lrs"


def neutral_note(metric: str) -> str:
    """What the metric's neutral value stands for (for LRS not a random subset, which scores below it), and
    what Δneutral means."""
    definition = metric_definition(metric)
    if definition.neutral is None:
        return ""
    neutral = f"{100 * definition.neutral:.2f}"
    return (
        f"{definition.label} {neutral} is neutral at {definition.neutral_meaning}. "
        f"Δneutral = {definition.label} − {neutral}, in percentage points."
    )


def _groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows by group, in their order, keyed by the group in words."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_label(row), []).append(row)
    return groups


def leaderboard_table(
    rows: Sequence[Mapping[str, Any]], title: str | None = None, *, wide: bool = False
) -> RenderableType:
    """Rich tables of the leaderboard in percent, one per group, each titled with its group; every
    string from the results is shown as typed (never read as rich markup)."""
    metric = _metric_of_rows(rows)
    shown = [c for c in terminal_columns(metric, wide) if c.kind != "notes" or wide]
    if not any(notes(row, in_heading=True) for row in rows):
        shown = [c for c in shown if c.kind != "notes"]
    heading = title or f"leaderboard · {metric_definition(metric).label} (percent; CIs are 95% Student-t)"
    parts: list[RenderableType] = [Text(heading, style="bold")]
    for label, members in _groups(rows).items():
        parts += [Text(""), Text(label, style="bold")]
        width = max(len(str(r["method"])) for r in members) + 2
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        for column in shown:
            numeric = not column.is_text
            table.add_column(
                Text(column.header),
                justify="right" if numeric else "left",
                no_wrap=numeric,
                overflow="fold",
                min_width=min(width, 16) if column.key == "method" else None,
            )
        footnotes = []
        for row in members:
            said = notes(row, in_heading=True)
            cells = [Text(said if c.kind == "notes" else cell_text(row, c)) for c in shown]
            if said and not wide:  # compact: a marker on the method, the note under the table
                cells[[c.key for c in shown].index("method")].append(" *")
                footnotes.append(f"* {row['method']}: {said}")
            table.add_row(*cells)
        parts.append(table)
        parts += [Text(line, style="dim") for line in footnotes]
    note = neutral_note(metric)
    if note:
        parts += [Text(""), Text(note, style="dim")]
    if wide:
        parts.append(Text(BOOTSTRAP_NOTE, style="dim"))
    return Group(*parts)


def student_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> RenderableType:
    """One set under several students (a cross-architecture matrix): one row per student, each row's name
    and scores taken from the same leaderboard row."""
    metric = _metric_of_rows(rows)
    shown = [c for c in terminal_columns(metric) if c.key not in ("rank", "method")]
    said = {notes(row) for row in rows}
    if len(said) <= 1:  # the same for every student (or nothing): said once in the heading
        shown = [c for c in shown if c.kind != "notes"]
    shared = {k: rows[0][k] for k in ("dataset", "ipc", "protocol", "fidelity", "labels")} if rows else {}
    heading = " · ".join(
        [
            f"{shared.get('dataset')} · IPC {shared.get('ipc')}",
            f"protocol {shared.get('protocol')}",
            str(shared.get("fidelity")),
            f"{shared.get('labels')} labels",
            *([said.pop()] if len(said) == 1 and next(iter(said)) else []),
        ]
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    longest = max((len(str(r["student"])) for r in rows), default=7)
    table.add_column("student", no_wrap=True, min_width=min(longest, 24))
    for column in shown:
        numeric = not column.is_text
        table.add_column(Text(column.header), justify="right" if numeric else "left", no_wrap=numeric)
    for row in rows:
        table.add_row(Text(str(row["student"])), *(Text(cell_text(row, c)) for c in shown))
    parts: list[RenderableType] = [Text(title or "students", style="bold"), Text(heading), table]
    note = neutral_note(metric)
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def _markdown_cell(text: str) -> str:
    """Table-safe Markdown: pipes and HTML-significant characters escaped, one line."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return " ".join(escaped.split())


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table per group under a heading naming the group (methods are ranked within a
    group only): a header row, then one row per method, in percent."""
    shown = columns(_metric_of_rows(rows))
    out = []
    for label, members in _groups(rows).items():
        lines = [
            f"### {_markdown_cell(label)}",
            "",
            "| " + " | ".join(_markdown_cell(c.header) for c in shown) + " |",
            "|" + "|".join(":---" if c.is_text else "---:" for c in shown) + "|",
        ]
        lines += [
            "| " + " | ".join(_markdown_cell(cell_text(row, c, in_heading=True)) for c in shown) + " |"
            for row in members
        ]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _fieldnames(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every row field, fractions unrounded; missing values are empty cells; text that a spreadsheet would
    read as a formula is prefixed with an apostrophe (OWASP)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_fieldnames(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else csv_cell(v)) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard document (schema_version 1): rows by group, fractions, missing values null."""
    return dumps(leaderboard_document(rows))


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # what ddrank's own words use beyond ASCII, which pdflatex rejects without extra packages
    "·": r"$\cdot$",
    "−": "$-$",
    "–": "--",
    "—": "---",
    "±": r"$\pm$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\rightarrow$",
    "…": r"\ldots{}",
    "γ": r"$\gamma$",
    "τ": r"$\tau$",
    "Δ": r"$\Delta$",
    "⁻": "$^{-}$",
    "¹": "$^{1}$",
}
# Accents pdflatex's default (OT1) encoding builds from a base letter: é is \'{e}.
_LATEX_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"', "\u0327": "c"}


def _latex_char(c: str) -> str:
    """One character as pdflatex reads it without extra packages: specials escaped, ddrank's symbols in
    math mode, accented letters as accent commands, and anything else as its code point (``[U+6570]``)."""
    if c in _LATEX_SPECIALS:
        return _LATEX_SPECIALS[c]
    if c.isascii():
        return c
    base, *marks = unicodedata.normalize("NFD", c)
    if base.isascii() and base.isalpha() and marks and all(m in _LATEX_ACCENTS for m in marks):
        out = base if base not in "ij" else "\\" + base  # dotless i and j under an accent
        for mark in marks:
            out = f"\\{_LATEX_ACCENTS[mark]}{{{out}}}"
        return out
    return f"[U+{ord(c):04X}]"


def _latex_escape(text: str) -> str:
    """Text as ASCII-only LaTeX: every special escaped and every other character spelled out."""
    return "".join(_latex_char(c) for c in " ".join(text.split()))


def _mean_std(row: Mapping[str, Any], digits: int = 2) -> str:
    mean, std = row.get("mean"), row.get("std")
    if mean is None:
        return "–"
    return f"{100 * mean:.{digits}f}" + ("" if std is None else f" ± {100 * std:.{digits}f}")


def to_latex(rows: Sequence[Mapping[str, Any]]) -> str:
    """A booktabs table per group as it goes into a paper: method, score mean ± std over rounds (percent),
    acc(syn) and acc(rand); the best mean in bold; the group and neutral value in the caption."""
    metric = _metric_of_rows(rows)
    definition = metric_definition(metric)
    out = []
    for label, members in _groups(rows).items():
        ranked = [r for r in members if r.get("rank") is not None]
        best = min((r["rank"] for r in ranked), default=None)
        lines = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{_latex_escape(definition.label)} (\\%, mean $\\pm$ sample std, ddof 1, "
            "over rounds); "
            f"{_latex_escape(label)}."
            + (
                f" Neutral {100 * definition.neutral:.2f} ({_latex_escape(definition.neutral_meaning)})."
                if definition.neutral
                else ""
            )
            + (f" {_latex_escape(OPTIMISTIC_NOTE)}." if any(r.get("optimistic") for r in members) else "")
            + "}",
            "\\begin{tabular}{lrrrr}",
            "\\toprule",
            f"Method & {_latex_escape(definition.label)} & acc(syn) & acc(rand) & rounds \\\\",
            "\\midrule",
        ]
        for row in members:
            score = _latex_escape(_mean_std(row))
            if best is not None and row.get("rank") == best:
                score = f"\\textbf{{{score}}}"
            cells = [
                _latex_escape(cell_text(row, Column("method", "", "flagged"))),
                score,
                _latex_escape(cell_text(row, Column("acc_syn", "", "pct"))),
                _latex_escape(cell_text(row, Column("acc_random", "", "pct"))),
                str(row["rounds"]),
            ]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def to_paper_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A compact Markdown table per group: method and score mean ± std over rounds (percent)."""
    metric = _metric_of_rows(rows)
    label = metric_definition(metric).label
    out = []
    for group, members in _groups(rows).items():
        lines = [
            f"**{_markdown_cell(group)}**",
            "",
            f"| method | {label} (%), mean ± sample std (ddof 1) | rounds |",
            "|:---|---:|---:|",
        ]
        method = Column("method", "", "flagged")
        lines += [
            f"| {_markdown_cell(cell_text(r, method))} | {_mean_std(r)} | {r['rounds']} |" for r in members
        ]
        if any(r.get("optimistic") for r in members):
            lines += ["", f"*{_markdown_cell(OPTIMISTIC_NOTE)}*"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def plain_text(renderable: RenderableType, width: int = 80) -> str:
    """A rich renderable as plain text for a file or a pipe: no colour, no trailing padding."""
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()) + "\n"


def render(rows: Sequence[Mapping[str, Any]], fmt: str, *, wide: bool = False) -> str:
    """The leaderboard as text in ``fmt``: table, md, csv, json or html."""
    if fmt == "table":
        return plain_text(leaderboard_table(rows, wide=wide), width=200 if wide else 80)
    if fmt == "md":
        return to_markdown(rows)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "json":
        return to_json(rows)
    if fmt == "latex":
        return to_latex(rows)
    if fmt == "paper-md":
        return to_paper_markdown(rows)
    if fmt == "html":
        from ddrank.report.html import render_html  # matplotlib loads only for a page

        return render_html(rows)
    raise UnknownNameError("format", fmt, FORMATS)

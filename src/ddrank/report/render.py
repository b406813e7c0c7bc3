"""Leaderboard rows rendered: a rich terminal table, Markdown, CSV, JSON or the self-contained HTML page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ddrank.errors import UnknownNameError
from ddrank.metrics.definitions import metric_definition
from ddrank.report.columns import cell_text, columns, terminal_columns
from ddrank.report.html import render_html

FORMATS = ("table", "md", "csv", "json", "html")


def _metric_of_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    return rows[0]["metric"] if rows else "lrs"


def leaderboard_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich table of the leaderboard in percent, one section per (dataset, IPC) under its own heading."""
    metric = _metric_of_rows(rows)
    shown = terminal_columns(metric)
    table = Table(
        title=title or f"leaderboard · {metric_definition(metric).label} (percent; CIs are 95%)",
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
        return render_html(rows)
    raise UnknownNameError("format", fmt, FORMATS)

"""Terminal tables of evaluation rows (fractions shown as percentages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _pm(row: Mapping[str, Any], name: str) -> str:
    mean, low, high = row[f"{name}_mean"], row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    if low is None:
        return _pct(mean, 2)
    return f"{_pct(mean, 2)} ± {_pct((high - low) / 2, 2)}"


def ranked(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows ordered by IPC, then LRS (best first)."""
    return sorted(rows, key=lambda r: (r["ipc"], -r["lrs_mean"]))


def lrs_table(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> Table:
    """Method, IPC, acc(syn), acc(rand), HLR, IOR and LRS ± 95% CI half-width, in percent."""
    table = Table(title=title, title_justify="left")
    for header in (
        "rank",
        "method",
        "IPC",
        "acc(syn) %",
        "acc(rand) %",
        "HLR %",
        "IOR %",
        "LRS % (± 95% CI)",
    ):
        table.add_column(header, justify="left" if header == "method" else "right")
    rank, last_ipc = 0, None
    for row in ranked(rows):
        rank = 1 if row["ipc"] != last_ipc else rank + 1
        last_ipc = row["ipc"]
        method = row["method"] + (" (optimistic)" if row.get("optimistic") else "")
        table.add_row(
            str(rank),
            method,
            str(row["ipc"]),
            _pct(row["acc_syn_mean"]),
            _pct(row["acc_random_mean"]),
            _pct(row["hlr_mean"]),
            _pct(row["ior_mean"]),
            _pm(row, "lrs"),
        )
    return table

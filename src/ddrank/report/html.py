"""The leaderboard as one self-contained HTML page: a sortable, filterable table and inline SVG plots.

Nothing is fetched from the network. Every string from the results is HTML-escaped; the page's one
script reads the table from the DOM (no data is ever written into code), and a Content-Security-Policy
allows only that script, by hash.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from ddrank import __version__
from ddrank.metrics.definitions import metric_definition
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS
from ddrank.report.columns import Column, acc_real_words, cell_text, columns, weight_words
from ddrank.report.leaderboard import group_label
from ddrank.report.plots import group_plots, ipc_figure, label_gap_figure
from ddrank.report.plots import svg as svg_of

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
.meta { color: #59636e; margin: .25rem 0; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .6rem; border-radius: 4px; }
.controls { display: flex; gap: 1rem; align-items: center; margin: 1rem 0 .5rem; flex-wrap: wrap; }
.controls input, .controls select { font: inherit; padding: .25rem .4rem; max-width: 100%; }
.controls label { max-width: 100%; }
.table-wrap { overflow: auto; max-height: 75vh; border: 1px solid #d8dee4; border-radius: 4px;
              margin-bottom: 1rem; }
header, section, p, h1, h2 { overflow-wrap: anywhere; }
.formulas { background: #f6f8fa; border-radius: 4px; padding: .5rem .75rem; margin: .75rem 0; }
.formulas code { font-size: .95em; }
section.group { margin-top: 1.5rem; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #d8dee4; white-space: nowrap; text-align: left; }
td.num, th.num { text-align: right; }
thead th { background: #f6f8fa; cursor: pointer; user-select: none; position: sticky; top: 0; }
thead th:hover { background: #eaeef2; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
td.method { font-weight: 600; }
tr.optimistic td { background: #fff8f0; }
.badge { background: #fff1e5; color: #953800; border: 1px solid #ffb77c; border-radius: 1em;
         padding: 0 .5em; font-size: .85em; }
.note { color: #59636e; font-size: .9em; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr)); gap: 1rem; }
figure { margin: 0; min-width: 0; }
figure svg { width: 100%; height: auto; display: block; }
@media (max-width: 600px) { body { margin: .75rem auto; padding: 0 .5rem; } h1 { font-size: 1.25rem; } }
figcaption { color: #59636e; font-size: .9em; text-align: center; }
"""

# Reads everything from the tables (one per group); no result data is ever part of this code.
_SCRIPT = """
(function () {
  "use strict";
  var tables = Array.prototype.slice.call(document.querySelectorAll("table.leaderboard"));
  var filter = document.getElementById("filter");
  var group = document.getElementById("group");
  var shown = document.getElementById("shown");
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.group[data-group]"));

  function key(row, index, numeric) {
    var value = row.cells[index].getAttribute("data-value");
    if (!numeric) { return value === null ? "" : value; }
    var x = parseFloat(value);
    return isNaN(x) ? null : x;
  }

  function sortBy(table, headers, th, index) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.getAttribute("data-type") === "number";
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) { return (x === null ? 1 : 0) - (y === null ? 1 : 0); }
      var order = numeric ? x - y : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function applyFilter() {
    var text = filter.value.trim().toLowerCase();
    var wanted = group ? group.value : "";
    var count = 0, total = 0;
    sections.forEach(function (section) {
      var inGroup = !wanted || section.getAttribute("data-group") === wanted;
      section.hidden = !inGroup;
      Array.prototype.forEach.call(section.querySelectorAll("tr.method-row"), function (row) {
        var method = (row.getAttribute("data-method") || "").toLowerCase();
        var visible = inGroup && method.indexOf(text) !== -1;
        row.hidden = !visible;
        total += 1;
        if (visible) { count += 1; }
      });
    });
    shown.textContent = count + " of " + total + " rows shown";
  }

  tables.forEach(function (table) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    headers.forEach(function (th, index) {
      th.addEventListener("click", function () { sortBy(table, headers, th, index); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, headers, th, index);
        }
      });
    });
  });
  filter.addEventListener("input", applyFilter);
  if (group) { group.addEventListener("change", applyFilter); }
  applyFilter();
})();
"""


def _attr(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _formulas(metric: str) -> str:
    """How the page's numbers are computed, and what the neutral score stands for."""
    spec = metric_definition(metric)
    lines = []
    if metric == "lrs":
        lines = [
            "HLR = acc(real, hard) − acc(syn, hard) (lower is better)",
            "IOR = acc(syn) − acc(rand) (higher is better)",
            "LRS = (e<sup>a</sup> − e<sup>−1</sup>) / (e − e<sup>−1</sup>), a = w·IOR − (1 − w)·HLR",
        ]
    elif metric == "ars":
        lines = [
            "ARS = (e<sup>b</sup> − e<sup>−1</sup>) / (e − e<sup>−1</sup>), b = γ·(syn − rand, +aug) "
            "+ (1 − γ)·(syn − rand, −aug)"
        ]
    if spec.neutral is not None:
        lines.append(
            f"neutral {escape(spec.label)} = {100 * spec.neutral:.2f}% at {escape(spec.neutral_meaning)}; "
            "Δ neutral = score − neutral, in percentage points"
        )
    if not lines:
        return ""
    return '<div class="formulas">' + "<br>".join(f"<code>{line}</code>" for line in lines) + "</div>"


def _protocol_words(row: Mapping[str, Any]) -> str:
    digest = str(row.get("protocol_hash") or "")[:8]
    return f"protocol {row.get('protocol') or '–'}" + (f" ({digest})" if digest else "")


def _setting_words(row: Mapping[str, Any]) -> list[str]:
    """The weight, acc(real) and smoke run of a row's group, in words (only what is not the default)."""
    words = [
        weight_words(row.get("weight"), row.get("metric")),
        acc_real_words(row.get("acc_real_source"), row.get("acc_real_given")),
        "smoke run" if row.get("smoke") else "",
    ]
    return [w for w in words if w]


def _setting(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, besides dataset, IPC, protocol, labels and student, keeps two rows apart in a plot."""
    fields = ("fidelity", "weight", "acc_real_source", "acc_real_given")
    return (*(row.get(k) for k in fields), bool(row.get("smoke")))


def _ipc_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Latest rows of one protocol at several IPCs, keyed by caption: the same dataset, protocol name,
    labels, student, fidelity, weight, acc(real) and smoke-ness (a smoke run never joins a full one).

    A protocol's hash includes its IPC, so rows join a series by the protocol's name, and the caption gives
    the hash at each IPC; a series with two hashes at one IPC (two variants under one name) is left out,
    never averaged into one line.
    """
    series: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("latest", True):
            key = (row["dataset"], row.get("protocol"), row.get("labels"), row.get("student"), *_setting(row))
            series.setdefault(key, []).append(row)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for members in series.values():
        hashes: dict[int, set[str]] = {}
        for row in members:
            hashes.setdefault(int(row["ipc"]), set()).add(str(row.get("protocol_hash") or ""))
        if len(hashes) < 2 or any(len(found) > 1 for found in hashes.values()):
            continue
        first = members[0]
        at = ", ".join(f"IPC {ipc}: {next(iter(hashes[ipc]))[:8]}" for ipc in sorted(hashes))
        caption = " · ".join(
            [
                str(first["dataset"]),
                f"protocol {first.get('protocol') or '–'} ({at})",
                str(first.get("fidelity") or "honest"),
                f"{first.get('labels')} labels",
                str(first.get("student")),
                *_setting_words(first),
            ]
        )
        out[caption] = members
    return out


def _label_pairs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list, list]]:
    """(caption, hard rows, soft rows) for each hard-label protocol and soft-label protocol evaluated on the
    same dataset, IPC and student (and fidelity, weight, acc(real), smoke-ness): one pair of protocols per
    figure, so that no method's bar mixes two protocols; the caption names both."""
    pairs: dict[tuple[Any, ...], dict[str, dict[tuple[Any, ...], list[Mapping[str, Any]]]]] = {}
    for row in rows:
        if row.get("latest", True) and row.get("labels"):
            kind = "hard" if row["labels"] == "hard" else "soft"
            key = (row["dataset"], row["ipc"], row.get("student"), *_setting(row))
            protocol = (row.get("protocol"), row.get("protocol_hash"), row.get("labels"))
            found = pairs.setdefault(key, {"hard": {}, "soft": {}})[kind]
            found.setdefault(protocol, []).append(row)
    out = []
    for _, found in sorted(pairs.items(), key=lambda item: tuple(map(str, item[0]))):
        for hard in found["hard"].values():
            for soft in found["soft"].values():
                first = hard[0]
                caption = " · ".join(
                    [
                        f"{first['dataset']} · IPC {first['ipc']} · {first.get('student')}",
                        str(first.get("fidelity") or "honest"),
                        f"hard labels: {_protocol_words(first)}",
                        f"{soft[0].get('labels')} labels: {_protocol_words(soft[0])}",
                        *_setting_words(first),
                    ]
                )
                out.append((caption, hard, soft))
    return out


def _sort_value(row: Mapping[str, Any], column: Column) -> str:
    """The raw value a column sorts by: full-precision fractions for numbers, empty when missing."""
    value = row.get(column.key)
    if column.kind == "selection":
        return "optimistic" if row.get("optimistic") else str(value or "honest")
    if value is None:
        return ""
    return repr(float(value)) if column.kind in ("pct", "real", "ci", "tau") else str(value)


def _header(column: Column, table: int) -> str:
    """A sortable column header; its id names the column and the group's table (``col-score-0``)."""
    name = "score" if column.key == "mean" else column.key.replace("_", "-")
    ident = f"col-{name}-{table}"
    numeric = not column.is_text
    kind = "number" if numeric else "text"
    css = ' class="num"' if numeric else ""
    return (
        f'<th id="{ident}" scope="col" tabindex="0" data-type="{kind}"{css} '
        f'title="sort by {_attr(column.header)}">{escape(column.header)}</th>'
    )


def _cell(row: Mapping[str, Any], column: Column) -> str:
    value = _attr(_sort_value(row, column))
    if column.key == "method":
        return f'<td class="method" data-value="{value}">{escape(row["method"])}</td>'
    if column.kind == "selection" and row.get("optimistic"):
        return (
            f'<td data-value="{value}">{escape(str(row.get("selection") or "reference"))} '
            '<span class="badge">optimistic</span></td>'
        )
    title = f' title="{_attr(row.get("protocol_hash"))}"' if column.kind == "protocol" else ""
    css = "" if column.is_text else ' class="num"'
    return f'<td data-value="{value}"{css}{title}>{escape(cell_text(row, column, in_heading=True))}</td>'


def _row(row: Mapping[str, Any], shown: Sequence[Column]) -> str:
    group = _attr(group_label(row))
    cells = "".join(_cell(row, c) for c in shown)
    optimistic = " optimistic" if row.get("optimistic") else ""
    method = _attr(row["method"])
    return f'<tr class="method-row{optimistic}" data-method="{method}" data-group="{group}">{cells}</tr>'


def _summary(rows: Sequence[Mapping[str, Any]], metric: str, generated: datetime) -> str:
    def listed(values: Any) -> str:
        return ", ".join(escape(str(v)) for v in dict.fromkeys(values)) or "–"

    protocols = dict.fromkeys(
        f"{r['protocol'] or '–'} ({r['protocol_hash'][:8]})" if r.get("protocol_hash") else str(r["protocol"])
        for r in rows
    )
    parts = [
        f"Generated {escape(generated.isoformat(timespec='seconds'))} by ddrank {escape(__version__)}",
        f"dataset: {listed(r['dataset'] for r in rows)}",
        f"IPC: {listed(sorted({r['ipc'] for r in rows}))}",
        f"metric: {escape(metric_definition(metric).label)}",
        f"protocol: {listed(protocols)}",
        f"{len(rows)} rows",
    ]
    return " · ".join(parts)


def render_html(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "ddrank leaderboard",
    generated: datetime | None = None,
) -> str:
    """The leaderboard rows of :func:`~ddrank.report.leaderboard.build_leaderboard` as one self-contained
    HTML document."""
    metric = rows[0]["metric"] if rows else "lrs"
    spec = metric_definition(metric)
    generated = generated or datetime.now(UTC)
    shown = columns(metric)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_label(row), []).append(row)
    heading = title if spec.label in title else f"{title} · {spec.label}"

    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(heading)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{escape(heading)}</h1>",
        f'<p class="meta">{_summary(rows, metric, generated)}</p>',
        f'<p class="meta">{escape(spec.label)}: {escape(spec.description)}.</p>',
        _formulas(metric),
    ]
    if any(r.get("optimistic") for r in rows):
        parts.append(
            '<p class="warning"><span class="badge">optimistic</span> rows use reference selection '
            "(best test accuracy over learning rates and checkpoints): their accuracies are overstated "
            "and not comparable with honest rows.</p>"
        )
    parts.append("</header>")
    parts.append('<section class="controls">')
    parts.append(
        '<label>Filter methods <input id="filter" type="search" placeholder="method name" '
        'autocomplete="off"></label>'
    )
    if len(groups) > 1:
        options = "".join(f'<option value="{_attr(g)}">{escape(g)}</option>' for g in groups)
        parts.append(
            f'<label>Group <select id="group"><option value="">all</option>{options}</select></label>'
        )
    parts.append('<span id="shown" class="note"></span>')
    parts.append("</section>")
    parts.append(
        '<p class="note">Each group has its own table: methods are ranked within a group only. Scores and '
        "accuracies in percent (stored as fractions). 95% CI (t): Student-t interval over rounds; "
        "95% CI (boot): expanded percentile bootstrap of the per-round values, "
        f"shown from {MIN_BOOTSTRAP_ROUNDS} rounds on (with fewer it covers the mean much less often than "
        "95%: about half the time with 2 rounds, 92% with 5). "
        "rank τ: mean Kendall τ between each round's ranking of the group and its overall ranking. "
        "Click a column header to sort; click again to reverse.</p>"
    )
    if not rows:
        parts.append('<p class="note">No evaluations match.</p>')
    index = 0
    for table, (label, members) in enumerate(groups.items()):
        latest = [r for r in members if r.get("latest", True)]
        parts.append(f'<section class="group" data-group="{_attr(label)}"><h2>{escape(label)}</h2>')
        parts.append(f'<div class="table-wrap"><table class="leaderboard" id="leaderboard-{table}">')
        parts.append("<thead><tr>" + "".join(_header(c, table) for c in shown) + "</tr></thead>")
        parts.append("<tbody>" + "".join(_row(r, shown) for r in members) + "</tbody>")
        parts.append("</table></div>")
        parts.append('<div class="plots">')
        for caption, svg in group_plots(latest, f"plot{index}"):
            parts.append(f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>")
        parts.append("</div></section>")
        index += 1
    across = [
        (f"accuracy against IPC · {key}", ipc_figure(series)) for key, series in _ipc_series(rows).items()
    ]
    across += [
        (f"synthetic − random, hard against soft labels · {caption}", label_gap_figure(hard, soft))
        for caption, hard, soft in (_label_pairs(rows) if spec.random_accuracy is not None else [])
    ]
    across = [(caption, figure) for caption, figure in across if figure is not None]
    if across:
        parts.append('<section class="group across"><h2>Across groups</h2><div class="plots">')
        for caption, figure in across:
            parts.append(
                f"<figure>{svg_of(figure, f'plot{index}')}<figcaption>{escape(caption)}</figcaption></figure>"
            )
            index += 1
        parts.append("</div></section>")
    parts += [f"<script>{_SCRIPT}</script>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"

"""Leaderboard plots as inline SVG: the score with CIs, its components, and synthetic vs random accuracy.

Figures are built without pyplot (no global state, no GUI backend); text stays ``<text>`` (escaped by
matplotlib), math parsing is off so that method names render literally, and element ids carry a
per-plot prefix so that several plots can share one HTML page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ddrank.metrics.definitions import Quantity, metric_definition

_RC = {"svg.fonttype": "none", "text.parse_math": False, "font.size": 9}
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
_ID = re.compile(r"""\bid="([^"]+)"|href="#([^"]+)"|url\(#([^)]+)\)""")


def svg(figure: Figure, prefix: str) -> str:
    """``figure`` as an ``<svg>`` element for inlining: no XML prolog or metadata, ids prefixed."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC | {"svg.hashsalt": prefix}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)

    def prefixed(match: re.Match[str]) -> str:
        element, reference, url = match.groups()
        if element is not None:
            return f'id="{prefix}-{element}"'
        if reference is not None:
            return f'href="#{prefix}-{reference}"'
        return f"url(#{prefix}-{url})"

    return _ID.sub(prefixed, text).strip()


def _pct(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else 100 * v for v in values], dtype=np.float64)


def _figure(rows: int) -> tuple[Figure, Any]:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(6.4, 1.4 + 0.32 * max(rows, 1)), layout="constrained")
        return figure, figure.add_subplot()


def score_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The score of each method (best on top) with its 95% t-interval as error bars."""
    definition = metric_definition(rows[0]["metric"])
    with matplotlib.rc_context(_RC):
        figure, ax = _figure(len(rows))
        mean = _pct([r["mean"] for r in rows])
        low, high = _pct([r["ci_low"] for r in rows]), _pct([r["ci_high"] for r in rows])
        errors = np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0)
        y = np.arange(len(rows))
        ax.errorbar(mean, y, xerr=errors, fmt="o", color=_COLORS[0], ecolor="#444444", capsize=3)
        ax.set_yticks(y, [r["method"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"{definition.label} (%), 95% CI over rounds")
        ax.grid(axis="x", alpha=0.3)
    return figure


def _axis(rows: Sequence[Mapping[str, Any]], quantity: Quantity) -> np.ndarray:
    """A quantity of every row in percent (NaN where missing)."""
    values = _pct([r.get(quantity.field) for r in rows])
    return values if quantity.minus is None else values - _pct([r.get(quantity.minus) for r in rows])


def components_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """The metric's two components against each other (LRS: HLR against IOR; ARS: synthetic minus
    random accuracy with against without augmentation); None for a metric without them."""
    scatter = metric_definition(rows[0]["metric"]).scatter
    if scatter is None:
        return None
    x_axis, y_axis, _ = scatter
    x, y = _axis(rows, x_axis), _axis(rows, y_axis)
    if np.isnan(x).all() or np.isnan(y).all():
        return None
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = figure.add_subplot()
        ax.scatter(x, y, color=_COLORS[0], zorder=3)
        for row, xi, yi in zip(rows, x, y, strict=True):
            if not (np.isnan(xi) or np.isnan(yi)):
                ax.annotate(row["method"], (xi, yi), xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(x_axis.label)
        ax.set_ylabel(y_axis.label)
        ax.axhline(0.0, color="#888888", linewidth=0.8)
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
        ax.grid(alpha=0.3)
    return figure


def accuracy_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped bars per method: the synthetic set against the random real subset (each protocol cell)."""
    series = [(q.field, q.label) for q in metric_definition(rows[0]["metric"]).accuracy_bars]
    with matplotlib.rc_context(_RC):
        figure, ax = _figure(len(rows) * len(series) // 2 + 1)
        y = np.arange(len(rows))
        height = 0.8 / len(series)
        for i, (key, label) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * height
            values = np.nan_to_num(_pct([r.get(key) for r in rows]), nan=0.0)
            ax.barh(y + offset, values, height=height, label=label, color=_COLORS[i % len(_COLORS)])
        ax.set_yticks(y, [r["method"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy (%)")
        ax.legend(loc="best", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return figure


def group_plots(rows: Sequence[Mapping[str, Any]], prefix: str) -> list[tuple[str, str]]:
    """(caption, inline SVG) of every plot for one (dataset, IPC) group of leaderboard rows."""
    definition = metric_definition(rows[0]["metric"])
    figures = [(f"{definition.label} per method with 95% confidence intervals", score_figure(rows))]
    components = components_figure(rows)
    if components is not None and definition.scatter is not None:
        figures.append((definition.scatter[2], components))
    figures.append(("synthetic against random real accuracy", accuracy_figure(rows)))
    return [(caption, svg(figure, f"{prefix}-{i}")) for i, (caption, figure) in enumerate(figures)]

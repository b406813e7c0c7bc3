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

_RC = {"svg.fonttype": "none", "text.parse_math": False, "font.size": 10.5}
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


def _figure(rows: int, width: float = 5.6) -> tuple[Figure, Any]:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width, 1.5 + 0.36 * max(rows, 1)), layout="constrained")
        return figure, figure.add_subplot()


def _outliers(values: np.ndarray) -> np.ndarray:
    """Values far below the rest (Tukey's rule, 3 IQR), which would squash the axis of the others."""
    finite = values[~np.isnan(values)]
    if finite.size < 4:
        return np.zeros(values.shape, dtype=bool)
    q1, q3 = np.percentile(finite, [25, 75])
    spread = max(q3 - q1, 1e-9)
    return ~np.isnan(values) & (values < q1 - 3 * spread)


def score_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The score of each method (best on top) with its 95% t-interval and the neutral value; a method far
    below the others is drawn at the axis edge with its value written, so noise does not squash the axis."""
    definition = metric_definition(rows[0]["metric"])
    with matplotlib.rc_context(_RC):
        figure, ax = _figure(len(rows))
        mean = _pct([r["mean"] for r in rows])
        low, high = _pct([r["ci_low"] for r in rows]), _pct([r["ci_high"] for r in rows])
        low, high = np.where(np.isnan(low), mean, low), np.where(np.isnan(high), mean, high)
        far = _outliers(mean)
        y = np.arange(len(rows))
        near = ~far
        if definition.neutral is not None:
            ax.axvline(100 * definition.neutral, color="#888888", linestyle="--", linewidth=1)
        ax.errorbar(
            mean[near],
            y[near],
            xerr=np.vstack([mean - low, high - mean])[:, near],
            fmt="o",
            color=_COLORS[0],
            ecolor="#444444",
            capsize=3,
        )
        if far.any():
            shown = np.concatenate([low[near], high[near]])
            if definition.neutral is not None:
                shown = np.append(shown, 100 * definition.neutral)
            left, right = np.nanmin(shown), np.nanmax(shown)
            edge = left - 0.12 * max(right - left, 1.0)
            ax.set_xlim(edge, right + 0.05 * max(right - left, 1.0))
            for yi, value in zip(y[far], mean[far], strict=True):
                ax.plot([edge], [yi], marker="<", color=_COLORS[3], clip_on=False)
                ax.annotate(
                    f"{value:.1f} (off scale)", (edge, yi), xytext=(8, -3), textcoords="offset points"
                )
        ax.set_yticks(y, [r["method"] for r in rows])
        ax.invert_yaxis()
        neutral = "" if definition.neutral is None else f"; dashed: neutral {100 * definition.neutral:.2f}"
        ax.set_xlabel(f"{definition.label} (%), 95% CI over rounds{neutral}")
        ax.grid(axis="x", alpha=0.3)
    return figure


def _axis(rows: Sequence[Mapping[str, Any]], quantity: Quantity) -> np.ndarray:
    """A quantity of every row in percent (NaN where missing)."""
    values = _pct([r.get(quantity.field) for r in rows])
    return values if quantity.minus is None else values - _pct([r.get(quantity.minus) for r in rows])


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _style(i: int) -> dict[str, Any]:
    colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
    return {"color": colors[i % len(colors)], "marker": _MARKERS[i % len(_MARKERS)]}


def _legend(figure: Figure, ax: Any) -> None:
    """The legend below the plot, never over the data or another label."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), frameon=False)


def components_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """The metric's two components against each other (LRS: HLR against IOR; ARS: synthetic minus
    random accuracy with against without augmentation); None for a metric without them. Methods are
    told apart by marker and colour in a legend, so no label sits on another."""
    scatter = metric_definition(rows[0]["metric"]).scatter
    if scatter is None:
        return None
    x_axis, y_axis, _ = scatter
    x, y = _axis(rows, x_axis), _axis(rows, y_axis)
    if np.isnan(x).all() or np.isnan(y).all():
        return None
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(5.6, 4.4 + 0.25 * (len(rows) // 3)), layout="constrained")
        ax = figure.add_subplot()
        for i, (row, xi, yi) in enumerate(zip(rows, x, y, strict=True)):
            if not (np.isnan(xi) or np.isnan(yi)):
                ax.scatter([xi], [yi], s=36, zorder=3, label=str(row["method"]), **_style(i))
        ax.set_xlabel(x_axis.label)
        ax.set_ylabel(y_axis.label)
        ax.axhline(0.0, color="#888888", linewidth=0.8)
        ax.margins(x=0.1, y=0.1)
        ax.grid(alpha=0.3)
        _legend(figure, ax)
    return figure


def accuracy_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped bars per method: the synthetic set against the random real subset (each protocol cell),
    with acc(real) as a dotted line when it is known."""
    series = [(q.field, q.label) for q in metric_definition(rows[0]["metric"]).accuracy_bars]
    with matplotlib.rc_context(_RC):
        figure, ax = _figure(len(rows) * len(series) // 2 + 1)
        y = np.arange(len(rows))
        height = 0.8 / len(series)
        for i, (key, label) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * height
            values = np.nan_to_num(_pct([r.get(key) for r in rows]), nan=0.0)
            ax.barh(y + offset, values, height=height, label=label, color=_COLORS[i % len(_COLORS)])
        real = _pct([r.get("acc_real") for r in rows])
        if not np.isnan(real).all():
            ax.axvline(float(np.nanmean(real)), color="#222222", linestyle=":", label="acc(real)")
        ax.set_yticks(y, [r["method"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
        _legend(figure, ax)
    return figure


def ipc_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """acc(syn) against IPC per method with its 95% CI as a band, and random real subsets dashed; None
    with fewer than two IPCs."""
    ipcs = sorted({int(r["ipc"]) for r in rows})
    if len(ipcs) < 2:
        return None
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(5.6, 4.2 + 0.25 * (len(methods) // 3)), layout="constrained")
        ax = figure.add_subplot()
        for i, method in enumerate(methods):
            mine = sorted((r for r in rows if str(r["method"]) == method), key=lambda r: r["ipc"])
            x = [r["ipc"] for r in mine]
            mean = _pct([r.get("acc_syn") for r in mine])
            low, high = (
                _pct([r.get("acc_syn_ci_low") for r in mine]),
                _pct([r.get("acc_syn_ci_high") for r in mine]),
            )
            style = _style(i)
            ax.plot(x, mean, label=method, **style)
            ax.fill_between(
                x,
                np.where(np.isnan(low), mean, low),
                np.where(np.isnan(high), mean, high),
                color=style["color"],
                alpha=0.18,
                linewidth=0,
            )
        by_ipc = {
            ipc: [r.get("acc_random") for r in rows if r["ipc"] == ipc and r.get("acc_random") is not None]
            for ipc in ipcs
        }
        random_x = [ipc for ipc in ipcs if by_ipc[ipc]]
        if random_x:
            ax.plot(
                random_x,
                [100 * float(np.mean(by_ipc[ipc])) for ipc in random_x],
                color="#222222",
                linestyle="--",
                label="random real subset",
            )
        ax.set_xscale("log")
        ax.set_xticks(ipcs, [str(ipc) for ipc in ipcs])
        ax.minorticks_off()
        ax.set_xlabel("images per class (IPC)")
        ax.set_ylabel("acc(syn) (%), 95% CI band")
        ax.grid(alpha=0.3)
        _legend(figure, ax)
    return figure


def label_gap_figure(hard: Sequence[Mapping[str, Any]], soft: Sequence[Mapping[str, Any]]) -> Figure | None:
    """acc(syn) − acc(rand) per method under hard labels and under a teacher's soft labels, side by side:
    how much of a distilled set's lead over random survives soft labels. None without both."""
    gap = {(str(r["method"]), "hard"): r for r in hard} | {(str(r["method"]), "soft"): r for r in soft}
    methods = [m for m in dict.fromkeys(str(r["method"]) for r in hard) if (m, "soft") in gap]
    if not methods:
        return None

    def ior(row: Mapping[str, Any]) -> float:
        syn, rand = row.get("acc_syn"), row.get("acc_random")
        return np.nan if syn is None or rand is None else 100 * (syn - rand)

    with matplotlib.rc_context(_RC):
        figure, ax = _figure(len(methods) + 1)
        y = np.arange(len(methods))
        modes = (("hard", "hard labels"), ("soft", "teacher (soft) labels"))
        values = np.array([[ior(gap[(m, mode)]) for m in methods] for mode, _ in modes])
        far = _outliers(values.ravel()).reshape(values.shape)
        edge = None
        if far.any():
            near = values[~far]
            left, right = min(float(np.nanmin(near)), 0.0), max(float(np.nanmax(near)), 0.0)
            edge = left - 0.25 * max(right - left, 1.0)
            ax.set_xlim(edge, right + 0.05 * max(right - left, 1.0))
        for i, (_, label) in enumerate(modes):
            shown = np.where(far[i], edge if edge is not None else 0.0, values[i])
            ax.barh(y + (i - 0.5) * 0.4, shown, height=0.4, label=label, color=_COLORS[i])
            for yi, value in zip(y[far[i]], values[i][far[i]], strict=True):
                ax.annotate(
                    f"{value:.0f} (off scale)",
                    (0, yi + (i - 0.5) * 0.4),
                    xytext=(4, -3),
                    textcoords="offset points",
                    fontsize=8,
                )
        ax.axvline(0.0, color="#444444", linewidth=0.8)
        ax.set_yticks(y, methods)
        ax.invert_yaxis()
        ax.set_xlabel("acc(syn) − acc(random subset), percentage points")
        ax.grid(axis="x", alpha=0.3)
        _legend(figure, ax)
    return figure


def group_plots(rows: Sequence[Mapping[str, Any]], prefix: str) -> list[tuple[str, str]]:
    """(caption, inline SVG) of every plot for one leaderboard group."""
    definition = metric_definition(rows[0]["metric"])
    figures = [(f"{definition.label} per method with 95% confidence intervals", score_figure(rows))]
    components = components_figure(rows)
    if components is not None and definition.scatter is not None:
        figures.append((definition.scatter[2], components))
    if definition.random_accuracy is not None:  # accuracy: the score plot shows acc(syn) already
        figures.append(("synthetic against random real accuracy", accuracy_figure(rows)))
    return [(caption, svg(figure, f"{prefix}-{i}")) for i, (caption, figure) in enumerate(figures)]

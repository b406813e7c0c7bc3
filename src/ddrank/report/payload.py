"""The versioned JSON documents ddrank writes: evaluations (``evaluate --json``, ``--students``, demo,
sweep) and leaderboards (``leaderboard --format json``). Both are objects with ``schema_version``,
``kind`` and ``units``; their shape is published as a JSON Schema (:func:`schema`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from ddrank.metrics.definitions import metric_definition
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS

SCHEMA_VERSION = 1
UNITS = (
    "accuracies, scores (LRS, ARS), HLR, IOR and their interval bounds are fractions (accuracies and scores "
    "in [0, 1]); *_vs_neutral and vs_neutral are differences of fractions; learning rates as given to the "
    "optimiser; std is the sample standard deviation over rounds (ddof 1); confidence intervals are 95% "
    "Student-t over rounds (boot_*: expanded percentile bootstrap, "
    f"null below {MIN_BOOTSTRAP_ROUNDS} rounds, where it covers much less than 95%)"
)
# Fields other parts of ddrank add to an evaluation; optional in the schema.
OPTIONAL_EVALUATION_FIELDS = ("fidelity", "deviations", "diverged", "calibration")


def evaluations_document(evaluations: Iterable[Any]) -> dict[str, Any]:
    """Evaluations (:class:`~ddrank.evaluation.Evaluation` or their ``to_dict()``) as one document: always
    an object whose ``evaluations`` is a list, however many there are."""
    items = [e if isinstance(e, Mapping) else e.to_dict() for e in evaluations]
    return {"schema_version": SCHEMA_VERSION, "kind": "evaluations", "units": UNITS, "evaluations": items}


def leaderboard_document(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Leaderboard rows as one document: the metric, its neutral value, and one entry per group (the
    group's fields, its label and its ranked rows)."""
    from ddrank.report.leaderboard import GROUP_FIELDS, group_label

    metric = rows[0]["metric"] if rows else "lrs"
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        label = group_label(row)
        entry = groups.setdefault(
            label, {"group": {k: row.get(k) for k in GROUP_FIELDS}, "label": label, "rows": []}
        )
        entry["rows"].append(dict(row))
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "leaderboard",
        "units": UNITS,
        "metric": metric,
        "score_label": metric_definition(metric).label,
        "neutral": metric_definition(metric).neutral,
        "confidence": 0.95,
        "groups": list(groups.values()),
    }


def dumps(document: Mapping[str, Any]) -> str:
    """Strict JSON (NaN is refused: missing values are null), indented, one trailing newline."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def schema() -> dict[str, Any]:
    """The JSON Schema of both documents (``ddrank/schema/evaluation.schema.json``)."""
    text = resources.files("ddrank").joinpath("schema/evaluation.schema.json").read_text(encoding="utf-8")
    return json.loads(text)

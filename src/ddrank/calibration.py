"""Published baselines and how far a measured accuracy lies from them (no training here).

The founding papers' random-subset and whole-dataset accuracies ship as data
(``calibration.yaml`` beside this module), each with its paper, table, the protocol it was
measured under and how it was checked. :func:`lookup` finds the value for a (dataset, model,
protocol, IPC or whole dataset); :func:`compare` turns a measured accuracy into a z-score and a
verdict. Accuracies are fractions, as everywhere in ddrank; the table stores them in percent, as
printed.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ddrank.errors import ConfigError, DDRankError

__all__ = [
    "FLAG_Z",
    "STD_FLOOR",
    "Calibration",
    "CalibrationRow",
    "Comparison",
    "Published",
    "PublishedTable",
    "compare",
    "calibration_entry",
    "calibration_warnings",
    "compare_all",
    "lookup",
    "published_table",
    "verdict",
    "z_score",
]

STD_FLOOR = 0.001
"""Least spread (0.1 percentage point) a z-score divides by: the tables print one decimal, so a
printed ± 0.0 means a spread below 0.05 points, and the printed precision is the least we assume."""

FLAG_Z = 3.0
"""A measured accuracy more than this many published standard deviations away is flagged."""

Kind = Literal["random", "whole"]
Verdict = Literal["ok", "above", "below"]

_FIELDS = (
    "dataset",
    "model",
    "kind",
    "ipc",
    "mean",
    "std",
    "paper",
    "table",
    "protocol",
    "quoted_by",
    "checked",
)


@dataclass(frozen=True)
class Published:
    """One published accuracy: mean and standard deviation over the paper's runs, as fractions.

    ``kind`` is ``random`` (a class-balanced random subset of ``ipc`` images per class) or
    ``whole`` (the whole training set, ``ipc`` None). ``protocol`` is the ddrank preset of the
    evaluation it was measured under; ``quoted_by`` the presets whose papers print the same value
    as their own baseline.
    """

    dataset: str
    model: str
    kind: Kind
    ipc: int | None
    mean: float
    std: float
    paper: str
    table: str
    protocol: str
    quoted_by: tuple[str, ...]
    checked: str

    @property
    def source(self) -> str:
        """Paper and table, e.g. "Zhao et al., ... ICLR 2021, Table 1 (Random)"."""
        return f"{self.paper}, {self.table}"

    @property
    def printed(self) -> str:
        """The value as the paper prints it, in percent: "14.4 ± 2.0"."""
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"


@dataclass(frozen=True)
class PublishedTable:
    """The published values of one table file."""

    entries: tuple[Published, ...]
    path: str

    def lookup(self, dataset: str, model: str, protocol: str, ipc: int | None = None) -> Published | None:
        """The value for ``dataset``/``model`` measured under ``protocol`` (else quoted by it), or None.

        ``ipc`` None asks for the whole-dataset accuracy, an integer for the random subsets.
        """
        dataset, model, protocol = _dataset_name(dataset), _model_name(model), protocol.lower()
        kind = "whole" if ipc is None else "random"
        matches = [
            e for e in self.entries if (e.dataset, e.model, e.kind, e.ipc) == (dataset, model, kind, ipc)
        ]
        measured = [e for e in matches if e.protocol == protocol]
        quoted = [e for e in matches if protocol in e.quoted_by]
        return (measured or quoted or [None])[0]

    def for_dataset(self, dataset: str) -> list[Published]:
        """Every value published for ``dataset``, in table order."""
        name = _dataset_name(dataset)
        return [e for e in self.entries if e.dataset == name]


@dataclass(frozen=True)
class Comparison:
    """A measured accuracy beside its published value: z-score and verdict (None when unpublished)."""

    ipc: int | None
    measured: float
    published: Published | None
    z: float | None
    verdict: Verdict | None

    @property
    def flagged(self) -> bool:
        """True when the measured accuracy lies more than :data:`FLAG_Z` deviations from the published one."""
        return self.verdict is not None and self.verdict != "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: accuracies as fractions, the source as text."""
        p = self.published
        return {
            "ipc": self.ipc,
            "measured": self.measured,
            "published_mean": None if p is None else p.mean,
            "published_std": None if p is None else p.std,
            "published_protocol": None if p is None else p.protocol,
            "source": None if p is None else p.source,
            "z": self.z,
            "verdict": self.verdict,
            "flagged": self.flagged,
        }


def calibration_entry(cell: str, comparison: Comparison) -> dict[str, Any]:
    """One entry of ``Evaluation.calibration``: a cell's measured accuracy beside its published value."""
    p = comparison.published
    return {
        "cell": cell,
        "ipc": comparison.ipc,
        "measured": comparison.measured,
        "published_mean": None if p is None else p.mean,
        "published_std": None if p is None else p.std,
        "z": comparison.z,
        "source": None if p is None else p.source,
    }


def calibration_warnings(
    dataset: str, entries: list[dict[str, Any]], *, threshold: float = FLAG_Z
) -> list[str]:
    """One line per entry of ``Evaluation.calibration`` lying more than ``threshold`` deviations away."""
    lines = []
    for e in entries:
        if e["z"] is None or abs(e["z"]) <= threshold:
            continue
        what = f"random-subset accuracy at IPC {e['ipc']}" if e["cell"] == "random" else "whole-data accuracy"
        lines.append(
            f"{what} on {dataset} is {100 * e['measured']:.1f}%, {abs(e['z']):.1f} std "
            f"{'above' if e['z'] > 0 else 'below'} the published {100 * e['published_mean']:.1f} ± "
            f"{100 * e['published_std']:.1f} ({e['source']}); check the setup with ddrank calibrate"
        )
    return lines


@dataclass(frozen=True)
class CalibrationRow:
    """One trained baseline: random subsets at an IPC (``cell`` random) or the whole training set
    (``cell`` real), its accuracy per round and the comparison of their mean with the published value."""

    cell: Literal["random", "real"]
    model: str
    per_round: tuple[float, ...]
    comparison: Comparison

    @property
    def label(self) -> str:
        return f"random, IPC {self.comparison.ipc}" if self.cell == "random" else "whole dataset"

    @property
    def std(self) -> float | None:
        """Standard deviation over rounds (ddof 1), None for one round."""
        n = len(self.per_round)
        if n < 2:
            return None
        mean = sum(self.per_round) / n
        return math.sqrt(sum((v - mean) ** 2 for v in self.per_round) / (n - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "model": self.model,
            "per_round": list(self.per_round),
            "measured_std": self.std,
            **self.comparison.to_dict(),
        }


@dataclass(frozen=True)
class Calibration:
    """The baselines ``ddrank calibrate`` trained on one dataset under one protocol, each beside its
    published value; ``table`` is the published-values file they were compared with."""

    dataset: str
    protocol: str
    protocol_hash: str
    rounds: int
    rows: tuple[CalibrationRow, ...]
    table: str
    provenance: dict[str, Any]

    @property
    def flagged(self) -> list[CalibrationRow]:
        return [row for row in self.rows if row.comparison.flagged]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "protocol_hash": self.protocol_hash,
            "rounds": self.rounds,
            "threshold": FLAG_Z,
            "table": self.table,
            "rows": [row.to_dict() for row in self.rows],
            "provenance": self.provenance,
        }

    def lines(self, width: int = 80) -> list[str]:
        """The comparison as plain text at most ``width`` columns wide: a table, then its sources."""
        models = ", ".join(dict.fromkeys(row.model for row in self.rows))
        head = f"calibration · {self.dataset} · protocol {self.protocol} · {models} · {self.rounds} rounds"
        out = [_clip(head, width), f"{'baseline':<16}{'measured %':>13}{'published %':>18}{'z':>8}  verdict"]
        notes: list[str] = []
        for row in self.rows:
            c, p = row.comparison, row.comparison.published
            std = row.std
            measured = f"{100 * c.measured:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
            if p is None:
                published, z, verdict_text = "not published", "—", "no published value"
            else:
                if p.source not in notes:
                    notes.append(p.source)
                published = f"{p.printed} [{notes.index(p.source) + 1}]"
                z = f"{c.z:+.1f}"
                verdict_text = "ok" if c.verdict == "ok" else f"FLAGGED: {c.verdict}"
            out.append(_clip(f"{row.label:<16}{measured:>13}{published:>18}{z:>8}  {verdict_text}", width))
        for number, source in enumerate(notes, start=1):
            out += textwrap.wrap(f"[{number}] {source}", width, subsequent_indent="    ")
        if self.flagged:
            out.append(
                _clip(
                    f"{len(self.flagged)} of {len(self.rows)} baselines lie more than {FLAG_Z:g} published "
                    "std from the published mean",
                    width,
                )
            )
        return out


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def published_table(path: str | os.PathLike[str] | None = None) -> PublishedTable:
    """The packaged table of published baselines, or the table file at ``path`` (same format)."""
    if path is None:
        return _packaged_table()
    return _read_table(Path(path))


def lookup(
    dataset: str,
    model: str,
    protocol: str,
    ipc: int | None = None,
    *,
    table: PublishedTable | None = None,
) -> Published | None:
    """:meth:`PublishedTable.lookup` on ``table`` (default: the packaged one)."""
    return (table or published_table()).lookup(dataset, model, protocol, ipc)


def z_score(measured: float, published: Published, *, floor: float = STD_FLOOR) -> float:
    """(measured − published mean) / max(published std, floor), accuracies as fractions.

    The published std is the spread of one run in the paper, so the z-score says how unusual the
    measured accuracy would be as one more of the paper's runs; ``floor`` (:data:`STD_FLOOR`)
    replaces a printed ± 0.0.
    """
    _check_fraction("measured accuracy", measured)
    if not floor > 0:
        raise ConfigError(f"the standard-deviation floor must be positive, got {floor!r}")
    return (measured - published.mean) / max(published.std, floor)


def verdict(z: float, *, threshold: float = FLAG_Z) -> Verdict:
    """``ok`` within ``threshold`` deviations, else ``above`` or ``below`` the published value."""
    if math.isnan(z):
        raise ConfigError("a z-score of NaN has no verdict")
    if abs(z) <= threshold:
        return "ok"
    return "above" if z > 0 else "below"


def compare(
    measured: float,
    published: Published | None,
    *,
    ipc: int | None = None,
    floor: float = STD_FLOOR,
    threshold: float = FLAG_Z,
) -> Comparison:
    """The :class:`Comparison` of one measured accuracy with its published value (if any)."""
    _check_fraction("measured accuracy", measured)
    if published is None:
        return Comparison(ipc, measured, None, None, None)
    z = z_score(measured, published, floor=floor)
    return Comparison(ipc, measured, published, z, verdict(z, threshold=threshold))


def compare_all(
    dataset: str,
    model: str,
    protocol: str,
    measured: Mapping[int | None, float],
    *,
    table: PublishedTable | None = None,
    floor: float = STD_FLOOR,
    threshold: float = FLAG_Z,
) -> list[Comparison]:
    """One row per measured accuracy (key: IPC, or None for the whole dataset), IPCs ascending then whole."""
    table = table or published_table()
    order = sorted(measured, key=lambda ipc: (ipc is None, ipc or 0))
    return [
        compare(
            measured[ipc],
            table.lookup(dataset, model, protocol, ipc),
            ipc=ipc,
            floor=floor,
            threshold=threshold,
        )
        for ipc in order
    ]


# --- reading tables -----------------------------------------------------------------------------


@cache
def _packaged_table() -> PublishedTable:
    source = resources.files("ddrank") / "calibration.yaml"
    return _parse(yaml.safe_load(source.read_text()), str(source))


def _read_table(path: Path) -> PublishedTable:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the published-values table {path}: {exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not a valid YAML table of published values: {first}") from None
    return _parse(document, str(path))


def _parse(document: Any, where: str) -> PublishedTable:
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise ConfigError(f"{where}: expected a mapping with 'papers' and a list of 'entries'")
    papers = document.get("papers") or {}
    if not isinstance(papers, dict):
        raise ConfigError(f"{where}: 'papers' must map short names to citations")
    entries: list[Published] = []
    seen: set[tuple] = set()
    for index, raw in enumerate(document["entries"]):
        entry = _entry(raw, papers, f"{where}: entry {index}")
        key = (entry.dataset, entry.model, entry.kind, entry.ipc, entry.protocol)
        if key in seen:
            raise ConfigError(
                f"{where}: entry {index} repeats {entry.dataset} {entry.model} {entry.kind} {entry.ipc}"
            )
        seen.add(key)
        entries.append(entry)
    return PublishedTable(tuple(entries), where)


def _entry(raw: Any, papers: dict[str, Any], where: str) -> Published:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_FIELDS))
    missing = sorted({"dataset", "model", "kind", "mean", "std", "paper", "table", "protocol"} - set(raw))
    if unknown or missing:
        problem = f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}"
        raise ConfigError(f"{where}: {problem} (fields: {', '.join(_FIELDS)})")
    kind, ipc = raw["kind"], raw.get("ipc")
    if kind not in ("random", "whole"):
        raise ConfigError(f"{where}: kind must be 'random' or 'whole', got {kind!r}")
    if kind == "random" and (isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1):
        raise ConfigError(f"{where}: a random-subset value needs a positive integer ipc, got {ipc!r}")
    if kind == "whole" and ipc is not None:
        raise ConfigError(f"{where}: a whole-dataset value has no ipc (got {ipc!r})")
    mean, std = (_percent(raw[field], f"{where}: {field}") for field in ("mean", "std"))
    if raw["paper"] not in papers:
        raise ConfigError(f"{where}: paper {raw['paper']!r} is not listed under 'papers'")
    quoted = raw.get("quoted_by") or []
    if not isinstance(quoted, list) or not all(isinstance(q, str) for q in quoted):
        raise ConfigError(f"{where}: quoted_by must be a list of protocol names")
    try:
        dataset, model = _dataset_name(str(raw["dataset"])), _model_name(str(raw["model"]))
    except DDRankError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Published(
        dataset=dataset,
        model=model,
        kind=kind,
        ipc=ipc,
        mean=round(mean / 100, 10),
        std=round(std / 100, 10),
        paper=str(papers[raw["paper"]]),
        table=str(raw["table"]),
        protocol=str(raw["protocol"]).lower(),
        quoted_by=tuple(q.lower() for q in quoted),
        checked=str(raw.get("checked", "")),
    )


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ConfigError(f"{where} must be a percentage in [0, 100], got {value!r}")
    return float(value)


def _check_fraction(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        hint = (
            " (accuracies are fractions, not percentages)"
            if isinstance(value, int | float) and value > 1
            else ""
        )
        raise ConfigError(f"{what} must be a fraction in [0, 1], got {value!r}{hint}")


def _dataset_name(name: str) -> str:
    from ddrank.data.real import DATASETS

    return DATASETS.canonical(name)


def _model_name(name: str) -> str:
    from ddrank.models import canonical_model_name

    return canonical_model_name(name)

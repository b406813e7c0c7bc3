"""Many evaluations as one run: a list of (method, dataset, IPC) entries, loaded from a sweep file.

The built-in ``leaderboard`` sweep is the full DD-Ranking leaderboard: every published
protocol on each dataset it was published on, at IPC 1, 10 and 50. ``ddrank sweep`` runs the
entries (see :mod:`ddrank.cli_commands`); ``ddrank plan --sweep`` sizes them from the presets
and the datasets' shapes alone (see :func:`ddrank.planning.plan_sweep`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ddrank.errors import ConfigError
from ddrank.protocols import preset
from ddrank.settings import RunSettings

LEADERBOARD_METHODS = ("dc", "dsa", "dm", "mtt", "datm", "sre2l", "rded", "d4m", "edc", "gvbsm")
LEADERBOARD_IPCS = (1, 10, 50)


@dataclass(frozen=True)
class SweepEntry:
    """One evaluation of a sweep; ``images`` is needed to run it, not to plan it."""

    method: str
    dataset: str
    ipc: int
    protocol: str | None = None
    images: str | None = None
    labels: str | None = None

    @property
    def name(self) -> str:
        return f"{self.method}/{self.dataset}/ipc{self.ipc}"

    def settings(self, base: RunSettings) -> RunSettings:
        """The run settings of this entry: ``base`` on the entry's dataset and protocol (default: the
        method's preset)."""
        return base.replace(dataset=self.dataset, protocol=self.protocol or self.method, ipc=self.ipc)


def leaderboard_sweep() -> list[SweepEntry]:
    return [
        SweepEntry(method, dataset, ipc)
        for method in LEADERBOARD_METHODS
        for dataset in preset(method)["datasets"]
        for ipc in LEADERBOARD_IPCS
    ]


def load_sweep(source: str | os.PathLike) -> list[SweepEntry]:
    """``leaderboard`` or a YAML list of entries with method, dataset, ipc (and protocol, images, labels)."""
    if str(source) == "leaderboard":
        return leaderboard_sweep()
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist (or use the built-in 'leaderboard')")
    doc = yaml.safe_load(path.read_text())
    entries = doc.get("entries") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"sweep file {str(path)!r} must hold a list of entries (method, dataset, ipc)")
    allowed = {"method", "dataset", "ipc", "protocol", "images", "labels"}
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"method", "dataset", "ipc"} <= set(entry):
            raise ConfigError(f"sweep entry {i} needs method, dataset and ipc")
        unknown = set(entry) - allowed
        if unknown:
            raise ConfigError(
                f"sweep entry {i}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )
        out.append(SweepEntry(**entry))
    return out

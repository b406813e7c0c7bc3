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

from ddrank.errors import ConfigError, one_line, shown
from ddrank.protocols import preset, preset_names
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
    """``leaderboard`` or a YAML list of entries with method, dataset, ipc (and protocol, images, labels).

    Every entry is checked here, before anything trains: its keys and their types, and that an entry
    without a protocol names a preset as its method.
    """
    if str(source) == "leaderboard":
        return leaderboard_sweep()
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"sweep file {shown(path)!r} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"sweep file {shown(path)!r} does not exist (or use the built-in 'leaderboard')")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"sweep file {shown(path)!r} is not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {shown(path)!r} is not valid YAML: {one_line(exc)}") from None
    entries = doc.get("entries") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"sweep file {shown(path)!r} must hold a list of entries (method, dataset, ipc)")
    return [_entry(i, entry) for i, entry in enumerate(entries)]


_TEXT_KEYS = ("method", "dataset", "protocol", "images", "labels")


def _entry(i: int, entry: object) -> SweepEntry:
    allowed = {"method", "dataset", "ipc", "protocol", "images", "labels"}
    if not isinstance(entry, dict) or not {"method", "dataset", "ipc"} <= set(entry):
        raise ConfigError(f"sweep entry {i} needs method, dataset and ipc")
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(
            f"sweep entry {i}: unknown key {sorted(map(str, unknown))[0]!r} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    for key in _TEXT_KEYS:
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"sweep entry {i}: {key} must be a non-empty text, got {shown(repr(value))}")
    ipc = entry["ipc"]
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"sweep entry {i}: ipc must be a positive integer, got {shown(repr(ipc))}")
    found = SweepEntry(**entry)
    if found.protocol is None and found.method.lower() not in {n.lower() for n in preset_names()}:
        raise ConfigError(
            f"sweep entry {i} ({found.name}): method {found.method!r} is not a protocol preset, so the "
            "entry needs a protocol (e.g. protocol: dsa, or a protocol file)"
        )
    return found

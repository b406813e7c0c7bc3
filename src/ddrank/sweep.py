"""Many evaluations as one run: a list of (method, dataset, IPC) entries, planned or executed.

The built-in ``leaderboard`` sweep is the full DD-Ranking leaderboard: every published
protocol on each dataset it was published on, at IPC 1, 10 and 50. Planning it needs no data:
jobs are built from the presets and the datasets' shapes, so a cluster can be sized first.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ddrank import rng
from ddrank.data.real import dataset_info
from ddrank.engine.job import TrainJob
from ddrank.errors import ConfigError
from ddrank.evaluate import cells_for, full_data_spec, student_spec
from ddrank.planning import TRAIN_IMAGES
from ddrank.protocols import load_protocol, preset

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


def planned_jobs(
    entries: list[SweepEntry], *, metric: str, rounds: int | None, precision: str, published_real: bool
) -> tuple[list[TrainJob], dict[str, int], int]:
    """The job grid of a sweep from presets and dataset shapes alone, its training-set sizes, and
    the images each student is evaluated on (validation + test, the largest over datasets)."""
    jobs: dict[str, TrainJob] = {}
    sizes: dict[str, int] = {}
    eval_images = 0
    for entry in entries:
        info = dataset_info(entry.dataset)
        protocol = load_protocol(entry.protocol or entry.method, dataset=info.name, ipc=entry.ipc)
        train_images = TRAIN_IMAGES.get(info.name, info.num_classes * 1000)
        eval_images = max(eval_images, int(train_images * protocol.val_fraction) + train_images // 5)
        n_syn = info.num_classes * entry.ipc
        for r in range(rounds or protocol.rounds):
            seed = rng.derive_seed(0, r)
            for cell in cells_for(metric, protocol):
                if cell.source == "real":
                    if published_real and protocol.full_data.published_acc is not None:
                        continue
                    spec, set_name, lrs = (
                        full_data_spec(protocol, info, precision),
                        f"real:{info.name}",
                        [protocol.full_data.lr],
                    )
                    sizes[set_name] = train_images
                else:
                    spec = student_spec(protocol, info, cell.variant, precision)
                    if cell.source == "syn":
                        set_name = f"syn:{entry.name}"
                    else:  # shared by every method with the same dataset, IPC and round
                        set_name = f"random:{info.name}:{entry.ipc}:{r}:{protocol.labels.mode}"
                    sizes[set_name] = n_syn
                    lrs = [protocol.lr] if protocol.lr is not None else list(protocol.lr_grid)
                for lr in lrs:
                    key = hashlib.sha256(
                        f"{spec.fingerprint()}|{set_name}|{lr!r}|{seed}".encode()
                    ).hexdigest()[:24]
                    jobs.setdefault(key, TrainJob(spec, set_name, None, lr, seed, key, cell.name, r))
    return list(jobs.values()), sizes, eval_images

"""The results store's on-disk schema: tables, columns, migrations, and how rows are encoded and checked.

Version history: 1 — jobs and evaluations; 2 — jobs gain ``diverged`` (0/1) and ``diverged_epoch``
(the epoch whose loss or logits first went non-finite, NULL when the student trained to the end).
Older stores are migrated in place when opened for writing and read as they are when opened
read-only; export files of an older schema import with the later columns' defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ddrank.errors import StoreError, one_line

SCHEMA_VERSION = 2
OLDEST_MIGRATABLE = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_HEADER_BYTES = 100

_NONE = type(None)
_NUMBER = (int, float)
# Column -> accepted Python types in an export file; the order is the table's column order.
JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "spec": (str,),
    "model": (str,),
    "epochs": (int,),
    "batch_size": (int,),
    "cell": (str,),
    "round": (int,),
    "seed": (int,),
    "lr": _NUMBER,
    "train_set": (str,),
    "val_set": (str, _NONE),
    "test_acc": _NUMBER,
    "val_acc": (*_NUMBER, _NONE),
    "test_top5": (*_NUMBER, _NONE),
    "test_per_class": (list,),
    "test_ece": (*_NUMBER, _NONE),
    "curve": (list,),
    "seconds": _NUMBER,
    "backend": (str,),
    "device": (str,),
    "ddrank_version": (str,),
    "created": (str,),
    "diverged": (bool,),
    "diverged_epoch": (int, _NONE),
}
EVALUATION_FIELDS: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "dataset": (str,),
    "ipc": (int,),
    "protocol": (str, _NONE),
    "protocol_hash": (str, _NONE),
    "metric": (str,),
    "base_seed": (int, _NONE),
    "synthetic_fingerprint": (str, _NONE),
    "rounds": (int,),
    "payload": (dict,),
    "ddrank_version": (str,),
    "created": (str,),
}
# Fields each schema version added, with the value rows written before it stand for.
ADDED_FIELDS: dict[int, dict[str, Any]] = {2: {"diverged": False, "diverged_epoch": None}}
# SQL for a column an older store lacks, when it is read without migrating (read-only).
MISSING_COLUMN_SQL = {"diverged": "0", "diverged_epoch": "NULL"}

# Two evaluations with the same values here and the same :func:`payload_identity` are the same measurement;
# the newer one replaces the older.
EVALUATION_IDENTITY = (
    "method",
    "dataset",
    "ipc",
    "protocol_hash",
    "metric",
    "base_seed",
    "synthetic_fingerprint",
    "rounds",
)
JOB_FILTERS = ("key", "cell", "round", "seed", "lr", "train_set", "spec", "model")
JSON_COLUMNS = frozenset({"test_per_class", "curve", "payload"})
REAL_COLUMNS = frozenset({"lr", "test_acc", "val_acc", "test_top5", "test_ece", "seconds"})
BOOL_COLUMNS = frozenset({"diverged"})

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE jobs (
        key TEXT PRIMARY KEY, spec TEXT NOT NULL, model TEXT NOT NULL, epochs INTEGER NOT NULL,
        batch_size INTEGER NOT NULL, cell TEXT NOT NULL, round INTEGER NOT NULL, seed INTEGER NOT NULL,
        lr REAL NOT NULL, train_set TEXT NOT NULL, val_set TEXT, test_acc REAL NOT NULL, val_acc REAL,
        test_top5 REAL, test_per_class TEXT NOT NULL, test_ece REAL, curve TEXT NOT NULL,
        seconds REAL NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, ddrank_version TEXT NOT NULL,
        created TEXT NOT NULL, diverged INTEGER NOT NULL DEFAULT 0, diverged_epoch INTEGER)""",
    "CREATE INDEX jobs_by_cell ON jobs (cell, round)",
    """CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT NOT NULL, dataset TEXT NOT NULL,
        ipc INTEGER NOT NULL, protocol TEXT, protocol_hash TEXT, metric TEXT NOT NULL, base_seed INTEGER,
        synthetic_fingerprint TEXT, rounds INTEGER NOT NULL, payload TEXT NOT NULL,
        ddrank_version TEXT NOT NULL, created TEXT NOT NULL)""",
    "CREATE INDEX evaluations_by_set ON evaluations (dataset, ipc, method)",
)
REQUIRED_TABLES = frozenset({"meta", "jobs", "evaluations"})
# Statements that take a store from version v to v + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE jobs ADD COLUMN diverged INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN diverged_epoch INTEGER",
    ),
}


def payload_identity(payload: Any) -> tuple[Any, ...]:
    """What else makes an evaluation the measurement it is, read from its payload (no column holds it): the
    weight its scores were computed with (w of LRS, γ of ARS), where its acc(real, hard) came from and, when
    that was given or published rather than trained, its value, and whether it was a smoke run (a full run
    whose protocol equals a smoke run's never replaces it). A payload that is not an object has none."""
    if not isinstance(payload, Mapping):
        return (None, None, None, False)
    weight, source = payload.get("weight"), payload.get("acc_real_source")
    rounds = payload.get("per_round")
    first = rounds[0] if isinstance(rounds, list) and rounds and isinstance(rounds[0], dict) else {}
    given = None if source in (None, "trained") else first.get("acc_real")
    provenance = payload.get("provenance")
    smoke = bool(provenance.get("smoke")) if isinstance(provenance, Mapping) else False
    return (*(float(v) if _is_number(v) else v for v in (weight, source, given)), smoke)


def fields_of(schema: int, fields: Mapping[str, tuple[type, ...]]) -> list[str]:
    """The fields rows of ``schema`` carry (later versions' additions left out)."""
    added = {name for version, new in ADDED_FIELDS.items() if version > schema for name in new}
    return [name for name in fields if name not in added]


def with_defaults(row: dict[str, Any], schema: int) -> dict[str, Any]:
    """``row`` of an older ``schema`` with the fields added since then set to what they stood for."""
    for version, new in ADDED_FIELDS.items():
        if version > schema:
            for name, value in new.items():
                row.setdefault(name, value)
    return row


def encode(row: Mapping[str, Any], fields: Mapping[str, Any]) -> list[Any]:
    """Row values as SQLite parameters: JSON columns serialised, NaN kept apart from NULL, booleans as 0/1."""
    params = []
    for name in fields:
        value = row[name]
        if name in JSON_COLUMNS:
            value = json.dumps(value, default=json_default)
        elif name in REAL_COLUMNS and value is not None:
            # SQLite stores a NaN REAL as NULL; the text 'NaN' keeps it distinct from a missing value.
            value = "NaN" if math.isnan(value) else float(value)
        elif name in BOOL_COLUMNS:
            value = int(bool(value))
        params.append(value)
    return params


def decode(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row read from SQLite as Python values; StoreError naming ``where`` and a damaged column."""
    for name, value in row.items():
        try:
            if name in JSON_COLUMNS:
                row[name] = json.loads(value)
            elif name in REAL_COLUMNS and isinstance(value, str | bytes):
                row[name] = float(value)
            elif name in BOOL_COLUMNS:
                if value not in (0, 1):
                    raise ValueError(f"{value!r} is not 0 or 1")
                row[name] = bool(value)
        except (TypeError, ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
            raise StoreError(f"{where} has a damaged {name} column ({one_line(exc)})") from exc
    return row


def check_row(where: str, row: Any, fields: Mapping[str, tuple[type, ...]], required: list[str]) -> None:
    """StoreError unless ``row`` is an object whose ``required`` fields are present and of the right types."""
    if not isinstance(row, dict):
        raise StoreError(f"{where} is a {type(row).__name__}, not an object")
    missing = [name for name in required if name not in row]
    if missing:
        raise StoreError(f"{where} lacks required field(s) {', '.join(missing)}")
    wrong = [
        f"{name} ({type(row[name]).__name__})"
        for name, types in fields.items()
        if name in row and _wrong_type(row[name], types)
    ]
    if wrong:
        raise StoreError(f"{where} has field(s) of the wrong type: {', '.join(wrong)}")


def check_job_values(where: str, row: Mapping[str, Any]) -> None:
    """StoreError unless a job row's curve is [epoch, accuracy] pairs and its per-class accuracies numbers."""
    curve, per_class = row.get("curve", []), row.get("test_per_class", [])
    if not isinstance(curve, list) or not all(
        isinstance(point, list) and len(point) == 2 and _is_int(point[0]) and _is_number(point[1])
        for point in curve
    ):
        raise StoreError(f"{where} has a damaged curve column (expected [epoch, accuracy] pairs)")
    if not isinstance(per_class, list) or not all(_is_number(acc) for acc in per_class):
        raise StoreError(f"{where} has a damaged test_per_class column (expected numbers)")


def json_default(value: Any) -> Any:
    """NumPy scalars and arrays (and anything with ``tolist``/``item``) as plain JSON values."""
    for method in ("tolist", "item"):
        if hasattr(value, method):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    return (isinstance(value, bool) and bool not in types) or not isinstance(value, types)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

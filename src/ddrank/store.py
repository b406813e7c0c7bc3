"""The results store: every finished training job and every score, in one SQLite file.

The store is the engine's job cache (:class:`ddrank.engine.job.JobCache`), so an interrupted
evaluation resumes where it stopped. Each write is its own short transaction, so a crash loses
at most the job being written, and several processes may write one file at once. Connections
are per process: a store pickled into another process reopens its file there, and a store
inherited by a forked child reopens it on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ddrank import __version__
from ddrank.engine.job import JobResult, TrainJob
from ddrank.errors import DDRankError, InputError
from ddrank.paths import cache_dir

SCHEMA_VERSION = 1
EXPORT_FORMAT = "ddrank-results"
BUSY_TIMEOUT_S = 30.0

T = TypeVar("T")

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
# Two evaluations with the same values here are the same measurement; the newer one replaces the older.
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
_JSON_COLUMNS = frozenset({"test_per_class", "curve", "payload"})
_REAL_COLUMNS = frozenset({"lr", "test_acc", "val_acc", "test_top5", "test_ece", "seconds"})

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE jobs (
        key TEXT PRIMARY KEY, spec TEXT NOT NULL, model TEXT NOT NULL, epochs INTEGER NOT NULL,
        batch_size INTEGER NOT NULL, cell TEXT NOT NULL, round INTEGER NOT NULL, seed INTEGER NOT NULL,
        lr REAL NOT NULL, train_set TEXT NOT NULL, val_set TEXT, test_acc REAL NOT NULL, val_acc REAL,
        test_top5 REAL, test_per_class TEXT NOT NULL, test_ece REAL, curve TEXT NOT NULL,
        seconds REAL NOT NULL, backend TEXT NOT NULL, device TEXT NOT NULL, ddrank_version TEXT NOT NULL,
        created TEXT NOT NULL)""",
    "CREATE INDEX jobs_by_cell ON jobs (cell, round)",
    """CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT NOT NULL, dataset TEXT NOT NULL,
        ipc INTEGER NOT NULL, protocol TEXT, protocol_hash TEXT, metric TEXT NOT NULL, base_seed INTEGER,
        synthetic_fingerprint TEXT, rounds INTEGER NOT NULL, payload TEXT NOT NULL,
        ddrank_version TEXT NOT NULL, created TEXT NOT NULL)""",
    "CREATE INDEX evaluations_by_set ON evaluations (dataset, ipc, method)",
)
_INSERT_JOB = (
    f"INSERT OR {{}} INTO jobs ({', '.join(JOB_FIELDS)}) VALUES ({', '.join('?' * len(JOB_FIELDS))})"
)
_INSERT_EVALUATION = (
    f"INSERT INTO evaluations ({', '.join(EVALUATION_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(EVALUATION_FIELDS))})"
)
_SAME_EVALUATION = " AND ".join(f"{column} IS ?" for column in EVALUATION_IDENTITY)

# Connections inherited over fork() must never be closed in the child (SQLite forbids it), so they
# are kept referenced here instead of being garbage-collected.
_INHERITED: list[sqlite3.Connection] = []


class StoreError(DDRankError):
    """A results database or export file is unreadable, corrupt, busy, or from a newer ddrank."""


class ResultStore:
    """Finished jobs (the engine's cache) and recorded evaluations, in one SQLite file.

    ``path`` defaults to ``results.sqlite`` in the cache directory; ``":memory:"`` keeps
    everything in this process. ``device`` labels the hardware of the jobs this process stores.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, device: str = "unknown"):
        if path is None:
            path = cache_dir() / "results.sqlite"
        self.path: Path | None = None if str(path) == ":memory:" else Path(path)
        self.device = device
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open()

    @property
    def _target(self) -> str:
        return ":memory:" if self.path is None else str(self.path)

    def _open(self) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self._target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results database {self._target}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = FULL")
            self._transaction(self._prepare_schema, conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use {self._target} as a results database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise StoreError(
                    f"{self._target} is an SQLite database but not a ddrank results store "
                    f"(it has tables {', '.join(sorted(tables))}); choose another path"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("created_by", __version__)],
            )
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
        if version is None:
            raise StoreError(f"{self._target} has no valid schema_version in its meta table; it is corrupt")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self._target} uses results schema {version}, newer than schema {SCHEMA_VERSION} "
                f"of ddrank {__version__}; upgrade ddrank to read it"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self._target} uses results schema {version}, which ddrank {__version__} "
                f"(schema {SCHEMA_VERSION}) cannot migrate; move it aside to start a new store"
            )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"results store {self._target} is closed")
        if self.path is not None and os.getpid() != self._pid:
            _INHERITED.append(self._conn)
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _retry(self, action: Callable[[], T]) -> T:
        """Run ``action``, retrying while another process holds the lock, up to the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.001
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (
                    sqlite3.SQLITE_BUSY,
                    sqlite3.SQLITE_LOCKED,
                ):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"results database {self._target} stayed locked by another process for more "
                        f"than {BUSY_TIMEOUT_S:.0f} s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(2 * delay, 0.05)

    def _transaction(
        self,
        work: Callable[[sqlite3.Connection], T],
        conn: sqlite3.Connection | None = None,
        *,
        write: bool = True,
    ) -> T:
        """``work`` in one transaction: committed whole or rolled back whole (and retried when busy)."""
        conn = conn or self._connection()

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                out = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

        try:
            return self._retry(attempt)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results database {self._target}: {exc}") from exc

    # -- the JobCache protocol ---------------------------------------------------------------

    def get(self, job: TrainJob) -> JobResult | None:
        """The stored result of ``job`` (by its key), or None if it never finished."""
        columns = (
            "test_acc",
            "val_acc",
            "curve",
            "seconds",
            "backend",
            "test_top5",
            "test_per_class",
            "test_ece",
        )
        rows = self._select(f"SELECT {', '.join(columns)} FROM jobs WHERE key = ?", (job.key,), columns)
        if not rows:
            return None
        row = rows[0]
        return JobResult(
            row["test_acc"],
            row["val_acc"],
            tuple((int(epoch), float(acc)) for epoch, acc in row["curve"]),
            row["seconds"],
            row["backend"],
            row["test_top5"],
            tuple(float(acc) for acc in row["test_per_class"]),
            row["test_ece"],
        )

    def put(self, job: TrainJob, result: JobResult) -> None:
        """Record a finished job at once, in its own transaction (a re-run replaces the old row)."""
        if not job.key:
            raise InputError("a job needs its key (ddrank.engine.job.job_key) to be stored")
        spec = job.spec
        row = {
            "key": job.key,
            "spec": spec.fingerprint(),
            "model": spec.model,
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "cell": job.cell,
            "round": job.round,
            "seed": job.seed,
            "lr": job.lr,
            "train_set": job.train_set,
            "val_set": job.val_set,
            "test_acc": result.test_acc,
            "val_acc": result.val_acc,
            "test_top5": result.test_top5,
            "test_per_class": list(result.test_per_class),
            "test_ece": result.test_ece,
            "curve": [list(point) for point in result.curve],
            "seconds": result.seconds,
            "backend": result.backend,
            "device": self.device,
            "ddrank_version": __version__,
            "created": _now(),
        }
        params = _encode(row, JOB_FIELDS)
        self._transaction(lambda conn: conn.execute(_INSERT_JOB.format("REPLACE"), params))

    # -- queries -----------------------------------------------------------------------------

    def job_count(self, **filters: Any) -> int:
        """Number of stored jobs matching ``filters`` (see :data:`JOB_FILTERS`)."""
        where, params = _where(filters)
        return int(self._select(f"SELECT COUNT(*) AS n FROM jobs{where}", params, ("n",))[0]["n"])

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored jobs matching ``filters`` as column dicts (JSON columns decoded), oldest first."""
        where, params = _where(filters)
        return self._select(
            f"SELECT {', '.join(JOB_FIELDS)} FROM jobs{where} ORDER BY rowid", params, JOB_FIELDS
        )

    def _select(self, sql: str, params: Any, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = self._transaction(lambda conn: conn.execute(sql, params).fetchall(), write=False)
        return [_decode(dict(zip(columns, row, strict=True))) for row in rows]

    # -- scores ------------------------------------------------------------------------------

    def record_evaluation(self, evaluation: Mapping[str, Any]) -> int:
        """Store ``Evaluation.to_dict()``, replacing an older row of the same measurement; returns its id."""
        missing = [name for name in ("method", "dataset", "ipc", "rounds") if name not in evaluation]
        if missing:
            raise InputError(
                f"an evaluation to record lacks {', '.join(missing)}; pass Evaluation.to_dict() output"
            )
        provenance = evaluation.get("provenance") or {}
        row = {
            "method": evaluation["method"],
            "dataset": evaluation["dataset"],
            "ipc": evaluation["ipc"],
            "protocol": evaluation.get("protocol"),
            "protocol_hash": evaluation.get("protocol_hash"),
            "metric": evaluation.get("metric", "lrs"),
            "base_seed": provenance.get("base_seed"),
            "synthetic_fingerprint": provenance.get("synthetic_fingerprint"),
            "rounds": evaluation["rounds"],
            "payload": dict(evaluation),
            "ddrank_version": __version__,
            "created": _now(),
        }
        params = _encode(row, EVALUATION_FIELDS)
        identity = [row[name] for name in EVALUATION_IDENTITY]

        def replace(conn: sqlite3.Connection) -> int:
            conn.execute(f"DELETE FROM evaluations WHERE {_SAME_EVALUATION}", identity)
            return int(conn.execute(_INSERT_EVALUATION, params).lastrowid)

        return self._transaction(replace)

    def evaluations(
        self,
        *,
        dataset: str | None = None,
        ipc: int | None = None,
        metric: str | None = None,
        method: str | None = None,
    ) -> list[dict[str, Any]]:
        """The recorded evaluation dicts matching every given filter, newest first."""
        filters = {"dataset": dataset, "ipc": ipc, "metric": metric, "method": method}
        conditions = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT payload FROM evaluations{where} ORDER BY created DESC, id DESC"
        return [row["payload"] for row in self._select(sql, params, ("payload",))]

    # -- moving results between machines ---------------------------------------------------------

    def export(self, path: str | os.PathLike) -> int:
        """Write every job and evaluation to a checksummed JSON file; returns the number of rows."""
        jobs_sql = f"SELECT {', '.join(JOB_FIELDS)} FROM jobs ORDER BY rowid"
        evaluations_sql = f"SELECT {', '.join(EVALUATION_FIELDS)} FROM evaluations ORDER BY id"

        def snapshot(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            return conn.execute(jobs_sql).fetchall(), conn.execute(evaluations_sql).fetchall()

        job_rows, evaluation_rows = self._transaction(snapshot, write=False)
        content = {
            "jobs": [_decode(dict(zip(JOB_FIELDS, row, strict=True))) for row in job_rows],
            "evaluations": [
                _decode(dict(zip(EVALUATION_FIELDS, row, strict=True))) for row in evaluation_rows
            ],
        }
        document = {
            "format": EXPORT_FORMAT,
            "schema": SCHEMA_VERSION,
            "ddrank_version": __version__,
            "created": _now(),
            **content,
            "sha256": content_sha256(content),
        }
        destination = Path(path)
        partial = destination.with_name(destination.name + ".partial")
        partial.write_text(json.dumps(document, sort_keys=True, default=_json_default))
        os.replace(partial, destination)
        return len(job_rows) + len(evaluation_rows)

    def import_(self, path: str | os.PathLike) -> tuple[int, int]:
        """Add the exported jobs and evaluations not already stored; returns (new jobs, new evaluations)."""
        jobs, evaluations = read_export(path)
        job_params = [_encode(row, JOB_FIELDS) for row in jobs]
        evaluation_params = [_encode(row, EVALUATION_FIELDS) for row in evaluations]
        identities = [[row[name] for name in EVALUATION_IDENTITY] for row in evaluations]

        def insert(conn: sqlite3.Connection) -> tuple[int, int]:
            new_jobs = sum(conn.execute(_INSERT_JOB.format("IGNORE"), p).rowcount for p in job_params)
            new_evaluations = 0
            for params, identity in zip(evaluation_params, identities, strict=True):
                if conn.execute(f"SELECT 1 FROM evaluations WHERE {_SAME_EVALUATION}", identity).fetchone():
                    continue
                conn.execute(_INSERT_EVALUATION, params)
                new_evaluations += 1
            return new_jobs, new_evaluations

        return self._transaction(insert)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close this process's connection; further use raises StoreError."""
        if self._conn is not None and os.getpid() == self._pid:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            raise StoreError("an in-memory results store cannot move to another process; give it a file path")
        return {"path": self.path, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], device=state["device"])

    def __repr__(self) -> str:
        return f"ResultStore({self._target!r}, device={self.device!r})"


def content_sha256(content: Mapping[str, Any]) -> str:
    """Checksum of an export's jobs and evaluations: SHA-256 of their canonical (sorted, compact) JSON."""
    canonical = json.dumps(
        {"jobs": content["jobs"], "evaluations": content["evaluations"]},
        sort_keys=True,
        separators=(",", ":"),
        default=_json_default,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_export(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The validated (jobs, evaluations) of an export file; StoreError says what is wrong with it."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read results export {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise StoreError(
            f"{path} is not a ddrank results export (format {found!r}, expected {EXPORT_FORMAT!r})"
        )
    schema = document.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise StoreError(f"{path} has no valid schema version (found {schema!r})")
    if schema > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written with results schema {schema}, newer than schema {SCHEMA_VERSION} "
            f"of ddrank {__version__}; upgrade ddrank to import it"
        )
    if schema < SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written with results schema {schema}, which ddrank {__version__} "
            f"(schema {SCHEMA_VERSION}) cannot import"
        )
    for section, fields in (("jobs", JOB_FIELDS), ("evaluations", EVALUATION_FIELDS)):
        rows = document.get(section)
        if not isinstance(rows, list):
            raise StoreError(f"{path} has no {section!r} list")
        for i, row in enumerate(rows):
            _check_row(path, section, i, row, fields)
    if "sha256" not in document:
        raise StoreError(f"{path} has no sha256 checksum")
    if content_sha256(document) != document["sha256"]:
        raise StoreError(
            f"{path} fails its sha256 checksum: its jobs or evaluations were edited or truncated after export"
        )
    return document["jobs"], document["evaluations"]


def _check_row(path: Any, section: str, index: int, row: Any, fields: Mapping[str, tuple[type, ...]]) -> None:
    where = f"{path}: {section}[{index}]"
    if not isinstance(row, dict):
        raise StoreError(f"{where} is a {type(row).__name__}, not an object")
    missing = [name for name in fields if name not in row]
    if missing:
        raise StoreError(f"{where} lacks required field(s) {', '.join(missing)}")
    wrong = [
        f"{name} ({type(row[name]).__name__})"
        for name, types in fields.items()
        if isinstance(row[name], bool) or not isinstance(row[name], types)
    ]
    if wrong:
        raise StoreError(f"{where} has field(s) of the wrong type: {', '.join(wrong)}")


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    unknown = sorted(set(filters) - set(JOB_FILTERS))
    if unknown:
        raise InputError(f"unknown job filter(s) {', '.join(unknown)}; valid: {', '.join(JOB_FILTERS)}")
    if not filters:
        return "", []
    return " WHERE " + " AND ".join(f"{name} = ?" for name in filters), list(filters.values())


def _encode(row: Mapping[str, Any], fields: Mapping[str, Any]) -> list[Any]:
    """Row values as SQLite parameters: JSON columns serialised, NaN kept apart from NULL."""
    params = []
    for name in fields:
        value = row[name]
        if name in _JSON_COLUMNS:
            value = json.dumps(value, default=_json_default)
        elif name in _REAL_COLUMNS and value is not None:
            # SQLite stores a NaN REAL as NULL; the text 'NaN' keeps it distinct from a missing value.
            value = "NaN" if math.isnan(value) else float(value)
        params.append(value)
    return params


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, value in row.items():
        if name in _JSON_COLUMNS:
            row[name] = json.loads(value)
        elif name in _REAL_COLUMNS and isinstance(value, str):
            row[name] = float(value)
    return row


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays (and anything with ``tolist``/``item``) as plain JSON values."""
    for method in ("tolist", "item"):
        if hasattr(value, method):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")

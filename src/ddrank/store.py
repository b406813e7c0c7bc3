"""The results store: every finished training job and every score, in one SQLite file.

The store is the engine's job cache (:class:`ddrank.engine.job.JobCache`), so an interrupted
evaluation resumes where it stopped. Each write is its own short transaction, so a crash, a kill
or a full disk loses at most the job being written, and several processes may write one file at
once. Connections are per process: a store pickled into another process reopens its file there,
and a store inherited by a forked child reopens it on first use.

A file is inspected read-only (its header, then a ``mode=ro`` connection) before anything writes
to it, so a file that is refused (not SQLite, another program's database, a newer schema) is never
modified. ``readonly=True`` opens a store for commands that only read, also on read-only media.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ddrank import __version__
from ddrank.data.files import classify
from ddrank.engine.job import JobResult, TrainJob
from ddrank.errors import InputError, StoreError, one_line, shown
from ddrank.paths import cache_dir
from ddrank.store_schema import (
    EVALUATION_FIELDS,
    EVALUATION_IDENTITY,
    JOB_FIELDS,
    JOB_FILTERS,
    MIGRATIONS,
    MISSING_COLUMN_SQL,
    OLDEST_MIGRATABLE,
    REQUIRED_TABLES,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE_HEADER_BYTES,
    SQLITE_MAGIC,
    check_job_values,
    check_row,
    decode,
    encode,
    fields_of,
    json_default,
    payload_identity,
    with_defaults,
)

__all__ = [
    "EXPORT_FORMAT",
    "SCHEMA_VERSION",
    "ResultStore",
    "StoreError",
    "content_sha256",
    "inspect_store",
    "read_export",
]

EXPORT_FORMAT = "ddrank-results"
BUSY_TIMEOUT_S = 30.0
QUICK_CHECK_ROWS = 5

T = TypeVar("T")
# What reading a damaged database raises: SQLite's errors, and text columns that are not UTF-8.
DATABASE_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)

_RESULT_FIELDS = frozenset(f.name for f in fields(JobResult))
_INSERT_JOB = (
    f"INSERT OR {{}} INTO jobs ({', '.join(JOB_FIELDS)}) VALUES ({', '.join('?' * len(JOB_FIELDS))})"
)
_INSERT_EVALUATION = (
    f"INSERT INTO evaluations ({', '.join(EVALUATION_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(EVALUATION_FIELDS))})"
)
_SAME_EVALUATION = " AND ".join(f"{column} IS ?" for column in EVALUATION_IDENTITY)
_GET_COLUMNS = (
    "key",
    "test_acc",
    "val_acc",
    "curve",
    "seconds",
    "backend",
    "test_top5",
    "test_per_class",
    "test_ece",
    "diverged",
    "diverged_epoch",
)
_GET_FIELDS = {name: JOB_FIELDS[name] for name in _GET_COLUMNS}

# Connections inherited over fork() must never be closed in the child (SQLite forbids it), so they
# are kept referenced here instead of being garbage-collected.
_INHERITED: list[sqlite3.Connection] = []


class ResultStore:
    """Finished jobs (the engine's cache) and recorded evaluations, in one SQLite file.

    ``path`` defaults to ``results.sqlite`` in the cache directory; ``":memory:"`` keeps
    everything in this process. ``device`` labels the hardware of the jobs this process stores.
    ``readonly`` opens an existing store without ever writing to it (``mode=ro``, or ``immutable=1``
    where that cannot open because the file or its folder is not writable, as on read-only media);
    stores of an older schema are then read as they are, without migrating.
    """

    def __init__(
        self, path: str | os.PathLike | None = None, *, device: str = "unknown", readonly: bool = False
    ):
        if path is None:
            path = cache_dir() / "results.sqlite"
        self.path: Path | None = None if str(path) == ":memory:" else Path(path)
        self.device = device
        self.readonly = readonly
        self._pid = os.getpid()
        self._job_columns: frozenset[str] = frozenset(JOB_FIELDS)
        self._conn: sqlite3.Connection | None = self._open()

    @property
    def _target(self) -> str:
        return ":memory:" if self.path is None else shown(self.path)

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            if self.readonly:
                raise StoreError("an in-memory results store cannot be read-only; give the path of a store")
            conn = sqlite3.connect(":memory:", isolation_level=None)
            self._transaction(self._create_or_migrate, conn)
            return conn
        return self._open_readonly() if self.readonly else self._open_writable()

    def _open_writable(self) -> sqlite3.Connection:
        path = self.path
        assert path is not None
        if path.is_dir():
            raise StoreError(f"results database {self._target} is a folder; give a file path for the store")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of results database {self._target}: {exc.strerror or exc}; "
                "give a path in a writable folder"
            ) from exc
        if path.exists():
            inspect_store(path)  # read-only: a file that is refused is never modified
        writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
        if not writable:
            raise StoreError(
                f"results database {self._target} is read-only (the file or its folder is not writable); "
                "commands that only read open it read-only, to record results give a writable --store"
            )
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results database {self._target}: {exc}; check the path") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = FULL")
            self._transaction(self._create_or_migrate, conn)
        except DATABASE_ERRORS as exc:
            conn.close()
            raise _store_error(self._target, exc, "cannot use it as a results database") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        path = self.path
        assert path is not None
        if path.is_dir():
            raise StoreError(f"results store {self._target} is a folder, not a file; give --store FILE")
        if not path.is_file():
            raise StoreError(
                f"no results store at {self._target}; record evaluations there first or pass --store PATH"
            )
        if inspect_store(path) is None:
            raise StoreError(f"{self._target} is an empty database, not a results store yet")
        conn = _readonly_connection(path, self._target)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA query_only = ON")
            self._job_columns = frozenset(row[1] for row in conn.execute("PRAGMA table_info(jobs)"))
        except DATABASE_ERRORS as exc:
            conn.close()
            raise _store_error(self._target, exc, "cannot read it") from exc
        return conn

    def _create_or_migrate(self, conn: sqlite3.Connection) -> None:
        tables = _tables(conn)
        if "meta" not in tables:
            if tables:
                raise _foreign(self._target, tables)
            for statement in SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("created_by", __version__)],
            )
            return
        version = _schema_version(conn, self._target, tables)
        for old in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[old]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"migrated_from_{version}", f"{__version__} {_now()}"),
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
        if write and self.readonly:
            raise StoreError(
                f"results store {self._target} was opened read-only; open it without readonly to write"
            )
        conn = conn or self._connection()

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                out = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return out

        try:
            return self._retry(attempt)
        except DATABASE_ERRORS as exc:
            raise _store_error(self._target, exc) from exc

    # -- the JobCache protocol ---------------------------------------------------------------

    def get(self, job: TrainJob) -> JobResult | None:
        """The stored result of ``job`` (by its key), or None if it never finished."""
        rows = self._select(
            f"SELECT {self._columns(_GET_COLUMNS)} FROM jobs WHERE key = ?", (job.key,), _GET_COLUMNS, "jobs"
        )
        if not rows:
            return None
        row = rows[0]
        where = f"results database {self._target}: job {shown(row['key'])}"
        check_row(where, row, _GET_FIELDS, list(_GET_FIELDS))
        check_job_values(where, row)
        extra = {name: row[name] for name in ("diverged", "diverged_epoch") if name in _RESULT_FIELDS}
        return JobResult(
            row["test_acc"],
            row["val_acc"],
            tuple((int(epoch), float(acc)) for epoch, acc in row["curve"]),
            row["seconds"],
            row["backend"],
            row["test_top5"],
            tuple(float(acc) for acc in row["test_per_class"]),
            row["test_ece"],
            **extra,
        )

    def put(self, job: TrainJob, result: JobResult) -> None:
        """Record a finished job at once, in its own transaction (a re-run replaces the old row)."""
        if not job.key:
            raise InputError("a job needs its key (ddrank.engine.job.job_key) to be stored")
        spec = job.spec
        diverged_epoch = result.diverged_epoch
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
            "diverged": bool(result.diverged),
            "diverged_epoch": None if diverged_epoch is None else int(diverged_epoch),
        }
        params = encode(row, JOB_FIELDS)
        self._transaction(lambda conn: conn.execute(_INSERT_JOB.format("REPLACE"), params))

    # -- queries -----------------------------------------------------------------------------

    def job_count(self, **filters: Any) -> int:
        """Number of stored jobs matching ``filters`` (see :data:`JOB_FILTERS`)."""
        where, params = _where(filters)
        rows = self._transaction(
            lambda conn: conn.execute(f"SELECT COUNT(*) FROM jobs{where}", params).fetchall(), write=False
        )
        return int(rows[0][0])

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored jobs matching ``filters`` as column dicts (JSON columns decoded), oldest first."""
        where, params = _where(filters)
        columns = tuple(JOB_FIELDS)
        sql = f"SELECT {self._columns(columns)} FROM jobs{where} ORDER BY rowid"
        return self._select(sql, params, columns, "jobs")

    def _columns(self, names: tuple[str, ...]) -> str:
        """SELECT list for job columns; those an unmigrated (read-only) store lacks read as their default."""
        return ", ".join(
            name if name in self._job_columns else f"{MISSING_COLUMN_SQL[name]} AS {name}" for name in names
        )

    def _select(self, sql: str, params: Any, columns: tuple[str, ...], table: str) -> list[dict[str, Any]]:
        rows = self._transaction(lambda conn: conn.execute(sql, params).fetchall(), write=False)
        return [self._decoded(table, columns, row) for row in rows]

    def _decoded(self, table: str, columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
        values = dict(zip(columns, row, strict=True))
        label = f"job {shown(values['key'])}" if "key" in values else f"evaluation {values.get('id', '?')}"
        return decode(values, f"results database {self._target}: {label}")

    def _checked(self, table: str, columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
        """A decoded row whose every field has its type (StoreError naming the row otherwise); an
        evaluation's ``id`` is dropped once it has served to name the row."""
        decoded = self._decoded(table, columns, row)
        if table == "jobs":
            where = f"results database {self._target}: job {shown(decoded['key'])}"
            check_row(where, decoded, JOB_FIELDS, list(JOB_FIELDS))
            check_job_values(where, decoded)
        else:
            where = f"results database {self._target}: evaluation {decoded.pop('id')}"
            check_row(where, decoded, EVALUATION_FIELDS, list(EVALUATION_FIELDS))
        return decoded

    def check_integrity(self) -> None:
        """Raise StoreError (one line) unless SQLite's quick_check passes and every row decodes.

        Run before training, so that a damaged store is refused before anything trains instead of
        failing when the first result is written or read.
        """
        job_columns = tuple(JOB_FIELDS)
        evaluation_columns = ("id", *EVALUATION_FIELDS)

        def scan(conn: sqlite3.Connection) -> None:
            rows = [str(row[0]) for row in conn.execute(f"PRAGMA quick_check({QUICK_CHECK_ROWS})")]
            if rows != ["ok"]:
                problems = [
                    line.strip()
                    for row in rows
                    for line in row.splitlines()
                    if line.strip() and not line.startswith("***")
                ] or rows
                at_least = "+" if len(rows) >= QUICK_CHECK_ROWS else ""
                more = f" (and {len(problems) - 1}{at_least} more problems)" if len(problems) > 1 else ""
                raise StoreError(
                    f"results database {self._target} fails SQLite's integrity check: {one_line(problems[0])}"
                    f"{more}; move it aside and start a new store (sqlite3's .recover may rescue its rows)"
                )
            for row in conn.execute(f"SELECT {self._columns(job_columns)} FROM jobs ORDER BY rowid"):
                self._checked("jobs", job_columns, row)
            for row in conn.execute(f"SELECT {', '.join(evaluation_columns)} FROM evaluations ORDER BY id"):
                self._checked("evaluations", evaluation_columns, row)

        self._transaction(scan, write=False)

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
        params = encode(row, EVALUATION_FIELDS)
        identity = [row[name] for name in EVALUATION_IDENTITY]

        def replace(conn: sqlite3.Connection) -> int:
            same = self._same_evaluations(conn, identity, payload_identity(row["payload"]))
            conn.executemany("DELETE FROM evaluations WHERE id = ?", [(i,) for i in same])
            return int(conn.execute(_INSERT_EVALUATION, params).lastrowid)

        return self._transaction(replace)

    def _same_evaluations(
        self, conn: sqlite3.Connection, identity: list[Any], measured: tuple[Any, ...]
    ) -> list[int]:
        """Ids of the recorded evaluations of the same measurement: ``identity`` in their columns and
        ``measured`` in their payload (:func:`~ddrank.store_schema.payload_identity`)."""
        rows = conn.execute(f"SELECT id, payload FROM evaluations WHERE {_SAME_EVALUATION}", identity)
        same = []
        for i, payload in rows.fetchall():
            where = f"results database {self._target}: evaluation {i}"
            if payload_identity(decode({"payload": payload}, where)["payload"]) == measured:
                same.append(int(i))
        return same

    def evaluations(
        self,
        *,
        dataset: str | None = None,
        ipc: int | None = None,
        metric: str | None = None,
        method: str | None = None,
    ) -> list[dict[str, Any]]:
        """The recorded evaluation dicts matching every given filter, newest first."""
        records = self.evaluation_records(dataset=dataset, ipc=ipc, metric=metric, method=method)
        return [record["payload"] for record in records]

    def evaluation_records(
        self,
        *,
        dataset: str | None = None,
        ipc: int | None = None,
        metric: str | None = None,
        method: str | None = None,
        ids: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The recorded evaluations matching every given filter, newest first, as ``{"id", "created",
        "payload"}``: every evaluation is kept, a rerun adds a row (the history)."""
        filters = {"dataset": dataset, "ipc": ipc, "metric": metric, "method": method}
        conditions = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        if ids is not None:
            conditions.append(f"id IN ({', '.join('?' * len(ids))})")
            params += [int(i) for i in ids]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        columns = ("id", "created", "payload")
        sql = f"SELECT {', '.join(columns)} FROM evaluations{where} ORDER BY created DESC, id DESC"
        return self._select(sql, params, columns, "evaluations")

    def remove_evaluations(self, ids: list[int]) -> int:
        """Delete the recorded evaluations with these ids; returns how many were removed. Jobs stay cached
        (later runs reuse them)."""
        if not ids:
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            marks = ", ".join("?" * len(ids))
            return int(
                conn.execute(f"DELETE FROM evaluations WHERE id IN ({marks})", [int(i) for i in ids]).rowcount
            )

        return self._transaction(delete)

    # -- moving results between machines ---------------------------------------------------------

    def export(self, path: str | os.PathLike) -> int:
        """Write every job and evaluation to a checksummed JSON file; returns the number of rows."""
        job_columns = tuple(JOB_FIELDS)
        evaluation_columns = ("id", *EVALUATION_FIELDS)
        jobs_sql = f"SELECT {self._columns(job_columns)} FROM jobs ORDER BY rowid"
        evaluations_sql = f"SELECT {', '.join(evaluation_columns)} FROM evaluations ORDER BY id"

        def snapshot(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            return conn.execute(jobs_sql).fetchall(), conn.execute(evaluations_sql).fetchall()

        job_rows, evaluation_rows = self._transaction(snapshot, write=False)
        content = {
            "jobs": [self._checked("jobs", job_columns, row) for row in job_rows],
            "evaluations": [self._checked("evaluations", evaluation_columns, row) for row in evaluation_rows],
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
        try:
            partial.write_text(json.dumps(document, sort_keys=True, default=json_default))
            os.replace(partial, destination)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            full = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
            raise StoreError(
                f"cannot write results export {shown(destination)}{full}: {exc.strerror or one_line(exc)}"
            ) from exc
        return len(job_rows) + len(evaluation_rows)

    def import_(
        self, path: str | os.PathLike, rows: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
    ) -> tuple[int, int]:
        """Add the exported jobs and evaluations not already stored; returns (new jobs, new evaluations).
        ``rows``: the file's :func:`read_export`, when the caller has already read it."""
        jobs, evaluations = read_export(path) if rows is None else rows
        job_params = [encode(row, JOB_FIELDS) for row in jobs]
        evaluation_params = [encode(row, EVALUATION_FIELDS) for row in evaluations]
        identities = [[row[name] for name in EVALUATION_IDENTITY] for row in evaluations]
        measured = [payload_identity(row["payload"]) for row in evaluations]

        def insert(conn: sqlite3.Connection) -> tuple[int, int]:
            new_jobs = sum(conn.execute(_INSERT_JOB.format("IGNORE"), p).rowcount for p in job_params)
            new_evaluations = 0
            for params, identity, payload in zip(evaluation_params, identities, measured, strict=True):
                if self._same_evaluations(conn, identity, payload):
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
        return {"path": self.path, "device": self.device, "readonly": self.readonly}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], device=state["device"], readonly=state.get("readonly", False))

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"ResultStore({self._target!r}, device={self.device!r}{mode})"


def inspect_store(path: str | os.PathLike) -> int | None:
    """The schema version of the results store at ``path``, read without modifying it; None for an
    empty database (a new store). StoreError when the file is not a results store ddrank can use.

    Without unmerged writes in a ``-wal`` file the database is read with ``immutable=1``, which
    creates no journal or shared-memory file beside it; otherwise (or should that read fail, say
    beside a concurrent writer) with ``mode=ro`` and SQLite's locking.
    """
    path = Path(path)
    target = shown(path)
    try:
        with path.open("rb") as handle:
            header = handle.read(SQLITE_HEADER_BYTES)
    except OSError as exc:
        raise StoreError(f"cannot read results database {target}: {exc.strerror or one_line(exc)}") from exc
    if not header:
        return None
    if len(header) < SQLITE_HEADER_BYTES or not header.startswith(SQLITE_MAGIC):
        raise StoreError(
            f"{target} is not an SQLite database ({_what_it_is(path)}), so not a ddrank results store; "
            "choose another path for the store"
        )
    if not _wal_pending(path):
        try:
            return _inspect(_connect(path, immutable=True), target)
        except DATABASE_ERRORS:
            pass  # read it again below, with locking
    try:
        return _inspect(_readonly_connection(path, target), target)
    except DATABASE_ERRORS as exc:
        raise _store_error(target, exc, "cannot read it as a results database") from exc


def _inspect(conn: sqlite3.Connection, target: str) -> int | None:
    try:
        tables = _tables(conn)
        if "meta" not in tables:
            if tables:
                raise _foreign(target, tables)
            return None
        return _schema_version(conn, target, tables)
    finally:
        conn.close()


def content_sha256(content: Mapping[str, Any]) -> str:
    """Checksum of an export's jobs and evaluations: SHA-256 of their canonical (sorted, compact) JSON."""
    canonical = json.dumps(
        {"jobs": content["jobs"], "evaluations": content["evaluations"]},
        sort_keys=True,
        separators=(",", ":"),
        default=json_default,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_export(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The validated (jobs, evaluations) of an export file; StoreError says what is wrong with it.

    Files of an older schema are accepted; their rows get the later fields' defaults.
    """
    target = shown(path)
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise StoreError(f"cannot read results export {target}: {exc.strerror or one_line(exc)}") from exc
    if stat.S_ISDIR(mode):
        raise StoreError(f"results export {target} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise StoreError(
            f"results export {target} is not a regular file (a pipe, socket or device); give a file"
        )
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StoreError(f"cannot read results export {target}: {one_line(exc)}") from exc
    written_by = {
        "evaluations": "an evaluation summary (evaluate, demo or sweep --json)",
        "leaderboard": "a leaderboard (leaderboard --format json)",
    }
    kind = document.get("kind") if isinstance(document, dict) and "format" not in document else None
    if kind in written_by:  # another ddrank document: say what it is and what import reads
        raise StoreError(
            f"{target} is {written_by[kind]}, not a results export; ddrank import reads what "
            "ddrank export --out FILE writes from the store that holds the results"
        )
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise StoreError(
            f"{target} is not a ddrank results export (format {shown(found)!r}, expected {EXPORT_FORMAT!r})"
        )
    schema = document.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise StoreError(f"{target} has no valid schema version (found {shown(schema)!r})")
    if schema > SCHEMA_VERSION:
        raise StoreError(
            f"{target} was written with results schema {schema}, newer than schema {SCHEMA_VERSION} "
            f"of ddrank {__version__}; upgrade ddrank to import it"
        )
    if schema < OLDEST_MIGRATABLE:
        raise StoreError(
            f"{target} was written with results schema {schema}, which ddrank {__version__} "
            f"(schema {SCHEMA_VERSION}) cannot import"
        )
    for section, fields_ in (("jobs", JOB_FIELDS), ("evaluations", EVALUATION_FIELDS)):
        rows = document.get(section)
        if not isinstance(rows, list):
            raise StoreError(f"{target} has no {section!r} list")
        required = fields_of(schema, fields_)
        for i, row in enumerate(rows):
            check_row(f"{target}: {section}[{i}]", row, fields_, required)
            if section == "jobs":
                check_job_values(f"{target}: jobs[{i}]", row)
    if "sha256" not in document:
        raise StoreError(f"{target} has no sha256 checksum")
    if content_sha256(document) != document["sha256"]:
        raise StoreError(
            f"{target} fails its sha256 checksum: its jobs or evaluations were edited or truncated "
            "after export"
        )
    return [with_defaults(row, schema) for row in document["jobs"]], document["evaluations"]


def _connect(path: Path, *, immutable: bool) -> sqlite3.Connection:
    """A connection that cannot write ``path``: ``mode=ro``; ``immutable=1`` also skips locks and the WAL."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _readonly_connection(path: Path, target: str) -> sqlite3.Connection:
    """A read-only connection that sees concurrent writers' commits (``mode=ro``), or ``immutable=1``
    where that cannot open because the file or its folder is not writable (read-only media)."""
    conn = None
    try:
        conn = _connect(path, immutable=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        if conn is not None:
            conn.close()
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            raise _store_error(target, exc, "cannot open it read-only") from exc
        if _wal_pending(path):
            raise StoreError(
                f"results database {target} is on read-only media with writes not yet merged from its "
                f"-wal file ({one_line(exc)}); open it once where it is writable to merge them"
            ) from exc
        return _connect(path, immutable=True)


def _wal_pending(path: Path) -> bool:
    """Whether ``path`` has committed writes still in its write-ahead log (a non-empty ``-wal`` file)."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _foreign(target: str, tables: set[str]) -> StoreError:
    listed = ", ".join(sorted(map(shown, tables))[:8]) + (", ..." if len(tables) > 8 else "")
    return StoreError(
        f"{target} is an SQLite database but not a ddrank results store (it has tables {listed}); "
        "choose another path"
    )


def _schema_version(conn: sqlite3.Connection, target: str, tables: set[str]) -> int:
    """The store's schema version from its meta table; StoreError unless ddrank can read or migrate it."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
    if version is None:
        raise StoreError(f"{target} has no valid schema_version in its meta table; it is corrupt")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{target} uses results schema {version}, newer than schema {SCHEMA_VERSION} "
            f"of ddrank {__version__}; upgrade ddrank to read it"
        )
    if version < OLDEST_MIGRATABLE:
        raise StoreError(
            f"{target} uses results schema {version}, which ddrank {__version__} "
            f"(schema {SCHEMA_VERSION}) cannot migrate; move it aside to start a new store"
        )
    missing = REQUIRED_TABLES - tables
    if missing:
        raise StoreError(
            f"{target} lacks the table(s) {', '.join(sorted(missing))} of a results store; it is corrupt"
        )
    for table, fields_ in (("jobs", JOB_FIELDS), ("evaluations", EVALUATION_FIELDS)):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        lacking = [name for name in fields_of(version, fields_) if name not in columns]
        if lacking:
            raise StoreError(
                f"{target} has a {table} table without the column(s) {', '.join(lacking)} of results "
                f"schema {version}; it is damaged: move it aside and start a new store"
            )
    return version


def _what_it_is(path: Path) -> str:
    try:
        kind = classify(path).kind
    except InputError:
        return "unreadable"
    return f"it is {kind.description}"


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction, keeping the error that caused it (SQLite may have rolled back)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _store_error(target: str, exc: sqlite3.Error | UnicodeDecodeError, context: str = "") -> StoreError:
    """One-line StoreError for an SQLite failure; says what to do on a full disk, read-only media, damage."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    prefix = f"results database {target}" + (f": {context}" if context else "")
    if code == sqlite3.SQLITE_FULL:
        return StoreError(
            f"{prefix}: the disk is full ({one_line(exc)}); free space and rerun: every job finished "
            "before is kept in the store"
        )
    if code == sqlite3.SQLITE_READONLY or (code == sqlite3.SQLITE_CANTOPEN and "read" in str(exc)):
        return StoreError(
            f"{prefix}: it is read-only ({one_line(exc)}); commands that only read open it read-only, "
            "to record results give a writable --store"
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or isinstance(exc, UnicodeDecodeError):
        return StoreError(f"{prefix}: it is damaged ({one_line(exc)}); move it aside and start a new store")
    return StoreError(f"{prefix}: {one_line(exc)}")


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    unknown = sorted(set(filters) - set(JOB_FILTERS))
    if unknown:
        raise InputError(f"unknown job filter(s) {', '.join(unknown)}; valid: {', '.join(JOB_FILTERS)}")
    if not filters:
        return "", []
    return " WHERE " + " AND ".join(f"{name} = ?" for name in filters), list(filters.values())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")

"""Fuzzing the results store: rows whose columns hold anything SQLite accepts, and database files with
damaged bytes. Reading such a store (integrity check, queries, export) must work or raise a one-line
StoreError naming the file, and reading must never change it. The default run tries a few
derandomised examples per property; the ``slow`` variants try many random ones."""

from __future__ import annotations

import math
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ddrank.engine.job import JobResult, TrainJob, TrainSpec
from ddrank.errors import DDRankError
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec
from ddrank.store import ResultStore, StoreError
from ddrank.store_schema import EVALUATION_FIELDS, JOB_FIELDS

FAST = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SPEC = TrainSpec("MLP", 1, 10, 8, OptimizerSpec(), ScheduleSpec(), 10, 32, AugmentSpec(), (5,))
JOBS = [TrainJob(SPEC, f"syn:{i}", "val:0", 0.01 * (i + 1), i, f"key{i}", "syn", i % 2) for i in range(4)]


def _template() -> bytes:
    """The bytes of a small, healthy store (built once): four jobs and two evaluations."""
    if not _TEMPLATE:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "r.sqlite"
            with ResultStore(path, device="cpu") as store:
                for i, job in enumerate(JOBS):
                    curve = ((5, 0.25 + i / 16), (10, 0.5 + i / 16))
                    result = JobResult(0.5 + i / 16, None if i else 0.4, curve, 1.0, "loop", 0.9, (0.5,) * 10)
                    store.put(job, result)
                for method in ("dm", "mtt"):
                    store.record_evaluation({"method": method, "dataset": "digits", "ipc": 10, "rounds": 1})
            _TEMPLATE.append(path.read_bytes())
    return _TEMPLATE[0]


_TEMPLATE: list[bytes] = []


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _one_line_naming(error: DDRankError, path: Path) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, message


def _read_everything(path: Path, folder: Path) -> None:
    """Open read-only, check integrity, query and export: each step works or raises a one-line
    StoreError naming the file; the file is unchanged afterwards."""
    before = _snapshot(path)
    try:
        with ResultStore(path, readonly=True) as store:
            for read in (
                store.check_integrity,
                store.jobs,
                store.evaluations,
                store.job_count,
                lambda: [store.get(job) for job in JOBS],
                lambda: store.export(folder / "out.json"),
            ):
                try:
                    read()
                except StoreError as error:
                    _one_line_naming(error, path)
    except StoreError as error:
        _one_line_naming(error, path)
    assert _snapshot(path) == before


VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(["[]", "{}", "[[1]]", '[["a", 1]]', "[1, [2]]", "NaN", "null", '{"a": 1}', "[" * 5000]),
)
COLUMNS = st.one_of(
    st.tuples(st.just("jobs"), st.sampled_from(list(JOB_FIELDS))),
    st.tuples(st.just("evaluations"), st.sampled_from(list(EVALUATION_FIELDS))),
)


def _row_case(table_column: tuple[str, str], row: int, value: object) -> None:
    table, column = table_column
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.sqlite"
        path.write_bytes(_template())
        conn = sqlite3.connect(path)
        try:
            key = "key" if table == "jobs" else "id"
            target = f"key{row % 4}" if table == "jobs" else row % 2 + 1
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (value, target))
            conn.commit()
        except sqlite3.IntegrityError:  # NULL in a NOT NULL column, a duplicate key: SQLite refuses it
            assume(False)
        finally:
            conn.close()
        _read_everything(path, Path(folder))


@FAST
@given(table_column=COLUMNS, row=st.integers(0, 3), value=VALUES)
def test_corrupted_rows_are_read_or_refused_in_one_line(table_column, row, value):
    _row_case(table_column, row, value)


@pytest.mark.slow
@SLOW
@given(table_column=COLUMNS, row=st.integers(0, 3), value=VALUES)
def test_corrupted_rows_are_read_or_refused_in_one_line_many(table_column, row, value):
    _row_case(table_column, row, value)


FILE_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0, exclude_max=True)),
    st.tuples(
        st.just("flip"),
        st.lists(
            st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=16
        ),
    ),
    st.tuples(st.just("random"), st.binary(max_size=5000)),
)


def _file_case(damage: tuple) -> None:
    kind, arg = damage
    data = bytearray(_template())
    if kind == "truncate":
        data = data[: int(arg * len(data))]
    elif kind == "flip":
        for where, value in arg:
            data[int(where * len(data))] = value
    else:
        data = bytearray(arg)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.sqlite"
        path.write_bytes(bytes(data))
        _read_everything(path, Path(folder))
        before = _snapshot(path)
        try:
            ResultStore(path).close()
        except StoreError as error:  # refused when opened for writing: and then never modified
            _one_line_naming(error, path)
            assert _snapshot(path) == before


@FAST
@given(damage=FILE_DAMAGE)
def test_damaged_database_files_are_read_or_refused_in_one_line(damage):
    _file_case(damage)


@pytest.mark.slow
@SLOW
@given(damage=FILE_DAMAGE)
def test_damaged_database_files_are_read_or_refused_in_one_line_many(damage):
    _file_case(damage)


def test_the_template_store_is_healthy():
    """The fuzz cases start from a store that reads back completely."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.sqlite"
        path.write_bytes(_template())
        with ResultStore(path, readonly=True) as store:
            store.check_integrity()
            assert store.job_count() == 4 and len(store.evaluations()) == 2
            assert math.isclose(store.get(JOBS[3]).test_acc, 0.5 + 3 / 16)

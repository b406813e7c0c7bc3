"""The results store: exact round-trips, queries, export/import, safe concurrent writers, and files,
rows, disks and media that are damaged, foreign, full or read-only."""

import ctypes
import json
import math
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ddrank import __version__
from ddrank.engine.job import EvalSet, JobResult, RunData, TrainingSet, TrainJob, TrainSpec
from ddrank.errors import InputError
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec
from ddrank.store import SCHEMA_VERSION, ResultStore, StoreError, content_sha256


def _spec(model: str = "ConvNet-2-W16", epochs: int = 10) -> TrainSpec:
    return TrainSpec(
        model, 1, 10, 8, OptimizerSpec(), ScheduleSpec(), epochs, 32, AugmentSpec(dsa="crop"), (3, 6)
    )


def _job(
    i: int, cell: str = "syn", round: int = 0, model: str = "ConvNet-2-W16", lr: float = 0.01
) -> TrainJob:
    return TrainJob(_spec(model), f"{cell}:{i % 3}", "val:0", lr, 1000 + i, f"key{i:05d}-{cell}", cell, round)


def _result(i: int = 0) -> JobResult:
    acc = 0.1 + i / 7919  # awkward binary fractions exercise exact float round-trips
    return JobResult(
        acc,
        acc / 3,
        ((3, acc / 2), (6, acc / 1.5), (10, acc)),
        1.0 / 3.0 + i,
        "ensemble",
        min(1.0, acc * 2.1),
        tuple(acc + k / 97 for k in range(10)),
        0.0123456789 + i * 1e-9,
    )


def _evaluation(method: str = "dm", ipc: int = 10, base_seed: int = 0, lrs: float = 0.2845, **extra) -> dict:
    return {
        "method": method,
        "dataset": "digits",
        "ipc": ipc,
        "lrs_mean": lrs,
        "rounds": 3,
        "protocol": "digits",
        "protocol_hash": "abc123",
        "per_round": [{"round": 0, "seed": 7, "lrs": lrs}],
        "provenance": {
            "base_seed": base_seed,
            "synthetic_fingerprint": f"fp-{method}",
            "ddrank_version": "x",
        },
        **extra,
    }


def _put_jobs(path: str, worker: int, count: int, start) -> None:
    with ResultStore(path, device=f"worker{worker}") as store:
        start.wait(timeout=60)  # every writer has imported and opened the file: now they race
        for i in range(count):
            store.put(_job(worker * 100_000 + i, cell=f"w{worker}"), _result(i))


def test_put_then_get_round_trips_exactly():
    with ResultStore(":memory:") as store:
        for i, result in enumerate(
            [
                _result(1),
                JobResult(0.5, None, (), 2.0, "loop"),
                JobResult(1 / 3, 0.25, ((10, 1 / 3),), 0.1, "loop", None, (), None),
            ]
        ):
            job = _job(i)
            store.put(job, result)
            back = store.get(job)
            assert back == result
            assert isinstance(back.curve, tuple) and all(isinstance(p, tuple) for p in back.curve)
            assert isinstance(back.test_per_class, tuple)


def test_nan_is_kept_apart_from_missing():
    with ResultStore(":memory:") as store:
        store.put(_job(0), JobResult(0.5, None, ((10, 0.5),), 1.0, "loop", None, (), math.nan))
        back = store.get(_job(0))
        assert back.val_acc is None and math.isnan(back.test_ece)


def test_unknown_job_is_a_cache_miss():
    with ResultStore(":memory:") as store:
        store.put(_job(1), _result())
        assert store.get(_job(2)) is None


def test_put_needs_a_job_key():
    with ResultStore(":memory:") as store, pytest.raises(InputError, match="key"):
        store.put(TrainJob(_spec(), "syn", None, 0.01, 0), _result())


def test_job_count_and_rows_filter_by_column():
    with ResultStore(":memory:", device="cpu-test") as store:
        for i in range(6):
            store.put(_job(i, cell="syn", round=i % 2, lr=0.01 if i < 4 else 0.1), _result(i))
        store.put(_job(9, cell="random", model="MLP"), _result(9))
        assert store.job_count() == 7
        assert store.job_count(cell="syn") == 6
        assert store.job_count(cell="syn", round=1) == 3
        assert store.job_count(lr=0.1) == 2
        assert store.job_count(model="MLP") == 1
        assert store.job_count(seed=1003) == 1
        assert store.job_count(train_set="syn:0") == 2
        assert store.job_count(spec=_spec().fingerprint()) == 6
        rows = store.jobs(cell="random")
        assert len(rows) == 1
        row = rows[0]
        assert row["key"] == _job(9, cell="random").key and row["model"] == "MLP"
        assert row["device"] == "cpu-test" and row["ddrank_version"] == __version__
        assert row["epochs"] == 10 and row["batch_size"] == 32 and row["val_set"] == "val:0"
        assert row["curve"] == [
            [3, _result(9).curve[0][1]],
            [6, _result(9).curve[1][1]],
            [10, _result(9).test_acc],
        ]
        assert row["created"].endswith("+00:00")
        with pytest.raises(InputError, match="unknown job filter"):
            store.job_count(colour="red")


def test_evaluations_are_recorded_queried_and_replaced():
    with ResultStore(":memory:") as store:
        first = store.record_evaluation(_evaluation("dm", lrs=0.1))
        store.record_evaluation(_evaluation("mtt", lrs=0.3))
        store.record_evaluation(_evaluation("dm", ipc=50))
        store.record_evaluation(_evaluation("dm", metric="ars"))
        assert [e["method"] for e in store.evaluations(ipc=10, metric="lrs")] == ["mtt", "dm"]  # newest first
        assert len(store.evaluations(method="dm")) == 3
        assert store.evaluations(metric="ars")[0]["metric"] == "ars"
        assert store.evaluations(dataset="cifar10") == []
        again = store.record_evaluation(_evaluation("dm", lrs=0.2))
        assert again != first
        dm = store.evaluations(method="dm", ipc=10, metric="lrs")
        assert len(dm) == 1 and dm[0] == _evaluation("dm", lrs=0.2)
        store.record_evaluation(_evaluation("dm", base_seed=1))  # another seed is another measurement
        assert len(store.evaluations(method="dm", ipc=10, metric="lrs")) == 2
        with pytest.raises(InputError, match="ipc"):
            store.record_evaluation({"method": "dm", "dataset": "digits", "rounds": 1})


def test_a_full_run_never_replaces_a_smoke_run_of_the_same_protocol_content(tmp_path):
    smoke = _evaluation("dm", lrs=0.1)
    smoke["provenance"] = smoke["provenance"] | {"smoke": {"epochs": 30, "protocol_epochs": 300}}
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.record_evaluation(smoke)
        store.record_evaluation(_evaluation("dm", lrs=0.2))  # same hash, seeds and rounds, not a smoke run
        assert sorted(e["lrs_mean"] for e in store.evaluations(method="dm")) == [0.1, 0.2]
        store.record_evaluation(smoke | {"lrs_mean": 0.3})  # a smoke rerun replaces the smoke run only
        assert sorted(e["lrs_mean"] for e in store.evaluations(method="dm")) == [0.2, 0.3]
        store.export(tmp_path / "out.json")
    with ResultStore(tmp_path / "other.sqlite") as other:
        other.record_evaluation(_evaluation("dm", lrs=0.2))
        assert other.import_(tmp_path / "out.json")[1] == 1  # the smoke run is new there


def _filled(path) -> ResultStore:
    store = ResultStore(path, device="gpu0")
    for i in range(5):
        store.put(_job(i, round=i), _result(i))
    store.put(_job(7), JobResult(0.5, None, (), 2.0, "loop", None, (), math.nan))
    store.record_evaluation(_evaluation("dm"))
    store.record_evaluation(_evaluation("mtt"))
    return store


def test_export_then_import_reproduces_everything(tmp_path):
    exported = tmp_path / "results.json"
    with _filled(tmp_path / "a.sqlite") as source:
        assert source.export(exported) == 8
        jobs, evaluations = source.jobs(), source.evaluations()
    document = json.loads(exported.read_text())
    assert document["format"] == "ddrank-results" and document["schema"] == SCHEMA_VERSION
    assert document["ddrank_version"] == __version__ and document["sha256"] == content_sha256(document)
    with ResultStore(tmp_path / "b.sqlite") as target:
        assert target.import_(exported) == (6, 2)
        for i in range(5):
            assert target.get(_job(i, round=i)) == _result(i)
        assert target.jobs()[:5] == jobs[:5]
        assert target.jobs()[5]["key"] == jobs[5]["key"] and math.isnan(target.jobs()[5]["test_ece"])
        assert target.evaluations() == evaluations
        assert target.import_(exported) == (0, 0)  # already present: nothing duplicated
        assert target.job_count() == 6 and len(target.evaluations()) == 2


def _tamper(path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _rehash(document) -> None:
    document["sha256"] = content_sha256(document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["jobs"][0].update(test_acc=0.99), "sha256 checksum"),
        (lambda d: d["evaluations"].pop(), "sha256 checksum"),
        (lambda d: d.update(format="lm-eval-cache"), "not a ddrank results export.*'lm-eval-cache'"),
        (lambda d: d.update(schema=SCHEMA_VERSION + 1), f"schema {SCHEMA_VERSION + 1}, newer than schema"),
        (lambda d: d.pop("sha256"), "no sha256"),
        (lambda d: (d["jobs"][2].pop("seed"), _rehash(d)), r"jobs\[2\] lacks required field\(s\) seed"),
        (lambda d: (d["evaluations"][1].pop("payload"), _rehash(d)), r"evaluations\[1\] lacks.*payload"),
        (lambda d: (d["jobs"][0].update(lr="fast"), _rehash(d)), r"wrong type: lr \(str\)"),
        (lambda d: d.pop("jobs"), "no 'jobs' list"),
    ],
)
def test_import_rejects_a_bad_file_saying_why(tmp_path, change, message):
    exported = tmp_path / "results.json"
    with _filled(tmp_path / "a.sqlite") as source:
        source.export(exported)
    _tamper(exported, change)
    with ResultStore(tmp_path / "b.sqlite") as target:
        with pytest.raises(StoreError, match=message):
            target.import_(exported)
        assert target.job_count() == 0


def test_import_of_a_non_json_file_is_a_store_error(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("not json")
    with ResultStore(":memory:") as store, pytest.raises(StoreError, match="cannot read results export"):
        store.import_(bad)


def test_concurrent_writers_lose_nothing(tmp_path, monkeypatch):
    # Spawned children import this module by name, so its root must be on the path they inherit.
    monkeypatch.syspath_prepend(str(Path(__file__).parents[__name__.count(".")]))
    path = str(tmp_path / "shared.sqlite")
    ResultStore(path).close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_put_jobs, args=(path, w, 200, start)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with ResultStore(path) as store:
        assert store.job_count() == 400
        assert {store.job_count(cell=f"w{w}") for w in range(2)} == {200}
        assert store.get(_job(100_000 + 199, cell="w1")) == _result(199)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_the_engine_resumes_from_the_store(tmp_path):
    # Imported here so that the spawned writers above, which import this module, start quickly.
    from ddrank.data.real import load_real, normalize
    from ddrank.engine.runner import run_jobs

    real = load_real("digits")
    idx = torch.cat([torch.nonzero(real.train_labels == c)[:3, 0] for c in range(10)])
    train = {"a": TrainingSet(normalize(real.train_images[idx], real.info), real.train_labels[idx], "a")}
    test = EvalSet(normalize(real.test_images[:200], real.info), real.test_labels[:200], "t")
    spec = TrainSpec("MLP", 1, 10, 8, OptimizerSpec(), ScheduleSpec(), 2, 16, AugmentSpec(), ())
    jobs = [TrainJob(spec, "a", None, lr, 3, f"k{lr}", "syn", 0) for lr in (0.01, 0.1)]
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = run_jobs(jobs, RunData(train, {}, test, torch.device("cpu")), cache=store)
        assert store.job_count(cell="syn") == 2
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert run_jobs(jobs, data=None, cache=store) == first  # no data needed: nothing is retrained


def test_a_pickled_store_reopens_its_file(tmp_path):
    with ResultStore(tmp_path / "r.sqlite", device="d") as store:
        store.put(_job(1), _result(1))
        copy = pickle.loads(pickle.dumps(store))
        assert copy.get(_job(1)) == _result(1) and copy.device == "d"
        copy.close()
    with ResultStore(":memory:") as memory, pytest.raises(StoreError, match="in-memory"):
        pickle.dumps(memory)


def test_wal_journal_and_busy_timeout_are_active(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        conn = store._connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_default_path_is_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRANK_CACHE_DIR", str(tmp_path))
    with ResultStore() as store:
        assert store.path == tmp_path / "results.sqlite"
        assert store.path.exists()


def test_a_non_sqlite_file_is_a_store_error_naming_it(tmp_path):
    bogus = tmp_path / "results.sqlite"
    bogus.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError, match="results.sqlite"):
        ResultStore(bogus)


def test_a_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a ddrank results store.*photos"):
        ResultStore(path)


@pytest.mark.parametrize(
    ("version", "message"), [(SCHEMA_VERSION + 98, "newer than schema"), (0, "cannot migrate")]
)
def test_another_schema_version_is_refused_naming_both(tmp_path, version, message):
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=message) as info:
        ResultStore(path)
    assert f"schema {version}" in str(info.value) and f"schema {SCHEMA_VERSION}" in str(info.value)


def test_a_closed_store_says_so():
    store = ResultStore(":memory:")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(_job(0))


# ---- files that are refused are never modified ---------------------------------------------------


def _snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """Bytes, modification time and sibling files of ``path``: what a refused open must leave unchanged."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def _foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER, caption TEXT)")
    conn.execute("INSERT INTO photos VALUES (1, 'beach')")
    conn.commit()
    conn.close()


def _future_store(path: Path) -> None:
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def _store_without_version(path: Path) -> None:
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("method,lrs\ndm,0.28\n" * 20), r"is not an SQLite database \(it is text\)"),
        (lambda p: p.write_bytes(bytes(range(256)) * 4), "is not an SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 50), "is not an SQLite database"),
        (_foreign_database, r"not a ddrank results store \(it has tables photos\)"),
        (_future_store, "uses results schema 99, newer than schema"),
        (_store_without_version, "no valid schema_version"),
    ],
)
@pytest.mark.parametrize("readonly", [False, True])
def test_a_refused_file_is_never_modified(tmp_path, make, message, readonly):
    path = tmp_path / "results.sqlite"
    make(path)
    before = _snapshot(path)
    time.sleep(0.01)  # a write now would show in the modification time
    with pytest.raises(StoreError, match=message) as refused:
        ResultStore(path, readonly=readonly)
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)
    assert _snapshot(path) == before


def test_a_path_that_cannot_hold_a_store_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        StoreError, match="cannot create the folder of results database .*file/results.sqlite"
    ):
        ResultStore(tmp_path / "file" / "results.sqlite")
    with pytest.raises(StoreError, match="is a folder; give a file path"):
        ResultStore(tmp_path)
    with pytest.raises(StoreError, match="no results store at"):
        ResultStore(tmp_path / "missing.sqlite", readonly=True)


# ---- read-only stores ----------------------------------------------------------------------------


def test_a_read_only_store_reads_everything_and_writes_nothing(tmp_path):
    _filled(tmp_path / "r.sqlite").close()
    before = _snapshot(tmp_path / "r.sqlite")[:2]
    with ResultStore(tmp_path / "r.sqlite", readonly=True) as store:
        assert store.job_count() == 6 and [e["method"] for e in store.evaluations()] == ["mtt", "dm"]
        assert store.get(_job(2, round=2)) == _result(2)
        store.check_integrity()
        assert store.export(tmp_path / "out.json") == 8
        with pytest.raises(StoreError, match="opened read-only"):
            store.put(_job(99), _result())
        with pytest.raises(StoreError, match="opened read-only"):
            store.record_evaluation(_evaluation("x"))
        copy = pickle.loads(pickle.dumps(store))
        assert copy.readonly and copy.job_count() == 6
        copy.close()
    assert _snapshot(tmp_path / "r.sqlite")[:2] == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; see the read-only mount test")
def test_a_read_only_store_works_in_a_folder_without_write_permission(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    _filled(folder / "r.sqlite").close()
    (folder / "r.sqlite").chmod(0o444)
    folder.chmod(0o555)
    try:
        with ResultStore(folder / "r.sqlite", readonly=True) as store:
            assert store.job_count() == 6
        with pytest.raises(StoreError, match="read-only"):
            ResultStore(folder / "r.sqlite")
    finally:
        folder.chmod(0o755)


# ---- older stores --------------------------------------------------------------------------------


def _schema1_store(path: Path) -> None:
    """A store exactly as ddrank 0.1.0 (schema 1) wrote it, replayed from its SQL dump."""
    conn = sqlite3.connect(path)
    conn.executescript((Path(__file__).parent / "fixtures" / "results_schema1.sql").read_text())
    conn.close()


def test_a_schema1_store_is_migrated_when_opened(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema1_store(path)
    with ResultStore(path) as store:
        jobs = store.jobs()
        assert [job["key"] for job in jobs] == ["v1key0", "v1key1", "v1key2", "v1key-nan"]
        assert all(job["diverged"] is False and job["diverged_epoch"] is None for job in jobs)
        assert jobs[1]["test_acc"] == 0.375 and jobs[1]["curve"] == [[3, 0.09375], [10, 0.375]]
        assert math.isnan(jobs[3]["test_ece"])
        assert store.evaluations()[0]["method"] == "dm"
        store.put(
            _job(1), _DivergedResult(0.1, None, ((1, 0.1),), 0.5, "loop", diverged=True, diverged_epoch=1)
        )
        assert store.jobs(key=_job(1).key)[0]["diverged"] is True
        store.check_integrity()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    assert {"diverged", "diverged_epoch"} <= {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()


def test_a_schema1_store_is_read_without_migrating_when_read_only(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema1_store(path)
    before = _snapshot(path)[:2]
    with ResultStore(path, readonly=True) as store:
        assert store.job_count() == 4 and store.jobs()[0]["diverged"] is False
        store.check_integrity()
        store.export(tmp_path / "out.json")
    assert _snapshot(path)[:2] == before
    with ResultStore(tmp_path / "new.sqlite") as store:
        assert store.import_(tmp_path / "out.json") == (4, 1)


# ---- divergence columns --------------------------------------------------------------------------


@dataclass(frozen=True)
class _DivergedResult(JobResult):
    """A JobResult with the engine's divergence fields (as ddrank.engine.job.JobResult will carry them)."""

    diverged: bool = False
    diverged_epoch: int | None = None


def test_divergence_is_stored_exported_and_imported(tmp_path):
    with ResultStore(tmp_path / "a.sqlite") as store:
        store.put(
            _job(0), _DivergedResult(0.1, 0.1, ((3, 0.1),), 1.0, "ensemble", diverged=True, diverged_epoch=3)
        )
        store.put(_job(1), _result(1))
        rows = store.jobs()
        assert [(r["diverged"], r["diverged_epoch"]) for r in rows] == [(True, 3), (False, None)]
        store.export(tmp_path / "out.json")
    with ResultStore(tmp_path / "b.sqlite") as target:
        target.import_(tmp_path / "out.json")
        assert [(r["diverged"], r["diverged_epoch"]) for r in target.jobs()] == [(True, 3), (False, None)]


def test_an_export_of_schema1_imports_with_defaults(tmp_path):
    with _filled(tmp_path / "a.sqlite") as source:
        source.export(tmp_path / "out.json")

    def as_schema1(document):
        document["schema"] = 1
        for job in document["jobs"]:
            del job["diverged"], job["diverged_epoch"]
        _rehash(document)

    _tamper(tmp_path / "out.json", as_schema1)
    with ResultStore(tmp_path / "b.sqlite") as target:
        assert target.import_(tmp_path / "out.json") == (6, 2)
        assert all(job["diverged"] is False for job in target.jobs())


# ---- damaged rows and pages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("jobs", "curve", "[[3, 0.1], [6,", r"job key00002-syn has a damaged curve column"),
        ("jobs", "curve", '[[3, "x"]]', r"job key00002-syn has a damaged curve column"),
        (
            "jobs",
            "test_per_class",
            "{}",
            r"job key00002-syn has field\(s\) of the wrong type: test_per_class",
        ),
        ("jobs", "test_acc", "lots", r"job key00002-syn has a damaged test_acc column"),
        ("jobs", "diverged", 7, r"job key00002-syn has a damaged diverged column"),
        ("evaluations", "payload", "not json", r"evaluation 2 has a damaged payload column"),
        ("evaluations", "payload", "[1, 2]", r"evaluation 2 has field\(s\) of the wrong type: payload"),
    ],
)
def test_a_damaged_row_is_a_store_error_never_a_decode_error(tmp_path, table, column, value, message):
    path = tmp_path / "r.sqlite"
    _filled(path).close()
    conn = sqlite3.connect(path)
    where = "key = 'key00002-syn'" if table == "jobs" else "id = 2"
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (value,))
    conn.commit()
    conn.close()
    with ResultStore(path, readonly=True) as store:
        with pytest.raises(StoreError, match=message) as damaged:
            store.check_integrity()
        assert "\n" not in str(damaged.value) and str(path) in str(damaged.value)
        for read in (store.jobs, store.evaluations, lambda: store.export(tmp_path / "out.json")):
            try:
                read()
            except StoreError as exc:
                assert "\n" not in str(exc)


def test_a_damaged_page_fails_the_integrity_check(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for i in range(300):
            store.put(_job(i), _result(i))
    data = bytearray(path.read_bytes())
    page = 4096
    data[5 * page + 8 : 5 * page + 600] = bytes(range(256)) * 2 + bytes(80)
    path.write_bytes(bytes(data))
    with (
        pytest.raises(StoreError, match="fails SQLite's integrity check|is damaged") as damaged,
        ResultStore(path, readonly=True) as store,
    ):
        store.check_integrity()
    assert "\n" not in str(damaged.value) and str(path) in str(damaged.value)


# ---- a full disk ---------------------------------------------------------------------------------


def test_a_full_database_is_a_store_error_and_keeps_every_finished_job(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    pages = store._connection().execute("PRAGMA page_count").fetchone()[0]
    store._connection().execute(f"PRAGMA max_page_count = {pages + 6}")  # SQLite's own "disk full"
    finished = []
    with pytest.raises(StoreError, match=r"the disk is full .*every job finished before is kept") as full:
        for i in range(10_000):
            store.put(_job(i), _result(i))
            finished.append(i)
    assert "\n" not in str(full.value) and 3 < len(finished) < 10_000
    with pytest.raises(StoreError, match="the disk is full"):
        store.record_evaluation(_evaluation("dm", notes="x" * 50_000))
    assert store.job_count() == len(finished)  # the connection still reads after the failed writes
    store.close()
    with ResultStore(path) as again:
        again.check_integrity()
        assert again.job_count() == len(finished)
        assert all(again.get(_job(i)) == _result(i) for i in finished)
        again.put(_job(10_001), _result(1))  # without the page limit there is room again


CLONE_NEWNS = 0x00020000


def _on_a_small_filesystem(scenario, folder: Path) -> dict:
    """``scenario(folder)`` in a forked child with a private mount namespace, ``folder`` being a fresh
    256 KiB tmpfs there: nothing is mounted for any other process, and the mount goes with the child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe and leave without running any test machinery
        code, stage = 1, "setup_error"
        try:
            os.close(read)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
            subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
            stage = "error"
            report, code = scenario(folder), 0
        except BaseException as exc:  # every failure goes back to the parent
            report = {stage: f"{type(exc).__name__}: {exc}"}
        finally:
            os.write(write, json.dumps(report).encode())
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    return report


def _fill_then_read_only(folder: Path) -> dict:
    """Fill the store until the disk is full, reopen it, then remount the folder read-only and read it."""
    path, out, finished = folder / "r.sqlite", {}, []
    wide = [JobResult(0.5, None, tuple((e, i / 7) for e in range(300)), float(i), "loop") for i in range(500)]
    store = ResultStore(path)
    try:
        for i, result in enumerate(wide):
            store.put(_job(i), result)
            finished.append(i)
    except StoreError as exc:
        out["full"] = str(exc)
    store.close()
    with ResultStore(path) as again:
        again.check_integrity()
        out["finished"], out["kept"] = len(finished), again.job_count()
        out["equal"] = all(again.get(_job(i)) == wide[i] for i in finished)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    with ResultStore(path, readonly=True) as read_only:
        read_only.check_integrity()
        out["readonly_count"] = read_only.job_count()
    try:
        ResultStore(path)
    except StoreError as exc:
        out["writable"] = str(exc)
    return out


def test_a_full_disk_and_read_only_media_on_a_real_filesystem(tmp_path):
    """A 256 KiB tmpfs: filled to the brim (every finished job kept), then remounted read-only."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root and mount(8)")
    folder = tmp_path / "media"
    folder.mkdir()
    out = _on_a_small_filesystem(_fill_then_read_only, folder)
    if "setup_error" in out:
        pytest.skip(f"this machine does not allow a private mount: {out['setup_error']}")
    assert "error" not in out, out["error"]
    assert "the disk is full" in out["full"] and "\n" not in out["full"]
    assert out["finished"] > 5 and out["kept"] == out["finished"] and out["equal"]
    assert out["readonly_count"] == out["finished"]
    assert "is read-only" in out["writable"]

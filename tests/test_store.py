"""The results store: exact round-trips, queries, export/import and safe concurrent writers."""

import json
import math
import multiprocessing
import pickle
import sqlite3
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

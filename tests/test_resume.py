"""The results store as a cache: a killed evaluation resumes without retraining what finished,
and a second method reuses the random-subset and full-data jobs of the first."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from ddrank.baselines import generate
from ddrank.cli import main
from ddrank.data.real import load_real
from ddrank.protocols import load_protocol
from ddrank.store import ResultStore


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    digits = load_protocol("digits")
    # small: enough training for scores that differ; tiny: enough for jobs to finish one at a time
    for name, epochs, full_epochs in (("small", 60, 8), ("tiny", 20, 3)):
        protocol = digits.with_overrides(
            epochs=epochs,
            rounds=2,
            lr_grid=[0.03, 0.1],
            full_data=digits.full_data.model_copy(update={"epochs": full_epochs}),
        )
        doc = protocol.model_dump(mode="json")
        for key in ("dataset", "ipc"):
            doc.pop(key)
        (root / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    real = load_real("digits")
    for method in ("herding", "kcenter"):
        syn = generate(method, real, 10, seed=0)
        torch.save({"images": syn.images, "labels": syn.labels}, root / f"{method}.pt")
    return root


def _args(root: Path, method: str, store: str, out: str, *extra: str, protocol: str = "small") -> list[str]:
    return [
        "evaluate",
        "--images",
        str(root / f"{method}.pt"),
        "--method",
        method,
        "--protocol",
        str(root / f"{protocol}.yaml"),
        "--device",
        "cpu",
        "--no-progress",
        "--store",
        str(root / store),
        "--json",
        str(root / out),
        *extra,
    ]


def _scores(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text())["evaluations"][0].items() if k != "provenance"}


def test_sigkill_then_rerun_trains_only_the_unfinished_jobs(workdir, ddrank_processes):
    processes = ddrank_processes(workdir)
    args = _args(workdir, "herding", "killed.sqlite", "killed.json", "--max-members", "1", protocol="tiny")
    proc = processes.start(processes.command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_path = workdir / "killed.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline:
        if store_path.exists():
            with ResultStore(store_path) as store:
                if store.job_count() >= 3:
                    break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with ResultStore(store_path) as store:
        before = {row["key"]: row["created"] for row in store.jobs()}
    assert before, "nothing finished before the kill"
    assert not (workdir / "killed.json").exists()

    processes.run(*args)
    with ResultStore(store_path) as store:
        after = {row["key"]: row["created"] for row in store.jobs()}
    assert len(after) > len(before)
    assert all(after[key] == created for key, created in before.items())  # finished jobs were not retrained

    clean = _args(workdir, "herding", "clean.sqlite", "clean.json", "--max-members", "1", protocol="tiny")
    processes.run(*clean)
    assert _scores(workdir / "killed.json") == _scores(workdir / "clean.json")
    with ResultStore(workdir / "clean.sqlite") as store:
        assert store.job_count() == len(after)


def test_a_second_method_reuses_the_random_and_full_data_jobs(workdir):
    assert main(_args(workdir, "herding", "shared.sqlite", "a.json")) == 0
    with ResultStore(workdir / "shared.sqlite") as store:
        shared_before = {cell: store.job_count(cell=cell) for cell in ("random", "real", "syn")}
    assert main(_args(workdir, "kcenter", "shared.sqlite", "b.json")) == 0
    with ResultStore(workdir / "shared.sqlite") as store:
        assert store.job_count(cell="random") == shared_before["random"] > 0
        assert store.job_count(cell="real") == shared_before["real"] > 0
        assert store.job_count(cell="syn") == 2 * shared_before["syn"]
        assert {e["method"] for e in store.evaluations()} == {"herding", "kcenter"}
    a, b = (json.loads((workdir / name).read_text())["evaluations"][0] for name in ("a.json", "b.json"))
    assert a["acc_random_mean"] == b["acc_random_mean"] and a["acc_real_mean"] == b["acc_real_mean"]


def test_cross_architecture_matrix_in_one_call(workdir, capsys):
    # In the store of the test above, the protocol's own student (ConvNet-2-W16) is already trained.
    out = workdir / "students.json"
    args = _args(workdir, "herding", "shared.sqlite", "students.json", "--students", "ConvNet-2-W16,MLP")
    assert main(args) == 0
    rows = json.loads(out.read_text())["evaluations"]
    assert [r["student"] for r in rows] == ["ConvNet-2-W16", "MLP"]
    assert rows[0]["acc_syn_mean"] != rows[1]["acc_syn_mean"]
    table = capsys.readouterr().out
    # each student's name sits in the row of its own score (rows are ranked, names may wrap)
    names = [table.index(row["student"]) for row in rows]
    scores = [table.index(f"{100 * row['lrs_mean']:.2f}") for row in rows]
    assert (names[0] < names[1]) == (scores[0] < scores[1])

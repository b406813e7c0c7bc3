"""One job planner: the evaluator and sweeps plan the same grid; sweeps are planned from presets and
dataset shapes alone, share their random-subset and full-data jobs, and run through the evaluator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from cli_checks import assert_one_line_error, run_cli
from ddrank.baselines import generate
from ddrank.cli import main
from ddrank.data.real import load_real
from ddrank.evaluation import Evaluator
from ddrank.planning import plan_sweep
from ddrank.protocols import load_protocol
from ddrank.settings import RunSettings
from ddrank.store import ResultStore
from ddrank.sweep import SweepEntry, leaderboard_sweep

TINY = {
    "name": "tiny",
    "model": "ConvNet-2-W16",
    "augment": {"dsa": "color_crop_cutout_scale_rotate"},
    "epochs": 10,
    "lr_grid": [0.1],
    "rounds": 1,
    "full_data": {"lr": 0.1, "epochs": 2, "batch_size": 128},
}


def _grid(jobs) -> Counter:
    return Counter((j.cell, j.round, j.seed, j.lr, j.spec.fingerprint()) for j in jobs)


def test_the_evaluator_and_a_sweep_plan_the_same_grid():
    settings = RunSettings(rounds=2, ipc=10, device="cpu")
    entry = SweepEntry("herding", "digits", 10, protocol="digits")
    swept = plan_sweep([entry], settings)
    evaluator = Evaluator(entry.settings(settings))
    syn = generate("herding", load_real("digits"), 10, seed=0)
    jobs, data, _ = evaluator.plan({entry.name: evaluator.validate(syn)}, dry_run=True)
    assert _grid(swept.jobs) == _grid(jobs)
    assert {c for c, *_ in _grid(jobs)} == {"syn", "random", "real"}
    assert swept.set_sizes[f"syn:{entry.name}"] == len(data.train_sets[f"syn:{entry.name}"]) == 100
    assert swept.set_sizes["real:digits"] == len(data.train_sets["real"])


def test_the_leaderboard_sweep_is_planned_without_data_and_shares_jobs():
    entries = leaderboard_sweep()
    run = plan_sweep(entries, RunSettings(rounds=1, real_acc="published", device="cpu"))
    assert len({job.key for job in run.jobs}) == len(run.jobs)
    cells = Counter(job.cell for job in run.jobs)
    assert cells["syn"] > 0 and cells["random"] > 0
    # random subsets are shared by methods with the same dataset, IPC and label mode (and their jobs by
    # methods with the same recipe); every random run searches the lr grid, even where the method's own lr
    # trains the synthetic set
    assert len({job.train_set for job in run.jobs if job.cell == "random"}) < len(entries)
    # published full-data accuracies are used, so only recipes without one train on full data
    unpublished = {
        f"real:{e.dataset}"
        for e in entries
        if load_protocol(e.method, dataset=e.dataset, ipc=e.ipc).full_data.published_acc is None
    }
    assert {job.train_set for job in run.jobs if job.cell == "real"} == unpublished
    trained = RunSettings(rounds=1, device="cpu")
    assert Counter(job.cell for job in plan_sweep(entries, trained).jobs)["real"] > cells["real"]
    assert run.set_sizes["real:cifar10"] == 50_000 and run.set_sizes["syn:dm/cifar10/ipc10"] == 100


@pytest.fixture
def sweep_files(tmp_path) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    real = load_real("digits")
    entries = []
    for method in ("herding", "noise"):  # (at IPC 1 herding and k-center pick the same images)
        syn = generate(method, real, 1, seed=0)
        torch.save({"images": syn.images, "labels": syn.labels}, tmp_path / f"{method}.pt")
        entries.append(
            {"method": method, "dataset": "digits", "ipc": 1, "protocol": str(tmp_path / "tiny.yaml")}
            | {"images": str(tmp_path / f"{method}.pt")}
        )
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(entries))
    return tmp_path


def test_a_sweep_runs_every_entry_and_records_it(sweep_files, capsys):
    store, out = sweep_files / "results.sqlite", sweep_files / "sweep.json"
    args = ["sweep", sweep_files / "sweep.yaml", "--store", store, "--json", out, "--device", "cpu"]
    assert main([str(a) for a in [*args, "--no-progress"]]) == 0
    rows = json.loads(out.read_text())["evaluations"]
    assert [(r["method"], r["protocol"], r["ipc"]) for r in rows] == [
        ("herding", "tiny", 1),
        ("noise", "tiny", 1),
    ]
    assert rows[0]["acc_random_mean"] == rows[1]["acc_random_mean"]  # the shared random subsets
    with ResultStore(store) as results:
        assert {e["method"] for e in results.evaluations()} == {"herding", "noise"}
        assert results.job_count(cell="random") == 1 and results.job_count(cell="syn") == 2
    assert "herding/digits/ipc1: LRS" in capsys.readouterr().err


def test_plan_sizes_a_sweep_file(sweep_files, capsys):
    args = ["plan", "--sweep", sweep_files / "sweep.yaml", "--world-size", "1,2", "--device", "cpu"]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert f"sweep {sweep_files / 'sweep.yaml'}: 2 evaluations: 4 jobs" in out  # 2 syn, 1 random, 1 real
    assert "world size 1:" in out and "world size 2:" in out and "rank 1:" in out


def test_a_sweep_takes_the_fidelity_of_its_command_line(sweep_files, capsys):
    out = sweep_files / "reference.json"
    args = ["sweep", sweep_files / "sweep.yaml", "--no-store", "--json", out, "--device", "cpu"]
    assert main([str(a) for a in [*args, "--no-progress", "--fidelity", "reference"]]) == 0
    rows = json.loads(out.read_text())["evaluations"]
    assert {r["fidelity"] for r in rows} == {"reference"}
    assert "ddrank: deviation: " in capsys.readouterr().err


def _refused(capsys, args: list) -> str:
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err)
    return err


def test_a_sweep_checks_every_entry_before_the_first_one_trains(sweep_files, capsys, no_training):
    entries = yaml.safe_load((sweep_files / "sweep.yaml").read_text())
    bad = [entries[0], entries[1] | {"images": str(sweep_files / "missing.pt")}]
    (sweep_files / "bad.yaml").write_text(yaml.safe_dump(bad))
    err = _refused(capsys, ["sweep", sweep_files / "bad.yaml", "--no-store", "--device", "cpu"])
    assert "missing.pt" in err and "does not exist" in err
    wrong_ipc = [entries[0], entries[1] | {"ipc": 2}]  # the set holds 1 image per class
    (sweep_files / "ipc.yaml").write_text(yaml.safe_dump(wrong_ipc))
    _refused(capsys, ["sweep", sweep_files / "ipc.yaml", "--no-store", "--device", "cpu"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x80\x03binary", "is not a text (YAML) file"),
        (b"- {method: [unclosed", "is not valid YAML"),
        (b"- {method: herding, dataset: digits, ipc: 1, images: h.pt}", "'herding' is not a protocol preset"),
        (b"- {method: dsa, dataset: digits, ipc: 0}", "ipc must be a positive integer, got 0"),
        (b"- {method: dsa, dataset: digits, ipc: true}", "ipc must be a positive integer, got True"),
        (b"- {method: 3, dataset: digits, ipc: 1}", "method must be a non-empty text, got 3"),
        (b"- {method: dsa, dataset: digits, ipc: 1, images: ''}", "images must be a non-empty text"),
    ],
)
def test_a_bad_sweep_file_is_one_line(tmp_path, capsys, content, fragment):
    (tmp_path / "sweep.yaml").write_bytes(content)
    err = _refused(capsys, ["sweep", tmp_path / "sweep.yaml", "--no-store", "--device", "cpu"])
    assert fragment in err, err
    assert fragment in _refused(capsys, ["plan", "--sweep", tmp_path / "sweep.yaml", "--device", "cpu"])


def test_a_sweep_directory_is_named_as_one(tmp_path, capsys):
    err = _refused(capsys, ["sweep", tmp_path, "--no-store", "--device", "cpu"])
    assert "is a directory, not a file" in err


def test_a_sweep_never_writes_its_json_over_the_store_or_an_input(sweep_files, capsys):
    herding = sweep_files / "herding.pt"
    before = herding.read_bytes()
    common = ["sweep", sweep_files / "sweep.yaml", "--device", "cpu"]
    err = _refused(capsys, [*common, "--no-store", "--json", herding])
    assert "is the same file as the sweep's input" in err and herding.read_bytes() == before
    store = sweep_files / "results.sqlite"
    err = _refused(capsys, [*common, "--store", store, "--json", store])
    assert "is the results store" in err
    assert "is the same file as the sweep's input" in _refused(
        capsys, [*common, "--no-store", "--json", sweep_files / "sweep.yaml"]
    )

"""End-to-end evaluation on digits with a tiny protocol: the JSON is complete, internally consistent,
reproducible across processes, and the options for acc(real, hard) and reference selection behave.

In-process runs share one results store, so a run reuses every job an earlier one finished (as a
user's reruns do); the reproducibility test recomputes everything in a separate process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

import ddrank.evaluation.evaluator
from ddrank import RunSettings, __version__, rng
from ddrank.baselines import generate
from ddrank.cli import main
from ddrank.data.real import load_real
from ddrank.data.synthetic import SyntheticSet, load_synthetic
from ddrank.errors import ConfigError, InputError
from ddrank.evaluation import Evaluation, Evaluator, evaluate
from ddrank.metrics import label_robust_score
from ddrank.protocols import load_protocol
from ddrank.report.leaderboard import build_leaderboard
from ddrank.report.render import leaderboard_table
from ddrank.store import ResultStore

LR_GRID = [0.01, 0.1]
TINY = {
    "name": "tiny",
    "datasets": ["digits"],
    "protocol": {
        "model": "ConvNet-2-W16",
        "augment": {"dsa": "color_crop_cutout_scale_rotate", "dsa_mode": "S"},
        "epochs": 20,
        "batch_size": 256,
        "lr_grid": LR_GRID,
        "rounds": 2,
        "full_data": {"lr": 0.1, "epochs": 3, "batch_size": 128},
    },
}
ROW_FIELDS = [
    f"{score}_{stat}"
    for score in ("acc_syn", "acc_random", "acc_real", "hlr", "ior", "lrs")
    for stat in ("mean", "std", "ci_low", "ci_high")
]
ROUND_FIELDS = (
    "round",
    "seed",
    "acc_syn",
    "acc_random",
    "acc_real",
    "hlr",
    "ior",
    "lrs",
    "lr_syn",
    "lr_random",
)


def write_protocol(path: Path, **changes: Any) -> Path:
    doc = json.loads(json.dumps(TINY))
    doc["protocol"].update(changes)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evaluate")
    write_protocol(folder / "tiny.yaml")
    syn = generate("herding", load_real("digits"), 5, seed=0)
    torch.save({"images": syn.images, "labels": syn.labels}, folder / "herding.pt")
    return folder


def cli_args(
    workdir: Path, out: Path, *extra: str, protocol: str = "tiny.yaml", store: str | None = "shared.sqlite"
) -> list[str]:
    """``ddrank evaluate`` of the herding set; ``store`` is a results store in ``workdir`` (None: none)."""
    return [
        "evaluate",
        "--images",
        str(workdir / "herding.pt"),
        "--protocol",
        str(workdir / protocol),
        "--method",
        "herding",
        "--device",
        "cpu",
        "--no-progress",
        *(["--store", str(workdir / store)] if store else ["--no-store"]),
        "--json",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def result(workdir) -> dict[str, Any]:
    out = workdir / "seed0.json"
    assert main(cli_args(workdir, out, "--seed", "0")) == 0
    return json.loads(out.read_text())["evaluations"][0]


def select_honest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the best validation accuracy, the first one on ties."""
    best = runs[0]
    for run in runs[1:]:
        if run["val_acc"] > best["val_acc"]:
            best = run
    return best


# --- the JSON document ----------------------------------------------------------------------------


def test_json_row_has_every_field_with_fractions(result, workdir):
    assert (result["method"], result["dataset"], result["ipc"], result["rounds"]) == (
        "herding",
        "digits",
        5,
        2,
    )
    for name in ROW_FIELDS:
        assert isinstance(result[name], float), name
    for name in ("acc_syn_mean", "acc_random_mean", "acc_real_mean", "lrs_mean", "lrs_ci_low", "lrs_ci_high"):
        assert 0.0 <= result[name] <= 1.0, name
    for name in ("hlr_mean", "ior_mean"):
        assert -1.0 <= result[name] <= 1.0, name
    assert result["lrs_ci_low"] <= result["lrs_mean"] <= result["lrs_ci_high"]
    assert (result["std_ddof"], result["confidence"], result["weight"]) == (1, 0.95, 0.5)
    assert (result["selection"], result["optimistic"], result["acc_real_source"]) == (
        "honest",
        False,
        "trained",
    )
    expected = load_protocol(workdir / "tiny.yaml", dataset="digits", ipc=5)
    assert result["protocol"] == "tiny" and result["protocol_hash"] == expected.content_hash()
    provenance = result["provenance"]
    assert provenance["ddrank_version"] == __version__ and provenance["torch_version"] == torch.__version__
    assert provenance["protocol_hash"] == expected.content_hash() and provenance["base_seed"] == 0
    assert provenance["device"] == "cpu" and provenance["hardware"]
    assert provenance["data_fingerprint"] == load_real("digits").fingerprint
    assert len(provenance["synthetic_fingerprint"]) == 64


def test_every_round_is_traceable_and_consistent(result):
    rounds = result["per_round"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [r["seed"] for r in rounds] == [rng.derive_seed(0, r) for r in range(2)]
    for r in rounds:
        assert set(ROUND_FIELDS) <= set(r)
        assert set(r["runs"]) == {"syn", "random", "real"}
        for cell in ("syn", "random"):
            runs = r["runs"][cell]
            assert [run["lr"] for run in runs] == LR_GRID
            for run in runs:
                assert 0 <= run["test_acc"] <= 1 and 0 <= run["val_acc"] <= 1
                assert run["best_test_acc"] == run["test_acc"]  # honest mode records no checkpoints
        chosen_syn, chosen_random = select_honest(r["runs"]["syn"]), select_honest(r["runs"]["random"])
        assert (r["lr_syn"], r["acc_syn"]) == (chosen_syn["lr"], chosen_syn["test_acc"])
        assert (r["lr_random"], r["acc_random"]) == (chosen_random["lr"], chosen_random["test_acc"])
        (real_run,) = r["runs"]["real"]
        assert real_run["lr"] == 0.1 and real_run["val_acc"] is None
        assert r["acc_real"] == real_run["test_acc"]
        assert r["hlr"] == r["acc_real"] - r["acc_syn"]
        assert r["ior"] == r["acc_syn"] - r["acc_random"]
        assert r["lrs"] == label_robust_score(r["hlr"], r["ior"], 0.5)
        assert 0 <= r["lrs"] <= 1


def test_summaries_match_the_rounds(result):
    for score in ("acc_syn", "acc_random", "acc_real", "hlr", "ior", "lrs"):
        values = np.array([r[score] for r in result["per_round"]])
        assert result[f"{score}_mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert result[f"{score}_std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
        half = 12.706204736174707 * values.std(ddof=1) / math.sqrt(2)  # t(0.975, df=1)
        assert result[f"{score}_ci_low"] == pytest.approx(values.mean() - half, abs=1e-9)
        assert result[f"{score}_ci_high"] == pytest.approx(values.mean() + half, abs=1e-9)


def test_the_tiny_protocol_learns_something(result):
    assert result["acc_real_mean"] > 0.5 and result["acc_syn_mean"] > 0.3 and result["acc_random_mean"] > 0.3


# --- reproducibility ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_json_in_separate_processes(result, workdir, ddrank_processes):
    out = workdir / "process.json"
    ddrank_processes().run(*cli_args(workdir, out, "--seed", "0", store=None))  # trains everything anew
    assert out.read_bytes() == (workdir / "seed0.json").read_bytes()  # as this process wrote it
    assert json.loads(out.read_bytes())["evaluations"][0] == result


def test_a_different_seed_changes_the_numbers(result, workdir):
    out = workdir / "seed1.json"
    assert main(cli_args(workdir, out, "--seed", "1", "--rounds", "1")) == 0
    other = json.loads(out.read_text())["evaluations"][0]
    (first,) = other["per_round"]
    assert first["seed"] == rng.derive_seed(1, 0) != result["per_round"][0]["seed"]
    same_round = result["per_round"][0]
    for name in ("acc_syn", "acc_random", "acc_real"):
        assert first[name] != same_round[name], name
    assert other["provenance"]["base_seed"] == 1


def test_python_api_takes_tensors_and_protocol_objects(workdir):
    saved = torch.load(workdir / "herding.pt", weights_only=True)
    proto = load_protocol("digits").with_overrides(
        epochs=10, lr_grid=[0.05], rounds=1, full_data={"lr": 0.1, "epochs": 2, "batch_size": 128}
    )
    evaluation = evaluate(saved["images"], saved["labels"], protocol=proto, method="api", device="cpu")
    row = evaluation.row()
    assert (row["method"], row["ipc"], row["rounds"], row["protocol"]) == ("api", 5, 1, "digits")
    resolved = proto.model_copy(update={"ipc": 5})  # resolved for the set's IPC
    assert row["protocol_hash"] == evaluation.protocol_hash == resolved.content_hash() != proto.content_hash()
    assert row["lrs_std"] is None and row["lrs_ci_low"] is None  # one round: no spread
    (only,) = evaluation.to_dict()["per_round"]
    assert only["lr_syn"] == only["lr_random"] == 0.05


# --- acc(real, hard) options ----------------------------------------------------------------------


def test_given_real_accuracy_is_used_as_is_and_nothing_full_data_trains(workdir, capsys):
    out = workdir / "given.json"
    assert main(cli_args(workdir, out, "--real-acc", "0.9")) == 0
    given = json.loads(out.read_text())["evaluations"][0]
    assert given["acc_real_source"] == "given"
    assert given["acc_real_mean"] == 0.9
    for r in given["per_round"]:
        assert r["acc_real"] == 0.9 and "real" not in r["runs"]
        assert r["hlr"] == 0.9 - r["acc_syn"]


def test_real_accuracy_in_percent_is_refused_with_a_hint(workdir, capsys):
    assert main(cli_args(workdir, workdir / "percent.json", "--real-acc", "90")) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddrank: error: --real-acc must be a fraction in [0, 1]")
    assert "not percentages: 90% is 0.9" in err
    assert not (workdir / "percent.json").exists()


def test_published_real_accuracy_without_a_published_value_is_an_error(workdir, capsys):
    assert main(cli_args(workdir, workdir / "published.json", "--real-acc", "published")) == 2
    err = capsys.readouterr().err
    assert "protocol 'tiny' has no published full-data accuracy for 'digits'" in err
    assert "give acc(real, hard) as a fraction" in err


def write_fake_cifar10(root: Path, per_class: int = 10, test_per_class: int = 2) -> None:
    """A CIFAR-10 python-pickle tree with ``per_class`` training images per class."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)

    def batch(labels: list[int]) -> dict[bytes, Any]:
        data = generator.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return {b"data": data, b"labels": labels, b"batch_label": b"fake"}

    train = [cls for cls in range(10) for _ in range(per_class)]
    chunks = [train[i::5] for i in range(5)]
    files = {f"data_batch_{i + 1}": batch(chunk) for i, chunk in enumerate(chunks)}
    files["test_batch"] = batch([cls for cls in range(10) for _ in range(test_per_class)])
    files["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))


def test_published_real_accuracy_of_a_preset_is_used_and_labelled(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path)
    cells: list[str] = []
    run_jobs = ddrank.evaluation.evaluator.run_jobs

    def spy(jobs, *args, **kwargs):
        cells.extend(job.cell for job in jobs)
        return run_jobs(jobs, *args, **kwargs)

    monkeypatch.setattr(ddrank.evaluation.evaluator, "run_jobs", spy)
    proto = load_protocol("dsa", dataset="cifar10").with_overrides(
        model="ConvNet-1-W8", epochs=2, lr_grid=[0.01], rounds=2
    )
    assert proto.full_data.published_acc == 0.848
    settings = RunSettings(
        dataset="cifar10", protocol=proto, data_root=tmp_path, real_acc="published", device="cpu"
    )
    evaluator = Evaluator(settings)
    syn = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    evaluation = evaluator.evaluate_sets({"noise": evaluator.validate(evaluator_set(syn), ipc=1)})[0]
    row = evaluation.row()
    assert row["acc_real_mean"] == 0.848
    assert row["acc_real_source"] == (
        "published: ConvNet-3 on CIFAR-10, 84.8 ± 0.1 (DD-Ranking full-data baseline)"
    )
    assert all(r.values["acc_real"] == 0.848 and "real" not in r.runs for r in evaluation.rounds)
    assert cells and "real" not in cells and set(cells) == {"syn", "random"}


def evaluator_set(images: torch.Tensor) -> SyntheticSet:
    return load_synthetic(images, space="normalized")


# --- reference selection --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(workdir) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """One round under reference selection through the command line: its JSON, its terminal output and
    every job it stored."""
    write_protocol(workdir / "reference.yaml", selection="reference", eval_every=5)
    out, printed = workdir / "reference.json", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            main(cli_args(workdir, out, "--rounds", "1", protocol="reference.yaml", store="reference.sqlite"))
            == 0
        )
    with ResultStore(workdir / "reference.sqlite") as store:
        jobs = store.jobs()
    return json.loads(out.read_text())["evaluations"][0], printed.getvalue(), jobs


def test_reference_selection_is_labelled_optimistic_in_json_and_table(reference):
    row, table, _ = reference
    assert "herding *" in table and "* herding: optimistic" in table
    assert (row["selection"], row["optimistic"]) == ("reference", True)
    for r in row["per_round"]:
        for cell, reported in (("syn", r["acc_syn"]), ("random", r["acc_random"])):
            runs = r["runs"][cell]
            assert all(run["val_acc"] is None for run in runs)  # no validation split is used
            assert all(run["best_test_acc"] >= run["test_acc"] for run in runs)
            assert reported == max(run["best_test_acc"] for run in runs)
    rows = build_leaderboard([Evaluation.from_dict(row)])
    honest = Console(file=io.StringIO(), width=200)
    honest.print(leaderboard_table([dict(rows[0], optimistic=False)]))
    assert "optimistic" not in honest.file.getvalue()


def test_reference_selection_reports_the_best_test_checkpoint_over_lrs(reference):
    row, _, jobs = reference
    (only,) = Evaluation.from_dict(row).rounds
    curves = {
        (job["test_acc"], max(acc for _, acc in job["curve"])): [epoch for epoch, _ in job["curve"]]
        for job in jobs
        if job["cell"] in ("syn", "random")
    }
    assert all(epochs == [5, 10, 15, 20] for epochs in curves.values())
    for run in only.runs["syn"] + only.runs["random"]:
        assert (run.test_acc, run.best_test_acc) in curves
    assert only.values["acc_syn"] == max(run.best_test_acc for run in only.runs["syn"])
    assert only.values["acc_random"] == max(run.best_test_acc for run in only.runs["random"])


# --- protocol objects -----------------------------------------------------------------------------


def test_protocol_objects_resolve_like_presets():
    evaluator = Evaluator(RunSettings(protocol=load_protocol("digits"), device="cpu"))
    for ipc in (1, 10):
        preset = load_protocol("digits", dataset="digits", ipc=ipc)
        assert evaluator.protocol_for(ipc) == preset
        assert evaluator.protocol_for(ipc).content_hash() == preset.content_hash()
    assert evaluator.protocol_for(1).content_hash() != evaluator.protocol_for(10).content_hash()


def test_protocol_objects_for_another_dataset_or_ipc_are_refused(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started on a mismatched protocol")

    monkeypatch.setattr(ddrank.evaluation.evaluator, "run_jobs", refuse)
    syn = torch.zeros(10, 1, 8, 8)
    with pytest.raises(ConfigError, match="protocol 'dsa' was resolved for dataset 'cifar10', not 'digits'"):
        evaluate(syn, protocol=load_protocol("dsa", dataset="cifar10"), device="cpu")
    with pytest.raises(ConfigError, match="protocol 'digits' was resolved for IPC 10, but the set has IPC 1"):
        evaluate(syn, protocol=load_protocol("digits", dataset="digits", ipc=10), device="cpu")


def test_evaluate_json_follows_the_published_schema(result, workdir):
    import jsonschema

    from ddrank.report.payload import schema

    document = json.loads((workdir / "seed0.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(document)
    assert document["evaluations"][0] == result and document["schema_version"] == 1


def test_a_smoke_run_is_labelled_and_never_ranked_with_the_full_run(result, workdir, capsys):
    from ddrank.evaluation import recorded_evaluations
    from ddrank.report.leaderboard import build_leaderboard

    out = workdir / "smoke.json"
    assert main(cli_args(workdir, out, "--epochs", "1", "--rounds", "1")) == 0
    smoke = json.loads(out.read_text())["evaluations"][0]
    assert smoke["smoke"] is True and smoke["provenance"]["smoke"]["epochs"] == 1
    assert smoke["protocol_hash"] != result["protocol_hash"]  # the epochs are part of the protocol
    with ResultStore(workdir / "shared.sqlite") as store:
        rows = build_leaderboard(recorded_evaluations(store, method="herding"))
    groups = {(r["protocol_hash"], r["smoke"]) for r in rows}
    assert (smoke["protocol_hash"], True) in groups and (result["protocol_hash"], False) in groups
    assert all(r["rank"] == 1 for r in rows)  # each alone in its group


def test_plan_counts_the_jobs_already_in_the_store(result, workdir, capsys):
    args = [
        "plan",
        "--images",
        workdir / "herding.pt",
        "--protocol",
        workdir / "tiny.yaml",
        "--device",
        "cpu",
    ]
    assert main([str(a) for a in [*args, "--seed", "0", "--store", workdir / "shared.sqlite"]]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"(\d+) of (\d+) jobs are already in", out).group(2))
    assert f"{total} of {total} jobs are already in" in out and "0 to train" in out


def test_a_set_whose_classes_differ_in_size_is_said_and_its_random_subsets_match_it(capsys):
    """95 images, class 9 holding 5: scored against random subsets of the same per-class counts (not 100
    images), said in one warning, recorded in the provenance, and refused under strict."""
    real = load_real("digits")
    keep = torch.cat(
        [torch.nonzero(real.train_labels == c).flatten()[: 5 if c == 9 else 10] for c in range(10)]
    )
    syn = load_synthetic(real.train_images[keep].float() / 255, real.train_labels[keep], space="pixel")
    evaluator = Evaluator(RunSettings(protocol="digits", device="cpu"))
    checked = evaluator.validate(syn)
    (warning,) = [str(w) for w in checked.warnings]
    assert "classes hold 5..10 images (class 9: 5; 95 in all, not 10 of each)" in warning
    assert "listed as IPC 10" in warning and checked.ipc == 10
    jobs, data, _ = evaluator.plan({"uneven": checked}, dry_run=True)
    randoms = {j.train_set for j in jobs if j.cell.startswith("random")}
    assert randoms and all(
        torch.bincount(data.train_sets[name].labels.cpu(), minlength=10).tolist() == [10] * 9 + [5]
        for name in randoms
    )
    assert evaluator._provenance(checked, evaluator.protocol_for(10))["class_counts"] == [10] * 9 + [5]
    with pytest.raises(InputError, match=r"5\.\.10 images.*refused by --strict"):
        evaluator.validate(syn, strict=True)


def test_a_named_dataset_of_the_wrong_size_is_said_before_training(tmp_path, capsys, no_training):
    """A half-extracted CIFAR-10 (100 training images) gives numbers that look publishable: say so."""
    write_fake_cifar10(tmp_path)
    torch.save(torch.rand(10, 3, 32, 32), tmp_path / "set.pt")
    args = [
        "evaluate",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "--images",
        str(tmp_path / "set.pt"),
    ]
    args += ["--space", "pixel", "--real-acc", "0.8", "--no-store", "--no-progress"]
    assert main(args) == 1  # the no_training guard stops it where training would start
    err = capsys.readouterr().err
    assert "training started" in err
    assert "dataset 'cifar10' holds 100 training images, not the 50,000 of its standard split" in err
    assert main([*args, "--strict"]) == 2
    assert "standard split" in (err := capsys.readouterr().err) and "refused by --strict" in err
    evaluator = Evaluator(RunSettings(device="cpu"))  # digits: the standard split, nothing to say
    assert not evaluator.validate(load_synthetic(torch.randn(100, 1, 8, 8), space="normalized")).warnings

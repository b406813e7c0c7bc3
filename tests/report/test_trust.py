"""Results a reader can trust: each number under its own name, never ranked across groups, history kept
and removable, intervals inside their bounds, and the neutral point of every score shown."""

from __future__ import annotations

import json
import re

import pytest

from ddrank.evaluation import Evaluation, recorded_evaluations
from ddrank.metrics import label_robust_score
from ddrank.metrics.scores import NEUTRAL_SCORE
from ddrank.names import default_method
from ddrank.report.html import _ipc_series, _label_pairs
from ddrank.report.leaderboard import (
    LeaderboardError,
    Selection,
    build_leaderboard,
    compare_methods,
    group_candidates,
)
from ddrank.report.plots import label_gap_figure
from ddrank.report.render import FORMATS, plain_text, render, student_table
from ddrank.store import ResultStore

from .test_leaderboard import SEEDS, ars_evaluation, demo_like, evaluation, markdown_tables, run_cli


# 1. one set under several students: each student's name on its own score
def test_student_matrix_puts_each_name_on_its_own_score():
    accuracies = {"ConvNet-2-W16": 0.70, "MLP": 0.90, "ConvNet-2-W16-BN": 0.50}  # not in score order
    results = []
    for student, acc in accuracies.items():
        e = evaluation("herding", acc, protocol_hash=f"hash-{student}")
        e.student = student
        results.append(e)
    rows = build_leaderboard(results)
    assert {r["student"]: r["acc_syn"] for r in rows} == pytest.approx(accuracies, abs=0.01)
    text = plain_text(student_table(rows))
    for result in results:
        line = next(line for line in text.splitlines() if line.split() and line.split()[0] == result.student)
        assert f"{100 * result.summaries['lrs'].mean:.2f}" in line
        assert f"{100 * result.summaries['acc_syn'].mean:.2f}" in line


# 2. groups: dataset, IPC, protocol + hash, fidelity, labels and student are never mixed
def _two_label_modes() -> list:
    out = []
    for labels, protocol, digest, shift in (
        ("hard", "digits", "aaaa1111", 0.0),
        ("S", "digits-kd", "bbbb2222", 0.1),
    ):
        for method, acc in (("dm", 0.80), ("herding", 0.70)):
            e = evaluation(method, acc + shift, protocol=protocol, protocol_hash=digest)
            e.labels = labels
            out.append(e)
    return out


def test_leaderboard_ranks_each_group_apart_and_filters_by_group_fields():
    rows = build_leaderboard(_two_label_modes())
    assert [(r["protocol"], r["labels"], r["method"], r["rank"]) for r in rows] == [
        ("digits", "hard", "dm", 1),
        ("digits", "hard", "herding", 2),
        ("digits-kd", "S", "dm", 1),
        ("digits-kd", "S", "herding", 2),
    ]
    assert {r["labels"] for r in build_leaderboard(_two_label_modes(), selection=Selection(labels="s"))} == {
        "S"
    }
    assert {
        r["protocol"] for r in build_leaderboard(_two_label_modes(), selection=Selection(protocol="bbbb"))
    } == {"digits-kd"}
    assert build_leaderboard(_two_label_modes(), selection=Selection(student="MLP")) == []
    text = render(rows, "table", wide=True)
    assert "protocol digits (aaaa1111) · honest · hard labels · ConvNet-2-W16" in text
    assert "protocol digits-kd (bbbb2222) · honest · S labels · ConvNet-2-W16" in text


def test_compare_refuses_to_choose_a_group_and_names_the_one_it_compares(capsys, tmp_path):
    with pytest.raises(LeaderboardError, match=r"2 groups .*digits-kd.*choose one with .*--labels"):
        compare_methods(_two_label_modes(), "dm", "herding")
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for e in _two_label_modes():
            store.record_evaluation(e.to_dict())
    code, _, err = run_cli(capsys, "compare", "dm", "herding", "--store", path)
    assert code == 2 and "hard labels" in err and "S labels" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "compare", "dm", "herding", "--store", path, "--labels", "S")
    assert code == 0, err
    assert "group: digits · IPC 10 · protocol digits-kd (bbbb2222) · honest · S labels" in out
    code, out, _ = run_cli(capsys, "leaderboard", "--store", path, "--protocol", "digits")
    assert code == 0 and "digits-kd" not in out


def _smoke(e: Evaluation) -> Evaluation:
    e.provenance["smoke"] = {"epochs": 5, "protocol_epochs": 50}
    return e


def test_a_smoke_run_never_joins_a_full_run_of_the_same_protocol_content(capsys, tmp_path):
    # ddrank.evaluate with a protocol whose content equals --quick's gives the same protocol hash
    full = [evaluation(m, acc) for m, acc in (("A", 0.80), ("B", 0.75), ("C", 0.50))]
    smoke = [_smoke(evaluation(m, acc)) for m, acc in (("A", 0.70), ("B", 0.72))]
    rows = build_leaderboard(smoke + full)
    assert [(r["method"], r["smoke"], r["rank"]) for r in rows] == [
        ("A", False, 1),
        ("B", False, 2),
        ("C", False, 3),
        ("B", True, 1),
        ("A", True, 2),
    ]
    assert len(group_candidates(rows)) == 2 and group_candidates(rows)[1].endswith(" · smoke run")
    assert rows[3]["stability_tau"] == pytest.approx(1.0)  # over the two smoke runs: B beats A every round
    document = json.loads(render(rows, "json"))
    assert [g["group"]["smoke"] for g in document["groups"]] == [False, True]
    assert [len(g["rows"]) for g in document["groups"]] == [3, 2]
    with pytest.raises(LeaderboardError, match=r"2 groups .*smoke run.*--smoke/--no-smoke"):
        compare_methods(smoke + full, "A", "B")
    assert compare_methods(smoke + full, "A", "B", selection=Selection(smoke=True)).group_label.endswith(
        "smoke run"
    )
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for e in smoke + full:
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "leaderboard", "--store", path, "--no-smoke")
    assert code == 0 and "smoke" not in out and re.search(r"^3 +C ", out, re.MULTILINE), err
    code, out, err = run_cli(capsys, "compare", "A", "B", "--store", path, "--smoke")
    assert code == 0 and "smoke run" in out, err
    code, out, err = run_cli(capsys, "compare", "A", "C", "--store", path, "--smoke")
    assert code == 2 and "(smoke runs)" in err


# 3. history: a rerun with fewer rounds is kept beside the earlier one, which is marked and removable
def test_rerun_with_fewer_rounds_is_marked_history_is_listed_and_rm_removes_by_id(capsys, tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.record_evaluation(evaluation("herding", 0.7).to_dict())
        store.record_evaluation(evaluation("herding", 0.6, seeds=SEEDS[:2]).to_dict())
        store.record_evaluation(evaluation("dm", 0.8).to_dict())
        jobs = store.job_count()
    code, out, _ = run_cli(capsys, "leaderboard", "--store", path, "--format", "json")
    rows = {r["method"]: r for r in json.loads(out)["groups"][0]["rows"]}
    assert rows["herding"]["rounds"] == 2 and rows["herding"]["earlier_rounds"] == 5
    assert rows["dm"]["earlier_rounds"] is None
    code, out, _ = run_cli(capsys, "leaderboard", "--store", path)
    assert re.search(r"herding \*.*\n\* herding: an earlier evaluation had 5 rounds", out, re.DOTALL)
    code, out, _ = run_cli(capsys, "leaderboard", "--store", path, "--all", "--format", "json")
    history = json.loads(out)["groups"][0]["rows"]
    assert [(r["method"], r["rounds"], r["latest"]) for r in history] == [
        ("dm", 5, True),
        ("herding", 2, True),
        ("herding", 5, False),
    ]
    old = history[2]["evaluation_id"]
    code, _, err = run_cli(capsys, "rm", old, "--store", path)  # not a terminal: needs --yes
    assert code == 2 and "--yes" in err
    code, out, err = run_cli(capsys, "rm", old, "--store", path, "--yes")
    assert code == 0, err
    assert f"#{old} herding" in out and "removed 1 evaluation" in out
    with ResultStore(path) as store:
        assert len(store.evaluations()) == 2 and store.job_count() == jobs
    code, _, err = run_cli(capsys, "rm", old, "--store", path, "--yes")
    assert code == 2 and f"id {old}" in err
    code, out, _ = run_cli(capsys, "rm", "--method", "dm", "--store", path, "--yes")
    assert code == 0 and "removed 1" in out


def test_method_defaults_to_the_file_or_folder_name():
    assert default_method("runs/herding.pt") == "herding"
    assert default_method("runs/DATM_CIFAR10_ipc10/") == "DATM_CIFAR10_ipc10"
    assert default_method("runs/mtt/images.pt") == "mtt"


def test_rm_lists_each_evaluation_with_its_metric_within_80_columns_and_filters_by_metric(capsys, tmp_path):
    path = tmp_path / "r.sqlite"
    smoke = _smoke(evaluation("herding", 0.7, metric="acc"))
    with ResultStore(path) as store:
        for e in (evaluation("herding", 0.7), smoke, ars_evaluation("herding", 0.05)):
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "rm", "--method", "herding", "--store", path)
    assert code == 2 and "3 evaluation(s) would be removed" in err
    lines = out.splitlines()
    heads = [line for line in lines if line.startswith("#")]
    assert [line.split(" · ")[1] for line in heads] == ["ARS", "acc(syn)", "LRS"]  # newest first
    assert all(len(line) <= 80 for line in lines) and len(lines) > len(heads), out
    assert all(line.startswith("    ") for line in lines if not line.startswith("#"))
    assert "ConvNet-2-W16 · smoke run" in out
    code, out, err = run_cli(capsys, "rm", "--method", "herding", "--metric", "acc", "--store", path, "--yes")
    assert code == 0 and "removed 1 evaluation" in out and " · acc(syn) · " in out, err
    with ResultStore(path) as store:
        assert sorted(e["metric"] for e in store.evaluations()) == ["ars", "lrs"]
    code, _, err = run_cli(capsys, "rm", "--metric", "acc", "--store", path, "--yes")
    assert code == 2 and "no recorded evaluation matches" in err


# 4. intervals of bounded quantities stay in their bounds
def test_accuracy_intervals_stay_within_zero_and_one():
    e = evaluation("near-perfect", [1.0, 0.85, 1.0], seeds=(1, 2, 3), acc_random=0.02, acc_real=1.0)
    row = e.row()
    assert (
        row["acc_syn_mean"] + (row["acc_syn_mean"] - row["acc_syn_ci_low"]) > 1
    )  # the t-interval would exceed
    assert row["acc_syn_ci_high"] == 1.0 and row["acc_random_ci_low"] >= 0.0
    for name, summary in e.summaries.items():
        low, high = (-1.0, 1.0) if name in ("hlr", "ior") else (0.0, 1.0)
        assert low <= summary.ci_low <= summary.ci_high <= high, name


def test_a_clipped_interval_is_printed_as_it_is_never_as_a_half_width():
    clipped = evaluation("A", [0.95, 0.99], seeds=(1, 2), acc_random=0.5)  # t-interval [71.59, 114.41]
    plain = evaluation("B", [0.60, 0.62], seeds=(1, 2), acc_random=0.5)
    rows = build_leaderboard([clipped, plain], metric="acc")
    assert rows[0]["ci_high"] == 1.0 and rows[0]["mean"] - rows[0]["ci_low"] > 1.0 - rows[0]["mean"]
    for text in (render(rows, "table"), render(rows, "table", wide=True), plain_text(student_table(rows))):
        assert "97.00 [71.59, 100.00]" in text and "97.00 ±" not in text
        assert "61.00 ± 12.71" in text  # a symmetric interval keeps its ±


# 5. where "no better than random" lies
def test_neutral_score_is_shown_beside_every_score():
    assert label_robust_score(0.0, 0.0) == pytest.approx(NEUTRAL_SCORE) == pytest.approx(0.2689, abs=1e-4)
    neutral = evaluation("as-good-as-random", 0.9, acc_random=0.9, acc_real=0.9, jitter=0.0)
    rows = build_leaderboard([neutral])
    assert rows[0]["mean"] == pytest.approx(NEUTRAL_SCORE)
    assert rows[0]["neutral"] == pytest.approx(NEUTRAL_SCORE) and rows[0]["vs_neutral"] == pytest.approx(0.0)
    text = render(rows, "table")
    assert "+0.00" in text and "LRS 26.89 is neutral" in text
    assert "Δ neutral (pp)" in render(rows, "md")


def test_the_lrs_neutral_point_is_not_called_random_since_a_random_subset_scores_below_it():
    random_subset = evaluation("random", 0.6, acc_random=0.6, acc_real=0.95, jitter=0.0)  # IOR 0, HLR > 0
    rows = build_leaderboard([random_subset])
    assert rows[0]["vs_neutral"] < 0
    for fmt in ("table", "latex", "html"):
        text = " ".join(render(rows, fmt).replace("&gt;", ">").replace("\\textgreater{}", ">").split())
        assert "no better than random" not in text, fmt
        assert "a random real subset (IOR = 0, HLR > 0) scores below it" in text, fmt
    ars = build_leaderboard([ars_evaluation("A", 0.0)], metric="ars")
    for fmt in ("table", "latex", "html"):
        assert "no better than random" in render(ars, fmt), fmt


# 6. the weight (w of LRS, γ of ARS) is part of the group: scores of different weights are never ranked,
# compared or replaced by one another
def weighted(method: str, acc_syn: float, weight: float, **fields) -> Evaluation:
    """An LRS evaluation (acc(rand) 0.50, acc(real) 0.95, two rounds) scored with weight ``weight``."""
    data = evaluation(method, [acc_syn, acc_syn + 0.01], seeds=SEEDS[:2], acc_random=0.5, **fields).to_dict()
    data["weight"] = weight
    for values in data["per_round"]:
        values["lrs"] = label_robust_score(values["hlr"], values["ior"], weight)
    return Evaluation.from_dict(data)


def test_evaluations_with_different_weights_are_ranked_apart_and_the_weight_is_shown(capsys, tmp_path):
    a, b = weighted("A", 0.605, 0.5), weighted("B", 0.55, 0.9)  # B's higher LRS is only its weight
    assert b.summaries["lrs"].mean > a.summaries["lrs"].mean
    rows = build_leaderboard([a, b])
    assert [(r["method"], r["rank"], r["weight"]) for r in rows] == [("A", 1, 0.5), ("B", 1, 0.9)]
    text = render(rows, "table")
    assert "ConvNet-2-W16 · w = 0.9\n" in text and "w = 0.5" not in text
    tables = list(markdown_tables(render(rows, "md")).items())
    assert tables[1][0].endswith("· w = 0.9") and not tables[0][0].endswith("w = 0.5")
    assert "w = 0.9" not in tables[1][1][2]  # under a heading that says it, B's row need not repeat it
    assert [g["group"]["weight"] for g in json.loads(render(rows, "json"))["groups"]] == [0.5, 0.9]
    with pytest.raises(LeaderboardError, match="no evaluation in the same group.*w = 0.9"):
        compare_methods([a, b], "A", "B")
    # ARS names its weight γ; accuracy takes none, so the weight does not split its groups
    assert "γ = 0.7" in render([dict(rows[0], metric="ars", weight=0.7)], "table")
    assert [(r["method"], r["rank"], r["weight"]) for r in build_leaderboard([a, b], metric="acc")] == [
        ("A", 1, None),
        ("B", 2, None),
    ]
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for e in (a, b):
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "leaderboard", "--store", path, "--weight", "0.9")
    assert code == 0 and "B" in out and " A " not in out, err


def test_the_store_keeps_one_set_scored_with_two_weights_and_replaces_each_by_its_rerun():
    with ResultStore(":memory:") as store:
        first = store.record_evaluation(weighted("A", 0.6, 0.5).to_dict())
        store.record_evaluation(weighted("A", 0.6, 0.9).to_dict())
        assert sorted(e["weight"] for e in store.evaluations()) == [0.5, 0.9]
        store.record_evaluation(weighted("A", 0.6, 0.9).to_dict())  # a rerun replaces its own weight only
        records = store.evaluation_records()
        assert sorted(r["payload"]["weight"] for r in records) == [0.5, 0.9]
        assert first in {r["id"] for r in records}


# 7. an acc(real, hard) that was given (--real-acc) or published is never ranked with a trained one, and is
# shown as such
def with_real(method: str, acc_real: float, source: str) -> Evaluation:
    data = evaluation(method, 0.61, acc_real=acc_real, jitter=0.0).to_dict()
    data["acc_real_source"] = source
    return Evaluation.from_dict(data)


def test_given_and_trained_real_accuracies_are_ranked_apart_and_a_given_one_is_shown(capsys, tmp_path):
    trained, given = with_real("A", 0.95, "trained"), with_real("B", 0.70, "given")
    published = with_real("C", 0.848, "published: ConvNet-3 on CIFAR-10, 84.8 ± 0.1")
    rows = build_leaderboard([trained, given, published])
    assert sorted((r["method"], r["rank"], r["acc_real_source"], r["acc_real_given"]) for r in rows) == [
        ("A", 1, "trained", None),
        ("B", 1, "given", pytest.approx(0.70)),
        ("C", 1, "published: ConvNet-3 on CIFAR-10, 84.8 ± 0.1", pytest.approx(0.848)),
    ]
    text = render(rows, "table")
    assert "ConvNet-2-W16 · acc(real) 70.00% given\n" in text
    assert "acc(real) 84.80% published: ConvNet-3 on CIFAR-10, 84.8 ± 0.1" in text
    assert "ConvNet-2-W16\n" in text  # the trained group says nothing more
    md = {
        line.split(" | ")[1]: line
        for lines in markdown_tables(render(rows, "md")).values()
        for line in lines[2:]
    }
    assert "| 70.00 (given) |" in md["B"] and "| 84.80 (published) |" in md["C"] and "| 95.00 |" in md["A"]
    assert "70.00 (given)" in render(rows, "table", wide=True)
    assert {g["group"]["acc_real_source"] for g in json.loads(render(rows, "json"))["groups"]} == {
        "trained",
        "given",
        "published: ConvNet-3 on CIFAR-10, 84.8 ± 0.1",
    }
    two_given = build_leaderboard([given, with_real("D", 0.72, "given")])
    assert len(group_candidates(two_given)) == 2  # two given values: two groups
    assert len(group_candidates(build_leaderboard([trained, given], metric="acc"))) == 1  # acc: not used
    with pytest.raises(LeaderboardError, match="no evaluation in the same group"):
        compare_methods([trained, given], "A", "B")
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:  # the same set with a trained and a given acc(real): both are kept
        store.record_evaluation(trained.to_dict())
        store.record_evaluation(with_real("A", 0.70, "given").to_dict())
        assert sorted(e["acc_real_source"] for e in store.evaluations()) == ["given", "trained"]
    code, out, err = run_cli(capsys, "leaderboard", "--store", path, "--acc-real", "given")
    assert code == 0 and "acc(real) 70.00% given" in out and "ConvNet-2-W16\n" not in out, err


# 8. results under reference selection are marked optimistic in every output, and in compare
def test_reference_selection_is_marked_optimistic_in_every_output_and_in_compare(capsys, tmp_path):
    optimistic = [evaluation(m, acc, selection="reference") for m, acc in (("dm", 0.8), ("herding", 0.7))]
    rows = build_leaderboard(optimistic)
    for fmt in FORMATS:
        assert "optimistic" in render(rows, fmt), fmt
    assert "dm (optimistic)" in render(rows, "latex") and "herding (optimistic)" in render(rows, "paper-md")
    assert all("reference selection" in render(rows, fmt) for fmt in ("latex", "paper-md"))
    honest = [evaluation("dm", 0.8), evaluation("herding", 0.7)]
    for fmt in ("latex", "paper-md", "md", "table"):
        assert "optimistic" not in render(build_leaderboard(honest), fmt), fmt
    assert compare_methods(optimistic, "dm", "herding").optimistic
    assert not compare_methods(honest, "dm", "herding").optimistic
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for e in optimistic:
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "compare", "dm", "herding", "--store", path)
    assert code == 0 and "LRS (optimistic)" in out and "reference selection" in out, err


# 9. compare says which rounds it left out: it covers the shared seeds only
def test_compare_names_the_rounds_it_leaves_out(capsys, tmp_path):
    a = evaluation("A", [0.60, 0.61, 0.62, 0.40, 0.41], seeds=(1, 2, 3, 4, 5), acc_random=0.5)
    b = evaluation("B", [0.55, 0.56, 0.57], seeds=(1, 2, 3), acc_random=0.5)
    assert [r["method"] for r in build_leaderboard([a, b])] == ["B", "A"]  # A's last rounds pull it down
    comparison = compare_methods([a, b], "A", "B")
    assert comparison.seeds == (1, 2, 3) and comparison.left_out == ((4, 5), ())
    assert compare_methods([a, b], "B", "A").left_out == ((), (4, 5))
    assert compare_methods([a, evaluation("C", 0.5, seeds=(1, 2, 3, 4, 5))], "A", "C").left_out == ((), ())
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        for e in (a, b):
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "compare", "A", "B", "--store", path)
    assert code == 0, err
    assert "3 rounds matched by seed (paired t-test); the shared seeds only" in out
    assert "left out: 2 of 5 rounds of A (seed 4, 5), which B did not run" in out
    assert "A scores higher on the shared seeds" in out
    assert max(len(line) for line in out.splitlines()) <= 80, out  # the long lines continue, indented
    lines = out.splitlines()
    after = lines[next(i for i, line in enumerate(lines) if line.startswith("left out: ")) + 1]
    assert after.startswith(" " * len("left out: ")) and after.strip()  # continued under its label


# 10. the page's plots across groups never mix protocols, nor a smoke run with a full one
def _accuracies(method: str, acc_syn: float, acc_random: float = 0.5, **fields) -> Evaluation:
    return evaluation(method, [acc_syn, acc_syn + 0.01], seeds=SEEDS[:2], acc_random=acc_random, **fields)


def test_label_gap_plots_pair_one_hard_protocol_with_one_soft_protocol():
    dc = _accuracies("A", 0.60, protocol="dc", protocol_hash="1111111111111111")
    dsa = _accuracies("A", 0.52, protocol="dsa", protocol_hash="2222222222222222")
    kd = _accuracies("A", 0.58, protocol="kd", protocol_hash="3333333333333333")
    kd.labels = "M"
    pairs = _label_pairs(build_leaderboard([dc, dsa, kd]))
    assert [({r["protocol"] for r in hard}, {r["protocol"] for r in soft}) for _, hard, soft in pairs] == [
        ({"dc"}, {"kd"}),
        ({"dsa"}, {"kd"}),
    ]
    captions = [caption for caption, _, _ in pairs]
    assert "hard labels: protocol dc (11111111) · M labels: protocol kd (33333333)" in captions[0]
    assert "hard labels: protocol dsa (22222222)" in captions[1]
    for _, hard, soft in pairs:  # each bar is its own protocol's acc(syn) − acc(rand)
        bars = [p.get_width() for p in label_gap_figure(hard, soft).axes[0].patches]
        expected = [100 * (rows[0]["acc_syn"] - rows[0]["acc_random"]) for rows in (hard, soft)]
        assert bars == pytest.approx(expected)


def test_ipc_plots_keep_smoke_runs_and_variants_of_a_protocol_apart():
    ipc1 = _accuracies("A", 0.60, ipc=1, protocol_hash="1111111111111111")
    ipc10 = _accuracies("A", 0.80, acc_random=0.7, ipc=10, protocol_hash="2222222222222222")
    smoke10 = _accuracies("A", 0.30, acc_random=0.2, ipc=10, protocol_hash="3333333333333333")
    smoke10.provenance["smoke"] = {"epochs": 5, "protocol_epochs": 50}
    series = _ipc_series(build_leaderboard([ipc1, ipc10, smoke10]))
    assert [[(r["ipc"], r["protocol_hash"][:4]) for r in rows] for rows in series.values()] == [
        [(1, "1111"), (10, "2222")]
    ]
    assert "protocol digits (IPC 1: 11111111, IPC 10: 22222222)" in next(iter(series))
    smoke1 = _accuracies("A", 0.25, ipc=1, protocol_hash="4444444444444444")
    smoke1.provenance["smoke"] = {"epochs": 5, "protocol_epochs": 50}
    captions = list(_ipc_series(build_leaderboard([ipc1, ipc10, smoke10, smoke1])))
    assert len(captions) == 2 and captions[1].endswith("smoke run")
    variant = _accuracies("B", 0.70, ipc=10, protocol_hash="5555555555555555")  # same name, other content
    assert _ipc_series(build_leaderboard([ipc1, ipc10, variant])) == {}  # left out, never averaged


# 11. each value once, and the spread says which standard deviation it is
def test_ars_tables_show_each_accuracy_once_and_every_std_says_its_ddof():
    rows = build_leaderboard([ars_evaluation("A", 0.05)], metric="ars")
    header = next(iter(markdown_tables(render(rows, "md")).values()))[0].split(" | ")
    assert "acc(syn, +aug) %" in header and "acc(syn) %" not in header and "acc(rand) %" not in header
    assert "acc(real) %" not in header  # ARS never uses acc(real)

    def table_header(text: str) -> list[str]:
        return next(line for line in text.splitlines() if line.startswith("#")).split()

    wide = table_header(render(rows, "table", wide=True))
    assert "acc(syn, +aug)" in " ".join(wide) and "syn" not in wide and "rand" not in wide
    assert {"syn", "rand"} <= set(table_header(render(rows, "table")))  # compact: the +aug cells only
    lrs = build_leaderboard(demo_like())
    assert "sample std, ddof 1" in render(lrs, "latex") and "sample std (ddof 1)" in render(lrs, "paper-md")
    assert "ddof 1" in json.loads(render(lrs, "json"))["units"]


def test_every_id_rm_takes_is_in_the_wide_history_and_no_at_the_prompt_exits_0(capsys, tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.record_evaluation(evaluation("herding", 0.7).to_dict())
        store.record_evaluation(evaluation("herding", 0.6, seeds=SEEDS[:2]).to_dict())
        store.record_evaluation(evaluation("dm", 0.8).to_dict())
        ids = [e.record_id for e in recorded_evaluations(store)]
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "leaderboard", "--store", path, "--all", "--wide")
    assert code == 0 and re.search(r"protocol +id +notes", out), out
    shown = re.findall(r"\([0-9a-f]{8}\) +(\d+)\b", out)  # the id after the protocol's hash
    assert sorted(map(int, shown)) == sorted(ids), out
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out, _ = run_cli(capsys, "rm", str(ids[0]), "--store", path)
    assert code == 0 and "nothing removed" in out
    with ResultStore(path) as store:
        assert len(store.evaluations()) == 3

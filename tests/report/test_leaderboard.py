"""Leaderboards: ranking, intervals, rank stability, newest-wins, every output format, escaping in the
HTML page, and the leaderboard / compare / export / import commands."""

from __future__ import annotations

import csv
import io
import json
import re
import zlib
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from cli_checks import run_cli
from ddrank.errors import DDRankError, InputError, UnknownNameError
from ddrank.evaluation import Evaluation, RoundResult, Run, recorded_evaluations
from ddrank.metrics import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS
from ddrank.report.columns import notes
from ddrank.report.html import render_html
from ddrank.report.leaderboard import LeaderboardError, build_leaderboard, compare_methods, group_label
from ddrank.report.payload import evaluations_document
from ddrank.report.render import render
from ddrank.store import ResultStore

SEEDS = (101, 202, 303, 404, 505)
XSS = "<script>alert(1)</script>"


def _jitter(method: str, n: int, scale: float) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(method.encode())).uniform(-scale, scale, n)


def _lrs_round(r: int, seed: int, syn: float, rand: float, acc_real: float) -> RoundResult:
    hlr, ior = hard_label_recovery(acc_real, syn), improvement_over_random(syn, rand)
    values = {"acc_syn": syn, "acc_random": rand, "acc_real": acc_real, "hlr": hlr, "ior": ior}
    runs = {cell: [Run(0.01, acc, 0.5, acc)] for cell, acc in (("syn", syn), ("random", rand))}
    return RoundResult(
        r, seed, values | {"lrs": label_robust_score(hlr, ior)}, {"syn": 0.01, "random": 0.01}, runs
    )


def _evaluation(method: str, rounds: list[RoundResult], *, metric: str = "lrs", **fields: Any) -> Evaluation:
    """An Evaluation as the evaluator builds it (digits, IPC 10, honest selection unless given)."""
    fields = {
        "dataset": "digits",
        "ipc": 10,
        "protocol": "digits",
        "protocol_hash": "5f1c0ffee0ddba11",
        "selection": "honest",
        "base_seed": 0,
    } | fields
    provenance = {"base_seed": fields.pop("base_seed"), "synthetic_fingerprint": f"fp-{method}"}
    return Evaluation(
        method,
        fields["dataset"],
        fields["ipc"],
        metric,
        0.5,
        fields["protocol"],
        fields["protocol_hash"],
        "ConvNet-2-W16",
        "hard",
        fields["selection"],
        rounds,
        "trained" if metric == "lrs" else None,
        provenance,
    )


def evaluation(
    method: str,
    acc_syn: float | Sequence[float],
    acc_random: float = 0.60,
    *,
    seeds: Sequence[int] = SEEDS,
    acc_real: float = 0.95,
    jitter: float = 0.004,
    **fields: Any,
) -> Evaluation:
    """An LRS evaluation with per-round values around the given accuracies."""
    n = len(seeds)
    syn = (
        np.asarray(acc_syn, dtype=float) if not np.isscalar(acc_syn) else acc_syn + _jitter(method, n, jitter)
    )
    rand = acc_random + _jitter(method + "/random", n, jitter)
    rounds = [_lrs_round(r, seed, float(syn[r]), float(rand[r]), acc_real) for r, seed in enumerate(seeds)]
    return _evaluation(method, rounds, **fields)


def ars_evaluation(method: str, gap: float, *, ipc: int = 10) -> Evaluation:
    """An ARS evaluation: synthetic beats random by ``gap`` with augmentation and by half of it without."""
    rounds = []
    for r, seed in enumerate(SEEDS):
        wiggle = _jitter(method, len(SEEDS), 0.003)[r]
        cells = {
            "acc_syn_aug": 0.70 + gap + wiggle,
            "acc_random_aug": 0.70,
            "acc_syn_noaug": 0.60 + gap / 2 + wiggle,
            "acc_random_noaug": 0.60,
        }
        ars = augmentation_robust_score(
            cells["acc_syn_aug"] - cells["acc_random_aug"], cells["acc_syn_noaug"] - cells["acc_random_noaug"]
        )
        runs = {name.removeprefix("acc_"): [Run(0.01, acc, 0.5, acc)] for name, acc in cells.items()}
        rates = {cell: 0.01 for cell in runs}
        rounds.append(RoundResult(r, seed, cells | {"ars": ars}, rates, runs))
    return _evaluation(method, rounds, metric="ars", ipc=ipc)


def markdown_tables(text: str) -> dict[str, list[str]]:
    """The tables of ``--format md`` by the group each is headed with: each table's lines, header first."""
    blocks = text.strip().split("\n\n")
    assert all(b.startswith("### ") for b in blocks[::2]) and len(blocks) % 2 == 0, text
    pairs = zip(blocks[::2], blocks[1::2], strict=True)
    return {heading.removeprefix("### "): table.splitlines() for heading, table in pairs}


def demo_like() -> list[Evaluation]:
    """Five methods, best first by construction: dm > kcenter > herding > random > noise."""
    accuracies = {"dm": 0.80, "kcenter": 0.74, XSS: 0.70, "random": 0.62, "noise": 0.20}
    return [evaluation(method, acc) for method, acc in accuracies.items()]


# -- building ----------------------------------------------------------------------------------


def test_methods_are_ranked_by_mean_lrs_best_first():
    rows = build_leaderboard(list(reversed(demo_like())))
    assert [r["method"] for r in rows] == ["dm", "kcenter", XSS, "random", "noise"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    means = [r["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    first = rows[0]
    source = demo_like()[0].row()
    assert first["mean"] == source["lrs_mean"]
    assert (first["ci_low"], first["ci_high"]) == (source["lrs_ci_low"], source["lrs_ci_high"])
    assert first["hlr"] == source["hlr_mean"] and first["ior"] == source["ior_mean"]
    assert first["acc_syn"] == source["acc_syn_mean"] and first["acc_random"] == source["acc_random_mean"]
    assert first["acc_real"] == source["acc_real_mean"]
    assert first["rounds"] == 5 and first["metric"] == "lrs"
    assert first["protocol"] == "digits" and first["protocol_hash"] == "5f1c0ffee0ddba11"
    assert first["optimistic"] is False


def test_bootstrap_interval_is_given_from_enough_rounds_and_contains_the_mean():
    many = tuple(range(1, MIN_BOOTSTRAP_ROUNDS + 1))
    for row in build_leaderboard([evaluation("a", 0.8, seeds=many), evaluation("b", 0.7, seeds=many)]):
        assert row["boot_ci_low"] is not None and row["boot_ci_high"] is not None
        assert row["boot_ci_low"] < row["mean"] < row["boot_ci_high"]
        assert row["ci_low"] < row["mean"] < row["ci_high"]
    fewer = many[:-1]  # a "95%" bootstrap interval of fewer rounds covers much less: none, and "–"
    rows = build_leaderboard([evaluation("a", 0.8, seeds=fewer), evaluation("b", 0.7, seeds=fewer)])
    assert all(r["boot_ci_low"] is r["boot_ci_high"] is None and r["ci_low"] is not None for r in rows)
    ((header, _, first, _),) = markdown_tables(render(rows, "md")).values()
    cells = dict(zip(header.split(" | "), first.split(" | "), strict=True))
    assert cells[f"95% CI (boot, n ≥ {MIN_BOOTSTRAP_ROUNDS}) %"] == "–" and cells["95% CI (t) %"] != "–"
    assert f"from {MIN_BOOTSTRAP_ROUNDS} rounds on" in render(rows, "table", wide=True)
    assert f"null below {MIN_BOOTSTRAP_ROUNDS} rounds" in json.loads(render(rows, "json"))["units"]


def test_one_round_has_no_intervals_and_no_stability():
    rows = build_leaderboard([evaluation("a", 0.8, seeds=(1,)), evaluation("b", 0.7, seeds=(1,))])
    assert all(r["boot_ci_low"] is None and r["ci_low"] is None for r in rows)
    assert all(r["stability_tau"] is None for r in rows)
    json.loads(render(rows, "json"))  # strict JSON: no NaN


def test_rank_stability_is_one_when_every_round_agrees():
    rows = build_leaderboard(demo_like())
    for row in rows:
        assert row["stability_tau"] == pytest.approx(1.0) and row["stability_min_tau"] == pytest.approx(1.0)


def test_rank_stability_drops_when_rounds_disagree():
    a = evaluation("a", [0.80, 0.70, 0.80, 0.70, 0.80])
    b = evaluation("b", [0.70, 0.80, 0.70, 0.80, 0.71])
    rows = build_leaderboard([a, b])
    assert rows[0]["stability_tau"] < 1.0 and rows[0]["stability_min_tau"] == -1.0


def test_rank_stability_pairs_rounds_by_seed_and_needs_two_shared_seeds():
    rows = build_leaderboard([evaluation("a", 0.8), evaluation("b", 0.7, seeds=SEEDS[:3])])
    assert [r["stability_tau"] for r in rows] == [pytest.approx(1.0)] * 2  # over the 3 shared seeds
    disjoint = [evaluation("a", 0.8, seeds=SEEDS[:2]), evaluation("b", 0.7, seeds=SEEDS[2:4])]
    assert [r["stability_tau"] for r in build_leaderboard(disjoint)] == [None, None]
    # Round r of one method and round r of the other are different seeds here: paired by index, every
    # round would disagree; paired by seed, every round agrees.
    a = evaluation("a", [0.80, 0.70, 0.90], seeds=SEEDS[:3])
    b = evaluation("b", [0.65, 0.85, 0.75], seeds=[SEEDS[1], SEEDS[2], SEEDS[0]])
    first = build_leaderboard([a, b])[0]
    assert first["stability_tau"] == pytest.approx(1.0) and first["stability_min_tau"] == pytest.approx(1.0)


def test_newest_evaluation_of_a_method_wins(tmp_path):
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.record_evaluation(evaluation("dm", 0.50, base_seed=0).to_dict())
        store.record_evaluation(evaluation("random", 0.62, base_seed=0).to_dict())
        later = evaluation("dm", 0.85, base_seed=1)  # another measurement, recorded later
        store.record_evaluation(later.to_dict())
        assert len(store.evaluations(method="dm")) == 2
        recorded = recorded_evaluations(store)
        rows = build_leaderboard(recorded)
    assert recorded[0] == later  # the store gives back the evaluation it was given
    assert [r["method"] for r in rows] == ["dm", "random"]
    assert rows[0]["acc_syn"] == pytest.approx(0.85, abs=0.01)


def test_one_method_under_two_protocols_keeps_both_rows():
    rows = build_leaderboard(
        [
            evaluation("dm", 0.8),
            evaluation("dm", 0.9, protocol="ref", protocol_hash="ee", selection="reference"),
        ]
    )
    assert [(r["method"], r["protocol"], r["optimistic"], r["rank"]) for r in rows] == [
        ("dm", "digits", False, 1),  # separate groups: never ranked against each other
        ("dm", "ref", True, 1),
    ]


def test_groups_rank_separately_and_filters_apply():
    evaluations = [
        evaluation("dm", 0.8, ipc=10),
        evaluation("noise", 0.2, ipc=10),
        evaluation("dm", 0.3, ipc=1),
        evaluation("noise", 0.4, ipc=1),
        evaluation("dm", 0.5, dataset="cifar10", ipc=10),
    ]
    rows = build_leaderboard(evaluations)
    assert [(r["dataset"], r["ipc"], r["method"], r["rank"]) for r in rows] == [
        ("cifar10", 10, "dm", 1),
        ("digits", 1, "noise", 1),
        ("digits", 1, "dm", 2),
        ("digits", 10, "dm", 1),
        ("digits", 10, "noise", 2),
    ]
    assert [r["method"] for r in build_leaderboard(evaluations, dataset="digits", ipc=1)] == ["noise", "dm"]
    assert build_leaderboard(evaluations, dataset="imagenet1k") == []


def test_ars_leaderboard_ranks_ars_evaluations_with_their_four_cells():
    evaluations = [ars_evaluation("small", 0.02), ars_evaluation("large", 0.10), evaluation("lrs-only", 0.9)]
    rows = build_leaderboard(evaluations, metric="ars")
    assert [r["method"] for r in rows] == ["large", "small"]
    for key in ("acc_syn_aug", "acc_random_aug", "acc_syn_noaug", "acc_random_noaug"):
        assert rows[0][key] == evaluations[1].summaries[key].mean
    assert rows[0]["acc_syn"] == rows[0]["acc_syn_aug"] and rows[0]["acc_real"] is None
    assert rows[0]["ci_low"] < rows[0]["mean"] < rows[0]["ci_high"]
    assert [r["method"] for r in build_leaderboard(evaluations)] == ["lrs-only"]  # ARS rows are not LRS
    assert "ARS %" in render(rows, "md")


def test_accuracy_leaderboard_ranks_every_evaluation_with_acc_syn():
    evaluations = [evaluation("a", 0.7, acc_random=0.1), evaluation("b", 0.8, acc_random=0.79)]
    evaluations.append(ars_evaluation("no-acc-syn", 0.05))
    rows = build_leaderboard(evaluations, metric="acc")
    assert [r["method"] for r in rows] == ["b", "a"]
    assert rows[0]["acc_syn"] == evaluations[1].summaries["acc_syn"].mean
    assert [r["method"] for r in build_leaderboard(evaluations, metric="lrs")] == ["a", "b"]


def accuracy_evaluation(method: str, acc_syn: float) -> Evaluation:
    """An accuracy evaluation: the synthetic set's cell alone, no random subset and no whole-data run."""
    rounds = [
        RoundResult(
            r, seed, {"acc_syn": acc_syn + wiggle}, {"syn": 0.01}, {"syn": [Run(0.01, 0.5, 0.5, 0.5)]}
        )
        for r, (seed, wiggle) in enumerate(zip(SEEDS, _jitter(method, len(SEEDS), 0.004), strict=True))
    ]
    return _evaluation(method, rounds, metric="acc")


def test_accuracy_tables_show_only_what_an_accuracy_evaluation_measures():
    # an accuracy evaluation and an LRS evaluation ranked by accuracy: the rows show the same measurement
    rows = build_leaderboard([accuracy_evaluation("acc-only", 0.75), evaluation("lrs", 0.7)], metric="acc")
    assert [r["method"] for r in rows] == ["acc-only", "lrs"]
    for key in ("acc_random", "acc_random_ci_low", "acc_random_ci_high", "acc_real"):
        assert [r[key] for r in rows] == [None, None], key
    for wide in (False, True):
        header = next(line for line in render(rows, "table", wide=wide).splitlines() if line.startswith("#"))
        assert "acc(syn) ± CI" in header and not {"syn", "rand", "real"} & set(header.split()), header
    (lines,) = markdown_tables(render(rows, "md")).values()
    assert "acc(rand) %" not in lines[0] and "acc(real) %" not in lines[0]
    page = render_html(rows)
    assert "acc(rand) %" not in page and "synthetic against random real accuracy" not in page


def test_a_record_that_is_not_an_evaluation_is_refused_naming_what_it_lacks():
    record = evaluation("a", 0.7).to_dict()
    del record["metric"], record["per_round"]
    with pytest.raises(InputError, match="lacks metric, per_round"):
        Evaluation.from_dict(record)


def test_unknown_metric_and_format_name_the_valid_ones():
    with pytest.raises(UnknownNameError, match="lrs"):
        build_leaderboard(demo_like(), metric="lrss")
    with pytest.raises(UnknownNameError, match="markdown"):
        render(build_leaderboard(demo_like()), "markdown")


# -- rendering ---------------------------------------------------------------------------------


def test_markdown_has_a_header_and_one_row_per_method():
    rows = build_leaderboard(demo_like())
    ((label, lines),) = markdown_tables(render(rows, "md")).items()
    assert label == "digits · IPC 10 · protocol digits (5f1c0ffe) · honest · hard labels · ConvNet-2-W16"
    assert lines[0].startswith("| rank | method |") and "LRS %" in lines[0]
    assert set(lines[1]) <= set("|:-")
    assert len(lines) == 2 + len(rows)
    assert lines[2].split("|")[2].strip() == "dm"
    assert XSS not in "\n".join(lines) and "&lt;script&gt;" in lines[4]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_markdown_escapes_pipes_in_method_names():
    rows = build_leaderboard([evaluation("a|b", 0.8), evaluation("c", 0.7)])
    ((header, _, first, _),) = markdown_tables(render(rows, "md")).values()
    assert "a\\|b" in first and first.count("|") - 1 == header.count("|")


def test_csv_parses_with_the_csv_module():
    rows = build_leaderboard(demo_like())
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert [r["method"] for r in parsed] == [r["method"] for r in rows]
    assert float(parsed[0]["mean"]) == rows[0]["mean"]
    assert parsed[0]["boot_ci_low"] == ""  # 5 rounds: no bootstrap CI
    assert parsed[0]["optimistic"] == "False"


def test_json_round_trips():
    rows = build_leaderboard(demo_like())
    document = json.loads(render(rows, "json"))
    assert document["schema_version"] == 1 and document["kind"] == "leaderboard"
    assert [row for group in document["groups"] for row in group["rows"]] == rows


def test_terminal_table_shows_percentages():
    text = render(build_leaderboard(demo_like()), "table")
    assert "LRS ± CI" in text and "Δneutral" in text
    assert "rank τ" in render(build_leaderboard(demo_like()), "table", wide=True)
    for method in ("dm", "kcenter", "random", "noise"):
        assert method in text
    assert XSS in render(build_leaderboard(demo_like()), "table", wide=True)  # plain text in a terminal
    assert max(len(line) for line in text.splitlines()) <= 80 and not any(
        line.endswith(" ") for line in text.splitlines()
    )
    first = build_leaderboard(demo_like())[0]
    assert f"{100 * first['mean']:.2f}" in text


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of the leaderboard's method cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.methods: list[str] = []
        self._in_method = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_method = tag == "td" and dict(attrs).get("class") == "method"

    def handle_endtag(self, tag: str) -> None:
        self._in_method = False

    def handle_data(self, data: str) -> None:
        if self._in_method:
            self.methods.append(data)


def test_html_is_self_contained():
    page = render(build_leaderboard(demo_like()), "html")
    parsed = _Elements()
    parsed.feed(page)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "xlink:href", "action", "srcset"):
            value = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:)?//", value), f"<{tag} {name}={value!r}> reaches the network"
        assert tag != "link" and not (tag == "script" and "src" in attrs)
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page) is None
    assert "@import" not in page and "url(http" not in page
    assert page.count("<svg") == 3  # score, HLR against IOR, synthetic against random
    assert [t for t, _ in parsed.tags].count("script") == 1


def test_html_table_has_rows_sortable_values_and_stable_ids():
    rows = build_leaderboard(demo_like())
    page = render_html(rows)
    parsed = _Elements()
    parsed.feed(page)
    assert any(t == "table" and a.get("id") == "leaderboard-0" for t, a in parsed.tags)
    headers = [a.get("id") for t, a in parsed.tags if t == "th"]
    assert "col-score-0" in headers and "col-method-0" in headers and len(set(headers)) == len(headers)
    trs = [a for t, a in parsed.tags if t == "tr" and a.get("class", "").startswith("method-row")]
    assert len(trs) == len(rows)
    score_index = headers.index("col-score-0")
    cells = [a for t, a in parsed.tags if t == "td"]
    per_row = len(headers)
    scores = [float(cells[i * per_row + score_index]["data-value"]) for i in range(len(rows))]
    assert scores == [r["mean"] for r in rows]
    assert parsed.methods == [r["method"] for r in rows]


def _two_groups() -> list[dict[str, Any]]:
    """Rows of two groups (IPC 1 and 10) whose methods rank differently in each."""
    evaluations = [evaluation("dm", 0.8), evaluation("noise", 0.2)]
    evaluations += [evaluation("dm", 0.3, ipc=1), evaluation("noise", 0.4, ipc=1)]
    return build_leaderboard(evaluations)


def test_markdown_gives_each_group_its_heading_and_table():
    rows = _two_groups()
    tables = markdown_tables(render(rows, "md"))
    assert list(tables) == [group_label(rows[0]), group_label(rows[2])]
    assert [label.split(" · ")[1] for label in tables] == ["IPC 1", "IPC 10"]
    for lines, expected in zip(tables.values(), (["noise", "dm"], ["dm", "noise"]), strict=True):
        assert lines[0].startswith("| rank | method |") and set(lines[1]) <= set("|:-")
        assert [line.split(" | ")[1] for line in lines[2:]] == expected  # each table ranked 1, 2
        assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1", "| 2"]


def test_html_gives_each_group_its_table_under_its_heading():
    rows = _two_groups()
    page = render_html(rows)
    sections = re.findall(
        r'<section class="group" data-group="([^"]*)"><h2>(.*?)</h2>(.*?)</section>', page, re.S
    )
    assert [heading for _, heading, _ in sections] == [group_label(rows[0]), group_label(rows[2])]
    for (attr, heading, body), table in zip(sections, (0, 1), strict=True):
        assert attr == heading
        assert body.count("<table") == 1 and f'id="leaderboard-{table}"' in body
        methods = re.findall(r'<tr class="method-row" data-method="([^"]*)"', body)
        assert methods == [r["method"] for r in rows if group_label(r) == heading]
    assert page.count("<table") == 2


def test_every_user_string_is_escaped_in_html():
    evaluations = demo_like()
    for e in evaluations:  # one group, under a hostile protocol name
        e.protocol = '"><img src=x onerror=alert(2)>'
    page = render_html(build_leaderboard(evaluations))
    assert XSS not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)
    assert all("&lt;script&gt;alert(1)&lt;/script&gt;" in svg for svg in svgs)  # plot labels, as SVG text
    assert len(re.findall(r"<script\b", page, flags=re.IGNORECASE)) == 1
    parsed = _Elements()
    parsed.feed(page)
    assert XSS in parsed.methods
    assert all(not name.startswith("on") for _, attrs in parsed.tags for name in attrs)


def test_html_labels_optimistic_rows_and_allows_only_its_own_script():
    evaluations = demo_like()
    evaluations[1].selection = "reference"
    page = render_html(build_leaderboard(evaluations))
    assert page.count('class="badge">optimistic') >= 2  # the warning and the row
    assert "Content-Security-Policy" in page and "script-src 'sha256-" in page


def test_html_plots_ars_and_multiple_groups():
    evaluations = [ars_evaluation("a", 0.05), ars_evaluation("b", 0.01), ars_evaluation("a", 0.02, ipc=1)]
    evaluations.append(ars_evaluation("b", 0.03, ipc=1))
    page = render_html(build_leaderboard(evaluations, metric="ars"))
    assert page.count("<svg") == 7 and 'id="group"' in page  # 3 per IPC, and accuracy against IPC
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # plots share one document without clashing ids


# -- the commands ------------------------------------------------------------------------------


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        for e in demo_like():
            store.record_evaluation(e.to_dict())
    return path


def test_leaderboard_command_renders_every_format(capsys, store_path, tmp_path, monkeypatch):
    code, out, err = run_cli(capsys, "leaderboard", "--store", store_path)
    assert code == 0, err
    assert "dm" in out and "LRS ± CI" in out
    code, out, _ = run_cli(capsys, "leaderboard", "--store", store_path, "--format", "md")
    assert code == 0 and [len(lines) for lines in markdown_tables(out).values()] == [7]
    code, out, _ = run_cli(capsys, "leaderboard", "--store", store_path, "--format", "json", "--ipc", 10)
    assert [r["method"] for r in json.loads(out)["groups"][0]["rows"]][:2] == ["dm", "kcenter"]
    code, out, _ = run_cli(
        capsys, "leaderboard", "--store", store_path, "--format", "csv", "--out", tmp_path / "b.csv"
    )
    assert code == 0 and len(list(csv.DictReader((tmp_path / "b.csv").open()))) == 5
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "leaderboard", "--store", store_path, "--format", "html")
    assert code == 0 and (tmp_path / "leaderboard.html").is_file()
    assert str(tmp_path / "leaderboard.html") in out


def test_leaderboard_command_errors_are_one_line(capsys, store_path, tmp_path):
    code, _, err = run_cli(capsys, "leaderboard", "--store", tmp_path / "missing.sqlite")
    assert code == 2 and err.startswith("ddrank: error: no results store") and err.count("\n") == 1
    assert not (tmp_path / "missing.sqlite").exists()
    code, _, err = run_cli(capsys, "leaderboard", "--store", store_path, "--metric", "ars")
    assert code == 2 and "no ARS evaluations" in err


def test_a_filter_that_matches_nothing_says_the_closest_name(capsys, store_path):
    code, _, err = run_cli(capsys, "leaderboard", "--store", store_path, "--dataset", "cifra10")
    assert code == 2 and err.count("\n") == 1, err
    assert "no LRS evaluations recorded" in err and "on cifra10" in err
    assert "no dataset 'cifra10' is recorded: did you mean 'cifar10'? (recorded: digits)" in err
    code, _, err = run_cli(capsys, "leaderboard", "--store", store_path, "--dataset", "Digit", "--ipc", 5)
    assert "did you mean 'digits'?" in err and "no IPC 5 is recorded (recorded: 10)" in err
    code, _, err = run_cli(capsys, "leaderboard", "--store", store_path, "--protocol", "digts")
    assert "no protocol 'digts' is recorded: did you mean 'digits'?" in err
    code, _, err = run_cli(capsys, "compare", "dm", "noise", "--store", store_path, "--dataset", "cifra10")
    assert code == 2 and "did you mean 'cifar10'?" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "rm", "--store", store_path, "--dataset", "cifra10", "--yes")
    assert code == 2 and "did you mean 'cifar10'?" in err and "nothing removed" in err
    code, _, err = run_cli(capsys, "leaderboard", "--store", store_path, "--student", "MLP")
    assert "no student 'MLP' is recorded (recorded: ConvNet-2-W16)" in err
    code, out, err = run_cli(capsys, "leaderboard", "--store", store_path, "--dataset", "DIGITS")
    assert code == 0 and "digits" in out, err  # dataset names are lower case: any case finds them


def test_compare_keeps_its_group_line_within_80_columns(capsys, tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        for method, acc in (("dm", 0.8), ("herding", 0.7)):
            e = evaluation(method, acc, protocol="digits-kd-long-name", protocol_hash="abcdef0123456789")
            e.student = "ConvNet-2-W16-BN"
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "compare", "dm", "herding", "--store", path)
    assert code == 0, err
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("group: "))
    assert lines[start].endswith(" ·") and lines[start + 1] == " " * 7 + "hard labels · ConvNet-2-W16-BN"
    assert all(len(line) <= 80 for line in lines[start : start + 2])


def test_compare_detects_a_planted_difference(capsys, tmp_path):
    base = 0.70 + _jitter("base", len(SEEDS), 0.01)
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        for e in (evaluation("better", base + 0.03), evaluation("worse", base), evaluation("twin", base)):
            store.record_evaluation(e.to_dict())
    code, out, err = run_cli(capsys, "compare", "better", "worse", "--store", path)
    assert code == 0, err
    assert "5 rounds matched by seed" in out and "better scores higher" in out
    p = float(re.search(r"p = ([0-9.e-]+)", out).group(1))
    assert p < 0.05
    code, out, _ = run_cli(capsys, "compare", "worse", "twin", "--store", path)
    assert code == 0 and "no significant difference" in out
    assert float(re.search(r"p = ([0-9.e-]+)", out).group(1)) >= 0.05


def test_compare_matches_rounds_by_seed():
    a = evaluation("a", [0.80, 0.81, 0.79, 0.90], seeds=(1, 2, 3, 4))
    b = evaluation("b", [0.70, 0.71, 0.69], seeds=(3, 1, 2))
    b.rounds.reverse()
    result = compare_methods([a, b], "a", "b")
    assert result.seeds == (1, 2, 3) and result.result.n == 3
    lrs_a = {r.seed: r.values["lrs"] for r in a.rounds}
    lrs_b = {r.seed: r.values["lrs"] for r in b.rounds}
    expected = np.mean([lrs_a[s] - lrs_b[s] for s in (1, 2, 3)])
    assert result.result.mean_difference == pytest.approx(expected)


def test_compare_errors(capsys, tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        store.record_evaluation(evaluation("a", 0.8, seeds=(1, 2, 3)).to_dict())
        store.record_evaluation(evaluation("b", 0.7, seeds=(3, 4, 5)).to_dict())
        store.record_evaluation(evaluation("c", 0.7, seeds=(1, 2, 3), ipc=1).to_dict())
    code, _, err = run_cli(capsys, "compare", "a", "nope", "--store", path)
    assert code == 2 and "'nope'" in err and "recorded methods: a, b, c" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "compare", "a", "b", "--store", path)
    assert code == 2 and "share 1 round(s)" in err
    code, _, err = run_cli(capsys, "compare", "a", "c", "--store", path)
    assert code == 2 and "no evaluation in the same group" in err and "digits · IPC 1 ·" in err
    with pytest.raises(LeaderboardError, match="several|choose one"):
        compare_methods(
            [
                evaluation("a", 0.8),
                evaluation("b", 0.7),
                evaluation("a", 0.8, ipc=1),
                evaluation("b", 0.7, ipc=1),
            ],
            "a",
            "b",
        )
    with pytest.raises(DDRankError, match="two different methods"):
        compare_methods([evaluation("a", 0.8)], "a", "a")


def test_export_then_import_round_trips_through_the_cli(capsys, store_path, tmp_path):
    exported = tmp_path / "results.json"
    code, out, err = run_cli(capsys, "export", "--out", exported, "--store", store_path)
    assert code == 0, err
    assert "5 evaluations" in out and exported.is_file()
    target = tmp_path / "other.sqlite"
    code, out, err = run_cli(capsys, "import", exported, "--store", target)
    assert code == 0, err
    assert "0 new jobs and 5 new evaluations" in out
    with ResultStore(store_path) as a, ResultStore(target) as b:
        assert b.evaluations() == a.evaluations()
    code, out, _ = run_cli(capsys, "import", exported, "--store", target)
    assert "0 new evaluations" in out
    code, _, err = run_cli(capsys, "import", tmp_path / "nothing.json", "--store", target)
    assert code == 2 and "cannot read results export" in err


def test_import_of_another_ddrank_document_says_what_it_is(capsys, store_path, tmp_path):
    summary = tmp_path / "out.json"
    summary.write_text(json.dumps(evaluations_document(demo_like()[:1])))
    code, _, err = run_cli(capsys, "import", summary, "--store", tmp_path / "other.sqlite")
    assert code == 2 and err.count("\n") == 1
    assert "is an evaluation summary (evaluate, demo or sweep --json), not a results export" in err
    assert "ddrank export" in err and "format 'None'" not in err
    board = tmp_path / "board.json"
    board.write_text(render(build_leaderboard(demo_like()), "json"))
    code, _, err = run_cli(capsys, "import", board, "--store", tmp_path / "other.sqlite")
    assert code == 2 and "is a leaderboard (leaderboard --format json)" in err
    assert not (tmp_path / "other.sqlite").exists()


def test_a_row_trained_in_bf16_says_so_beside_fp32_rows():
    fp32, bf16 = evaluation("a", 0.8), evaluation("b", 0.7)
    fp32.provenance["precision"], bf16.provenance["precision"] = "fp32", "bf16"
    rows = {row["method"]: row for row in build_leaderboard([fp32, bf16])}
    assert (rows["a"]["precision"], rows["b"]["precision"]) == ("fp32", "bf16")
    assert "trained in bf16" in notes(rows["b"]) and "bf16" not in notes(rows["a"])
    assert "trained in bf16" in render(list(rows.values()), "md")


def test_a_set_whose_classes_differ_in_size_says_its_image_count_beside_full_ipc_rows():
    even, uneven = evaluation("a", 0.8), evaluation("b", 0.7)
    uneven.provenance["class_counts"] = [10] * 9 + [5]
    rows = {row["method"]: row for row in build_leaderboard([even, uneven])}
    assert (rows["a"]["images"], rows["b"]["images"]) == (None, 95)
    assert "95 images, classes uneven" in notes(rows["b"]) and "uneven" not in notes(rows["a"])
    assert "95 images, classes uneven" in render(list(rows.values()), "md")

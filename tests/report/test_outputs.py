"""What every output promises: one versioned JSON schema, names shown exactly as typed (rich markup,
HTML, Markdown, CSV formulas), names checked once, and a notebook-friendly Evaluation."""

from __future__ import annotations

import csv
import io
import json

import jsonschema
import pytest

from ddrank.errors import InputError
from ddrank.evaluation import Evaluation
from ddrank.names import MAX_NAME_LENGTH, check_name, csv_cell
from ddrank.report.leaderboard import build_leaderboard, group_candidates
from ddrank.report.payload import OPTIONAL_EVALUATION_FIELDS, evaluations_document, schema
from ddrank.report.render import render
from ddrank.store import ResultStore

from .test_leaderboard import ars_evaluation, demo_like, evaluation, run_cli

MARKUP = ["[/x]", "[bold red]x[/bold red]", "[link=http://e.invalid]y[/link]"]
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1+1)", "@SUM(1)", "-2+3", "\tleading tab"]


def _validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema())


def test_evaluation_and_leaderboard_documents_follow_the_published_schema():
    validator = _validator()
    evaluations = [*demo_like(), ars_evaluation("ars-method", 0.05), evaluation("one-round", 0.7, seeds=(1,))]
    validator.validate(evaluations_document(evaluations))
    validator.validate(evaluations_document(evaluations[:1]))  # one evaluation is still a list
    for metric in ("lrs", "ars", "acc"):
        validator.validate(json.loads(render(build_leaderboard(evaluations, metric=metric), "json")))
    history = build_leaderboard([evaluation("a", 0.8), evaluation("a", 0.7, seeds=(1, 2))], history=True)
    validator.validate(json.loads(render(history, "json")))


def test_the_schema_refuses_what_it_should():
    validator = _validator()
    document = evaluations_document([evaluation("a", 0.8)])
    broken = json.loads(json.dumps(document))
    broken["evaluations"][0]["acc_syn_ci_high"] = 1.07  # an accuracy interval beyond 1
    assert not validator.is_valid(broken)
    assert not validator.is_valid(document | {"schema_version": 2})
    assert not validator.is_valid(document["evaluations"])  # a bare list is not a document


def test_the_fields_other_parts_add_are_optional_and_named_in_the_schema():
    properties = schema()["$defs"]["evaluation"]["properties"]
    required = schema()["$defs"]["evaluation"]["required"]
    for name in OPTIONAL_EVALUATION_FIELDS:
        assert name in properties and name not in required
    document = evaluations_document([evaluation("a", 0.8)])
    extended = json.loads(json.dumps(document))
    extended["evaluations"][0] |= {
        "fidelity": "honest",
        "deviations": [
            {
                "key": "epochs",
                "source_value": 1000,
                "ddrank_value": 300,
                "reason": "r",
                "moves_score": True,
                "kind": "setting",
            }
        ],
        "diverged": 0,
        "calibration": [
            {
                "cell": "random",
                "ipc": 10,
                "measured": 0.3,
                "published_mean": 0.31,
                "published_std": 0.01,
                "z": -1.0,
                "source": "s",
            }
        ],
    }
    _validator().validate(extended)


@pytest.mark.parametrize("name", MARKUP)
def test_rich_markup_in_a_method_name_is_shown_as_typed(capsys, tmp_path, name):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.record_evaluation(evaluation(name, 0.8).to_dict())
        store.record_evaluation(evaluation("dm", 0.7).to_dict())
    for extra in ((), ("--all",)):  # 80 columns: a long name folds over lines, but shows as typed
        code, out, err = run_cli(capsys, "leaderboard", "--store", path, *extra)
        assert code == 0, err
        assert name[:6] in out
    code, out, err = run_cli(capsys, "leaderboard", "--store", path, "--wide")
    assert code == 0 and name in out, err
    code, out, err = run_cli(capsys, "compare", name, "dm", "--store", path)
    assert code == 0 and out.startswith(f"{name} − dm"), err


def test_rich_markup_is_never_interpreted_in_a_real_terminal_either():
    from rich.console import Console

    from ddrank.report.render import leaderboard_table

    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system="truecolor")
    console.print(leaderboard_table(build_leaderboard([evaluation(MARKUP[1], 0.8)]), wide=True))
    assert MARKUP[1] in console.file.getvalue().replace("\x1b[1m", "").replace("\x1b[0m", "")


@pytest.mark.parametrize("name", FORMULAS)
def test_csv_cells_cannot_start_a_formula(name):
    rows = build_leaderboard([evaluation(name, 0.8)])
    (parsed,) = csv.DictReader(io.StringIO(render(rows, "csv")))
    assert parsed["method"] == "'" + name
    assert float(parsed["mean"]) == pytest.approx(rows[0]["mean"])  # numbers untouched, negatives included
    assert csv_cell(-0.5) == -0.5 and csv_cell("dm") == "dm"


def test_markdown_and_latex_escape_names():
    rows = build_leaderboard([evaluation("a|b <i>_x_ & 100%", 0.8)])
    assert "a\\|b &lt;i&gt;" in render(rows, "md")
    assert "a\\|b &lt;i&gt;" in render(rows, "paper-md")
    latex = render(rows, "latex")
    assert r"\_x\_ \& 100\%" in latex and "\\toprule" in latex and "\\pm" in latex


def test_latex_is_pure_ascii_for_many_groups_and_odd_names():
    names = ["naïve-DM", "数据集", "a_b & 100% {x}", "x–y · z", "γ-net <b>|", "back\\slash ~^$#"]
    evaluations = [evaluation(name, 0.6 + 0.03 * i) for i, name in enumerate(names)]
    evaluations += [evaluation(name, 0.7, ipc=1, selection="reference") for name in names[:2]]
    evaluations += [evaluation(name, 0.7, protocol="digits-kd", protocol_hash="ab" * 8) for name in names[2:]]
    published = evaluation("Ünïcode", 0.7).to_dict() | {"acc_real_source": "published: 84.8 ± 0.1 (Table 2)"}
    weighted = evaluation("weighted", 0.7).to_dict() | {"weight": 0.9}
    evaluations += [Evaluation.from_dict(published), Evaluation.from_dict(weighted)]
    smoke = evaluation("smoke—run", 0.7)
    smoke.provenance["smoke"] = {"epochs": 5, "protocol_epochs": 50}
    ars = ars_evaluation("ars…method", 0.05)
    ars.weight = 0.7
    for metric, groups in (("lrs", 6), ("ars", 1), ("acc", 4)):
        rows = build_leaderboard([*evaluations, smoke, ars], metric=metric)
        latex = render(rows, "latex")
        assert latex.isascii(), [line for line in latex.splitlines() if not line.isascii()]
        assert latex.count("\\begin{table}") == len(group_candidates(rows)) == groups
    rows = build_leaderboard([*evaluations, smoke])
    latex = render(rows, "latex")
    assert "$\\cdot$" in latex and "(1 $-$ w)$\\cdot$HLR" in latex and "$\\pm$" in latex
    assert 'na\\"{\\i}ve-DM' in latex and "[U+6570]" in latex and "x--y $\\cdot$ z" in latex
    assert "a\\_b \\& 100\\% \\{x\\}" in latex and "\\textless{}b\\textgreater{}\\textbar{}" in latex
    assert "w = 0.9" in latex and "smoke run" in latex and "84.8 $\\pm$ 0.1" in latex


def test_names_are_checked_once_with_a_clear_error():
    assert check_name("method name", MARKUP[1]) == MARKUP[1]
    for bad, says in (
        ("", "non-empty"),
        ("a\x1b[31mb", "control character"),
        ("x" * (MAX_NAME_LENGTH + 1), "at most"),
    ):
        with pytest.raises(InputError, match=says):
            check_name("method name", bad)


def test_evaluation_repr_pandas_and_html_for_notebooks():
    e = evaluation("dm <b>", 0.8)
    text = repr(e)
    assert text.startswith("<Evaluation 'dm <b>' digits IPC 10 · LRS ") and len(text) < 200
    assert "5 rounds" in text and "hard labels" in text
    frame = e.to_pandas()
    assert list(frame["seed"]) == [r.seed for r in e.rounds] and frame["lrs"].mean() == pytest.approx(
        e.summaries["lrs"].mean
    )
    html = e._repr_html_()
    assert "dm &lt;b&gt;" in html and "<b>" not in html and "<table>" in html

"""The metric table: every metric's cells, per-round fields and score agree with each other, and its
score function is the published formula."""

from __future__ import annotations

import pytest

from ddrank.cli import build_parser
from ddrank.errors import UnknownNameError
from ddrank.metrics import augmentation_robust_score, label_robust_score
from ddrank.metrics.definitions import METRIC_NAMES, METRICS, metric_definition


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_a_definition_is_consistent(name):
    definition = metric_definition(name)
    cells = {f"acc_{c.name}" for c in definition.cells}
    values = {field: 0.5 for field in cells} | {"acc_real": 0.9}
    computed = values | definition.scores(values, 0.5)
    assert definition.score.field in definition.fields and definition.score.field in computed
    assert set(definition.fields) <= set(computed)
    assert definition.syn_accuracy in definition.fields
    for quantity in (*definition.components, *(q for _, q in definition.ddranking)):
        assert quantity.of(computed) is not None, quantity
    assert definition.needs_real == any(c.source == "real" for c in definition.cells)


def test_lrs_trains_acc_syn_hard_only_for_soft_labels():
    lrs = METRICS["lrs"]
    assert [c.name for c in lrs.cells_for(soft_labels=False)] == ["syn", "random", "real"]
    assert [c.name for c in lrs.cells_for(soft_labels=True)] == ["syn", "random", "syn_hard", "real"]
    hard = lrs.scores({"acc_syn": 0.8, "acc_random": 0.6, "acc_real": 0.95}, 0.5)
    assert hard["acc_syn_hard"] == 0.8 and hard["hlr"] == pytest.approx(0.15)
    assert hard["lrs"] == label_robust_score(hard["hlr"], hard["ior"], 0.5)
    soft = lrs.scores({"acc_syn": 0.8, "acc_random": 0.6, "acc_syn_hard": 0.5, "acc_real": 0.95}, 0.3)
    assert soft["hlr"] == pytest.approx(0.45) and soft["lrs"] == label_robust_score(0.45, soft["ior"], 0.3)


def test_ars_is_the_formula_of_its_four_cells():
    values = {"acc_syn_aug": 0.8, "acc_random_aug": 0.7, "acc_syn_noaug": 0.6, "acc_random_noaug": 0.55}
    (ars,) = METRICS["ars"].scores(values, 0.25).values()
    assert ars == augmentation_robust_score(0.8 - 0.7, 0.6 - 0.55, 0.25)
    with_aug = dict(METRICS["ars"].ddranking)["with_aug_scores"]
    assert with_aug.of(values) == pytest.approx(0.1)


def test_the_command_line_offers_every_metric_and_only_those():
    parser = build_parser()
    for command in (["evaluate", "--images", "x.pt"], ["leaderboard"], ["compare", "a", "b"]):
        for name in METRIC_NAMES:
            assert parser.parse_args([*command, "--metric", name]).metric == name
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--metric", "hlr"])
    with pytest.raises(UnknownNameError, match="did you mean 'ars'"):
        metric_definition("arss")

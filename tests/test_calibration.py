"""Published baselines as data, their look-up, z-scores and verdicts (no training)."""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ddrank import calibration
from ddrank.calibration import (
    FLAG_Z,
    STD_FLOOR,
    compare,
    compare_all,
    lookup,
    published_table,
    verdict,
    z_score,
)
from ddrank.data.real import DATASETS
from ddrank.errors import ConfigError
from ddrank.models import canonical_model_name
from ddrank.protocols import preset_names

DIGITS_TABLE = Path(__file__).parent / "fixtures" / "calibration" / "digits.yaml"


def test_the_packaged_table_names_a_source_and_protocol_for_every_value():
    table = published_table()
    assert len(table.entries) == 12
    for entry in table.entries:
        assert entry.dataset in DATASETS.names() and entry.model == canonical_model_name(entry.model)
        assert entry.paper and entry.table and entry.checked
        assert entry.protocol in preset_names() and set(entry.quoted_by) <= set(preset_names())
        assert 0 < entry.mean < 1 and 0 < entry.std < entry.mean
        assert (entry.ipc is None) == (entry.kind == "whole")


def test_the_issues_cifar10_values_and_whole_dataset_accuracies():
    rows = {(e.dataset, e.model, e.ipc): e.printed for e in published_table().entries}
    assert [rows["cifar10", "ConvNet-3", ipc] for ipc in (1, 10, 50, None)] == [
        "14.4 ± 2.0", "26.0 ± 1.2", "43.4 ± 1.0", "84.8 ± 0.1"
    ]  # fmt: skip
    assert rows["cifar100", "ConvNet-3", None] == "56.2 ± 0.3"
    assert rows["tinyimagenet", "ConvNet-4", None] == "37.6 ± 0.4"
    assert [rows["tinyimagenet", "ConvNet-4", ipc] for ipc in (1, 10, 50)] == [
        "1.4 ± 0.1",
        "5.0 ± 0.2",
        "15.0 ± 0.4",
    ]
    assert not {e.dataset for e in published_table().entries} & {
        "mnist",
        "fashion-mnist",
        "svhn",
    }  # unverified


def test_lookup_prefers_the_protocol_it_was_measured_under_then_quotes():
    measured = lookup("CIFAR-10", "convnetd3", "DC", 10)
    assert measured.protocol == "dc" and measured.mean == 0.26 and measured.std == 0.012
    assert "ICLR 2021" in measured.source and "Table 1" in measured.source
    quoted = lookup("cifar10", "ConvNet-3", "mtt", 10)
    assert quoted == measured  # MTT prints DC's value as its baseline
    assert lookup("cifar100", "ConvNet-3", "dm", None).printed == "56.2 ± 0.3"
    assert lookup("cifar10", "ConvNet-3", "rded", 10) is None  # another protocol: not comparable
    assert lookup("cifar10", "ConvNet-4", "dc", 10) is None
    assert lookup("cifar10", "ConvNet-3", "dc", 20) is None
    assert lookup("tiny", "ConvNet-4", "dsa").printed == "37.6 ± 0.4"  # the same full-data recipe
    assert lookup("tinyimagenet", "ConvNet-4", "dsa", 10) is None  # DSA printed no Tiny ImageNet subsets


def test_z_score_divides_by_the_published_std_with_a_floor():
    entry = lookup("cifar10", "ConvNet-3", "dc", 10)
    assert z_score(0.26, entry) == 0
    assert z_score(0.236, entry) == pytest.approx(-2.0)
    zero = replace(entry, std=0.0)
    assert z_score(0.262, zero) == pytest.approx(0.002 / STD_FLOOR) == pytest.approx(2.0)
    assert z_score(0.262, zero, floor=0.0005) == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="fraction in \\[0, 1\\], got 26.0 \\(accuracies are fractions"):
        z_score(26.0, entry)
    with pytest.raises(ConfigError, match="floor must be positive"):
        z_score(0.2, entry, floor=0)


def test_verdict_flags_beyond_three_deviations():
    assert FLAG_Z == 3.0
    assert [verdict(z) for z in (0.0, 3.0, -3.0, 3.01, -4.5)] == ["ok", "ok", "ok", "above", "below"]
    assert verdict(2.5, threshold=2.0) == "above"
    with pytest.raises(ConfigError, match="NaN"):
        verdict(math.nan)


def test_compare_and_compare_all_give_one_row_per_measurement():
    rows = compare_all("cifar10", "ConvNet-3", "dsa", {50: 0.40, None: 0.85, 1: 0.15, 100: 0.5})
    assert [r.ipc for r in rows] == [1, 50, 100, None]
    assert [r.verdict for r in rows] == ["ok", "below", None, "ok"]
    assert [r.flagged for r in rows] == [False, True, False, False]
    assert rows[1].z == pytest.approx(-3.4)
    row = rows[1].to_dict()
    assert row["published_mean"] == 0.434 and row["published_protocol"] == "dc" and row["flagged"]
    assert "Table 1" in row["source"] and row["measured"] == 0.40
    assert rows[2].to_dict()["source"] is None and rows[2].z is None
    assert compare(0.5, None).verdict is None


def test_the_digits_fixture_table_for_calibration_tests():
    table = published_table(DIGITS_TABLE)
    assert {(e.kind, e.ipc) for e in table.entries} == {("random", 1), ("random", 10), ("whole", None)}
    assert lookup("digits", "ConvNet-2-W16", "digits", 10, table=table).printed == "94.7 ± 1.1"
    rows = compare_all("digits", "convnet-2-w16", "digits", {1: 0.68, 10: 0.90, None: 0.988}, table=table)
    assert [r.verdict for r in rows] == ["ok", "below", "ok"]
    assert lookup("digits", "ConvNet-2-W16", "digits", 10) is None  # not in the packaged table


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "subset"}, "kind must be 'random' or 'whole', got 'subset'"),
        ({"ipc": 0}, "a random-subset value needs a positive integer ipc, got 0"),
        ({"kind": "whole"}, "a whole-dataset value has no ipc"),
        ({"mean": 120}, "mean must be a percentage in \\[0, 100\\], got 120"),
        ({"paper": "nowhere"}, "paper 'nowhere' is not listed under 'papers'"),
        ({"dataset": "cifar1"}, "unknown dataset 'cifar1'; did you mean 'cifar10'"),
        ({"source": "x"}, "unknown field 'source'"),
        ({"quoted_by": "dc"}, "quoted_by must be a list of protocol names"),
    ],
)
def test_bad_tables_are_refused_in_one_line(tmp_path, entry, message):
    good = {"dataset": "cifar10", "model": "ConvNet-3", "kind": "random", "ipc": 1, "mean": 14.4, "std": 2.0,
            "paper": "dc", "table": "Table 1", "protocol": "dc"}  # fmt: skip
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump({"papers": {"dc": "DC"}, "entries": [{**good, **entry}]}))
    with pytest.raises(ConfigError, match=message) as caught:
        published_table(path)
    assert "\n" not in str(caught.value) and "entry 0" in str(caught.value)


def test_unreadable_or_repeated_tables_are_refused(tmp_path):
    path = tmp_path / "table.yaml"
    path.write_text("entries: [\n  - {")
    with pytest.raises(ConfigError, match="is not a valid YAML table of published values"):
        published_table(path)
    path.write_text("papers: {}\n")
    with pytest.raises(ConfigError, match="expected a mapping with 'papers' and a list of 'entries'"):
        published_table(path)
    entry = {"dataset": "cifar10", "model": "ConvNet-3", "kind": "whole", "mean": 84.8, "std": 0.1,
             "paper": "dc", "table": "Table 1", "protocol": "dc"}  # fmt: skip
    path.write_text(yaml.safe_dump({"papers": {"dc": "DC"}, "entries": [entry, entry]}))
    with pytest.raises(ConfigError, match="entry 1 repeats cifar10 ConvNet-3 whole None"):
        published_table(path)
    with pytest.raises(ConfigError, match="cannot read the published-values table"):
        published_table(tmp_path / "missing.yaml")


def test_the_packaged_table_is_read_once():
    assert calibration.published_table() is calibration.published_table()

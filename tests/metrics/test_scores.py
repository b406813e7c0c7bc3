import math

import numpy as np
import pytest

from ddrank.errors import InputError
from ddrank.metrics import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    summarize,
)


def test_worked_example_from_the_spec():
    # HLR 0.2373, IOR 0.3090, w 0.5 -> a = 0.03585 -> LRS = 0.2845
    assert label_robust_score(0.2373, 0.3090, 0.5) == pytest.approx(0.28447, abs=5e-5)


def test_components_are_differences_of_fractions():
    assert hard_label_recovery(0.848, 0.611) == pytest.approx(0.2370)
    assert improvement_over_random(0.611, 0.302) == pytest.approx(0.3090)


@pytest.mark.parametrize(
    ("hlr", "ior", "w", "expected"),
    [
        (0.0, 0.0, 0.5, (1 - math.exp(-1)) / (math.e - math.exp(-1))),  # a = 0
        (1.0, -1.0, 0.5, 0.0),  # worst case: a = -1
        (0.0, 1.0, 1.0, 1.0),  # best case with w = 1: a = 1
        (0.1, 0.2, 0.0, (math.exp(-0.1) - math.exp(-1)) / (math.e - math.exp(-1))),  # HLR only
    ],
)
def test_lrs_endpoints(hlr, ior, w, expected):
    assert label_robust_score(hlr, ior, w) == pytest.approx(expected, abs=1e-12)


def test_lrs_stays_in_unit_interval_over_the_valid_range():
    grid = np.linspace(-1, 1, 41)
    for w in np.linspace(0, 1, 11):
        values = [label_robust_score(h, i, w) for h in grid for i in grid]
        assert min(values) >= 0.0 and max(values) <= 1.0


def test_lrs_is_monotone_in_its_components():
    assert label_robust_score(0.1, 0.2) > label_robust_score(0.2, 0.2)
    assert label_robust_score(0.1, 0.3) > label_robust_score(0.1, 0.2)


def test_percentages_are_rejected_with_a_hint():
    with pytest.raises(InputError, match="fractions, not percentages"):
        label_robust_score(23.73, 30.90)
    with pytest.raises(InputError, match="fractions, not percentages"):
        hard_label_recovery(84.8, 61.1)
    with pytest.raises(InputError, match="weight must lie in"):
        label_robust_score(0.1, 0.1, weight=1.5)


def test_ars_worked_example_and_range():
    # b = 0.5 * 0.05 + 0.5 * 0.11 = 0.08
    expected = (math.exp(0.08) - math.exp(-1)) / (math.e - math.exp(-1))
    assert augmentation_robust_score(0.05, 0.11) == pytest.approx(expected)
    grid = np.linspace(-1, 1, 21)
    values = [augmentation_robust_score(a, b, g) for a in grid for b in grid for g in (0, 0.3, 1)]
    assert min(values) >= 0.0 and max(values) <= 1.0


def test_summary_uses_sample_std_and_t_interval():
    s = summarize([0.1, 0.2, 0.3])
    assert s.mean == pytest.approx(0.2)
    assert s.std == pytest.approx(0.1)  # ddof = 1
    assert s.ddof == 1
    # t(0.975, df=2) = 4.302653
    assert s.ci_high - s.mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    single = summarize([0.5])
    assert single.mean == 0.5 and math.isnan(single.std)
    assert single.as_dict()["ci_low"] is None

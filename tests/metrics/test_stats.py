"""Statistics over rounds: interval coverage, paired tests, Kendall tau and rank stability."""

import math

import numpy as np
import pytest
from scipy import stats

from ddrank.errors import InputError
from ddrank.metrics import (
    PairedComparison,
    bootstrap_ci,
    kendall_tau,
    paired_comparison,
    rank_stability,
    ranking_agreement,
    summarize,
)
from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS

TRIALS, N, TRUE_MEAN = 2000, 10, 0.6


def _samples(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(TRUE_MEAN, 0.05, size=(TRIALS, N))


def test_bootstrap_interval_covers_the_true_mean_95_percent_of_the_time():
    intervals = np.array([bootstrap_ci(x, resamples=2000, seed=i) for i, x in enumerate(_samples())])
    coverage = np.mean((intervals[:, 0] <= TRUE_MEAN) & (intervals[:, 1] >= TRUE_MEAN))
    assert coverage == pytest.approx(0.95, abs=0.03)


def _bootstrap_coverage(n: int, trials: int = 2000) -> float:
    """How often the 95% bootstrap interval of ``n`` normal rounds holds the true mean (fixed seed)."""
    samples = np.random.default_rng(1).normal(TRUE_MEAN, 0.05, size=(trials, n))
    intervals = np.array([bootstrap_ci(x, resamples=2000, seed=i) for i, x in enumerate(samples)])
    return float(np.mean((intervals[:, 0] <= TRUE_MEAN) & (intervals[:, 1] >= TRUE_MEAN)))


def test_bootstrap_interval_covers_95_percent_only_from_min_bootstrap_rounds():
    """Leaderboards show the bootstrap interval from MIN_BOOTSTRAP_ROUNDS on: there it covers 95% within
    1.5 points; with ddrank's usual 5 rounds, and fewer, it does not (6 and 7 rounds are borderline)."""
    assert _bootstrap_coverage(MIN_BOOTSTRAP_ROUNDS) >= 0.935
    assert _bootstrap_coverage(5) < 0.935
    assert _bootstrap_coverage(3) < 0.80 and _bootstrap_coverage(2) < 0.60


def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    summaries = [summarize(x) for x in _samples(2)]
    coverage = np.mean([s.ci_low <= TRUE_MEAN <= s.ci_high for s in summaries])
    assert coverage == pytest.approx(0.95, abs=0.03)


def test_bootstrap_is_deterministic_given_the_seed_and_brackets_the_mean():
    x = np.random.default_rng(3).exponential(size=8)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(list(x), seed=5)
    assert bootstrap_ci(x, seed=5) != bootstrap_ci(x, seed=6)
    low, high = bootstrap_ci(x, confidence=0.9)
    assert low < x.mean() < high
    assert low < bootstrap_ci(x, confidence=0.5)[0] < bootstrap_ci(x, confidence=0.5)[1] < high


def test_bootstrap_of_one_value_is_undefined_and_of_none_an_error():
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    with pytest.raises(InputError):
        bootstrap_ci([])
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=95)


def test_paired_comparison_detects_a_planted_difference():
    rng = np.random.default_rng(4)
    b = rng.uniform(0.4, 0.6, size=10)
    a = b + 0.03 + rng.normal(0, 0.01, size=10)
    result = paired_comparison(a, b)
    assert isinstance(result, PairedComparison) and result.n == 10 and result.test == "paired t-test"
    assert result.p_value < 0.01
    assert result.ci_low < result.mean_difference < result.ci_high and result.ci_low > 0
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert result.mean_difference == pytest.approx(0.03, abs=0.01)


def test_identical_methods_are_not_flagged():
    scores = [0.5, 0.61, 0.47, 0.55]
    result = paired_comparison(scores, scores)
    assert (result.mean_difference, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_comparison([0.6, 0.6, 0.6], [0.5, 0.5, 0.5])
    assert shifted.p_value == 0.0 and shifted.ci_low == shifted.ci_high == shifted.mean_difference


def test_noise_without_a_shift_is_flagged_at_about_the_nominal_rate():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.7, size=(500, 5))
    noise = rng.normal(0, 0.02, size=(2, 500, 5))
    p = np.array(
        [paired_comparison(base[i] + noise[0, i], base[i] + noise[1, i]).p_value for i in range(500)]
    )
    assert np.mean(p < 0.05) <= 0.08


def test_paired_comparison_needs_equal_lengths():
    with pytest.raises(InputError, match="3 and 2"):
        paired_comparison([0.1, 0.2, 0.3], [0.1, 0.2])


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_tau_matches_scipy(ties):
    rng = np.random.default_rng(6 + ties)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        if ties:
            x, y = rng.integers(0, 4, size=n).astype(float), rng.integers(0, 3, size=n).astype(float)
        else:
            x = rng.normal(size=n)
            y = x + rng.normal(scale=rng.uniform(0.1, 3), size=n)
        expected = stats.kendalltau(x, y).statistic
        if math.isnan(expected):
            assert math.isnan(kendall_tau(x, y))
        else:
            assert kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_edge_cases():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([-math.inf, 0, math.inf], [1, 2, 3]) == 1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau([1, math.nan], [1, 2]))
    with pytest.raises(InputError, match="equal length"):
        kendall_tau([1, 2, 3], [1, 2])


def test_rank_stability_is_one_for_consistent_rounds_and_lower_when_shuffled():
    consistent = {"a": [0.9, 0.8, 0.85], "b": [0.7, 0.6, 0.65], "c": [0.5, 0.4, 0.45], "d": [0.3, 0.2, 0.25]}
    assert rank_stability(consistent) == {"mean_tau": 1.0, "min_tau": 1.0, "rounds": 3}
    shuffled = {"a": [0.9, 0.3, 0.85], "b": [0.7, 0.8, 0.65], "c": [0.5, 0.6, 0.2], "d": [0.3, 0.4, 0.45]}
    result = rank_stability(shuffled)
    assert result["rounds"] == 3
    assert -1.0 <= result["min_tau"] < result["mean_tau"] < 1.0


def test_rank_stability_needs_one_score_per_round_and_two_methods():
    with pytest.raises(InputError, match="one score per round"):
        rank_stability({"a": [0.1, 0.2], "b": [0.3]})
    with pytest.raises(InputError, match="two methods"):
        rank_stability({"a": [0.1, 0.2]})


def test_ranking_agreement_uses_the_methods_both_sides_score():
    convnet = {"dm": 0.3, "mtt": 0.5, "random": 0.1, "herding": 0.2}
    resnet = {"dm": 0.25, "mtt": 0.45, "random": 0.05, "kcenter": 0.9}
    assert ranking_agreement(convnet, resnet) == 1.0
    assert ranking_agreement(convnet, {"dm": 0.5, "mtt": 0.1, "random": 0.9}) == -1.0
    assert math.isnan(ranking_agreement(convnet, {"dm": 0.5, "other": 0.2}))

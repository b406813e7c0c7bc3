"""Statistics over evaluation rounds: t-intervals, bootstrap intervals, paired tests and rank agreement."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from ddrank.errors import InputError


def _scipy_stats() -> ModuleType:
    """scipy.stats, imported on first use: it takes about a second, which commands without scores skip."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation (ddof=1) and confidence interval of per-round values."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    ddof: int = 1
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def summarize(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> Summary:
    """Student-t interval for the mean; with one value the spread is unknown (NaN).

    ``bounds`` are the range the quantity cannot leave (accuracies: [0, 1]); the interval is clipped
    to it, since a mean of bounded values is itself bounded.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(mean, math.nan, math.nan, math.nan, 1, confidence=confidence)
    std = float(x.std(ddof=1))
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(mean, std, low, high, int(x.size), confidence=confidence)


def _floats(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"{name} must be a non-empty sequence of numbers, got shape {x.shape}")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence!r}")


# The fewest rounds from which a 95% bootstrap interval is shown as one. Below it the interval covers the
# true mean far less often than it says: simulated with normal rounds (the t-interval's own case), coverage
# is about 50% at 2 rounds, 75% at 3, 87% at 4, 92-93% at 5, 93-94% at 6-7 and 94-95% from 8 on
# (tests/metrics/test_stats.py measures it with a fixed seed).
MIN_BOOTSTRAP_ROUNDS = 8


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Expanded percentile bootstrap interval of the mean (Hesterberg 2015), deterministic given ``seed``.

    Unlike the plain percentile interval it nears nominal coverage with tens of rounds (n = 10: 95%, not
    ~90%), but not with a few: below :data:`MIN_BOOTSTRAP_ROUNDS` it covers much less than ``confidence``.
    """
    x = _floats(values, "values")
    _check_confidence(confidence)
    if resamples < 1:
        raise InputError(f"resamples must be at least 1, got {resamples}")
    n = x.size
    if n == 1:
        return math.nan, math.nan
    # Widen the tail so that a normal sample gets the t-interval's width; skewness still shows.
    z = math.sqrt(n / (n - 1)) * float(_scipy_stats().t.ppf(0.5 + confidence / 2, df=n - 1))
    tail = float(_scipy_stats().norm.sf(z))
    generator = np.random.Generator(np.random.PCG64(seed))
    chunk = max(1, (1 << 20) // n)  # bounds memory at about 8 MiB of indices per block
    means = np.concatenate(
        [
            x[generator.integers(0, n, size=(min(chunk, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Method a minus method b over the same rounds: mean difference, its interval and a p-value."""

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    test: str
    confidence: float = 0.95


def paired_comparison(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> PairedComparison:
    """Two-sided paired t-test and t-interval of ``a - b`` for two methods scored on the same seeds.

    Differences that are all equal (up to rounding) have no spread: the interval is that point and
    the p-value is 1 when it is zero, else 0. One pair has an unknown spread (NaN interval and p).
    """
    x, y = _floats(a, "a"), _floats(b, "b")
    if x.size != y.size:
        raise InputError(
            f"a paired comparison needs one score per round on each side, got {x.size} and {y.size}"
        )
    _check_confidence(confidence)
    d = x - y
    n = int(d.size)
    mean = float(d.mean())
    test = "paired t-test"
    if n == 1:
        return PairedComparison(mean, math.nan, math.nan, math.nan, n, test, confidence)
    if float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        p = 1.0 if mean == 0.0 else 0.0
        return PairedComparison(mean, mean, mean, p, n, f"{test} (constant differences)", confidence)
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2, df=n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    p = float(_scipy_stats().ttest_rel(x, y).pvalue)
    return PairedComparison(mean, mean - half, mean + half, p, n, test, confidence)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score vectors over the same items (ties handled as in scipy).

    NaN when either side is constant, has a NaN, or has fewer than two items.
    """
    u, v = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if u.ndim != 1 or u.shape != v.shape:
        raise InputError(f"kendall_tau needs two vectors of equal length, got shapes {u.shape} and {v.shape}")
    if u.size < 2 or np.isnan(u).any() or np.isnan(v).any():
        return math.nan
    du, dv = _order_signs(u), _order_signs(v)
    # Each unordered pair appears twice in the full matrices (and the diagonal is zero).
    concordance = int((du.astype(np.int64) * dv).sum()) // 2
    untied_u, untied_v = int(np.count_nonzero(du)) // 2, int(np.count_nonzero(dv)) // 2
    if untied_u == 0 or untied_v == 0:
        return math.nan
    return min(1.0, max(-1.0, concordance / math.sqrt(untied_u) / math.sqrt(untied_v)))


def _order_signs(u: np.ndarray) -> np.ndarray:
    """sign(u_i - u_j) for every pair, by comparison (exact, also for infinities)."""
    return (u[:, None] > u[None, :]).astype(np.int8) - (u[:, None] < u[None, :]).astype(np.int8)


def rank_stability(scores_by_round: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """How consistently rounds rank the methods: Kendall tau of each round's scores against the mean scores.

    Rounds whose ranking is undefined (every method tied) are left out of ``mean_tau`` and ``min_tau``.
    """
    if len(scores_by_round) < 2:
        raise InputError(f"rank stability needs at least two methods, got {len(scores_by_round)}")
    lengths = {method: len(scores) for method, scores in scores_by_round.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"every method needs one score per round, got {lengths}")
    table = np.array([_floats(s, f"scores of {m!r}") for m, s in scores_by_round.items()])
    mean = table.mean(axis=1)
    taus = np.array([kendall_tau(table[:, r], mean) for r in range(table.shape[1])])
    defined = taus[~np.isnan(taus)]
    if defined.size == 0:
        return {"mean_tau": math.nan, "min_tau": math.nan, "rounds": table.shape[1]}
    return {"mean_tau": float(defined.mean()), "min_tau": float(defined.min()), "rounds": table.shape[1]}


def ranking_agreement(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall tau between two rankings of the methods both sides score (NaN if fewer than two)."""
    common = [method for method in a if method in b]
    if len(common) < 2:
        return math.nan
    return kendall_tau([a[m] for m in common], [b[m] for m in common])

"""Summaries over evaluation rounds: mean, sample standard deviation and a 95% t-interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats


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


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Student-t interval for the mean; with one value the spread is unknown (NaN)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(mean, math.nan, math.nan, math.nan, 1, confidence=confidence)
    std = float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return Summary(mean, std, mean - half, mean + half, int(x.size), confidence=confidence)

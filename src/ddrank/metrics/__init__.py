"""Scores and statistics: pure functions on plain numbers, no training code."""

from ddrank.metrics.scores import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)
from ddrank.metrics.stats import Summary, summarize

__all__ = [
    "Summary",
    "augmentation_robust_score",
    "hard_label_recovery",
    "improvement_over_random",
    "label_robust_score",
    "summarize",
]

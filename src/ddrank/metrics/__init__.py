"""Scores and statistics: pure functions on plain numbers, no training code."""

from ddrank.metrics.scores import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)
from ddrank.metrics.stats import (
    PairedComparison,
    Summary,
    bootstrap_ci,
    kendall_tau,
    paired_comparison,
    rank_stability,
    ranking_agreement,
    summarize,
)

__all__ = [
    "PairedComparison",
    "Summary",
    "augmentation_robust_score",
    "bootstrap_ci",
    "hard_label_recovery",
    "improvement_over_random",
    "kendall_tau",
    "label_robust_score",
    "paired_comparison",
    "rank_stability",
    "ranking_agreement",
    "summarize",
]

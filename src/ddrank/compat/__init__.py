"""Compatibility with the DD-Ranking reference implementation: its configuration files and its
metric classes (same arguments and result keys; fractions instead of percentages)."""

from ddrank.compat.ddranking import (
    AugmentationRobustScore,
    GeneralEvaluator,
    LabelRobustScoreHard,
    LabelRobustScoreSoft,
)
from ddrank.compat.ddranking_config import (
    DDRANKING_KEYS,
    Config,
    TranslatedConfig,
    translate_ddranking_config,
)

__all__ = [
    "DDRANKING_KEYS",
    "AugmentationRobustScore",
    "Config",
    "GeneralEvaluator",
    "LabelRobustScoreHard",
    "LabelRobustScoreSoft",
    "TranslatedConfig",
    "translate_ddranking_config",
]

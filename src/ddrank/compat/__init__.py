"""Compatibility with the DD-Ranking reference implementation's inputs."""

from ddrank.compat.ddranking_config import (
    DDRANKING_KEYS,
    Config,
    TranslatedConfig,
    translate_ddranking_config,
)

__all__ = ["DDRANKING_KEYS", "Config", "TranslatedConfig", "translate_ddranking_config"]

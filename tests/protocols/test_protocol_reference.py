"""PROTOCOLS.md documents every key a protocol file can set."""

from __future__ import annotations

from pathlib import Path

from ddrank.protocols.protocol import (
    AugmentSpec,
    FullDataRecipe,
    LabelSpec,
    LrSearch,
    OptimizerSpec,
    Protocol,
    ScheduleSpec,
)

REFERENCE = Path(__file__).resolve().parents[2] / "PROTOCOLS.md"


def test_every_protocol_key_is_documented():
    text = REFERENCE.read_text(encoding="utf-8")
    models = (Protocol, LabelSpec, AugmentSpec, OptimizerSpec, ScheduleSpec, LrSearch, FullDataRecipe)
    missing = [f"{m.__name__}.{key}" for m in models for key in m.model_fields if f"`{key}`" not in text]
    assert missing == []

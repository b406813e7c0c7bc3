"""Bounds on protocol and configuration values that allocate memory or run time.

A protocol or DD-Ranking configuration with ``num_epochs: 10**12``, hundreds of teachers or a
batch of a billion images would not fail, it would run (or allocate) until killed. Such values are
refused with a one-line :class:`~ddrank.errors.ConfigError` naming the key and the limit. Each
count limit can be raised for a run that needs more with an environment variable, e.g.
``DDRANK_MAX_EPOCHS=20000``; learning rates, weight decay and temperatures have fixed sanity bounds.
"""

from __future__ import annotations

from ddrank.errors import ConfigError, positive_int_env

COUNT_LIMITS: dict[str, int] = {
    "epochs": 10_000,
    "batch_size": 65_536,
    "teachers": 32,
    "rounds": 100,
    "ipc": 10_000,
    "lr_grid": 64,
}
"""Defaults of the count limits; ``DDRANK_MAX_<NAME>`` overrides each."""

MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_TEMPERATURE = 1000.0
MAX_LOSS_WEIGHT = 1000.0


def env_name(name: str) -> str:
    return f"DDRANK_MAX_{name.upper()}"


def limit(name: str) -> int:
    """The current limit ``name`` (its environment override, else the default)."""
    return positive_int_env(env_name(name), COUNT_LIMITS[name], ConfigError, f"the limit on {name}")


def over_limit(name: str, value: int, what: str | None = None) -> str | None:
    """The message for ``value`` above limit ``name`` (``what`` names the quantity), else None."""
    bound = limit(name)
    if value <= bound:
        return None
    return f"{value} exceeds the limit of {bound} {what or name} (set {env_name(name)} to allow more)"

"""Exception types a user can act on.

Every error raised for bad input derives from :class:`DDRankError`; the command line turns
it into a one-line message and exit code 2, before any training starts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

MAX_QUOTED = 300


class DDRankError(Exception):
    """Base class of every user-facing ddrank error."""


class InputError(DDRankError, ValueError):
    """A synthetic set, a real dataset or an argument is malformed."""


class DataError(InputError):
    """A real dataset's file is malformed, truncated, oversized, or fails its published checksum."""


class ConfigError(DDRankError, ValueError):
    """A protocol or configuration file is invalid or contradictory."""


class CheckpointError(DDRankError):
    """A model checkpoint is missing, unsafe to load, or does not fit the model."""


class StoreError(DDRankError):
    """A results database or export file is unreadable, corrupt, busy, full, or from a newer ddrank."""


class UnknownNameError(DDRankError, KeyError):
    """A name (model, dataset, protocol, augmentation, loss, ...) is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        if not close:
            lowered = {v.lower(): v for v in valid}
            close = [
                lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
            ]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}{hint} (valid: {shown})")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def shown(value: object) -> str:
    """``value`` (a path, a name) as typed, with control characters escaped so a message stays one line."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def one_line(error: BaseException | str) -> str:
    """The first non-empty line of a library's error message, escaped and shortened for a one-line message."""
    text = str(error)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        line = type(error).__name__ if isinstance(error, BaseException) else "unknown error"
    line = shown(line)
    return line if len(line) <= MAX_QUOTED else line[: MAX_QUOTED - 3] + "..."


def positive_int_env(variable: str, default: int, error: type[DDRankError], what: str = "") -> int:
    """The positive integer in environment variable ``variable`` (unset or blank: ``default``);
    anything else raises ``error`` naming the variable (and ``what`` it limits)."""
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise error(f"{variable}={shown(raw)!r} must be a positive integer{what and f' ({what})'}")
    return value

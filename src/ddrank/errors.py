"""Exception types a user can act on.

Every error raised for bad input derives from :class:`DDRankError`; the command line turns
it into a one-line message and exit code 2, before any training starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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

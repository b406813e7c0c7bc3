"""User-supplied names (methods, students) checked once, and shown as typed in every output.

A name may hold any printable text (rich markup, HTML, spreadsheet formulas): outputs escape it for
their medium (:func:`csv_cell` here; rich ``Text``, ``html.escape`` and Markdown escaping in
:mod:`ddrank.report`). What no output can show faithfully, control characters and names longer
than a table can hold, is refused when the name is given.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from ddrank.errors import InputError

MAX_NAME_LENGTH = 200
# OWASP's CSV injection rule: a cell starting with one of these is read as a formula by spreadsheets.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_name(kind: str, name: object) -> str:
    """``name`` unchanged if it is a non-empty string of at most MAX_NAME_LENGTH printable characters;
    InputError naming ``kind`` (e.g. "method name") otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"the {kind} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(
            f"the {kind} {name[:40]!r}... is {len(name)} characters long; "
            f"give one of at most {MAX_NAME_LENGTH}"
        )
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InputError(
            f"the {kind} {name!r} contains control character {bad[0]!r}; give a name of printable characters"
        )
    return name


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet reads as a formula: text starting with =, +, -, @, tab or carriage
    return gets a leading apostrophe (numbers are left as they are)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def default_method(images: str | os.PathLike) -> str:
    """The method name of a synthetic set given by path: its file name without extension, or its folder's
    name when the file has a generic name (images.pt, data.npz, ...)."""
    path = Path(images).expanduser()
    generic = {
        "images",
        "image",
        "data",
        "syn",
        "synthetic",
        "res",
        "result",
        "results",
        "tensors",
        "images_best",
    }
    for part in (path, *path.parents):
        name = part.stem if part.suffix else part.name
        if name and name.lower() not in generic and name not in (".", ".."):
            return name
    return "synthetic"

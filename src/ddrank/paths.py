"""Where ddrank keeps its caches: ``$DDRANK_CACHE_DIR`` or ``~/.cache/ddrank``."""

from __future__ import annotations

import os
from pathlib import Path

from ddrank.errors import InputError, shown


def cache_dir(*parts: str) -> Path:
    """The cache directory (created on demand), or a sub-directory of it."""
    root = os.environ.get("DDRANK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ddrank"
    )
    path = Path(root, *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot use {shown(path)} as the ddrank cache directory ({exc.strerror or exc}); "
            "set DDRANK_CACHE_DIR to a writable folder"
        ) from exc
    return path

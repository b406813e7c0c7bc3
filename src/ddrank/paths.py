"""Where ddrank keeps its caches: ``$DDRANK_CACHE_DIR`` or ``~/.cache/ddrank``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache directory (created on demand), or a sub-directory of it."""
    root = os.environ.get("DDRANK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ddrank"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

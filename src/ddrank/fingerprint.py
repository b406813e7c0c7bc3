"""One content hash for every fingerprint in ddrank: SHA-256 over text and array parts, in order.

Text is hashed as UTF-8, arrays and tensors as their raw bytes (C order; large arrays, such as
memory-mapped datasets, in chunks), so the same content gives the same hex digest everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

Part = str | bytes | np.ndarray | torch.Tensor

_CHUNK_BYTES = 1 << 26


def _update(digest: Any, part: Part) -> None:
    if isinstance(part, str):
        digest.update(part.encode())
    elif isinstance(part, bytes):
        digest.update(part)
    elif isinstance(part, torch.Tensor):
        value = part.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (counters) too
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    else:
        array = np.asarray(part)
        if array.ndim == 0 or len(array) == 0:
            digest.update(np.ascontiguousarray(array).tobytes())
            return
        rows = max(1, _CHUNK_BYTES // max(1, array[0].nbytes))
        for start in range(0, len(array), rows):
            digest.update(np.ascontiguousarray(array[start : start + rows]).tobytes())


def fingerprint(*parts: Part, length: int | None = None) -> str:
    """The SHA-256 hex digest of ``parts`` hashed one after the other (its first ``length`` characters)."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    text = digest.hexdigest()
    return text if length is None else text[:length]

"""Keep freed CPU tensors' memory in the process heap instead of returning it to the kernel.

glibc serves large blocks with mmap and unmaps them on free, so every training step on the CPU
pays page faults for its activations again (a third of the run time for ensembles). Raising the
mmap and trim thresholds once makes those blocks reusable. Linux/glibc only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@cache
def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when glibc accepted them."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))

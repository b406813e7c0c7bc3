"""Counter-based random numbers that are identical on every device and batch layout.

A *key* is an int64 tensor of shape ``[K]`` (one key per ensemble member, or ``[1]``).
Random values are a pure hash of (key, element index), so the loop backend (K = 1) and the
ensemble backend (K members at once) draw exactly the same numbers for the same job, on the
CPU or the GPU, with no generator state to carry and no per-sample Python.

Keys for sub-streams (an epoch, a step, one augmentation family) are derived with
:func:`fold`. All arithmetic stays below 2**49 in int64, so there is no overflow. On a CPU the
same hash runs on numpy uint64 arrays (products wrap, then are masked: the same values), which
there is several times faster than a chain of small torch ops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF
_U16, _U15 = np.uint64(16), np.uint64(15)
_UMASK32, _UMUL1, _UMUL2 = np.uint64(_MASK32), np.uint64(0x7FEB352D), np.uint64(0x846CA68B)


def _mul32(x: Tensor | int, c: int) -> Tensor | int:
    """(x * c) mod 2**32 for x >= 0, split in 16-bit halves so that an int64 product never overflows."""
    lo = (x & _MASK16) * c
    hi = ((x >> 16) * c) & _MASK16
    return (lo + (hi << 16)) & _MASK32


def _mix32(x: Tensor | np.ndarray | int) -> Tensor | np.ndarray | int:
    """A 32-bit integer finaliser with good avalanche (Wellons' lowbias32).

    A numpy uint64 array is a fresh intermediate of the hash (see :func:`_operands`) and is updated
    in place: its products wrap modulo 2**64, so masking them gives the same low 32 bits."""
    if isinstance(x, np.ndarray):
        x ^= x >> _U16
        x *= _UMUL1
        x &= _UMASK32
        x ^= x >> _U15
        x *= _UMUL2
        x &= _UMASK32
        x ^= x >> _U16
        return x
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _operands(*tensors: Tensor) -> tuple[Tensor | np.ndarray, ...]:
    """What the hash runs on: fresh uint64 numpy copies when every tensor is on the CPU (outside a
    torch.compile trace), where numpy is several times faster than a chain of small torch ops; the
    tensors themselves elsewhere."""
    if all(t.device.type == "cpu" for t in tensors) and not torch.compiler.is_compiling():
        return tuple(t.numpy().astype(np.uint64) for t in tensors)
    return tensors


def _result(x: Tensor | np.ndarray) -> Tensor:
    """int64 hash values (below 2**32, so uint64 bits read as the same int64) as a tensor."""
    return torch.from_numpy(np.asarray(x).view(np.int64)) if isinstance(x, np.ndarray | np.generic) else x


def key_from_seed(seed: int | list[int], device: torch.device | str | None = None) -> Tensor:
    """Keys (int64, in [0, 2**32)) for one seed or a list of seeds."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    x = torch.tensor([s & _MASK32 for s in seeds], dtype=torch.int64, device=device)
    return _mix32(_mix32(x) ^ 0x9E3779B9)


def _fold_tag(tag: int | Tensor) -> int | Tensor:
    return (tag * 0x9E3779B1 + 0x7F4A7C15) & _MASK32


def fold(key: Tensor, *tags: int) -> Tensor:
    """Derive an independent key from ``key`` and integer tags (epoch, step, stream id)."""
    (x,) = _operands(key)
    for tag in tags:
        x = _mix32(x ^ _mix32(_fold_tag(int(tag))))
    return _result(x)


def fold_each(key: Tensor, tags: Tensor) -> Tensor:
    """``fold(key, t)`` for every ``t`` in the int64 tensor ``tags`` at once, for one key (shape ``[1]``):
    shape ``[len(tags)]``."""
    x, t = _operands(key, _fold_tag(tags.to(torch.int64)))
    return _result(_mix32(x ^ _mix32(t)))


def bits_at(keys: Tensor, counters: Tensor) -> Tensor:
    """Element ``counter`` of each key's stream (``bits(key, n)[:, counter]``), for broadcastable int64
    tensors of keys and counters."""
    k, c = _operands(keys, counters)
    return _result(_mix32(_mix32(k ^ _mix32(c + 0x632BE5AB)) + 0x3C6EF372))


def bits(key: Tensor, n: int) -> Tensor:
    """Uniform 32-bit integers, shape ``[K, n]`` (int64 values in [0, 2**32))."""
    return bits_at(key[:, None], torch.arange(n, device=key.device, dtype=torch.int64)[None, :])


def uniform(key: Tensor, *shape: int) -> Tensor:
    """Uniform float32 in [0, 1), shape ``[K, *shape]``."""
    n = int(np.prod(shape)) if shape else 1
    u = (bits(key, n) >> 8).to(torch.float32) * (1.0 / (1 << 24))
    return u.view(key.shape[0], *shape)


def randint(key: Tensor, low: int, high: int, *shape: int) -> Tensor:
    """Uniform integers in [low, high), shape ``[K, *shape]``."""
    if high <= low:
        raise ValueError(f"empty range [{low}, {high})")
    n = int(np.prod(shape)) if shape else 1
    r = bits(key, n) % (high - low) + low
    return r.view(key.shape[0], *shape)


def permutation(key: Tensor, n: int) -> Tensor:
    """A random permutation of range(n) per key, shape ``[K, n]``."""
    return torch.sort(bits(key, n), dim=1, stable=True).indices


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (e.g. base seed and round), stable across runs."""
    return int(np.random.SeedSequence([int(p) & _MASK32 for p in parts]).generate_state(1)[0]) & 0x7FFFFFFF

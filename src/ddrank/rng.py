"""Counter-based random numbers that are identical on every device and batch layout.

A *key* is an int64 tensor of shape ``[K]`` (one key per ensemble member, or ``[1]``).
Random values are a pure hash of (key, element index), so the loop backend (K = 1) and the
ensemble backend (K members at once) draw exactly the same numbers for the same job, on the
CPU or the GPU, with no generator state to carry and no per-sample Python.

Keys for sub-streams (an epoch, a step, one augmentation family) are derived with
:func:`fold`. All arithmetic stays below 2**49 in int64, so there is no overflow. On a CPU the
same hash runs in numpy (uint64 with wrap-around, then masked: the same values) because there
it is several times faster than a chain of small torch ops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), without int64 overflow."""
    lo = (x & _MASK16) * c
    hi = ((x >> 16) * c) & _MASK16
    return (lo + (hi << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer finaliser with good avalanche (Wellons' lowbias32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


_U16, _U15 = np.uint64(16), np.uint64(15)
_UMASK32, _UMUL1, _UMUL2 = np.uint64(_MASK32), np.uint64(0x7FEB352D), np.uint64(0x846CA68B)


def _mix32_np(x: np.ndarray) -> np.ndarray:
    """:func:`_mix32` on a uint64 array, in place: products wrap modulo 2**64, so masking them
    gives the same low 32 bits as the split products of the torch version, for any input."""
    x ^= x >> _U16
    x *= _UMUL1
    x &= _UMASK32
    x ^= x >> _U15
    x *= _UMUL2
    x &= _UMASK32
    x ^= x >> _U16
    return x


def _on_cpu(*tensors: Tensor) -> bool:
    """Whether to hash in numpy: every tensor on the CPU, and not inside a torch.compile trace."""
    return all(t.device.type == "cpu" for t in tensors) and not torch.compiler.is_compiling()


def _as_u64(x: Tensor) -> np.ndarray:
    return x.numpy().astype(np.uint64)


def _as_tensor(x: np.ndarray) -> Tensor:
    """int64 tensor of hash values (below 2**32, so the uint64 bits read as the same int64)."""
    return torch.from_numpy(np.asarray(x).view(np.int64))


def key_from_seed(seed: int | list[int], device: torch.device | str | None = None) -> Tensor:
    """Keys (int64, in [0, 2**32)) for one seed or a list of seeds."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    x = torch.tensor([s & _MASK32 for s in seeds], dtype=torch.int64, device=device)
    return _mix32(_mix32(x) ^ 0x9E3779B9)


def _fold_tag(tag: int | Tensor) -> int | Tensor:
    return (tag * 0x9E3779B1 + 0x7F4A7C15) & _MASK32


def fold(key: Tensor, *tags: int) -> Tensor:
    """Derive an independent key from ``key`` and integer tags (epoch, step, stream id)."""
    if _on_cpu(key):
        x = _as_u64(key)
        for tag in tags:
            x ^= _mix32_np(np.full_like(x, _fold_tag(int(tag))))
            x = _mix32_np(x)
        return _as_tensor(x)
    for tag in tags:
        key = _mix32(key ^ _mix32(torch.full_like(key, _fold_tag(int(tag)))))
    return key


def fold_each(key: Tensor, tags: Tensor) -> Tensor:
    """``fold(key, t)`` for every ``t`` in the int64 tensor ``tags`` at once, for one key (shape ``[1]``):
    shape ``[len(tags)]``."""
    if _on_cpu(key, tags):
        x = _mix32_np(_as_u64(_fold_tag(tags.to(torch.int64))))
        x ^= _as_u64(key)
        return _as_tensor(_mix32_np(x))
    return _mix32(key ^ _mix32(_fold_tag(tags.to(torch.int64))))


def bits_at(keys: Tensor, counters: Tensor) -> Tensor:
    """Element ``counter`` of each key's stream (``bits(key, n)[:, counter]``), for broadcastable int64
    tensors of keys and counters."""
    if _on_cpu(keys, counters):
        x = _as_u64(counters)
        x += np.uint64(0x632BE5AB)
        x = _mix32_np(x) ^ _as_u64(keys)
        x = _mix32_np(x)
        x += np.uint64(0x3C6EF372)
        return _as_tensor(_mix32_np(x))
    return _mix32(_mix32(keys ^ _mix32(counters + 0x632BE5AB)) + 0x3C6EF372)


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

"""Shared by the augmentation tests: counting the aten ops a call dispatches (to prove there is no
per-sample Python loop, the op count must not grow with the batch)."""

from collections import Counter
from collections.abc import Callable

import pytest
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def count_ops() -> Callable[[Callable[[], object]], Counter[str]]:
    """``count_ops(fn)``: how often each aten op is dispatched while ``fn()`` runs."""

    def count(fn: Callable[[], object]) -> Counter[str]:
        with OpCounter() as counter:
            fn()
        return counter.counts

    return count

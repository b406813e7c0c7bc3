"""The counter-based random streams: fixed values, and the CPU (numpy) hash equal to the torch one."""

from __future__ import annotations

import pytest
import torch

from ddrank import rng


@pytest.fixture
def torch_hash(monkeypatch):
    """Run a function with the torch hash (the one CUDA tensors use) on CPU tensors."""

    def run(function, *args):
        with monkeypatch.context() as patch:
            patch.setattr(rng, "_operands", lambda *tensors: tensors)
            return function(*args)

    return run


def test_the_streams_are_pinned():
    """Stored results are keyed by seed: the numbers a seed draws must never change."""
    keys = rng.key_from_seed([0, 1, 2**31 - 1])
    assert keys.tolist() == [33350994, 1573952294, 2725558890]
    assert rng.bits(keys, 4).tolist() == [
        [2677296861, 1594653459, 155894030, 1190389502],
        [55601389, 447873798, 3298338147, 2919985727],
        [58634365, 162183704, 4237414430, 817727072],
    ]
    assert rng.fold(keys, 7, 3).tolist() == [3261285694, 2164378788, 2423706518]
    assert rng.fold_each(keys[:1], torch.tensor([0, 5])).tolist() == [3221946472, 1345667743]


def test_the_cpu_hash_equals_the_torch_hash(torch_hash):
    keys = rng.key_from_seed(list(range(9)))
    counters = torch.randint(0, 2**62, (1, 257), generator=torch.Generator().manual_seed(0))
    cases = [
        (rng.fold, keys, 3, 99, 2**40),
        (rng.fold_each, keys[:1], torch.arange(1000)),
        (rng.bits, keys, 513),
        (rng.bits_at, keys[:, None], counters),  # counters far beyond 2**32 as well
        (rng.bits_at, keys[0], torch.tensor(5)),  # 0-d
        (rng.bits_at, keys[:3, None], torch.arange(40).expand(3, 40)[:, ::2]),  # strided
        (rng.uniform, keys, 4, 5),
        (rng.randint, keys, -3, 11, 6),
        (rng.permutation, keys, 100),
    ]
    for function, *args in cases:
        fast, reference = function(*args), torch_hash(function, *args)
        assert fast.dtype == reference.dtype and torch.equal(fast, reference), function.__name__

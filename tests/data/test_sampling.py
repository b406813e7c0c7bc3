"""Seeded draws from the real training set: the validation split and the random baseline subsets."""

from __future__ import annotations

import pytest
import torch

from ddrank.data.real import load_real
from ddrank.data.sampling import random_subset, validation_split
from ddrank.errors import InputError


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return load_real("digits").train_labels


def test_validation_split_is_stratified_disjoint_and_complete(labels):
    val, pool = validation_split(labels, 10, 0.1, seed=3)
    assert set(val.tolist()).isdisjoint(pool.tolist())
    assert sorted(val.tolist() + pool.tolist()) == list(range(len(labels)))
    assert len(set(val.tolist())) == len(val)
    counts = torch.bincount(labels, minlength=10)
    val_counts = torch.bincount(labels[val], minlength=10)
    for cls in range(10):
        assert val_counts[cls] == round(0.1 * int(counts[cls])), cls
    assert torch.equal(torch.bincount(labels[pool], minlength=10), counts - val_counts)


def test_validation_split_is_deterministic_per_seed(labels):
    first, first_pool = validation_split(labels, 10, 0.1, seed=7)
    again, again_pool = validation_split(labels, 10, 0.1, seed=7)
    assert torch.equal(first, again) and torch.equal(first_pool, again_pool)
    other, _ = validation_split(labels, 10, 0.1, seed=8)
    assert set(other.tolist()) != set(first.tolist())


def test_validation_split_keeps_one_image_per_class_each_side():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    val, pool = validation_split(labels, 2, 0.3, seed=0)
    assert torch.bincount(labels[val]).tolist() == [1, 3]  # round(0.3 * 2) = 1, round(0.3 * 10) = 3
    assert torch.bincount(labels[pool]).tolist() == [1, 7]
    val, pool = validation_split(labels, 2, 0.01, seed=0)
    assert torch.bincount(labels[val]).tolist() == [1, 1]


def test_validation_split_needs_two_images_per_class():
    with pytest.raises(InputError, match="class 2 has 1 training image"):
        validation_split(torch.tensor([0, 0, 1, 1, 2]), 3, 0.1, seed=0)
    with pytest.raises(InputError, match="class 1 has 0 training image"):
        validation_split(torch.tensor([0, 0, 2, 2]), 3, 0.1, seed=0)


def test_random_subset_is_class_balanced_class_major_and_drawn_from_the_pool(labels):
    val, pool = validation_split(labels, 10, 0.1, seed=1)
    idx = random_subset(labels, pool, 10, 10, seed=1)
    assert idx.shape == (100,)
    assert torch.equal(labels[idx], torch.arange(10).repeat_interleave(10))
    assert len(set(idx.tolist())) == 100
    assert set(idx.tolist()) <= set(pool.tolist())
    assert set(idx.tolist()).isdisjoint(val.tolist())


def test_random_subset_is_deterministic_per_seed_and_differs_across_seeds(labels):
    _, pool = validation_split(labels, 10, 0.1, seed=0)
    first = random_subset(labels, pool, 10, 5, seed=11)
    assert torch.equal(first, random_subset(labels, pool, 10, 5, seed=11))
    others = [random_subset(labels, pool, 10, 5, seed=s) for s in range(12, 17)]
    assert all(not torch.equal(first, other) for other in others)
    # a larger IPC extends the smaller draw of the same seed (one shuffled order per class)
    bigger = random_subset(labels, pool, 10, 8, seed=11)
    assert torch.equal(bigger.view(10, 8)[:, :5], first.view(10, 5))


def test_random_subset_is_uniform_over_the_pool():
    labels = torch.arange(3).repeat_interleave(10)
    pool = torch.arange(30)
    counts = torch.zeros(30)
    draws = 500
    for seed in range(draws):
        counts[random_subset(labels, pool, 3, 2, seed)] += 1
    expected = draws * 2 / 10
    assert counts.sum() == draws * 6
    # binomial(500, 0.2): standard deviation about 9; allow 5 standard deviations
    assert (counts - expected).abs().max() < 45, counts


def test_asking_for_more_images_than_a_class_has_is_an_input_error(labels):
    val, pool = validation_split(labels, 10, 0.1, seed=0)
    smallest = int(torch.bincount(labels[pool], minlength=10).min())
    random_subset(labels, pool, 10, smallest, seed=0)
    with pytest.raises(
        InputError, match=f"only {smallest} images outside the validation split; cannot draw IPC"
    ):
        random_subset(labels, pool, 10, smallest + 1, seed=0)


@pytest.mark.parametrize("num_classes", [3, 10, 1000])
def test_every_class_is_ordered_by_its_own_counter_based_permutation(num_classes):
    """The draws for all classes at once equal, class by class, ``rng.permutation`` of that class's own
    key: the definition that keeps stored subsets and splits the same across versions and devices."""
    from ddrank import rng
    from ddrank.data.sampling import _shuffled_by_class

    gen = torch.Generator().manual_seed(num_classes)
    labels = torch.randint(0, num_classes, (20 * num_classes,), generator=gen)
    candidates = torch.randperm(labels.numel(), generator=gen)[: 12 * num_classes]
    for seed, tag in ((0, 1), (123456789, 2)):
        shuffled = _shuffled_by_class(labels, candidates, num_classes, seed, tag)
        for cls in range(num_classes):
            members = candidates[labels[candidates] == cls]
            key = rng.fold(rng.key_from_seed(seed), tag, cls)
            assert torch.equal(shuffled[cls], members[rng.permutation(key, members.numel())[0]]), cls

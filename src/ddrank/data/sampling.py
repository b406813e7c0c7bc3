"""Seeded, class-balanced draws from the real training set: validation split and random subsets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ddrank import rng
from ddrank.errors import InputError

_VALIDATION_TAG = 1
_SUBSET_TAG = 2


def _shuffled_by_class(
    labels: Tensor, candidates: Tensor, num_classes: int, seed: int, tag: int
) -> list[Tensor]:
    """Per class, its members among ``candidates`` in a seeded random order, for every class at once:
    class ``c``'s ``n`` members (in candidate order) take the order ``rng.permutation(rng.fold(key, tag,
    c), n)`` gives, i.e. a stable sort of their draws."""
    classes = labels[candidates]
    known = (classes >= 0) & (classes < num_classes)
    candidates, classes = candidates[known], classes[known]
    grouped = torch.sort(classes, stable=True).indices  # class-major, candidate order within a class
    candidates, classes = candidates[grouped], classes[grouped]
    counts = torch.bincount(classes, minlength=num_classes)
    position = torch.arange(classes.numel()) - (torch.cumsum(counts, 0) - counts)[classes]
    keys = rng.fold_each(rng.fold(rng.key_from_seed(seed), tag), torch.arange(num_classes))
    drawn = rng.bits_at(keys[classes], position)  # < 2**32, so (drawn, position) packs into an int64
    order = torch.sort(drawn * 2**31 + position).indices
    order = order[torch.sort(classes[order], stable=True).indices]  # by class, then draw, then position
    return list(torch.split(candidates[order], counts.tolist()))


def validation_split(labels: Tensor, num_classes: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(validation indices, pool indices): a stratified fraction of every class held out."""
    val, pool = [], []
    shuffled = _shuffled_by_class(labels, torch.arange(labels.numel()), num_classes, seed, _VALIDATION_TAG)
    for cls, members in enumerate(shuffled):
        if members.numel() < 2:
            raise InputError(
                f"class {cls} has {members.numel()} training image(s); need at least 2 to hold out validation"
            )
        k = min(max(1, round(fraction * members.numel())), members.numel() - 1)
        val.append(members[:k])
        pool.append(members[k:])
    return torch.cat(val), torch.cat(pool)


def random_subset(
    labels: Tensor, pool: Tensor | None, num_classes: int, ipc: int | Sequence[int], seed: int
) -> Tensor:
    """Indices of ``ipc`` distinct images per class (or ``ipc[c]`` of class c, for a set whose classes
    differ in size) from ``pool`` (None: the whole training set), uniformly at random, class-major."""
    where = "in the training set" if pool is None else "outside the validation split"
    pool = torch.arange(labels.numel()) if pool is None else pool
    counts = [ipc] * num_classes if isinstance(ipc, int) else list(ipc)
    chosen = []
    for cls, members in enumerate(_shuffled_by_class(labels, pool, num_classes, seed, _SUBSET_TAG)):
        if members.numel() < counts[cls]:
            raise InputError(
                f"class {cls} has only {members.numel()} images {where}; cannot draw IPC {counts[cls]}"
            )
        chosen.append(members[: counts[cls]])
    return torch.cat(chosen)

"""Seeded, class-balanced draws from the real training set: validation split and random subsets."""

from __future__ import annotations

import torch
from torch import Tensor

from ddrank import rng
from ddrank.errors import InputError

_VALIDATION_TAG = 1
_SUBSET_TAG = 2


def _shuffled_class_members(labels: Tensor, candidates: Tensor, cls: int, seed: int, tag: int) -> Tensor:
    members = candidates[labels[candidates] == cls]
    order = rng.permutation(rng.fold(rng.key_from_seed(seed), tag, cls), int(members.numel()))[0]
    return members[order]


def validation_split(labels: Tensor, num_classes: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(validation indices, pool indices): a stratified fraction of every class held out."""
    everything = torch.arange(labels.numel())
    val, pool = [], []
    for cls in range(num_classes):
        members = _shuffled_class_members(labels, everything, cls, seed, _VALIDATION_TAG)
        if members.numel() < 2:
            raise InputError(
                f"class {cls} has {members.numel()} training image(s); need at least 2 to hold out validation"
            )
        k = min(max(1, round(fraction * members.numel())), members.numel() - 1)
        val.append(members[:k])
        pool.append(members[k:])
    return torch.cat(val), torch.cat(pool)


def random_subset(labels: Tensor, pool: Tensor, num_classes: int, ipc: int, seed: int) -> Tensor:
    """Indices of ``ipc`` distinct images per class from ``pool``, uniformly at random, class-major."""
    chosen = []
    for cls in range(num_classes):
        members = _shuffled_class_members(labels, pool, cls, seed, _SUBSET_TAG)
        if members.numel() < ipc:
            raise InputError(
                f"class {cls} has only {members.numel()} images outside the validation split; "
                f"cannot draw IPC {ipc}"
            )
        chosen.append(members[:ipc])
    return torch.cat(chosen)

"""Reference synthetic-set generators: sanity baselines for the demo, the tests and users.

Each generator maps (real dataset, IPC, seed) to a class-major synthetic set in the normalised
space of the dataset, with hard labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ddrank import rng
from ddrank.augment import DSA
from ddrank.data.real import RealData, normalize
from ddrank.data.synthetic import SyntheticSet
from ddrank.engine.allocator import keep_freed_memory
from ddrank.errors import InputError
from ddrank.models import create_model
from ddrank.registry import Registry

Generator = Callable[[RealData, int, int], Tensor]
BASELINES: Registry[Generator] = Registry("baseline")

_FEATURE_WIDTH = 64


def _feature_depth(size: int) -> int:
    """Two blocks for tiny images (8 px digits), three for 16 px and up."""
    return 2 if size < 16 else 3


def _class_images(real: RealData, cls: int) -> Tensor:
    return normalize(real.train_images[real.train_labels == cls], real.info)


def _check_ipc(real: RealData, ipc: int) -> None:
    smallest = int(torch.bincount(real.train_labels, minlength=real.info.num_classes).min())
    if not 1 <= ipc <= smallest:
        raise InputError(f"ipc must be between 1 and {smallest} for {real.info.name}, got {ipc}")


@torch.no_grad()
def _features(real: RealData, images: Tensor, seed: int) -> Tensor:
    """Embeddings from a randomly initialised ConvNet (the input to its classifier)."""
    info = real.info
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = f"ConvNet-{_feature_depth(info.size)}-W{_FEATURE_WIDTH}"
        net = create_model(model, info.channels, info.num_classes, info.size)
    net.eval()
    return torch.cat([net.features(images[i : i + 512]).flatten(1) for i in range(0, len(images), 512)])


@BASELINES.register(
    "noise", description="Gaussian noise in the normalised space: the floor every method must beat"
)
def noise(real: RealData, ipc: int, seed: int) -> Tensor:
    info = real.info
    n = info.num_classes * ipc
    u1 = rng.uniform(rng.key_from_seed(seed), n * info.channels * info.size * info.size)[0].clamp_min(1e-7)
    u2 = rng.uniform(rng.fold(rng.key_from_seed(seed), 1), u1.numel())[0]
    gauss = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
    return gauss.view(n, info.channels, info.size, info.size)


@BASELINES.register("random", description="A class-balanced random subset of the real training set")
def random_real(real: RealData, ipc: int, seed: int) -> Tensor:
    out = []
    for cls in range(real.info.num_classes):
        images = _class_images(real, cls)
        order = rng.permutation(rng.fold(rng.key_from_seed(seed), 10, cls), len(images))[0]
        out.append(images[order[:ipc]])
    return torch.cat(out)


@BASELINES.register("herding", description="Herding selection per class in random-ConvNet feature space")
def herding(real: RealData, ipc: int, seed: int) -> Tensor:
    out = []
    for cls in range(real.info.num_classes):
        images = _class_images(real, cls)
        feats = _features(real, images, seed)
        target, total, chosen = feats.mean(0), torch.zeros_like(feats[0]), []
        available = torch.ones(len(feats), dtype=torch.bool)
        for k in range(1, ipc + 1):
            # Pick the sample that brings the running mean of the chosen set closest to the class mean.
            dist = ((target - (total + feats) / k) ** 2).sum(1).masked_fill(~available, torch.inf)
            best = int(dist.argmin())
            chosen.append(best)
            total += feats[best]
            available[best] = False
        out.append(images[chosen])
    return torch.cat(out)


@BASELINES.register(
    "kcenter", description="Greedy k-center coreset per class in random-ConvNet feature space"
)
def kcenter(real: RealData, ipc: int, seed: int) -> Tensor:
    out = []
    for cls in range(real.info.num_classes):
        images = _class_images(real, cls)
        feats = _features(real, images, seed)
        first = int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
        chosen = [first]
        nearest = ((feats - feats[first]) ** 2).sum(1)
        for _ in range(ipc - 1):
            nxt = int(nearest.argmax())
            chosen.append(nxt)
            nearest = torch.minimum(nearest, ((feats - feats[nxt]) ** 2).sum(1))
        out.append(images[chosen])
    return torch.cat(out)


DM_ITERATIONS = 300
DM_REAL_PER_CLASS = 64
DM_WIDTH = 64


@BASELINES.register(
    "dm", description="Distribution matching (Zhao & Bilen) with randomly initialised ConvNets"
)
def distribution_matching(
    real: RealData,
    ipc: int,
    seed: int,
    iterations: int = DM_ITERATIONS,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Match per-class mean embeddings of real and synthetic images under fresh random ConvNets
    (``progress`` is called with 1 after each iteration).

    Classes are batched as members of one DSA call, so class c's real and synthetic images share
    augmentation parameters (the siamese part of DSA) and every class is embedded in one pass.
    """
    keep_freed_memory()  # as training does: the iterations reuse their activations' memory
    info = real.info
    classes = info.num_classes
    syn = random_real(real, ipc, seed).clone().requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    augment = DSA(
        "color_crop_cutout_scale_rotate" if info.size < 16 else "color_crop_cutout_flip_scale_rotate"
    )
    per_class = [_class_images(real, cls) for cls in range(classes)]
    take = min(DM_REAL_PER_CLASS, min(len(images) for images in per_class))
    key = rng.key_from_seed(seed)
    model = f"ConvNet-{_feature_depth(info.size)}-W{DM_WIDTH}"
    for it in range(iterations):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive_seed(seed, it))
            net = create_model(model, info.channels, classes, info.size)
        net.requires_grad_(False)
        step_key = rng.fold(key, it)
        real_batch = torch.stack(
            [
                images[rng.permutation(rng.fold(step_key, cls), len(images))[0][:take]]
                for cls, images in enumerate(per_class)
            ]
        )
        aug_keys = rng.fold(rng.key_from_seed(list(range(classes))), seed, it)
        with torch.no_grad():
            real_emb = (
                net.features(augment(real_batch, aug_keys).flatten(0, 1)).view(classes, take, -1).mean(1)
            )
        syn_aug = augment(syn.view(classes, ipc, *syn.shape[1:]), aug_keys)
        syn_emb = net.features(syn_aug.flatten(0, 1)).view(classes, ipc, -1).mean(1)
        loss = ((real_emb - syn_emb) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(1)
    return syn.detach()


def generate(method: str, real: RealData, ipc: int, seed: int = 0, **options: Any) -> SyntheticSet:
    """A synthetic set from a reference generator, in the dataset's normalised space; ``options`` go to
    the generator (e.g. ``iterations`` for ``dm``)."""
    _check_ipc(real, ipc)
    images = BASELINES.get(method)(real, ipc, seed, **options)
    labels = torch.arange(real.info.num_classes).repeat_interleave(ipc)
    return SyntheticSet(
        images.float(), labels, None, "normalized", f"<baseline {BASELINES.canonical(method)}>", "tensor"
    )

"""Reference synthetic-set generators: shapes, labels, determinism and what each one selects."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from ddrank.baselines import (
    BASELINES,
    _class_images,
    _features,
    distribution_matching,
    generate,
    random_real,
)
from ddrank.data.real import RealData, load_real
from ddrank.errors import InputError, UnknownNameError
from ddrank.models import create_model
from ddrank.registry import Entry

CHEAP = ("noise", "random", "herding", "kcenter")


@pytest.fixture(scope="module")
def real() -> RealData:
    return load_real("digits")


@pytest.fixture
def quick_dm(monkeypatch) -> None:
    """``generate('dm', ...)`` with a few matching iterations instead of hundreds."""
    entry = BASELINES._entries["dm"]
    monkeypatch.setitem(
        BASELINES._entries, "dm", Entry(entry.name, partial(distribution_matching, iterations=3), "")
    )


def class_members(real: RealData, images: torch.Tensor, cls: int) -> list[int]:
    """Index within class ``cls`` of each image, which must be an exact real training image of that class."""
    pool = _class_images(real, cls).flatten(1)
    found = []
    for image in images.flatten(1):
        same = (pool == image).all(1).nonzero()
        assert len(same), f"an image of class {cls} is not a real training image of that class"
        found.append(int(same[0, 0]))
    return found


def test_registry_holds_the_five_baselines():
    assert BASELINES.names() == ["noise", "random", "herding", "kcenter", "dm"]
    assert all(entry.description for entry in BASELINES.entries())


@pytest.mark.parametrize("method", [*CHEAP, "dm"])
@pytest.mark.parametrize("ipc", [1, 3])
def test_generators_return_class_major_sets_of_the_right_shape(method, ipc, real, quick_dm):
    syn = generate(method, real, ipc, seed=0)
    assert syn.images.shape == (10 * ipc, 1, 8, 8)
    assert syn.images.dtype == torch.float32 and bool(torch.isfinite(syn.images).all())
    assert torch.equal(syn.labels, torch.arange(10).repeat_interleave(ipc))
    assert (syn.space, syn.format, syn.lr) == ("normalized", "tensor", None)
    assert syn.source == f"<baseline {method}>"


@pytest.mark.parametrize("method", CHEAP)
def test_generators_are_deterministic_per_seed(method, real):
    first = generate(method, real, 4, seed=5).images
    assert torch.equal(first, generate(method, real, 4, seed=5).images)
    if method != "kcenter":  # k-center starts from the class mean, whatever the seed's features
        assert not torch.equal(first, generate(method, real, 4, seed=6).images)


def test_noise_is_standard_gaussian_in_the_normalised_space(real):
    x = generate("noise", real, 10, seed=0).images
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert float((x.abs() < 1).float().mean()) == pytest.approx(0.683, abs=0.03)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_selection_baselines_pick_distinct_real_images_of_the_right_class(method, real):
    ipc = 6
    images = generate(method, real, ipc, seed=1).images
    for cls in range(10):
        picked = class_members(real, images[cls * ipc : (cls + 1) * ipc], cls)
        assert len(set(picked)) == ipc


def test_random_differs_across_classes_and_seeds(real):
    a = class_members(real, generate("random", real, 5, seed=0).images[:5], 0)
    b = class_members(real, generate("random", real, 5, seed=1).images[:5], 0)
    assert a != b


def test_herding_tracks_the_class_mean_better_than_random_picks(real):
    ipc, seed = 10, 0
    images = generate("herding", real, ipc, seed=seed).images
    generator = torch.Generator().manual_seed(0)
    for cls in range(10):
        feats = _features(real, _class_images(real, cls), seed)
        target = feats.mean(0)
        chosen = class_members(real, images[cls * ipc : (cls + 1) * ipc], cls)
        herding_gap = float(((feats[chosen].mean(0) - target) ** 2).sum())
        random_gaps = torch.tensor(
            [
                float(
                    (
                        (feats[torch.randperm(len(feats), generator=generator)[:ipc]].mean(0) - target) ** 2
                    ).sum()
                )
                for _ in range(30)
            ]
        )
        assert herding_gap < 0.5 * float(random_gaps.median()), (cls, herding_gap, random_gaps.median())
        # the running mean after each pick is the best available at that step (greedy herding)
        for k in range(1, ipc + 1):
            prefix = feats[chosen[: k - 1]].sum(0)
            gaps = ((target - (prefix + feats) / k) ** 2).sum(1)
            gaps[chosen[: k - 1]] = torch.inf
            assert float(gaps[chosen[k - 1]]) == pytest.approx(float(gaps.min()), rel=1e-5, abs=1e-6)


def test_kcenter_is_greedy_farthest_point_and_covers_better_than_random(real):
    ipc, seed = 10, 0
    images = generate("kcenter", real, ipc, seed=seed).images
    generator = torch.Generator().manual_seed(0)
    for cls in range(10):
        feats = _features(real, _class_images(real, cls), seed)
        chosen = class_members(real, images[cls * ipc : (cls + 1) * ipc], cls)
        to_mean = ((feats - feats.mean(0)) ** 2).sum(1)
        assert float(to_mean[chosen[0]]) == pytest.approx(float(to_mean.min()))
        for k in range(1, ipc):
            nearest = torch.cdist(feats, feats[chosen[:k]]).min(1).values
            assert float(nearest[chosen[k]]) == pytest.approx(float(nearest.max()), rel=1e-4)
        radius = float(torch.cdist(feats, feats[chosen]).min(1).values.max())
        random_radii = [
            float(
                torch.cdist(feats, feats[torch.randperm(len(feats), generator=generator)[:ipc]])
                .min(1)
                .values.max()
            )
            for _ in range(30)
        ]
        assert radius < sum(random_radii) / len(random_radii), cls


def matching_loss(real: RealData, syn: torch.Tensor, seed: int) -> float:
    """Squared distance of per-class mean embeddings under a random ConvNet the generator never saw."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model("ConvNet-2-W64", 1, 10, 8).eval()
    with torch.no_grad():
        total = 0.0
        for cls in range(10):
            real_mean = net.features(_class_images(real, cls)).flatten(1).mean(0)
            syn_mean = net.features(syn[syn_labels(syn) == cls]).flatten(1).mean(0)
            total += float(((real_mean - syn_mean) ** 2).sum())
    return total


def syn_labels(syn: torch.Tensor) -> torch.Tensor:
    return torch.arange(10).repeat_interleave(len(syn) // 10)


def test_distribution_matching_moves_its_start_and_matches_embeddings_better(real):
    start = random_real(real, 1, 0)
    matched = distribution_matching(real, ipc=1, seed=0, iterations=5)
    assert matched.shape == start.shape == (10, 1, 8, 8)
    assert float((matched - start).abs().max()) > 0.1
    assert torch.equal(matched, distribution_matching(real, ipc=1, seed=0, iterations=5))
    before = [matching_loss(real, start, 1000 + s) for s in range(3)]
    after = [matching_loss(real, matched, 1000 + s) for s in range(3)]
    assert sum(after) < 0.95 * sum(before), (before, after)


@pytest.mark.parametrize("ipc", [0, -1, 10_000])
def test_bad_ipc_is_an_input_error(ipc, real):
    smallest = int(torch.bincount(real.train_labels).min())
    with pytest.raises(InputError, match=f"ipc must be between 1 and {smallest} for digits, got {ipc}"):
        generate("random", real, ipc)


def test_unknown_baseline_names_the_closest(real):
    with pytest.raises(UnknownNameError, match="unknown baseline 'k-center'; did you mean 'kcenter'"):
        generate("k-center", real, 1)

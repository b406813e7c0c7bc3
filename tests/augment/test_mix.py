"""Mixup and CutMix: label mixing, exact CutMix λ, the Beta sampler, member independence."""

import pytest
import torch
from scipy import stats

from ddrank import rng
from ddrank.augment.mix import Mix, MixResult, symmetric_beta
from ddrank.errors import ConfigError, InputError


def member_keys(k: int, seed: int = 0) -> torch.Tensor:
    return rng.key_from_seed([seed * 100_000 + i for i in range(k)])


def constant_images(k: int, b: int, h: int, w: int) -> torch.Tensor:
    """Sample b of every member is filled with the value b + 1."""
    return torch.arange(1, b + 1, dtype=torch.float32).view(1, b, 1, 1, 1).expand(k, b, 3, h, w).contiguous()


def test_mixup_blends_each_sample_with_its_partner_by_lambda():
    x, key = torch.randn(6, 10, 3, 8, 8), member_keys(6)
    out = Mix(mixup_alpha=0.8)(x, key)
    assert out.images.shape == x.shape and out.partner.shape == (6, 10) and out.lam.shape == (6,)
    assert out.partner.dtype == torch.int64 and out.lam.dtype == torch.float32
    assert torch.equal(out.partner.sort(1).values, torch.arange(10).expand(6, 10))  # a permutation
    lam = out.lam[:, None, None, None, None]
    other = x[torch.arange(6)[:, None], out.partner]
    torch.testing.assert_close(out.images, lam * x + (1 - lam) * other, atol=1e-6, rtol=0)
    assert ((out.lam > 0) & (out.lam < 1)).all()


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixed_labels_are_the_lambda_weighted_pair(kind):
    options = {
        "mixup": {"mixup_alpha": 0.8},
        "cutmix": {"cutmix_beta": 1.0},
        "both": {"mixup_alpha": 0.8, "cutmix_beta": 1.0},
    }
    out = Mix(**options[kind])(torch.randn(5, 12, 3, 16, 16), member_keys(5))
    labels = torch.randint(0, 7, (5, 12))
    mixed = out.mix_labels(labels, num_classes=7)
    assert mixed.shape == (5, 12, 7) and mixed.dtype == torch.float32
    for k in range(5):
        for b in range(12):
            expected = torch.zeros(7)
            expected[labels[k, b]] += out.lam[k]
            expected[labels[k, out.partner[k, b]]] += 1 - out.lam[k]
            torch.testing.assert_close(mixed[k, b], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed.sum(-1), torch.ones(5, 12))
    soft = torch.softmax(torch.randn(5, 12, 7), -1)
    lam = out.lam[:, None, None]
    expected = lam * soft + (1 - lam) * soft[torch.arange(5)[:, None], out.partner]
    torch.testing.assert_close(out.mix_labels(soft), expected)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (9, 14)])
def test_cutmix_lambda_is_the_exact_fraction_of_original_pixels(h, w):
    K, B = 300, 8
    x = constant_images(K, B, h, w)
    out = Mix(cutmix_beta=1.0)(x, member_keys(K, seed=1))
    original = (out.images == x).all(2)  # [K, B, H, W]
    from_partner = (out.images == x[torch.arange(K)[:, None], out.partner]).all(2)
    assert (original | from_partner).all()  # every pixel comes from one of the two
    moved = out.partner != torch.arange(B)
    fraction = original.float().mean((-2, -1))
    torch.testing.assert_close(fraction[moved], out.lam[:, None].expand(K, B)[moved], atol=1e-6, rtol=0)
    assert torch.equal(out.images[~moved], x[~moved])  # a sample mixed with itself is unchanged
    assert moved.any(1).all()
    box = ~original[torch.arange(K), moved.float().argmax(1)]  # [K, H, W]
    assert ((~original == box[:, None]) | ~moved[..., None, None]).all()  # one box per member and step
    rows, cols = box.any(-1), box.any(-2)
    assert torch.equal(box.sum((-2, -1)), rows.sum(-1) * cols.sum(-1))  # a filled rectangle
    clipped = (rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1]) & box.any((-2, -1))
    assert clipped.sum() > 20  # boxes cut by the border are counted too
    assert (out.lam < 1).float().mean() > 0.9


def test_prob_zero_leaves_everything_unmixed_and_prob_controls_the_rate():
    x, key = torch.randn(400, 4, 3, 8, 8), member_keys(400)
    out = Mix(mixup_alpha=1.0, cutmix_beta=1.0, prob=0.0)(x, key)
    assert torch.equal(out.images, x) and (out.lam == 1).all()
    labels = torch.randint(0, 5, (400, 4))
    assert torch.equal(out.mix_labels(labels, 5), torch.nn.functional.one_hot(labels, 5).float())
    rate = (Mix(mixup_alpha=1.0, prob=0.3)(x, key).lam < 1).float().mean()
    assert 0.24 < rate < 0.36


def test_switch_prob_picks_cutmix_or_mixup_per_member():
    K = 400
    x, key = constant_images(K, 4, 8, 8), member_keys(K, seed=2)
    out = Mix(mixup_alpha=1.0, cutmix_beta=1.0, switch_prob=0.5)(x, key)
    pure = (out.images == x).all(2) | (out.images == x[torch.arange(K)[:, None], out.partner]).all(2)
    cutmix = pure.flatten(1).all(1)  # cutmix only moves whole pixels; mixup blends values
    assert 0.4 < cutmix.float().mean() < 0.6
    assert torch.equal(
        Mix(mixup_alpha=1.0, cutmix_beta=1.0, switch_prob=1.0)(x, key).images,
        Mix(cutmix_beta=1.0)(x, key).images,
    )
    assert torch.equal(
        Mix(mixup_alpha=1.0, cutmix_beta=1.0, switch_prob=0.0)(x, key).images,
        Mix(mixup_alpha=1.0)(x, key).images,
    )


@pytest.mark.parametrize(
    "options", [{"mixup_alpha": 0.8}, {"cutmix_beta": 1.0}, {"mixup_alpha": 0.2, "cutmix_beta": 1.0}]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_member_is_bit_identical_alone_and_in_the_ensemble(options, dtype):
    x, key = torch.randn(5, 9, 3, 11, 13).to(dtype), member_keys(5, seed=3)
    mix = Mix(**options)
    together = mix(x, key)
    assert together.images.dtype == dtype
    for k in range(5):
        alone = mix(x[k : k + 1], key[k : k + 1])
        assert torch.equal(together.images[k], alone.images[0])
        assert torch.equal(together.partner[k], alone.partner[0]) and torch.equal(
            together.lam[k], alone.lam[0]
        )


def test_same_key_same_result_other_key_other_result():
    x = torch.randn(3, 16, 3, 8, 8)
    mix = Mix(mixup_alpha=0.8, cutmix_beta=1.0)
    first, again, other = mix(x, member_keys(3)), mix(x, member_keys(3)), mix(x, member_keys(3, seed=9))
    assert torch.equal(first.images, again.images) and torch.equal(first.lam, again.lam)
    assert torch.equal(first.partner, again.partner)
    assert not torch.equal(first.lam, other.lam) and not torch.equal(first.partner, other.partner)


@pytest.mark.parametrize("concentration", [0.2, 0.8, 1.0, 3.0])
def test_symmetric_beta_follows_the_beta_distribution(concentration):
    u = rng.uniform(member_keys(1, seed=4), 2, 20_000)[0]
    draws = symmetric_beta(u[0], u[1], concentration)
    assert draws.dtype == torch.float64 and ((draws >= 0) & (draws <= 1)).all()
    variance = 1 / (4 * (2 * concentration + 1))
    assert abs(draws.mean().item() - 0.5) < 4 * (variance / 20_000) ** 0.5
    assert draws.var().item() == pytest.approx(variance, rel=0.05)
    assert stats.kstest(draws.numpy(), stats.beta(concentration, concentration).cdf).pvalue > 1e-3


def test_lambda_moments_for_mixup_and_cutmix():
    K = 20_000
    x, key = torch.zeros(K, 2, 1, 2, 2), member_keys(K, seed=5)
    lam = Mix(mixup_alpha=0.8)(x, key).lam.double()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1 / (4 * 2.6), rel=0.05)  # Beta(0.8, 0.8)
    # β = 1: λ₀ is uniform, box side s = sqrt(1 - λ₀) per unit length; clipping by the border of a
    # uniformly placed box leaves E[pasted | s] = (s - s²/4)², so E[λ] = 1 - (1/2 - 1/5 + 1/48).
    lam = Mix(cutmix_beta=1.0)(torch.zeros(4000, 1, 1, 64, 64), member_keys(4000, seed=6)).lam.double()
    assert lam.mean().item() == pytest.approx(1 - (1 / 2 - 1 / 5 + 1 / 48), abs=0.015)
    assert lam.min() < 0.15 and lam.max() == 1.0


def test_mix_labels_rejects_bad_shapes():
    out = MixResult(torch.zeros(2, 3, 1, 4, 4), torch.zeros(2, 3, dtype=torch.int64), torch.ones(2))
    with pytest.raises(InputError, match="num_classes"):
        out.mix_labels(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(InputError, match=r"\[K, B\] = \[2, 3\]"):
        out.mix_labels(torch.zeros(2, 4, dtype=torch.int64), 5)
    with pytest.raises(InputError, match=r"\[K, B, classes\]"):
        out.mix_labels(torch.zeros(2, 3))
    with pytest.raises(InputError, match="4 classes, num_classes is 5"):
        out.mix_labels(torch.zeros(2, 3, 4), 5)


def test_bad_settings_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="mixup_alpha and/or cutmix_beta"):
        Mix()
    with pytest.raises(ConfigError, match="mixup_alpha must be a positive"):
        Mix(mixup_alpha=0.0)
    with pytest.raises(ConfigError, match="cutmix_beta must be a positive"):
        Mix(cutmix_beta=float("nan"))
    with pytest.raises(ConfigError, match="prob"):
        Mix(mixup_alpha=1.0, prob=1.5)
    with pytest.raises(InputError, match=r"\[K, B, C, H, W\]"):
        Mix(mixup_alpha=1.0)(torch.zeros(4, 3, 8, 8), member_keys(4))
    with pytest.raises(InputError, match="key"):
        Mix(mixup_alpha=1.0)(torch.zeros(2, 4, 3, 8, 8), member_keys(3))


def test_a_batch_of_256_is_mixed_without_a_python_loop_over_samples(count_ops):
    mix, key = Mix(mixup_alpha=0.8, cutmix_beta=1.0), member_keys(2)
    counts = []
    for batch in (16, 256):
        images, labels = torch.randn(2, batch, 3, 32, 32), torch.zeros(2, batch, dtype=torch.int64)
        counts.append(count_ops(lambda x=images, y=labels: mix(x, key).mix_labels(y, 10)))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 600


def test_gradients_flow_through_both_images():
    x = torch.randn(2, 4, 3, 8, 8, requires_grad=True)
    Mix(mixup_alpha=1.0, cutmix_beta=1.0)(x, member_keys(2)).images.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_keeps_members_independent():
    x, key = constant_images(6, 16, 32, 32), member_keys(6)
    mix = Mix(mixup_alpha=0.8, cutmix_beta=1.0)
    on_gpu, on_cpu = mix(x.cuda(), key.cuda()), mix(x, key)
    assert torch.equal(on_gpu.partner.cpu(), on_cpu.partner)
    torch.testing.assert_close(on_gpu.lam.cpu(), on_cpu.lam)
    torch.testing.assert_close(on_gpu.images.cpu(), on_cpu.images)
    for k in range(6):
        assert torch.equal(on_gpu.images[k], mix(x[k : k + 1].cuda(), key[k : k + 1].cuda()).images[0])

"""Losses: each formula, its fixed points, temperature scaling, and the errors for bad targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from ddrank.errors import InputError, UnknownNameError
from ddrank.labels import LOSSES, Target, get_loss, list_losses


def logits(n: int = 16, classes: int = 10, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("t2_scale", [False, True])
def test_kl_is_zero_when_the_student_matches_the_teacher(temperature, t2_scale):
    t = logits()
    loss = get_loss("kl")(t.clone(), Target.logits(t), temperature=temperature, t2_scale=t2_scale)
    assert loss.item() == 0.0
    assert get_loss("kl")(logits(seed=1), Target.logits(t), temperature=temperature).item() > 0


def test_kl_matches_torch_batchmean_kl_div():
    s, t = logits(seed=1), logits(seed=2)
    expected = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    torch.testing.assert_close(get_loss("kl")(s, Target.logits(t), temperature=4.0), expected)
    p = F.softmax(t, 1)
    expected = F.kl_div(F.log_softmax(s / 4, 1), p, reduction="batchmean")
    torch.testing.assert_close(get_loss("kl")(s, Target.probs(p), temperature=4.0), expected)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sce_is_minimal_at_the_teacher_and_equals_its_entropy(temperature):
    t = logits()
    s = t.clone().requires_grad_(True)
    loss = get_loss("sce")(s, Target.logits(t), temperature=temperature)
    p = F.softmax(t / temperature, 1)
    entropy = -(p * F.log_softmax(t / temperature, 1)).sum(1).mean()
    torch.testing.assert_close(loss, entropy, atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.abs().max() < 1e-7
    for seed in range(1, 4):
        moved = get_loss("sce")(t + 0.3 * logits(seed=seed), Target.logits(t), temperature=temperature)
        assert moved > loss


def test_sce_equals_ce_for_one_hot_targets_at_temperature_one():
    s, y = logits(seed=3), torch.randint(0, 10, (16,))
    ce = F.cross_entropy(s, y)
    torch.testing.assert_close(get_loss("sce")(s, Target.probs(F.one_hot(y, 10).float())), ce)
    torch.testing.assert_close(get_loss("sce")(s, Target.hard(y)), ce)
    torch.testing.assert_close(get_loss("ce")(s, Target.probs(F.one_hot(y, 10).float())), ce)


@pytest.mark.parametrize("name", ["kl", "sce"])
@pytest.mark.parametrize("temperature", [2.0, 20.0, 30.0])
def test_t2_scaling_multiplies_by_exactly_t_squared(name, temperature):
    s, t = logits(seed=4), logits(seed=5)
    plain = get_loss(name)(s, Target.logits(t), temperature=temperature)
    scaled = get_loss(name)(s, Target.logits(t), temperature=temperature, t2_scale=True)
    assert scaled.item() == (plain * temperature**2).item()
    assert scaled.item() == pytest.approx(plain.item() * temperature**2, rel=1e-6)


def test_probability_targets_ignore_the_temperature():
    s, p = logits(seed=6), F.softmax(logits(seed=7), 1)
    expected = -(p * F.log_softmax(s / 5, 1)).sum(1).mean()
    torch.testing.assert_close(get_loss("sce")(s, Target.probs(p), temperature=5.0), expected)


def test_mse_gt_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([1, 0])
    mse = (1 + 4 + 0 + 0 + 4 + 0) / 6
    lse0, lse1 = math.log(math.e + math.e**2 + 1), math.log(1 + math.e**-1 + math.e**3)
    ce = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    loss = get_loss("mse_gt")(s, Target.logits(t), hard_labels=y, mse_weight=1.0, ce_weight=0.025)
    assert loss.item() == pytest.approx(mse + 0.025 * ce, rel=1e-6)
    loss = get_loss("mse_gt")(s, Target.logits(t), hard_labels=y, mse_weight=0.5, ce_weight=2.0)
    assert loss.item() == pytest.approx(0.5 * mse + 2.0 * ce, rel=1e-6)
    mixed = torch.tensor([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])
    soft_ce = (0.25 * (lse0 - 1.0) + 0.75 * (lse0 - 2.0) + (lse1 - 0.0)) / 2
    loss = get_loss("mse_gt")(s, Target.logits(t), hard_labels=mixed, ce_weight=1.0)
    assert loss.item() == pytest.approx(mse + soft_ce, rel=1e-6)


def test_ce_on_hard_labels_equals_torch_cross_entropy():
    s, y = logits(seed=8), torch.randint(0, 10, (16,))
    assert torch.equal(get_loss("ce")(s, Target.hard(y)), F.cross_entropy(s, y))
    assert torch.equal(get_loss("ce")(s, y), F.cross_entropy(s, y))  # a bare int tensor is hard labels


def test_leading_dims_are_samples_and_bfloat16_is_computed_in_float32():
    s, t = logits(24, seed=9), logits(24, seed=10)
    for name in ("kl", "sce"):
        flat = get_loss(name)(s, Target.logits(t), temperature=2.0)
        torch.testing.assert_close(
            get_loss(name)(s.view(3, 8, 10), Target.logits(t.view(3, 8, 10)), temperature=2.0), flat
        )
        low = get_loss(name)(s.bfloat16(), Target.logits(t.bfloat16()), temperature=2.0)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, flat, atol=0.05, rtol=0.05)
    y = torch.randint(0, 10, (24,))
    torch.testing.assert_close(get_loss("ce")(s.view(3, 8, 10), y.view(3, 8)), F.cross_entropy(s, y))


def test_shape_and_kind_mismatches_are_refused():
    s = logits()
    with pytest.raises(InputError, match=r"\[N, classes\] = \[16, 10\].*\[16, 9\]"):
        get_loss("kl")(s, Target.logits(logits(classes=9)))
    with pytest.raises(InputError, match=r"\[N\] = \[16\].*\[15\]"):
        get_loss("ce")(s, Target.hard(torch.zeros(15, dtype=torch.int64)))
    with pytest.raises(InputError, match="ambiguous.*Target.probs"):
        get_loss("sce")(s, logits())
    with pytest.raises(InputError, match="'ce' takes hard or probs targets, got logits.*'sce'"):
        get_loss("ce")(s, Target.logits(logits()))
    with pytest.raises(InputError, match="'mse_gt' takes logits targets, got probs"):
        get_loss("mse_gt")(s, Target.probs(F.softmax(s, 1)), hard_labels=torch.zeros(16, dtype=torch.int64))
    with pytest.raises(InputError, match="needs hard_labels"):
        get_loss("mse_gt")(s, Target.logits(logits()))
    with pytest.raises(InputError, match="hard_labels must be"):
        get_loss("mse_gt")(s, Target.logits(logits()), hard_labels=torch.zeros(4, dtype=torch.int64))
    with pytest.raises(InputError, match="student logits"):
        get_loss("ce")(torch.zeros(16), Target.hard(torch.zeros(16, dtype=torch.int64)))
    with pytest.raises(InputError, match="integer class indices"):
        Target.hard(torch.zeros(16))
    with pytest.raises(InputError, match="floating point"):
        Target.probs(torch.zeros(16, 10, dtype=torch.int64))
    with pytest.raises(InputError, match="kind"):
        Target("soft", s)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="temperature"):
        get_loss("kl")(s, Target.logits(s), temperature=0.0)


def test_unknown_loss_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match="unknown loss 'mse-gt'; did you mean 'mse_gt'") as info:
        get_loss("mse-gt")
    assert "valid: ce, kl, mse_gt, sce" in str(info.value)
    with pytest.raises(UnknownNameError, match="'sce'"):
        get_loss("scee")
    assert get_loss("KL") is get_loss("kl_div") is LOSSES.get("kl")


def test_list_losses_names_every_loss_with_a_description():
    listed = dict(list_losses())
    assert list(listed) == ["ce", "kl", "sce", "mse_gt"]
    assert all(description for description in listed.values())

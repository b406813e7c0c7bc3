"""Mixup and CutMix with label mixing, batched over ensemble members.

Images arrive as ``[K, B, C, H, W]`` with one counter-based key per member. As in the reference
implementations (mixup, CutMix, timm, SRe2L, RDED), each member draws one λ and one box per
step for its whole batch, and sample ``b`` is mixed with ``partner[b]`` from a random
permutation of the member's batch (``torch.randperm`` in SRe2L / RDED; timm flips the batch
instead). A permutation may map a sample to itself; that sample then stays unchanged.

λ is the weight of the original image. Mixup: ``λ ~ Beta(α, α)``, ``λ·x + (1 − λ)·x[partner]``.
CutMix: ``λ₀ ~ Beta(β, β)``; a box of side ``int(side · sqrt(1 − λ₀))`` per axis around a uniformly
random pixel, spanning ``centre ± cut // 2`` and clipped to the image as in the CutMix reference,
is pasted from the partner, and λ is recomputed as the exact unpasted fraction
``1 − box area / (H·W)`` (timm's ``correct_lam``). When both are enabled a member picks CutMix
with probability ``switch_prob``; with probability ``1 − prob`` it skips mixing (λ = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrank import rng
from ddrank.errors import ConfigError, InputError

_STREAM = 0x313C
# Columns of the per-call table of uniform draws [K, columns].
_APPLY, _SWITCH, _MIXUP, _CUTMIX, _CENTRE = 0, 1, slice(2, 4), slice(4, 6), slice(6, 8)
_COLUMNS = 8


def symmetric_beta(u: Tensor, v: Tensor, concentration: float) -> Tensor:
    """Exact Beta(a, a) variates (float64) from two independent uniforms in [0, 1) of any shape.

    Bailey's polar method gives ``T = sqrt(2a (w^(-1) − 1)) cos(2πv)`` with ``w = (1 − u)^(1/a)``,
    Student-t with 2a degrees of freedom, and ``(1 + T / sqrt(2a + T²)) / 2`` is Beta(a, a). The
    smaller of X and 1 − X is computed in a form free of cancellation, ``w / (2 d (1 + |c| r))``
    with ``c = cos(2πv)``, ``d = w + (1 − w) c²`` and ``r = sqrt((1 − w) / d)``: no rejection loop,
    valid for every a > 0, and the same two draws always give the same variate.
    """
    w = (1.0 - u.double()) ** (1.0 / concentration)
    c = torch.cos((2.0 * math.pi) * v.double())
    d = w + (1.0 - w) * c * c
    small = w / (2.0 * d * (1.0 + c.abs() * torch.sqrt((1.0 - w) / d)))
    return torch.where(c < 0, small, 1.0 - small)


@dataclass(frozen=True)
class MixResult:
    """Mixed images, each sample's partner index in its member's batch, and λ per member."""

    images: Tensor  # [K, B, C, H, W], the input's dtype
    partner: Tensor  # int64 [K, B]
    lam: Tensor  # float32 [K]: weight of the original image (its exact pixel fraction for CutMix)

    def mix_labels(self, labels: Tensor, num_classes: int | None = None) -> Tensor:
        """``λ·y + (1 − λ)·y[partner]`` as float32 ``[K, B, classes]``.

        ``labels`` are hard class indices ``[K, B]`` (give ``num_classes``) or probabilities
        ``[K, B, classes]``. Mix teacher logits as probabilities (softmax first): mixing logits
        is not mixing the label distributions.
        """
        K, B = self.partner.shape
        if labels.is_floating_point():
            if labels.dim() != 3 or tuple(labels.shape[:2]) != (K, B):
                raise InputError(
                    f"soft labels must be [K, B, classes] = [{K}, {B}, classes], got {list(labels.shape)}"
                )
            if num_classes is not None and labels.shape[2] != num_classes:
                raise InputError(f"soft labels have {labels.shape[2]} classes, num_classes is {num_classes}")
            y = labels.float()
        else:
            if tuple(labels.shape) != (K, B):
                raise InputError(f"hard labels must be [K, B] = [{K}, {B}], got {list(labels.shape)}")
            if num_classes is None:
                raise InputError("mixing hard labels needs num_classes")
            y = F.one_hot(labels.long(), num_classes).float()
        lam = self.lam.to(y.device)[:, None, None]
        return y * lam + torch.take_along_dim(y, self.partner[..., None], dim=1) * (1.0 - lam)


class Mix:
    """Mixup (``mixup_alpha``) and/or CutMix (``cutmix_beta``): ``Mix(...)(x [K, B, C, H, W], key [K])``."""

    def __init__(
        self,
        mixup_alpha: float | None = None,
        cutmix_beta: float | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ):
        if mixup_alpha is None and cutmix_beta is None:
            raise ConfigError("Mix needs mixup_alpha and/or cutmix_beta")
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_beta", cutmix_beta)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number (or None to disable), got {value}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"Mix {name} must lie in [0, 1], got {value}")
        self.mixup_alpha, self.cutmix_beta = mixup_alpha, cutmix_beta
        self.prob, self.switch_prob = prob, switch_prob

    def __repr__(self) -> str:
        return (
            f"Mix(mixup_alpha={self.mixup_alpha}, cutmix_beta={self.cutmix_beta}, "
            f"prob={self.prob}, switch_prob={self.switch_prob})"
        )

    def __call__(self, x: Tensor, key: Tensor) -> MixResult:
        """Mix every member's batch with draws from that member's key alone."""
        if x.dim() != 5 or not x.is_floating_point():
            raise InputError(f"Mix expects float images [K, B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if key.dim() != 1 or key.dtype != torch.int64 or key.shape[0] != x.shape[0]:
            raise InputError(
                f"Mix expects one int64 key per member, shape [{x.shape[0]}]; "
                f"got {key.dtype} {tuple(key.shape)}"
            )
        key = key.to(x.device)
        u = rng.uniform(rng.fold(key, _STREAM), _COLUMNS)
        partner = rng.permutation(rng.fold(key, _STREAM, 1), x.shape[1])
        apply = u[:, _APPLY] < self.prob
        work = x.float() if x.element_size() < 4 else x
        other = torch.take_along_dim(work, partner[:, :, None, None, None], dim=1)
        alpha, beta = self.mixup_alpha, self.cutmix_beta
        if beta is None:
            images, lam = _mixup(work, other, u, apply, alpha)
        elif alpha is None:
            images, lam = _cutmix(work, other, u, apply, beta)
        else:
            use_cutmix = u[:, _SWITCH] < self.switch_prob
            mixed, mixed_lam = _mixup(work, other, u, apply & ~use_cutmix, alpha)
            pasted, pasted_lam = _cutmix(work, other, u, apply & use_cutmix, beta)
            images = torch.where(use_cutmix[:, None, None, None, None], pasted, mixed)
            lam = torch.where(use_cutmix, pasted_lam, mixed_lam)
        return MixResult(images.to(x.dtype), partner, lam)


def _mixup(x: Tensor, other: Tensor, u: Tensor, active: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Blend with the partner by λ ~ Beta(α, α) (λ = 1 where not active)."""
    draw = symmetric_beta(*u[:, _MIXUP].unbind(1), alpha)
    lam = torch.where(active, draw, 1.0).float()
    weight = lam.to(x.dtype)[:, None, None, None, None]
    return x * weight + other * (1 - weight), lam


def _cutmix(x: Tensor, other: Tensor, u: Tensor, active: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Paste the partner's box (empty where not active); λ is the exact unpasted fraction."""
    draw = symmetric_beta(*u[:, _CUTMIX].unbind(1), beta)
    box, lam = _cutmix_box(draw, u[:, _CENTRE], active, *x.shape[3:])
    return torch.where(box, other, x), lam.float()


def _cutmix_box(lam0: Tensor, centre: Tensor, active: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """Box mask ``[K, 1, 1, H, W]`` (empty where not active) and the exact unpasted fraction ``[K]``."""
    side = torch.sqrt(1.0 - lam0)
    inside, lengths = [], []
    for axis, n in enumerate((H, W)):
        cut = torch.where(active, (n * side).long(), 0)
        middle = (centre[:, axis] * n).long().clamp(max=n - 1)
        low, high = (middle - cut // 2).clamp(0, n), (middle + cut // 2).clamp(0, n)
        position = torch.arange(n, device=lam0.device)
        inside.append((position >= low[:, None]) & (position < high[:, None]))
        lengths.append(high - low)
    box = (inside[0][:, :, None] & inside[1][:, None, :])[:, None, None]
    return box, 1.0 - (lengths[0] * lengths[1]).double() / (H * W)

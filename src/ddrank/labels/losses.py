"""Training losses for hard labels, soft (probability) labels and teacher logits.

Every loss has one signature, ``loss(student_logits, target, *, temperature, t2_scale, hard_labels,
mse_weight, ce_weight)``, and returns the mean over samples as a float32 scalar. ``student_logits``
is ``[..., classes]`` (usually ``[N, classes]``; any leading dims are samples). The target says what
it holds through :class:`Target`, because a float ``[N, classes]`` tensor may be probabilities
(mixed one-hot labels, ensemble-averaged teacher probabilities) or logits (a teacher's output,
DATM's stored labels), and the two need different treatment:

- ``hard``: int64 class indices ``[...]``; for ``kl`` and ``sce`` they act as one-hot probabilities.
- ``probs``: probabilities ``[..., classes]``, used as given; the temperature does not touch them.
- ``logits``: teacher logits ``[..., classes]``, softened as ``softmax(t / T)``.

The student's logits are always divided by the temperature in ``kl`` and ``sce``. Work happens in
float32 whatever the input dtype, so bfloat16 logits lose no precision in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrank.errors import InputError
from ddrank.registry import Registry

TargetKind = Literal["hard", "probs", "logits"]
_KINDS = ("hard", "probs", "logits")


@dataclass(frozen=True)
class Target:
    """What a student is trained towards: hard labels, probabilities or teacher logits."""

    kind: TargetKind
    value: Tensor

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"unknown target kind {self.kind!r}; use one of {', '.join(_KINDS)}")
        if self.kind == "hard" and (self.value.is_floating_point() or self.value.is_complex()):
            raise InputError(f"hard labels must be integer class indices, got {self.value.dtype}")
        if self.kind != "hard" and not self.value.is_floating_point():
            raise InputError(f"{self.kind} targets must be floating point, got {self.value.dtype}")

    @classmethod
    def hard(cls, labels: Tensor) -> Target:
        return cls("hard", labels)

    @classmethod
    def probs(cls, probabilities: Tensor) -> Target:
        return cls("probs", probabilities)

    @classmethod
    def logits(cls, logits: Tensor) -> Target:
        return cls("logits", logits)


class LossFunction(Protocol):
    def __call__(
        self,
        student_logits: Tensor,
        target: Target | Tensor,
        *,
        temperature: float = 1.0,
        t2_scale: bool = False,
        hard_labels: Tensor | None = None,
        mse_weight: float = 1.0,
        ce_weight: float = 0.025,
    ) -> Tensor: ...


LOSSES: Registry[LossFunction] = Registry("loss")


def get_loss(name: str) -> LossFunction:
    """The loss registered under ``name``; raises UnknownNameError with the closest names."""
    return LOSSES.get(name)


def list_losses() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered loss, for ``ddrank list losses``."""
    return [(entry.name, entry.description) for entry in LOSSES.entries()]


@LOSSES.register(
    "ce", aliases=("cross_entropy",), description="cross-entropy on hard labels or probabilities"
)
def cross_entropy(
    student_logits: Tensor,
    target: Target | Tensor,
    *,
    temperature: float = 1.0,
    t2_scale: bool = False,
    hard_labels: Tensor | None = None,
    mse_weight: float = 1.0,
    ce_weight: float = 0.025,
) -> Tensor:
    """Cross-entropy ``-sum p log softmax(s)``; temperature does not apply (use ``sce`` for that)."""
    target = _checked("ce", student_logits, target, ("hard", "probs"))
    return _cross_entropy(student_logits.float(), target)


@LOSSES.register(
    "kl", aliases=("kl_div", "kld"), description="KL(softmax(t/T) || softmax(s/T)), optional x T^2"
)
def kl_divergence(
    student_logits: Tensor,
    target: Target | Tensor,
    *,
    temperature: float = 1.0,
    t2_scale: bool = False,
    hard_labels: Tensor | None = None,
    mse_weight: float = 1.0,
    ce_weight: float = 0.025,
) -> Tensor:
    """Sample-mean KL divergence from the softened target to the softened student (``batchmean``)."""
    target = _checked("kl", student_logits, target, _KINDS)
    log_q = _log_softmax(student_logits, temperature)
    if target.kind == "logits":
        log_p = _log_softmax(target.value, temperature)
        pointwise = log_p.exp() * (log_p - log_q)
    else:
        p = _probabilities(target, student_logits.shape[-1])
        pointwise = torch.xlogy(p, p) - p * log_q
    return _scaled(pointwise.sum(-1).mean(), temperature, t2_scale)


@LOSSES.register(
    "sce", aliases=("soft_ce", "soft_cross_entropy"), description="-sum softmax(t/T) log softmax(s/T)"
)
def soft_cross_entropy(
    student_logits: Tensor,
    target: Target | Tensor,
    *,
    temperature: float = 1.0,
    t2_scale: bool = False,
    hard_labels: Tensor | None = None,
    mse_weight: float = 1.0,
    ce_weight: float = 0.025,
) -> Tensor:
    """Sample-mean soft cross-entropy between the softened target and the softened student."""
    target = _checked("sce", student_logits, target, _KINDS)
    log_q = _log_softmax(student_logits, temperature)
    if target.kind == "logits":
        p = _log_softmax(target.value, temperature).exp()
    else:
        p = _probabilities(target, student_logits.shape[-1])
    return _scaled(-(p * log_q).sum(-1).mean(), temperature, t2_scale)


@LOSSES.register(
    "mse_gt", aliases=("msegt", "mse+gt"), description="EDC: mse_weight*MSE(s, t) + ce_weight*CE(s, y)"
)
def mse_with_ground_truth(
    student_logits: Tensor,
    target: Target | Tensor,
    *,
    temperature: float = 1.0,
    t2_scale: bool = False,
    hard_labels: Tensor | None = None,
    mse_weight: float = 1.0,
    ce_weight: float = 0.025,
) -> Tensor:
    """EDC's loss on raw logits: MSE to the teacher logits (mean over every entry) plus weighted CE.

    ``hard_labels`` are class indices or probabilities (e.g. mixed labels). As in EDC, the
    temperature and T² scaling do not apply.
    """
    target = _checked("mse_gt", student_logits, target, ("logits",))
    if hard_labels is None:
        raise InputError("loss 'mse_gt' needs hard_labels (the ground-truth classes) for its CE term")
    truth = Target.hard(hard_labels) if not hard_labels.is_floating_point() else Target.probs(hard_labels)
    truth = _checked("mse_gt", student_logits, truth, ("hard", "probs"), what="hard_labels")
    s = student_logits.float()
    return mse_weight * F.mse_loss(s, target.value.float()) + ce_weight * _cross_entropy(s, truth)


def _checked(
    loss: str, student_logits: Tensor, target: Target | Tensor, kinds: tuple[str, ...], what: str = "target"
) -> Target:
    """Validate shapes and kind; a bare integer tensor is taken as hard labels."""
    if not isinstance(target, Target):
        if target.is_floating_point():
            raise InputError(
                f"loss {loss!r}: a float {what} is ambiguous; wrap it as Target.probs(...) for "
                "probabilities or Target.logits(...) for teacher logits"
            )
        target = Target.hard(target)
    if student_logits.dim() < 2 or not student_logits.is_floating_point():
        raise InputError(
            f"loss {loss!r}: student logits must be float [N, classes], "
            f"got {student_logits.dtype} {tuple(student_logits.shape)}"
        )
    if target.kind not in kinds:
        hint = " (use 'sce' or 'kl' for teacher logits)" if target.kind == "logits" else ""
        raise InputError(f"loss {loss!r} takes {' or '.join(kinds)} {what}s, got {target.kind}{hint}")
    samples, classes = tuple(student_logits.shape[:-1]), student_logits.shape[-1]
    expected = samples if target.kind == "hard" else (*samples, classes)
    if tuple(target.value.shape) != expected:
        layout = "[N]" if target.kind == "hard" else "[N, classes]"
        raise InputError(
            f"loss {loss!r}: {target.kind} {what} must be {layout} = {list(expected)} to match student "
            f"logits {list(student_logits.shape)}, got {list(target.value.shape)}"
        )
    return target


def _cross_entropy(student_logits: Tensor, target: Target) -> Tensor:
    if target.kind == "hard":
        return F.cross_entropy(student_logits.flatten(0, -2), target.value.flatten().long())
    return -(target.value.float() * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def _log_softmax(logits: Tensor, temperature: float) -> Tensor:
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _probabilities(target: Target, classes: int) -> Tensor:
    if target.kind == "hard":
        return F.one_hot(target.value.long(), classes).float()
    return target.value.float()


def _scaled(loss: Tensor, temperature: float, t2_scale: bool) -> Tensor:
    return loss * temperature**2 if t2_scale else loss

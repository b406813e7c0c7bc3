"""Optimisers for one model (torch.optim) and for K stacked models with per-member learning rates."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ddrank.protocols.protocol import OptimizerSpec


def make_optimizer(params: Iterable[Tensor], spec: OptimizerSpec, lr: float) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=spec.nesterov
        )
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


class StackedOptimizer:
    """The torch.optim update rules applied to tensors of shape [K, ...], one lr per member.

    All state lives in device tensors created up front (momentum starts at zero, which gives
    torch's first-step ``buf = grad``), and the schedule factor may be a device scalar, so a
    step has no host synchronisation and can be captured in a CUDA graph.
    """

    def __init__(self, params: list[Tensor], spec: OptimizerSpec, lrs: Tensor):
        self.params, self.spec, self.lrs = params, spec, lrs
        device = lrs.device
        self.steps = torch.zeros((), dtype=torch.float64, device=device)
        if spec.name == "sgd":
            self.state = [{"momentum": torch.zeros_like(p)} if spec.momentum else {} for p in params]
        else:
            self.state = [{"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)} for p in params]

    def _lr(self, p: Tensor, factor: float | Tensor) -> Tensor:
        return (self.lrs * factor).view(-1, *([1] * (p.dim() - 1)))

    @torch.no_grad()
    def step(self, grads: list[Tensor], factor: float | Tensor = 1.0, keep: Tensor | None = None) -> None:
        """One update of every member; members where ``keep`` [K] is False are left exactly as they are."""
        spec = self.spec
        self.steps.add_(1)
        if spec.name != "sgd":
            beta1, beta2 = spec.betas
            correction1 = (1 - beta1**self.steps).float()
            correction2_sqrt = (1 - beta2**self.steps).sqrt().float()
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            lr = self._lr(p, factor)
            mask = None if keep is None else keep.view(-1, *([1] * (p.dim() - 1)))
            if spec.name == "sgd":
                d = g.add(p, alpha=spec.weight_decay) if spec.weight_decay else g
                if spec.momentum:
                    buf = state["momentum"].mul_(spec.momentum).add_(d)
                    d = d.add(buf, alpha=spec.momentum) if spec.nesterov else buf
                p.sub_(_masked(lr * d, mask, 0.0))
                continue
            if spec.name == "adamw":
                p.mul_(_masked(1 - lr * spec.weight_decay, mask, 1.0))
            elif spec.weight_decay:
                g = g.add(p, alpha=spec.weight_decay)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / correction2_sqrt).add_(spec.eps)
            p.sub_(_masked((lr / correction1) * m / denom, mask, 0.0))


def _masked(update: Tensor, mask: Tensor | None, identity: float) -> Tensor:
    """``update`` where ``mask`` holds, the operation's identity elsewhere (so a frozen member,
    even one with non-finite gradients or state, keeps its parameters bit for bit)."""
    return update if mask is None else torch.where(mask, update, identity)

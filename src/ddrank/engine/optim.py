"""Optimisers for one model (torch.optim) and for K stacked models with per-member learning rates."""

from __future__ import annotations

import math
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
    """The torch.optim update rules applied to tensors of shape [K, ...], one lr per member."""

    def __init__(self, params: list[Tensor], spec: OptimizerSpec, lrs: Tensor):
        self.params, self.spec, self.lrs = params, spec, lrs
        self.state: list[dict[str, Tensor]] = [{} for _ in params]
        self.steps = 0

    def _lr(self, p: Tensor, factor: float) -> Tensor:
        return (self.lrs * factor).view(-1, *([1] * (p.dim() - 1)))

    @torch.no_grad()
    def step(self, grads: list[Tensor], factor: float = 1.0) -> None:
        self.steps += 1
        spec = self.spec
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            lr = self._lr(p, factor)
            if spec.name == "sgd":
                d = g.add(p, alpha=spec.weight_decay) if spec.weight_decay else g
                if spec.momentum:
                    buf = state.get("momentum")
                    buf = d.clone() if buf is None else buf.mul_(spec.momentum).add_(d)
                    state["momentum"] = buf
                    d = d.add(buf, alpha=spec.momentum) if spec.nesterov else buf
                p.sub_(lr * d)
                continue
            beta1, beta2 = spec.betas
            if spec.name == "adamw":
                p.mul_(1 - lr * spec.weight_decay)
            elif spec.weight_decay:
                g = g.add(p, alpha=spec.weight_decay)
            m = state.setdefault("exp_avg", torch.zeros_like(p))
            v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(spec.eps)
            p.sub_((lr / (1 - beta1**self.steps)) * m / denom)

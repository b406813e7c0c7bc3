"""Accuracy bookkeeping over evaluation chunks, for K members at once (K = 1 for the loop)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ECE_BINS = 15


@dataclass(frozen=True)
class EvalMetrics:
    """Top-1 (and, for the test set, top-5, per-class accuracy and expected calibration error)."""

    top1: float
    top5: float | None = None
    per_class: tuple[float, ...] = ()
    ece: float | None = None


class Tally:
    """Accumulates correct counts (and, when detailed, per-class and calibration bins) on the device."""

    def __init__(self, members: int, num_classes: int, device: torch.device, detailed: bool):
        self.detailed = detailed
        self.n = 0
        self.top1 = torch.zeros(members, dtype=torch.int64, device=device)
        if detailed:
            self.top5 = torch.zeros(members, dtype=torch.int64, device=device)
            self.class_correct = torch.zeros(members, num_classes, dtype=torch.int64, device=device)
            self.class_total = torch.zeros(num_classes, dtype=torch.int64, device=device)
            self.bin_count = torch.zeros(members, ECE_BINS, dtype=torch.float64, device=device)
            self.bin_conf = torch.zeros(members, ECE_BINS, dtype=torch.float64, device=device)
            self.bin_correct = torch.zeros(members, ECE_BINS, dtype=torch.float64, device=device)

    def add(self, logits: Tensor, labels: Tensor) -> None:
        """logits [K, B, classes], labels [B]; a row with a non-finite logit (a diverged student)
        is a wrong prediction with uniform confidence."""
        self.n += int(labels.shape[0])
        valid = torch.isfinite(logits).all(-1)
        hit = (logits.argmax(-1) == labels) & valid
        self.top1 += hit.sum(1)
        if not self.detailed:
            return
        k = min(5, logits.shape[-1])
        self.top5 += ((logits.topk(k, dim=-1).indices == labels[:, None]).any(-1) & valid).sum(1)
        self.class_total.scatter_add_(0, labels, torch.ones_like(labels))  # bincount would sync on CUDA
        self.class_correct.scatter_add_(1, labels.expand_as(hit), hit.long())
        conf = logits.float().softmax(-1).amax(-1).double()
        conf = torch.where(valid, conf, 1.0 / logits.shape[-1])
        bins = (conf * ECE_BINS).long().clamp_(0, ECE_BINS - 1)
        self.bin_count.scatter_add_(1, bins, torch.ones_like(conf))
        self.bin_conf.scatter_add_(1, bins, conf)
        self.bin_correct.scatter_add_(1, bins, hit.double())

    def results(self) -> list[EvalMetrics]:
        top1 = (self.top1.double() / self.n).tolist()
        if not self.detailed:
            return [EvalMetrics(t) for t in top1]
        top5 = (self.top5.double() / self.n).tolist()
        per_class = (self.class_correct.double() / self.class_total.clamp(min=1).double()).tolist()
        ece = ((self.bin_conf - self.bin_correct).abs().sum(1) / self.n).tolist()
        return [
            EvalMetrics(*row[:2], tuple(row[2]), row[3])
            for row in zip(top1, top5, per_class, ece, strict=True)
        ]

"""Training semantics shared by both backends: initialisation, data order, augmentation keys,
and the epoch loop with its evaluations."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from ddrank import rng
from ddrank.engine.job import STREAM_AUGMENT, STREAM_ORDER, EvalSet, JobResult, RunData, TrainJob, TrainSpec
from ddrank.engine.scoring import EvalMetrics, Tally
from ddrank.models import create_model


def init_model(spec: TrainSpec, seed: int) -> nn.Module:
    """A freshly initialised student; the seed alone decides its weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(spec.model, spec.channels, spec.num_classes, spec.size)


def epoch_batches(keys: Tensor, n: int, batch_size: int, epoch: int) -> list[Tensor]:
    """Index batches [K, b] for one epoch: a fresh permutation per member, the last batch partial."""
    order = rng.permutation(rng.fold(keys, STREAM_ORDER, epoch), n)
    return [order[:, start : start + batch_size] for start in range(0, n, batch_size)]


def augment_key(keys: Tensor, step: int) -> Tensor:
    return rng.fold(keys, STREAM_AUGMENT, step)


class Trainer(Protocol):
    """A backend's view of K students being trained together (K = 1 for the loop)."""

    def train_epoch(self, epoch: int) -> None: ...

    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor:
        """Eval-mode logits [len(members), B, classes] of shared images [B, C, H, W]."""
        ...


# Upper bound on input elements (times 16, for activations) of one evaluation chunk, over members.
EVAL_BUDGET = {"cuda": 1 << 28, "cpu": 1 << 26}


@torch.inference_mode()
def held_out_metrics(
    trainer: Trainer, data: EvalSet, members: Sequence[int], num_classes: int, detailed: bool = False
) -> list[EvalMetrics]:
    """Accuracy of the selected members on one evaluation set, in memory-bounded chunks."""
    n = data.images.shape[0]
    budget = EVAL_BUDGET.get(data.images.device.type, EVAL_BUDGET["cpu"])
    chunk = max(1, min(n, budget // (len(members) * int(data.images[0].numel()) * 16)))
    tally = Tally(len(members), num_classes, data.images.device, detailed)
    for start in range(0, n, chunk):
        tally.add(
            trainer.logits(data.images[start : start + chunk], members), data.labels[start : start + chunk]
        )
    return tally.results()


def fit(
    trainer: Trainer,
    jobs: Sequence[TrainJob],
    data: RunData,
    backend: str,
    on_epoch: Callable[[int], None] | None = None,
) -> list[JobResult]:
    """Run every epoch, record test accuracy at the spec's eval epochs, then final test and validation."""
    start = time.perf_counter()
    spec = jobs[0].spec
    everyone = list(range(len(jobs)))
    curves: list[list[tuple[int, float]]] = [[] for _ in jobs]
    for epoch in range(spec.epochs):
        trainer.train_epoch(epoch)
        if epoch + 1 in spec.eval_epochs and epoch + 1 < spec.epochs:
            for curve, m in zip(
                curves, held_out_metrics(trainer, data.test, everyone, spec.num_classes), strict=True
            ):
                curve.append((epoch + 1, m.top1))
        if on_epoch is not None:
            on_epoch(len(jobs))
    test = held_out_metrics(trainer, data.test, everyone, spec.num_classes, detailed=True)
    val_acc: list[float | None] = [None] * len(jobs)
    for name in dict.fromkeys(j.val_set for j in jobs if j.val_set is not None):
        chosen = [i for i, j in enumerate(jobs) if j.val_set == name]
        for i, m in zip(
            chosen, held_out_metrics(trainer, data.val_sets[name], chosen, spec.num_classes), strict=True
        ):
            val_acc[i] = m.top1
    seconds = (time.perf_counter() - start) / len(jobs)
    return [
        JobResult(t.top1, val, (*curve, (spec.epochs, t.top1)), seconds, backend, t.top5, t.per_class, t.ece)
        for t, val, curve in zip(test, val_acc, curves, strict=True)
    ]

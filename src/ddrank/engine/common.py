"""Training semantics shared by both backends: initialisation, data order, augmentation keys,
and the epoch loop with its evaluations."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from ddrank import rng
from ddrank.engine.allocator import keep_freed_memory
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

    def snapshot(self) -> Scorer:
        """A frozen copy of the members' current weights, to evaluate while training goes on."""
        ...

    def diverged_epochs(self) -> list[int | None]:
        """Per member, the 1-based epoch in which its training diverged (None: it did not)."""
        ...


class Scorer(Protocol):
    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor: ...


# Upper bound on input elements (times 16, for activations) of one evaluation chunk, over members.
EVAL_BUDGET = {"cuda": 1 << 28, "cpu": 1 << 26}


@torch.inference_mode()
def tally(
    model: Scorer, data: EvalSet, members: Sequence[int], num_classes: int, detailed: bool = False
) -> Tally:
    """Correct counts of the selected members on one evaluation set, in memory-bounded chunks;
    queued on the device without waiting for it."""
    n = data.images.shape[0]
    budget = EVAL_BUDGET.get(data.images.device.type, EVAL_BUDGET["cpu"])
    chunk = max(1, min(n, budget // (len(members) * int(data.images[0].numel()) * 16)))
    counts = Tally(len(members), num_classes, data.images.device, detailed)
    for start in range(0, n, chunk):
        counts.add(
            model.logits(data.images[start : start + chunk], members), data.labels[start : start + chunk]
        )
    return counts


def held_out_metrics(
    model: Scorer, data: EvalSet, members: Sequence[int], num_classes: int, detailed: bool = False
) -> list[EvalMetrics]:
    """Accuracy of the selected members on one evaluation set."""
    return tally(model, data, members, num_classes, detailed).results()


class CurveEvaluator:
    """Test accuracy at intermediate epochs, overlapped with training on CUDA.

    Each evaluation scores a snapshot of the weights on a side stream while the main stream
    trains on; nothing waits for it until the end. Before the next snapshot the main stream
    waits (on the device, not the host) for the previous evaluation, so one snapshot is alive.
    On a CPU the evaluations run in place, in order.
    """

    def __init__(self, trainer: Trainer, data: EvalSet, members: int, num_classes: int):
        self.trainer, self.data, self.members, self.num_classes = trainer, data, members, num_classes
        device = data.images.device
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: list[tuple[int, Tally]] = []
        self.snapshot: Scorer | None = None

    def submit(self, epoch: int) -> None:
        everyone = list(range(self.members))
        if self.side is None:
            self.pending.append((epoch, tally(self.trainer, self.data, everyone, self.num_classes)))
            return
        main = torch.cuda.current_stream(self.side.device)
        main.wait_stream(self.side)  # the previous evaluation is done with its snapshot
        self.snapshot = self.trainer.snapshot()
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            self.pending.append((epoch, tally(self.snapshot, self.data, everyone, self.num_classes)))

    def curves(self) -> list[list[tuple[int, float]]]:
        """Per member, (epoch, test accuracy) at every submitted epoch."""
        if self.side is not None:
            torch.cuda.current_stream(self.side.device).wait_stream(self.side)
        self.snapshot = None
        curves: list[list[tuple[int, float]]] = [[] for _ in range(self.members)]
        for epoch, counts in self.pending:
            for curve, metrics in zip(curves, counts.results(), strict=True):
                curve.append((epoch, metrics.top1))
        return curves


def fit(
    trainer: Trainer,
    jobs: Sequence[TrainJob],
    data: RunData,
    backend: str,
    on_epoch: Callable[[int], None] | None = None,
) -> list[JobResult]:
    """Run every epoch, record test accuracy at the spec's eval epochs, then final test and validation."""
    start = time.perf_counter()
    if data.device.type == "cpu":
        keep_freed_memory()  # every step would otherwise pay page faults for its activations
    spec = jobs[0].spec
    everyone = list(range(len(jobs)))
    test_set = data.test_for(spec)
    checkpoints = CurveEvaluator(trainer, test_set, len(jobs), spec.num_classes)
    for epoch in range(spec.epochs):
        trainer.train_epoch(epoch)
        if epoch + 1 in spec.eval_epochs and epoch + 1 < spec.epochs:
            checkpoints.submit(epoch + 1)
        if on_epoch is not None:
            on_epoch(len(jobs))
    curves = checkpoints.curves()
    test = held_out_metrics(trainer, test_set, everyone, spec.num_classes, detailed=True)
    val_acc: list[float | None] = [None] * len(jobs)
    for name in dict.fromkeys(j.val_set for j in jobs if j.val_set is not None):
        chosen = [i for i, j in enumerate(jobs) if j.val_set == name]
        for i, m in zip(
            chosen, held_out_metrics(trainer, data.val_sets[name], chosen, spec.num_classes), strict=True
        ):
            val_acc[i] = m.top1
    seconds = (time.perf_counter() - start) / len(jobs)
    diverged = trainer.diverged_epochs()
    return [
        JobResult(
            t.top1,
            val,
            (*curve, (spec.epochs, t.top1)),
            seconds,
            backend,
            t.top5,
            t.per_class,
            t.ece,
            diverged=epoch is not None,
            diverged_epoch=epoch,
        )
        for t, val, curve, epoch in zip(test, val_acc, curves, diverged, strict=True)
    ]

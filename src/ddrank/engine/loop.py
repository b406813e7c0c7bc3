"""The loop backend: one nn.Module at a time with torch.optim; handles every model and setting."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ddrank import rng
from ddrank.engine.batch import StepPipeline
from ddrank.engine.common import augment_key, epoch_batches, fit, init_model
from ddrank.engine.job import JobResult, RunData, TrainJob
from ddrank.engine.optim import make_optimizer
from ddrank.engine.options import autocast
from ddrank.labels import Target


class _Snapshot:
    """A copy of the student at one moment, scored with the trainer's precision."""

    def __init__(self, trainer: LoopTrainer, net: nn.Module):
        self.trainer, self.net = trainer, net

    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor:
        return self.trainer.logits(images, members, self.net)


class LoopTrainer:
    """One student, trained with a plain forward/backward/optimizer step per batch.

    With ``shard=(rank, ranks)`` the student trains data-parallel: every rank augments the same
    global batch, keeps its slice, and DistributedDataParallel averages the gradients, so the
    update is the full batch's (BatchNorm statistics stay per slice).
    """

    def __init__(self, job: TrainJob, data: RunData, shard: tuple[int, int] | None = None):
        self.job, self.spec, self.device = job, job.spec, data.device
        self.net = init_model(self.spec, job.seed).to(data.device)
        self.shard = shard
        self.model = self.net
        if shard is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [data.device.index] if data.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = make_optimizer(self.model.parameters(), self.spec.optimizer, job.lr)
        self.pipeline = StepPipeline(self.spec, data.teachers.get(self.spec.teachers))
        self.train = data.train_sets[job.train_set]
        self.keys = rng.key_from_seed(job.seed, data.device)
        self.step = 0
        self.alive = torch.ones((), dtype=torch.bool, device=data.device)
        self.diverged_at = torch.zeros((), dtype=torch.float64, device=data.device)  # 1-based step

    def train_epoch(self, epoch: int) -> None:
        """One epoch of steps. A step whose logits or gradients are non-finite is undone and the
        student stays frozen from then on (divergence, as in the ensemble backend); the decision
        stays on the device, so no step waits for the host."""
        spec, model = self.spec, self.model
        for group in self.optimizer.param_groups:
            group["lr"] = self.job.lr * spec.schedule.factor(epoch, spec.epochs)
        model.train()
        for idx in epoch_batches(self.keys, len(self.train), spec.batch_size, epoch):
            i = idx[0]
            soft = self.train.soft[i][None] if self.train.soft is not None else None
            before = [t.detach().clone() for t in self._state()]
            with autocast(self.device, spec.precision):
                x, target, truth = self.pipeline.prepare(
                    self.train.images[i][None],
                    self.train.labels[i][None],
                    soft,
                    augment_key(self.keys, self.step),
                )
                if self.shard is not None:
                    rank, ranks = self.shard
                    x, truth = x[:, rank::ranks], truth[:, rank::ranks]
                    target = Target(target.kind, target.value[:, rank::ranks])
                logits = model(x[0])
            loss = self.pipeline.loss(logits.float()[None], target, truth)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ok = self.alive & self._finite(logits)
            self.optimizer.step()
            self.step += 1
            with torch.no_grad():
                for value, old in zip(self._state(), before, strict=True):
                    value.copy_(torch.where(ok, value, old))
            self.diverged_at = torch.where(self.alive & ~ok, float(self.step), self.diverged_at)
            self.alive = ok

    def _state(self) -> list[Tensor]:
        return [*self.net.parameters(), *self.net.buffers()]

    def _finite(self, logits: Tensor) -> Tensor:
        """Whether this step may be applied (a device bool): finite gradients and (unsharded) logits.

        Data-parallel ranks decide on the averaged gradients alone, which every rank shares.
        """
        checks = [torch.isfinite(p.grad).all() for p in self.net.parameters() if p.grad is not None]
        if self.shard is None:
            checks.append(torch.isfinite(logits).all())
        return torch.stack(checks).all()

    def diverged_epochs(self) -> list[int | None]:
        step = int(self.diverged_at)
        steps_per_epoch = -(-len(self.train) // self.spec.batch_size)
        return [None if step == 0 else (step - 1) // steps_per_epoch + 1]

    def logits(self, images: Tensor, members: Sequence[int] = (0,), net: nn.Module | None = None) -> Tensor:
        net = net or self.net
        net.eval()
        with autocast(self.device, self.spec.precision):
            return net(images).float()[None].expand(len(members), -1, -1)

    def snapshot(self) -> _Snapshot:
        return _Snapshot(self, copy.deepcopy(self.net))


def train_one(
    job: TrainJob,
    data: RunData,
    on_epoch: Callable[[int], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> JobResult:
    """Train and evaluate one job with the loop backend (data-parallel over ranks with ``shard``)."""
    trainer = LoopTrainer(job, data, shard)
    return fit(trainer, [job], data, "data_parallel" if shard else "loop", on_epoch)[0]

"""The loop backend: one nn.Module at a time with torch.optim; handles every model and setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from ddrank import rng
from ddrank.engine.batch import StepPipeline
from ddrank.engine.common import augment_key, epoch_batches, fit, init_model
from ddrank.engine.job import JobResult, RunData, TrainJob
from ddrank.engine.optim import make_optimizer
from ddrank.engine.options import autocast


class LoopTrainer:
    """One student, trained with a plain forward/backward/optimizer step per batch."""

    def __init__(self, job: TrainJob, data: RunData):
        self.job, self.spec, self.device = job, job.spec, data.device
        self.model = init_model(self.spec, job.seed).to(data.device)
        self.optimizer = make_optimizer(self.model.parameters(), self.spec.optimizer, job.lr)
        self.pipeline = StepPipeline(self.spec, data.teachers.get(self.spec.teachers))
        self.train = data.train_sets[job.train_set]
        self.keys = rng.key_from_seed(job.seed, data.device)
        self.step = 0

    def train_epoch(self, epoch: int) -> None:
        spec, model = self.spec, self.model
        for group in self.optimizer.param_groups:
            group["lr"] = self.job.lr * spec.schedule.factor(epoch, spec.epochs)
        model.train()
        for idx in epoch_batches(self.keys, len(self.train), spec.batch_size, epoch):
            i = idx[0]
            soft = self.train.soft[i][None] if self.train.soft is not None else None
            with autocast(self.device, spec.precision):
                x, target, truth = self.pipeline.prepare(
                    self.train.images[i][None],
                    self.train.labels[i][None],
                    soft,
                    augment_key(self.keys, self.step),
                )
                logits = model(x[0])
            loss = self.pipeline.loss(logits.float()[None], target, truth)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1

    def logits(self, images: Tensor, members: Sequence[int] = (0,)) -> Tensor:
        self.model.eval()
        with autocast(self.device, self.spec.precision):
            return self.model(images).float()[None].expand(len(members), -1, -1)


def train_one(job: TrainJob, data: RunData, on_epoch: Callable[[int], None] | None = None) -> JobResult:
    """Train and evaluate one job with the loop backend."""
    return fit(LoopTrainer(job, data), [job], data, "loop", on_epoch)[0]

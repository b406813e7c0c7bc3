"""The ensemble backend: K students of one architecture trained at once with torch.func.vmap.

Every member keeps its own initialisation, data order, augmentation draws, learning rate and
(for BatchNorm) running statistics, so a job gives the same result here as in the loop backend.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ddrank import rng
from ddrank.engine.common import augment_key, epoch_batches, fit, init_model, make_augmenter
from ddrank.engine.job import JobResult, RunData, TrainJob
from ddrank.engine.optim import StackedOptimizer
from ddrank.engine.packed import packed_program, run_packed


class Ensemble:
    """K stacked copies of one architecture, called as one batched function."""

    def __init__(self, members: list[nn.Module], device: torch.device):
        params, buffers = stack_module_state(members)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.base = copy.deepcopy(members[0]).to("meta")
        self.program = packed_program(self.base)

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, training: bool
    ) -> Tensor:
        """Logits [K, B, classes]; x is [K, B, C, H, W] per member, or [B, C, H, W] shared."""
        self.base.train(training)
        if self.program is not None:
            return run_packed(self.program, params, buffers, x, training)
        return vmap(self._call, in_dims=(0, 0, 0 if x.dim() == 5 else None))(params, buffers, x)

    def train_forward(self, x: Tensor) -> Tensor:
        """Logits [K, B, classes] for per-member batches x [K, B, C, H, W]."""
        return self.forward(self.params, self.buffers, x, training=True)

    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor:
        """Eval-mode logits of the selected members on shared images [B, C, H, W]."""
        if len(members) == len(next(iter(self.params.values()))):
            return self.forward(self.params, self.buffers, images, training=False)
        index = torch.tensor(list(members), device=images.device)
        params = {k: v[index] for k, v in self.params.items()}
        buffers = {k: v[index] for k, v in self.buffers.items()}
        return self.forward(params, buffers, images, training=False)


class EnsembleTrainer:
    """Jobs sharing a spec and a training-set size, trained as one ensemble."""

    def __init__(self, jobs: Sequence[TrainJob], data: RunData):
        spec = jobs[0].spec
        sizes = {len(data.train_sets[j.train_set]) for j in jobs}
        if any(j.spec != spec for j in jobs) or len(sizes) != 1:
            raise ValueError("an ensemble needs one spec and one training-set size")
        device = data.device
        inits: dict[int, nn.Module] = {}
        self.ensemble = Ensemble([inits.setdefault(j.seed, init_model(spec, j.seed)) for j in jobs], device)
        self.params = list(self.ensemble.params.values())
        names = list(dict.fromkeys(j.train_set for j in jobs))
        self.images = torch.stack([data.train_sets[n].images for n in names])
        self.labels = torch.stack([data.train_sets[n].labels for n in names])
        self.set_ids = torch.tensor([names.index(j.train_set) for j in jobs], device=device)[:, None]
        self.keys = rng.key_from_seed([j.seed for j in jobs], device)
        lrs = torch.tensor([j.lr for j in jobs], device=device)
        self.optimizer = StackedOptimizer(self.params, spec.optimizer, lrs)
        self.augmenter = make_augmenter(spec)
        self.spec, self.n, self.step = spec, sizes.pop(), 0

    def train_epoch(self, epoch: int) -> None:
        spec = self.spec
        factor = spec.schedule.factor(epoch, spec.epochs)
        for idx in epoch_batches(self.keys, self.n, spec.batch_size, epoch):
            x = self.images[self.set_ids, idx]
            if self.augmenter is not None:
                x = self.augmenter(x, augment_key(self.keys, self.step))
            logits = self.ensemble.train_forward(x)
            # The sum over members of each member's batch-mean loss keeps members' gradients apart.
            loss = F.cross_entropy(
                logits.flatten(0, 1), self.labels[self.set_ids, idx].flatten(), reduction="sum"
            )
            grads = torch.autograd.grad(loss / idx.shape[1], self.params)
            self.optimizer.step(list(grads), factor)
            self.step += 1

    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor:
        return self.ensemble.logits(images, members)


def train_ensemble(
    jobs: Sequence[TrainJob], data: RunData, on_epoch: Callable[[int], None] | None = None
) -> list[JobResult]:
    """Train and evaluate jobs that share a spec and a training-set size as one ensemble."""
    return fit(EnsembleTrainer(jobs, data), jobs, data, "ensemble", on_epoch)

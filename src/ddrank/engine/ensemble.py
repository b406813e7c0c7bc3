"""The ensemble backend: K students of one architecture trained at once.

Chain-shaped students (ConvNet family, MLP) run packed into the channel dimension (see
:mod:`ddrank.engine.packed`); any other model runs through ``torch.func.vmap``. Every member
keeps its own initialisation, data order, augmentation draws, learning rate and (for
BatchNorm) running statistics, so a job gives the same result here as in the loop backend.
On CUDA the whole step (gather, augmentation, forward, backward, optimiser) is captured once
in a CUDA graph and replayed, with no host synchronisation inside an epoch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ddrank import rng
from ddrank.engine.batch import StepPipeline
from ddrank.engine.common import augment_key, epoch_batches, fit, init_model
from ddrank.engine.job import JobResult, RunData, TrainJob
from ddrank.engine.optim import StackedOptimizer
from ddrank.engine.options import EngineOptions, autocast
from ddrank.engine.packed import packed_program, run_packed
from ddrank.labels import Target

log = logging.getLogger(__name__)

# Eager steps per batch shape before a CUDA graph is captured (warms up cuDNN/cuBLAS and the allocator).
GRAPH_WARMUP_STEPS = 2


def _batch_norms_in_float(module: nn.Module) -> None:
    """Batch norms of a vmapped model normalise float32 inputs and return the input's dtype.

    Under bf16 autocast a batch norm gets bf16 activations and float32 statistics; cuDNN takes that mix,
    but vmap's batch rule does not (its backward requires the statistics in the input's dtype). fp32
    inputs pass through unchanged, so fp32 training is bit for bit what it was.
    """
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            forward = norm.forward
            norm.forward = lambda x, forward=forward: forward(x.float()).to(x.dtype)


class Ensemble:
    """K stacked copies of one architecture, called as one batched function."""

    def __init__(self, members: list[nn.Module], device: torch.device, options: EngineOptions):
        params, buffers = stack_module_state(members)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.base = copy.deepcopy(members[0]).to("meta")
        fuse = options.fused and not options.compile
        self.program = None if options.conv == "vmap" else packed_program(self.base, fuse=fuse)
        self.options = options
        if self.program is None:
            _batch_norms_in_float(self.base)

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, training: bool, share: int = 1
    ) -> Tensor:
        """Logits [K, B, classes]; x is [K, B, C, H, W] per member, [K / share, B, C, H, W] with each
        batch shared by ``share`` consecutive members, or [B, C, H, W] shared by all."""
        self.base.train(training)
        if self.program is not None:
            return run_packed(
                self.program,
                params,
                buffers,
                x,
                training,
                conv=self.options.conv,
                channels_last=self.options.channels_last,
                norm_in_bf16=self.options.norm_in_bf16,
                share=share,
                first_conv=self.options.first_conv,
            )
        if share > 1:
            x = x.repeat_interleave(share, 0)
        return vmap(self._call, in_dims=(0, 0, 0 if x.dim() == 5 else None))(params, buffers, x)

    def logits(
        self,
        images: Tensor,
        members: Sequence[int],
        state: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None,
    ) -> Tensor:
        """Eval-mode logits of the selected members on shared images [B, C, H, W] (with the
        ensemble's weights, or those of ``state``, a (params, buffers) snapshot)."""
        params, buffers = state or (self.params, self.buffers)
        if len(members) == len(next(iter(params.values()))):
            return self.forward(params, buffers, images, training=False)
        index = torch.tensor(list(members), device=images.device)
        params = {k: v[index] for k, v in params.items()}
        buffers = {k: v[index] for k, v in buffers.items()}
        return self.forward(params, buffers, images, training=False)


class _StepGraph:
    """A captured training step and the static tensors it reads."""

    def __init__(self, graph: torch.cuda.CUDAGraph, idx: Tensor, key: Tensor, factor: Tensor):
        self.graph, self.idx, self.key, self.factor = graph, idx, key, factor

    def replay(self, idx: Tensor, key: Tensor, factor: float) -> None:
        self.idx.copy_(idx)
        self.key.copy_(key)
        self.factor.fill_(factor)
        self.graph.replay()


class _Snapshot:
    """An ensemble's weights at one moment, scored with the trainer's forward."""

    def __init__(self, trainer: EnsembleTrainer, state: tuple[dict[str, Tensor], dict[str, Tensor]]):
        self.trainer, self.state = trainer, state

    def logits(self, images: Tensor, members: Sequence[int]) -> Tensor:
        return self.trainer.logits(images, members, self.state)


class EnsembleTrainer:
    """Jobs sharing a spec and a training-set size, trained as one ensemble."""

    def __init__(self, jobs: Sequence[TrainJob], data: RunData, options: EngineOptions | None = None):
        spec = jobs[0].spec
        sizes = {len(data.train_sets[j.train_set]) for j in jobs}
        if any(j.spec != spec for j in jobs) or len(sizes) != 1:
            raise ValueError("an ensemble needs one spec and one training-set size")
        self.options = options or EngineOptions()
        self.device = device = data.device
        inits: dict[int, nn.Module] = {}
        members = [inits.setdefault(j.seed, init_model(spec, j.seed)) for j in jobs]
        self.ensemble = Ensemble(members, device, self.options)
        self.params = list(self.ensemble.params.values())
        names = list(dict.fromkeys(j.train_set for j in jobs))
        self.images = torch.stack([data.train_sets[n].images for n in names])
        self.labels = torch.stack([data.train_sets[n].labels for n in names])
        softs = [data.train_sets[n].soft for n in names]
        self.soft = torch.stack(softs) if all(s is not None for s in softs) else None
        self.set_ids = torch.tensor([names.index(j.train_set) for j in jobs], device=device)[:, None]
        self.keys = rng.key_from_seed([j.seed for j in jobs], device)
        # Members with one training set and one seed (an lr grid) draw the same batches and
        # augmentations: prepare (augment, mix, teacher-label) each distinct batch once.
        first = {(j.train_set, j.seed): i for i, j in reversed(list(enumerate(jobs)))}
        distinct = sorted(first.values())
        self.distinct, self.share = None, 1
        if len(distinct) < len(jobs):
            self.distinct = torch.tensor(distinct, device=device)
            spread = [distinct.index(first[(j.train_set, j.seed)]) for j in jobs]
            self.spread = torch.tensor(spread, device=device)
            # Consecutive runs of equal length (the planner's lr grids): the model reads each distinct
            # batch once for all its members instead of a copy per member.
            run = len(jobs) // len(distinct)
            if spread == [i // run for i in range(len(jobs))]:
                self.share = run
        lrs = torch.tensor([j.lr for j in jobs], device=device)
        self.optimizer = StackedOptimizer(self.params, spec.optimizer, lrs)
        self.pipeline = StepPipeline(spec, data.teachers.get(spec.teachers))
        self.spec, self.n, self.step = spec, sizes.pop(), 0
        # Per-member divergence: a member whose logits or gradients go non-finite is frozen.
        self.alive = torch.ones(len(jobs), dtype=torch.bool, device=device)
        self.diverged_at = torch.zeros(len(jobs), dtype=torch.float64, device=device)  # 1-based step
        self.use_graphs = self.options.cuda_graphs and device.type == "cuda"
        self._forward_loss = self._forward_and_loss
        if self.options.compile:
            self._forward_loss = torch.compile(self._forward_and_loss, dynamic=False)
        self._graphs: dict[int, _StepGraph | None] = {}
        self._eager_steps: dict[int, int] = {}

    def _prepare(self, idx: Tensor, key: Tensor) -> tuple[Tensor, Target, Tensor]:
        """The augmented batches, every member's target and true labels, each distinct batch made
        once; the batches are per member, or per run of ``self.share`` members when they share."""
        set_ids = self.set_ids
        if self.distinct is not None:
            idx, key, set_ids = idx[self.distinct], key[self.distinct], set_ids[self.distinct]
        soft = self.soft[set_ids, idx] if self.soft is not None else None
        x, target, truth = self.pipeline.prepare(
            self.images[set_ids, idx], self.labels[set_ids, idx], soft, key
        )
        if self.distinct is None:
            return x, target, truth
        x = x if self.share > 1 else x[self.spread]
        return x, Target(target.kind, target.value[self.spread]), truth[self.spread]

    def _forward_and_loss(self, x: Tensor, target: Tensor, truth: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """The members' summed loss and their float32 logits (the part ``compile`` compiles)."""
        with autocast(self.device, self.spec.precision):
            logits = self.ensemble.forward(
                self.ensemble.params, self.ensemble.buffers, x, training=True, share=self.share
            )
        logits = logits.float()
        return self.pipeline.loss(logits, Target(kind, target), truth), logits

    def _train_step(self, idx: Tensor, key: Tensor, factor: float | Tensor) -> None:
        """One optimiser step of every member on its batch ``idx`` [K, b]."""
        running = [b.clone() for b in self.ensemble.buffers.values()]
        with autocast(self.device, self.spec.precision):
            x, target, truth = self._prepare(idx, key)
        loss, logits = self._forward_loss(x, target.value, truth, target.kind)
        grads = torch.autograd.grad(loss, self.params)
        ok = self.alive & finite_members(logits, grads)
        self.optimizer.step(list(grads), factor, ok)
        for buffer, before in zip(self.ensemble.buffers.values(), running, strict=True):
            buffer.copy_(torch.where(ok.view(-1, *[1] * (buffer.dim() - 1)), buffer, before))
        self.diverged_at.copy_(torch.where(self.alive & ~ok, self.optimizer.steps, self.diverged_at))
        self.alive.copy_(ok)

    def _capture(self, idx: Tensor, key: Tensor, factor: float) -> _StepGraph | None:
        """Capture the step for this batch shape; None (eager from now on) if capture fails."""
        static = _StepGraph(
            torch.cuda.CUDAGraph(), idx.clone(), key.clone(), torch.full((), factor, device=self.device)
        )
        try:
            with torch.cuda.graph(static.graph):
                self._train_step(static.idx, static.key, static.factor)
        except RuntimeError as exc:  # an op that cannot be captured: stay eager for this ensemble
            log.info("CUDA graph capture failed, training eagerly: %s", exc)
            self.use_graphs = False
            return None
        return static

    def train_epoch(self, epoch: int) -> None:
        spec = self.spec
        factor = spec.schedule.factor(epoch, spec.epochs)
        for idx in epoch_batches(self.keys, self.n, spec.batch_size, epoch):
            key = augment_key(self.keys, self.step)
            width = idx.shape[1]
            graph = self._graphs.get(width)
            if graph is not None:
                graph.replay(idx, key, factor)
            elif self.use_graphs and self._eager_steps.get(width, 0) >= GRAPH_WARMUP_STEPS:
                graph = self._graphs[width] = self._capture(idx, key, factor)
                if graph is not None:
                    graph.replay(idx, key, factor)
                else:
                    self._train_step(idx, key, factor)
            else:
                self._eager_steps[width] = self._eager_steps.get(width, 0) + 1
                if self.use_graphs:
                    side = torch.cuda.Stream(self.device)
                    side.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(side):
                        self._train_step(idx, key, factor)
                    torch.cuda.current_stream(self.device).wait_stream(side)
                else:
                    self._train_step(idx, key, factor)
            self.step += 1

    def logits(self, images: Tensor, members: Sequence[int], state: tuple | None = None) -> Tensor:
        with autocast(self.device, self.spec.precision):
            return self.ensemble.logits(images, members, state).float()

    def snapshot(self) -> _Snapshot:
        with torch.no_grad():
            params = {k: v.detach().clone() for k, v in self.ensemble.params.items()}
            buffers = {k: v.clone() for k, v in self.ensemble.buffers.items()}
        return _Snapshot(self, (params, buffers))

    def diverged_epochs(self) -> list[int | None]:
        """The 1-based epoch in which each member diverged, None for members that did not."""
        steps_per_epoch = -(-self.n // self.spec.batch_size)
        return [None if s == 0 else (int(s) - 1) // steps_per_epoch + 1 for s in self.diverged_at.tolist()]


def finite_members(logits: Tensor, grads: Sequence[Tensor]) -> Tensor:
    """[K] bool: member k's logits [K, B, classes] and gradients [K, ...] are all finite."""
    ok = torch.isfinite(logits).flatten(1).all(1)
    for grad in grads:
        ok = ok & torch.isfinite(grad).flatten(1).all(1)
    return ok


def train_ensemble(
    jobs: Sequence[TrainJob],
    data: RunData,
    on_epoch: Callable[[int], None] | None = None,
    options: EngineOptions | None = None,
) -> list[JobResult]:
    """Train and evaluate jobs that share a spec and a training-set size as one ensemble."""
    return fit(EnsembleTrainer(jobs, data, options), jobs, data, "ensemble", on_epoch)

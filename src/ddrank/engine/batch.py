"""One training step's data path, shared by both backends: augment, label, and score a batch.

Order: image-folder transforms, then DSA, then Mixup/CutMix (which mixes labels too). Labels
then come from the hard classes (one-hot, mixed), the set's stored soft labels (mode S, mixed
as probabilities), or the teacher ensemble on the final augmented images (mode M). Each member
draws from its own key, so a member's batch is the same alone (loop) or in an ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import stack_module_state

from ddrank import rng
from ddrank.augment import DSA, Mix, transforms_from_spec
from ddrank.engine.job import TrainSpec
from ddrank.engine.packed import Op, packed_program, run_packed
from ddrank.labels import Target, get_loss
from ddrank.labels.teachers import TeacherEnsemble

# Sub-streams of a step's augmentation key (DSA uses the key itself).
_TRANSFORMS = 101
_MIX = 102


class StepPipeline:
    """Augmentation, labelling and loss for one step of K members (K = 1 for the loop backend)."""

    def __init__(self, spec: TrainSpec, teachers: TeacherEnsemble | None = None):
        aug, labels = spec.augment, spec.labels
        self.spec = spec
        self.transforms = transforms_from_spec([dict(t) for t in aug.transforms]) if aug.transforms else None
        self.dsa = DSA(aug.dsa, mode=aug.dsa_mode) if aug.dsa else None
        self.mix = Mix(aug.mixup, aug.cutmix, prob=aug.mix_prob) if aug.mixes else None
        self.loss_fn = get_loss(labels.loss)
        if labels.mode == "M" and teachers is None:
            raise ValueError("mode M training needs a teacher ensemble")
        self.teachers = PackedTeachers.of(teachers) if labels.mode == "M" else None

    def prepare(
        self, x: Tensor, labels: Tensor, soft: Tensor | None, key: Tensor
    ) -> tuple[Tensor, Target, Tensor]:
        """Augmented images [K, B, ...], the training target and the (possibly mixed) true labels."""
        spec, classes = self.spec, self.spec.num_classes
        if self.transforms is not None:
            x = self.transforms(x, rng.fold(key, _TRANSFORMS))
        if self.dsa is not None:
            x = self.dsa(x, key)
        mixed = self.mix(x, rng.fold(key, _MIX)) if self.mix is not None else None
        if mixed is not None:
            x = mixed.images
        truth = mixed.mix_labels(labels, classes) if mixed is not None else labels
        mode, temperature = spec.labels.mode, spec.labels.temperature
        if mode == "M":
            target = self.teachers.target(x, temperature, want_logits=spec.labels.loss == "mse_gt")
        elif mode == "S":
            if soft is None:
                raise ValueError("mode S training needs stored soft labels")
            if mixed is not None:
                target = Target.probs(mixed.mix_labels((soft.float() / temperature).softmax(-1)))
            else:
                target = Target.logits(soft.float())
        else:
            target = Target.probs(truth) if mixed is not None else Target.hard(labels)
        if spec.labels.loss == "ce" and target.kind == "logits":
            target = Target.probs((target.value / temperature).softmax(-1))
        return x, target, truth

    def loss(self, logits: Tensor, target: Target, truth: Tensor) -> Tensor:
        """Sum over members of each member's batch-mean loss (members' gradients stay apart)."""
        labels = self.spec.labels
        value = self.loss_fn(
            logits,
            target,
            temperature=labels.temperature,
            t2_scale=labels.t2_scale,
            hard_labels=truth,
            mse_weight=labels.mse_weight,
            ce_weight=labels.ce_weight,
        )
        return value * logits.shape[0]


class PackedTeachers(TeacherEnsemble):
    """A teacher ensemble whose same-architecture chain-shaped teachers (ConvNet, MLP) run as one
    packed forward: the augmented batches of all students are one batch, the teachers are the
    packed members, and the first convolution is one dense GEMM over their stacked filters.

    It runs under the students' autocast (bf16 on CUDA by default) and ``no_grad``, not
    ``inference_mode``: the loss saves the targets for its backward pass.
    """

    def __init__(
        self,
        teachers: TeacherEnsemble,
        program: list[Op],
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
    ):
        super().__init__(teachers.teachers, teachers.mode)
        self.program, self.params, self.buffers = program, params, buffers

    @classmethod
    def of(cls, teachers: TeacherEnsemble) -> TeacherEnsemble:
        """The packed form of ``teachers`` when they allow one, else ``teachers`` itself."""
        models = [t.model for t in teachers.teachers]
        first = models[0]
        program = packed_program(first, fuse=True)
        same = all(type(m) is type(first) and str(m) == str(first) for m in models)
        if program is None or not same or any(m.training for m in models):
            return teachers
        with torch.no_grad():
            params, buffers = stack_module_state(models)
            params = {k: v.detach() for k, v in params.items()}
        return cls(teachers, program, params, buffers)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Every teacher's logits [teachers, N, classes] (float32) for images [N, C, H, W]."""
        return run_packed(self.program, self.params, self.buffers, images, False, norm_in_bf16=True).float()


@torch.no_grad()
def no_teacher_gradients(teachers: TeacherEnsemble | None) -> bool:
    """True when no teacher parameter requires or holds a gradient (a guard for tests and logs)."""
    if teachers is None:
        return True
    return all(
        not p.requires_grad and p.grad is None for t in teachers.teachers for p in t.model.parameters()
    )

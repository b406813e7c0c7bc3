"""What the engine trains: a :class:`TrainSpec` (how) applied to a named training set (what)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from ddrank.protocols.protocol import AugmentSpec, FullDataRecipe, LabelSpec, OptimizerSpec, ScheduleSpec

if TYPE_CHECKING:
    from ddrank.labels.teachers import TeacherEnsemble

# Sub-stream tags of a job's random key (see ddrank.rng.fold).
STREAM_ORDER = 1
STREAM_AUGMENT = 2


@dataclass(frozen=True)
class TrainSpec:
    """How one student is trained; jobs sharing a spec and a set size can run as one ensemble."""

    model: str
    channels: int
    num_classes: int
    size: int
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    epochs: int
    batch_size: int
    augment: AugmentSpec
    eval_epochs: tuple[int, ...] = ()  # epochs (1-based) after which test accuracy is also recorded
    precision: str = "fp32"  # "fp32" or "bf16" (autocast); part of the job's identity
    labels: LabelSpec = LabelSpec()
    teachers: str = ""  # fingerprint of the teacher ensemble (mode M), a key into RunData.teachers
    test_view: str = ""  # test images seen through the protocol's test transforms (RunData.test_views)

    @classmethod
    def from_recipe(
        cls, recipe: FullDataRecipe, model: str, channels: int, num_classes: int, size: int, precision: str
    ) -> TrainSpec:
        """How ``model`` trains on the whole real training set under a full-data recipe (hard labels)."""
        return cls(
            model,
            channels,
            num_classes,
            size,
            recipe.optimizer,
            recipe.schedule,
            recipe.epochs,
            recipe.batch_size,
            recipe.augment,
            (),
            precision,
        )

    def fingerprint(self) -> str:
        payload = asdict(self) | {
            "optimizer": self.optimizer.model_dump(mode="json"),
            "schedule": self.schedule.model_dump(mode="json"),
            "augment": self.augment.model_dump(mode="json"),
            "labels": self.labels.model_dump(mode="json"),
        }
        if not self.test_view:  # the plain test set: keys stay those of specs without the field
            del payload["test_view"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingSet:
    """Training images (float32, in the protocol's space, on the device), hard labels and,
    for mode S, stored soft labels as logits [N, classes]."""

    images: Tensor
    labels: Tensor
    fingerprint: str
    soft: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class EvalSet:
    """Held-out images (validation or test) on the device."""

    images: Tensor
    labels: Tensor
    fingerprint: str


@dataclass(frozen=True)
class TrainJob:
    """One student to train: spec, training set, validation set, learning rate and seed.

    ``cell`` ("syn", "random", "real") and ``round`` only label the job for results stores.
    """

    spec: TrainSpec
    train_set: str
    val_set: str | None
    lr: float
    seed: int
    key: str = field(default="", compare=False)
    cell: str = field(default="", compare=False)
    round: int = field(default=-1, compare=False)


def job_key(spec: TrainSpec, train_fp: str, val_fp: str | None, test_fp: str, lr: float, seed: int) -> str:
    """The identity of a job's result: same key, same numbers."""
    payload = [spec.fingerprint(), train_fp, val_fp, test_fp, repr(float(lr)), int(seed)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class JobResult:
    """Final-epoch accuracies (fractions), the test curve at the spec's eval epochs, and how it ran.

    ``diverged``: the student's loss, logits or gradients went non-finite; its parameters were
    frozen from that step on (``diverged_epoch``, 1-based, the epoch of that step) and its
    accuracies are what the frozen model predicts, non-finite logits counting as wrong.
    """

    test_acc: float
    val_acc: float | None
    curve: tuple[tuple[int, float], ...]
    seconds: float
    backend: str
    test_top5: float | None = None
    test_per_class: tuple[float, ...] = ()
    test_ece: float | None = None
    diverged: bool = False
    diverged_epoch: int | None = None


class JobCache(Protocol):
    """Where finished results live: looked up before training, written as soon as a job ends."""

    def get(self, job: TrainJob) -> JobResult | None: ...

    def put(self, job: TrainJob, result: JobResult) -> None: ...


class MemoryCache:
    """A JobCache for one process."""

    def __init__(self) -> None:
        self.results: dict[str, JobResult] = {}

    def get(self, job: TrainJob) -> JobResult | None:
        return self.results.get(job.key)

    def put(self, job: TrainJob, result: JobResult) -> None:
        self.results[job.key] = result

    def __len__(self) -> int:
        return len(self.results)


@dataclass
class RunData:
    """Everything jobs reference by name, resident on one device."""

    train_sets: dict[str, TrainingSet]
    val_sets: dict[str, EvalSet]
    test: EvalSet
    device: torch.device
    teachers: dict[str, TeacherEnsemble] = field(default_factory=dict)
    test_views: dict[str, EvalSet] = field(default_factory=dict)

    def test_for(self, spec: TrainSpec) -> EvalSet:
        """The test images a spec's students are scored on (a test view, or the plain test set)."""
        return self.test_views[spec.test_view] if spec.test_view else self.test

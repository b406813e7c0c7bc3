"""The Protocol: a typed, validated, hashable description of everything that affects a score.

Presets are YAML files in ``protocols/presets``; each holds a base protocol and optional
overrides that apply to a dataset and/or an IPC (see :func:`load_protocol`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ddrank.errors import ConfigError

Space = Literal["pixel", "normalized", "zca"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerSpec(_Spec):
    """Optimiser family and its hyper-parameters (PyTorch semantics)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)


class ScheduleSpec(_Spec):
    """Learning-rate schedule per epoch: ``constant``, ``step`` (× gamma at milestones) or ``cosine``."""

    kind: Literal["constant", "step", "cosine"] = "step"
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = Field(0.1, gt=0.0)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < m < 1.0 for m in v):
            raise ValueError("milestones are fractions of the epochs, each in (0, 1)")
        return tuple(sorted(v))

    def factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base learning rate during ``epoch`` (0-based)."""
        import math

        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** sum(epoch >= int(m * epochs) for m in self.milestones)
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


class AugmentSpec(_Spec):
    """Training-time augmentation; ``none()`` is the same protocol with all of it switched off.

    ``transforms`` are image-folder style steps applied first, e.g.
    ``[{name: random_resized_crop, scale: [0.5, 1.0]}, {name: flip}, {name: patch_shuffle, grid: 2}]``;
    then DSA; then Mixup (``mixup`` = α) or CutMix (``cutmix`` = β), which mix labels too.
    """

    transforms: tuple[dict[str, Any], ...] = ()
    dsa: str | None = None
    dsa_mode: Literal["S", "M"] = "S"
    mixup: float | None = Field(None, gt=0.0)
    cutmix: float | None = Field(None, gt=0.0)
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)

    @property
    def enabled(self) -> bool:
        return bool(self.transforms) or self.dsa is not None or self.mixes

    def __hash__(self) -> int:  # transforms hold dicts, so hash the canonical JSON form
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @property
    def mixes(self) -> bool:
        return self.mixup is not None or self.cutmix is not None

    def none(self) -> AugmentSpec:
        return AugmentSpec()


class LabelSpec(_Spec):
    """How students are labelled and which loss they minimise.

    ``hard``: cross-entropy on class labels. ``S``: one stored soft label per image (the set's
    own; teachers label the random baseline). ``M``: every augmented batch relabelled online by
    the teacher ensemble (``ensemble``: average of probabilities or of logits).
    """

    mode: Literal["hard", "S", "M"] = "hard"
    loss: str = "ce"
    temperature: float = Field(1.0, gt=0.0)
    t2_scale: bool = False
    teachers: tuple[str, ...] = ()
    ensemble: Literal["prob", "logit"] = "prob"
    mse_weight: float = Field(1.0, ge=0.0)
    ce_weight: float = Field(0.025, ge=0.0)

    def hard(self) -> LabelSpec:
        """The same protocol's hard-label variant (for acc(syn, hard))."""
        return LabelSpec()


class FullDataRecipe(_Spec):
    """How ``acc(real, hard)`` is trained: the published full-data recipe, or a published value."""

    model: str | None = None
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    lr: float = Field(0.01, gt=0.0)
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(512, ge=1)
    augment: AugmentSpec = AugmentSpec()
    published_acc: float | None = Field(None, ge=0.0, le=1.0)
    published_source: str | None = None


class Protocol(_Spec):
    """Everything that affects a score, validated; ``content_hash`` identifies it in results."""

    name: str
    version: int = 1
    description: str = ""
    dataset: str | None = None
    ipc: int | None = None
    model: str
    labels: LabelSpec = LabelSpec()
    augment: AugmentSpec = AugmentSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    epochs: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr_grid: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1)
    lr: float | None = Field(None, gt=0.0)
    use_set_lr: bool = True
    selection: Literal["honest", "reference"] = "honest"
    eval_every: int = Field(100, ge=1)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    rounds: int = Field(5, ge=1)
    space: Space = "normalized"
    stats: str | None = None
    zca: bool = False
    zca_regularization: float = Field(0.1, gt=0.0)
    full_data: FullDataRecipe = FullDataRecipe()

    @field_validator("lr_grid")
    @classmethod
    def _positive_grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(lr <= 0 for lr in v):
            raise ValueError("lr_grid needs at least one positive learning rate")
        return tuple(v)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        labels = self.labels
        if labels.mode == "hard" and labels.loss != "ce":
            raise ValueError(f"hard labels train with loss 'ce', not {labels.loss!r}")
        if labels.mode == "M" and not labels.teachers:
            raise ValueError(
                "labels mode 'M' relabels every batch with teachers; list them in labels.teachers"
            )
        if labels.mode == "hard" and labels.teachers:
            raise ValueError("hard labels use no teachers; remove labels.teachers or pick mode 'S' or 'M'")
        return self

    @property
    def optimistic(self) -> bool:
        """True for the reference selection mode (best test accuracy over lrs and checkpoints)."""
        return self.selection == "reference"

    def content_hash(self) -> str:
        """A stable hash of every field that affects a number (name and description excluded)."""
        payload = self.model_dump(mode="json", exclude={"name", "description"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, **fields: Any) -> Protocol:
        """A validated copy with some fields replaced (nested specs as dicts or specs)."""
        data = self.model_dump()
        data.update({k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in fields.items()})
        return validated_protocol(data)


def validated_protocol(fields: dict[str, Any]) -> Protocol:
    """``Protocol.model_validate`` with the first problem raised as a one-line ConfigError."""
    try:
        return Protocol.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "protocol"
        raise ConfigError(f"protocol {fields.get('name', 'custom')!r}: {where}: {first['msg']}") from None

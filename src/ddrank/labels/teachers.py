"""Teachers: frozen models that label students' batches (mode M) or random subsets (mode S).

Checkpoints are found at ``<teacher_dir>/<dataset>/<model>/ckpt_best.pt`` (the DD-Ranking
layout) or given explicitly, loaded with ``weights_only=True`` and checked against the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ddrank.errors import CheckpointError
from ddrank.fingerprint import fingerprint
from ddrank.labels.losses import Target
from ddrank.models import canonical_model_name, create_model, load_state_dict_checked

CHECKPOINT_NAME = "ckpt_best.pt"
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "teacher")


@dataclass
class Teacher:
    """One frozen teacher model and where it came from."""

    name: str
    model: nn.Module
    source: str
    fingerprint: str


def _state_fingerprint(state: dict[str, Tensor]) -> str:
    """Every tensor's name, dtype and bytes, in name order (0-d counters such as BatchNorm's included)."""
    return fingerprint(
        *(part for key in sorted(state) for part in (key, str(state[key].dtype), state[key])), length=16
    )


def _unwrap(loaded: object, source: str) -> dict[str, Tensor]:
    if isinstance(loaded, dict):
        for key in _STATE_KEYS:
            if isinstance(loaded.get(key), dict):
                return loaded[key]
        if all(isinstance(v, Tensor) for v in loaded.values()):
            return loaded
    raise CheckpointError(
        f"{source}: expected a state dict (or a dict with 'state_dict'), got {type(loaded).__name__}"
    )


def freeze(model: nn.Module) -> nn.Module:
    """Teachers never train: no gradients, eval mode (BatchNorm statistics stay fixed)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return model.eval()


def load_teacher(
    model_name: str, path: str | os.PathLike, channels: int, num_classes: int, size: int
) -> Teacher:
    """Build ``model_name`` and load its checkpoint; specific errors for missing or mismatching files."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"teacher checkpoint {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise CheckpointError(
            f"cannot load teacher checkpoint {str(path)!r} safely: {exc}".splitlines()[0]
        ) from None
    state = _unwrap(loaded, str(path))
    model = create_model(model_name, channels, num_classes, size)
    load_state_dict_checked(model, state, source=str(path))
    return Teacher(
        canonical_model_name(model_name), freeze(model), str(path), _state_fingerprint(model.state_dict())
    )


def teacher_path(teacher_dir: str | os.PathLike, dataset: str, model_name: str) -> Path:
    """``<teacher_dir>/<dataset>/<model>/ckpt_best.pt``: the first that exists of ddrank's spelling, the
    name as given, and DD-Ranking's layout (e.g. ``ImageNet1K/ResNet-18-BN`` for ``imagenet1k`` and
    ``torchvision:resnet18``); ddrank's spelling when none does."""
    from ddrank.compat.ddranking_config import ddranking_spellings

    dd_datasets, dd_models = ddranking_spellings(dataset, canonical_model_name(model_name))
    root = Path(teacher_dir)
    candidates = [
        root / dataset / canonical_model_name(model_name) / CHECKPOINT_NAME,
        root / dataset / model_name / CHECKPOINT_NAME,
        *(root / d / m / CHECKPOINT_NAME for d in dd_datasets for m in dd_models),
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def resolve_teachers(
    names: Sequence[str],
    *,
    dataset: str,
    teacher_dir: str | os.PathLike | None,
    explicit: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """One checkpoint path per teacher name: the explicit paths in order, else the teacher directory."""
    if explicit:
        if len(explicit) != len(names):
            raise CheckpointError(
                f"the protocol uses {len(names)} teacher(s) ({', '.join(names)}) but {len(explicit)} "
                "checkpoint(s) were given; pass one --teacher per teacher, in that order"
            )
        paths = [Path(p) for p in explicit]
    elif teacher_dir is not None:
        paths = [teacher_path(teacher_dir, dataset, name) for name in names]
    else:
        raise CheckpointError(
            f"the protocol needs teacher checkpoints for {', '.join(names)}; pass --teacher PATH or "
            f"--teacher-dir DIR (layout DIR/{dataset}/<model>/{CHECKPOINT_NAME}), or train one with "
            f"'ddrank teacher train --dataset {dataset} --model {names[0]} --out PATH'"
        )
    for name, path in zip(names, paths, strict=True):
        if path.is_dir():
            raise CheckpointError(f"teacher checkpoint {str(path)!r} for {name} is a folder, not a file")
        if not path.is_file():
            raise CheckpointError(
                f"missing teacher checkpoint for {name}: {str(path)!r}; train one with "
                f"'ddrank teacher train --dataset {dataset} --model {name} --out {path}'"
            )
    return paths


class TeacherEnsemble:
    """Teachers labelling a batch together: the average of their probabilities (or of their logits)."""

    def __init__(self, teachers: Sequence[Teacher], mode: Literal["prob", "logit"] = "prob"):
        if not teachers:
            raise CheckpointError("a teacher ensemble needs at least one teacher")
        self.teachers, self.mode = list(teachers), mode
        self.fingerprint = fingerprint("|".join(t.fingerprint for t in self.teachers) + mode, length=16)

    def to(self, device: torch.device) -> TeacherEnsemble:
        for teacher in self.teachers:
            teacher.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Every teacher's logits [teachers, N, classes] (float32) for images [N, C, H, W]."""
        return torch.stack([t.model(images).float() for t in self.teachers])

    def target(self, images: Tensor, temperature: float, want_logits: bool = False) -> Target:
        """The ensemble's label for images [..., C, H, W]: probabilities at ``temperature`` or logits."""
        lead = images.shape[:-3]
        logits = self.logits(images.reshape(-1, *images.shape[-3:])).unflatten(1, lead)
        if want_logits or self.mode == "logit":
            return Target.logits(logits.mean(0))
        return Target.probs((logits / temperature).softmax(-1).mean(0))

    def stored_labels(self, images: Tensor, chunk: int = 1024) -> Tensor:
        """Per-image soft labels as logits [N, classes] (log of the mean probability for ``prob``)."""
        out = []
        for start in range(0, images.shape[0], chunk):
            logits = self.logits(images[start : start + chunk])
            out.append(
                logits.mean(0) if self.mode == "logit" else logits.softmax(-1).mean(0).clamp_min(1e-12).log()
            )
        return torch.cat(out)

"""Teachers of soft-label protocols: loaded from checkpoints, or trained on the real training set with a
full-data recipe (for users without checkpoints, and cached on first use for the embedded dataset)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ddrank import __version__
from ddrank.data.real import RealData, normalize
from ddrank.engine.common import fit
from ddrank.engine.job import EvalSet, RunData, TrainingSet, TrainJob, TrainSpec
from ddrank.engine.loop import LoopTrainer
from ddrank.errors import InputError, one_line, shown
from ddrank.fingerprint import fingerprint
from ddrank.labels.teachers import CHECKPOINT_NAME, TeacherEnsemble, load_teacher, resolve_teachers
from ddrank.models import canonical_model_name
from ddrank.paths import cache_dir
from ddrank.progress import Reporter, Silent
from ddrank.protocols.protocol import FullDataRecipe, Protocol


@dataclass(frozen=True)
class TrainedTeacher:
    path: Path
    model: str
    test_acc: float


def train_teacher(
    real: RealData,
    model: str,
    recipe: FullDataRecipe,
    out: str | os.PathLike,
    *,
    images: torch.Tensor | None = None,
    test_images: torch.Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    reporter: Reporter | None = None,
) -> TrainedTeacher:
    """Train ``model`` on the whole real training set with ``recipe`` and write its checkpoint.

    ``images``/``test_images`` give the training space (e.g. ZCA-whitened); by default the
    dataset's normalised images. The checkpoint holds the state dict and its test accuracy.
    """
    device = torch.device(device)
    info = real.info
    name = canonical_model_name(model)
    train_x = normalize(real.train_images, info) if images is None else images
    test_x = normalize(real.test_images, info) if test_images is None else test_images
    data = RunData(
        {"real": TrainingSet(train_x.to(device), real.train_labels.to(device), real.fingerprint)},
        {},
        EvalSet(test_x.to(device), real.test_labels.to(device), real.fingerprint),
        device,
    )
    spec = TrainSpec.from_recipe(recipe, name, info.channels, info.num_classes, info.size, precision)
    job = TrainJob(spec, "real", None, recipe.lr, seed, "teacher", "teacher", 0)
    trainer = LoopTrainer(job, data)
    reporter = reporter or Silent()
    reporter.start(f"training teacher {name}", spec.epochs)
    (result,) = fit(trainer, [job], data, "loop", reporter.advance)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    payload = {
        "state_dict": state,
        "model": name,
        "dataset": info.name,
        "test_acc": result.test_acc,
        "recipe": json.dumps(recipe.model_dump(mode="json"), sort_keys=True),
        "ddrank_version": __version__,
    }
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(out)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed open as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write the teacher checkpoint {shown(out)}: {one_line(exc)}") from exc
    return TrainedTeacher(out, name, result.test_acc)


def cached_teacher(
    real: RealData,
    model: str,
    recipe: FullDataRecipe,
    *,
    space_tag: str = "normalized",
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    reporter: Reporter | None = None,
) -> Path:
    """A teacher checkpoint in the cache, trained on first use (for the embedded dataset)."""
    name = canonical_model_name(model)
    payload = [real.fingerprint, name, recipe.model_dump(mode="json"), space_tag, precision]
    tag = fingerprint(json.dumps(payload, sort_keys=True), length=12)
    path = cache_dir("teachers", real.info.name, f"{name}-{tag}") / CHECKPOINT_NAME
    if not path.is_file():
        (reporter or Silent()).log(f"training a {name} teacher on {real.info.name} (cached)")
        train_teacher(real, model, recipe, path, device=device, precision=precision, reporter=reporter)
    return path


def teacher_key(protocol: Protocol) -> tuple[str, ...]:
    """What makes two protocols share one loaded teacher ensemble."""
    return (*protocol.labels.teachers, protocol.labels.ensemble, str(protocol.zca))


def protocol_teachers(
    protocol: Protocol,
    real: RealData,
    *,
    teacher_dir: str | None,
    checkpoints: tuple[str, ...],
    device: torch.device,
    reporter: Reporter,
) -> TeacherEnsemble | None:
    """The protocol's teacher ensemble on ``device``; None for hard labels.

    Checkpoints are the explicit ones, else ``teacher_dir``'s; on the embedded dataset without
    either, teachers are trained with the protocol's full-data recipe and cached.
    """
    names = protocol.labels.teachers
    if not names or protocol.labels.mode == "hard":
        return None
    info = real.info
    if not checkpoints and teacher_dir is None and info.name == "digits" and not protocol.zca:
        paths = [
            cached_teacher(real, name, protocol.full_data, device=device, reporter=reporter) for name in names
        ]
    else:
        paths = resolve_teachers(names, dataset=info.name, teacher_dir=teacher_dir, explicit=checkpoints)
    loaded = [
        load_teacher(n, p, info.channels, info.num_classes, info.size)
        for n, p in zip(names, paths, strict=True)
    ]
    return TeacherEnsemble(loaded, protocol.labels.ensemble).to(device)

"""Soft-label training (stored labels, online teachers) and mixing, on both backends."""

import copy

import pytest
import torch

from ddrank.engine.batch import no_teacher_gradients
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import TrainJob, TrainSpec
from ddrank.engine.loop import LoopTrainer
from ddrank.engine.runner import run_jobs
from ddrank.labels.teachers import Teacher, TeacherEnsemble, freeze
from ddrank.protocols import AugmentSpec, LabelSpec, OptimizerSpec, ScheduleSpec

from .test_backends import _data


def _teachers(n: int) -> TeacherEnsemble:
    members = []
    for i in range(n):
        torch.manual_seed(100 + i)
        from ddrank.models import create_model

        members.append(
            Teacher("ConvNet-2-W16", freeze(create_model("ConvNet-2-W16", 1, 10, 8)), f"t{i}", f"fp{i}")
        )
    return TeacherEnsemble(members)


def _spec(labels: LabelSpec, augment: AugmentSpec, teachers: str = "", epochs: int = 4) -> TrainSpec:
    return TrainSpec(
        "ConvNet-2-W16",
        1,
        10,
        8,
        OptimizerSpec(name="sgd"),
        ScheduleSpec(),
        epochs,
        32,
        augment,
        (),
        "fp32",
        labels,
        teachers,
    )


def _assert_same_parameters(ensemble: EnsembleTrainer, loops: list[LoopTrainer]) -> None:
    for k, loop in enumerate(loops):
        for name, value in loop.model.named_parameters():
            torch.testing.assert_close(ensemble.ensemble.params[name][k], value, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("labels", "augment", "n_teachers"),
    [
        (LabelSpec(mode="S", loss="sce"), AugmentSpec(dsa="color_crop_cutout_scale_rotate"), 0),
        (LabelSpec(mode="S", loss="sce"), AugmentSpec(mixup=0.8), 0),
        (LabelSpec(), AugmentSpec(cutmix=1.0), 0),
        (LabelSpec(mode="M", loss="kl", temperature=4.0, teachers=("a", "b")), AugmentSpec(cutmix=1.0), 2),
        (LabelSpec(mode="M", loss="mse_gt", teachers=("a",)), AugmentSpec(mixup=0.8, cutmix=1.0), 1),
    ],
)
def test_soft_label_training_is_the_same_on_both_backends(labels, augment, n_teachers):
    data = _data()
    for name, train in data.train_sets.items():
        torch.manual_seed(len(name))
        train.soft = torch.randn(len(train), 10) * 3
    teachers = _teachers(n_teachers) if n_teachers else None
    if teachers is not None:
        data.teachers[teachers.fingerprint] = teachers
    spec = _spec(labels, augment, teachers.fingerprint if teachers else "")
    jobs = [TrainJob(spec, "a", "v", 0.05, 1, "k1"), TrainJob(spec, "b", "v", 0.01, 2, "k2")]
    before = copy.deepcopy([t.model.state_dict() for t in teachers.teachers]) if teachers else []
    ensemble = EnsembleTrainer(jobs, data)
    loops = [LoopTrainer(job, data) for job in jobs]
    for epoch in range(spec.epochs):
        ensemble.train_epoch(epoch)
        for loop in loops:
            loop.train_epoch(epoch)
    _assert_same_parameters(ensemble, loops)
    if teachers is not None:
        # Teachers receive no gradient: parameters, buffers and .grad are untouched.
        assert no_teacher_gradients(teachers)
        for teacher, state in zip(teachers.teachers, before, strict=True):
            for key, value in teacher.model.state_dict().items():
                assert torch.equal(value, state[key])


@pytest.mark.slow  # trains teachers and students for 150 epochs; the default suite distils a two-teacher
# ensemble end to end in tests/test_soft_metrics.py
def test_mode_m_with_two_teachers_learns_from_them():
    data = _data(n_per_class=10)
    teacher_spec = _spec(LabelSpec(), AugmentSpec(), epochs=150)
    # Train two teachers on the data itself, then distil them into fresh students.
    trained = []
    for seed in (11, 12):
        loop = LoopTrainer(TrainJob(teacher_spec, "a", None, 0.05, seed, f"t{seed}"), data)
        for epoch in range(teacher_spec.epochs):
            loop.train_epoch(epoch)
        trained.append(Teacher("ConvNet-2-W16", freeze(loop.model), f"t{seed}", f"fp{seed}"))
    teachers = TeacherEnsemble(trained)
    data.teachers[teachers.fingerprint] = teachers
    spec = _spec(
        LabelSpec(mode="M", loss="kl", temperature=4.0, teachers=("a", "b")),
        AugmentSpec(cutmix=1.0),
        teachers.fingerprint,
        epochs=150,
    )
    jobs = [TrainJob(spec, "a", "v", lr, 3, f"s{lr}") for lr in (0.01, 0.05)]
    results = run_jobs(jobs, data, backend="ensemble")
    assert max(r.test_acc for r in results.values()) > 0.6
    assert no_teacher_gradients(teachers)


def test_teacher_logit_and_probability_averaging_differ_as_defined():
    teachers = _teachers(2)
    x = torch.randn(2, 3, 1, 8, 8)
    probs = teachers.target(x, temperature=2.0)
    logits = TeacherEnsemble(teachers.teachers, mode="logit").target(x, temperature=2.0)
    each = teachers.logits(x.flatten(0, 1)).unflatten(1, (2, 3))
    torch.testing.assert_close(probs.value, (each / 2.0).softmax(-1).mean(0))
    torch.testing.assert_close(logits.value, each.mean(0))
    assert probs.kind == "probs" and logits.kind == "logits"

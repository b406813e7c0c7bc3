"""Soft-label training (stored labels, online teachers) and mixing, on both backends."""

import copy

import pytest
import torch

from ddrank.engine.batch import PackedTeachers, no_teacher_gradients
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


@pytest.mark.parametrize("model", ["ConvNet-2-W16", "ConvNet-2-W16-BN"])
def test_same_architecture_teachers_run_as_one_packed_forward(model):
    from ddrank.models import create_model

    members = []
    for i in range(3):
        torch.manual_seed(200 + i)
        net = create_model(model, 1, 10, 8)
        if model.endswith("BN"):  # non-trivial running statistics
            net.train()
            with torch.no_grad():
                net(torch.randn(64, 1, 8, 8) * (1 + i))
        members.append(Teacher(model, freeze(net), f"t{i}", f"fp{i}"))
    plain = TeacherEnsemble(members)
    packed = PackedTeachers.of(plain)
    assert isinstance(packed, PackedTeachers) and packed.fingerprint == plain.fingerprint
    x = torch.randn(2, 5, 1, 8, 8)
    flat = x.flatten(0, 1)
    torch.testing.assert_close(packed.logits(flat), plain.logits(flat), atol=1e-5, rtol=1e-5)
    want, got = plain.target(x, 4.0), packed.target(x, 4.0)
    assert got.kind == want.kind == "probs"
    torch.testing.assert_close(got.value, want.value, atol=1e-6, rtol=1e-5)
    assert no_teacher_gradients(plain)


def test_mixed_architecture_teachers_keep_the_module_forward():
    from ddrank.models import create_model

    torch.manual_seed(0)
    members = [
        Teacher(name, freeze(create_model(name, 1, 10, 8)), name, name) for name in ("ConvNet-2-W16", "MLP")
    ]
    plain = TeacherEnsemble(members)
    assert PackedTeachers.of(plain) is plain


def test_members_sharing_set_and_seed_are_augmented_and_labelled_once():
    data = _data()
    teachers = _teachers(2)
    data.teachers[teachers.fingerprint] = teachers
    labels = LabelSpec(mode="M", loss="kl", temperature=4.0, teachers=("a", "b"))
    spec = _spec(
        labels, AugmentSpec(dsa="color_crop_cutout_scale_rotate", cutmix=1.0), teachers.fingerprint, 2
    )
    # An lr grid on one set and seed, the same seed on another set, another seed on the first set.
    jobs = [
        TrainJob(spec, "a", "v", 0.05, 1, "a1"),
        TrainJob(spec, "a", "v", 0.01, 1, "a1'"),
        TrainJob(spec, "b", "v", 0.02, 1, "b1"),
        TrainJob(spec, "a", "v", 0.03, 2, "a2"),
        TrainJob(spec, "a", "v", 0.002, 1, "a1''"),
    ]
    ensemble = EnsembleTrainer(jobs, data)
    assert ensemble.distinct.tolist() == [0, 2, 3] and ensemble.spread.tolist() == [0, 0, 1, 2, 0]
    labelled = []
    relabel = ensemble.pipeline.teachers.logits
    ensemble.pipeline.teachers.logits = lambda images: labelled.append(images.shape[0]) or relabel(images)
    loops = [LoopTrainer(job, data) for job in jobs]
    for epoch in range(spec.epochs):
        ensemble.train_epoch(epoch)
        for loop in loops:
            loop.train_epoch(epoch)
    assert labelled == [3 * 32, 3 * 18] * spec.epochs  # 50 images, batch 32: three distinct batches a step
    _assert_same_parameters(ensemble, loops)

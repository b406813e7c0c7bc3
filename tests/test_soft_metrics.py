"""Soft-label protocols, ARS and general accuracy end to end on digits, and a dry-run plan of
every shipped preset.

The teachers are trained once for the module and given as checkpoints; the automatic path (no
checkpoints: trained with the protocol's full-data recipe and cached) runs in the demo's soft section.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddrank.baselines import generate
from ddrank.data import real as real_module
from ddrank.data.real import RealData, dataset_info, load_real
from ddrank.data.synthetic import SyntheticSet
from ddrank.evaluation import Evaluator
from ddrank.evaluation.teachers import train_teacher
from ddrank.metrics import augmentation_robust_score, label_robust_score
from ddrank.metrics.definitions import metric_definition
from ddrank.protocols import load_protocol, preset, preset_names
from ddrank.settings import RunSettings


def tiny(protocol, epochs: int = 30, lr: float = 0.1, **labels):
    recipe = protocol.full_data.model_copy(update={"epochs": 10})
    updates = {"epochs": epochs, "rounds": 2, "lr_grid": [lr], "full_data": recipe}
    if labels:
        updates["labels"] = protocol.labels.model_copy(update=labels)
    return protocol.with_overrides(**updates)


@pytest.fixture(scope="module")
def digits() -> RealData:
    return load_real("digits")


@pytest.fixture(scope="module")
def herding10(digits) -> SyntheticSet:
    return generate("herding", digits, 10, seed=0)


@pytest.fixture(scope="module")
def teachers(digits, tmp_path_factory) -> dict[str, str]:
    """Teacher checkpoints by model, trained on digits with a short full-data recipe."""
    folder = tmp_path_factory.mktemp("teachers")
    recipe = tiny(load_protocol("digits-kd", dataset="digits")).full_data
    return {
        name: str(train_teacher(digits, name, recipe, folder / name / "ckpt_best.pt").path)
        for name in ("ConvNet-2-W16", "ConvNet-2-W32")
    }


def test_ars_is_the_formula_of_its_four_cells(herding10, teachers):
    protocol = tiny(load_protocol("digits-kd", dataset="digits"))
    evaluator = Evaluator(RunSettings(protocol=protocol, metric="ars", teachers=[teachers["ConvNet-2-W16"]]))
    (result,) = evaluator.evaluate_sets({"herding": evaluator.validate(herding10, ipc=10)})
    row = result.to_dict()
    assert row["metric"] == "ars"
    for r in row["per_round"]:
        gap_aug = r["acc_syn_aug"] - r["acc_random_aug"]
        gap_noaug = r["acc_syn_noaug"] - r["acc_random_noaug"]
        assert r["ars"] == pytest.approx(augmentation_robust_score(gap_aug, gap_noaug, 0.5), abs=1e-12)
        # the "without augmentation" cells really trained without it
        assert set(r["runs"]) == {"syn_aug", "random_aug", "syn_noaug", "random_noaug"}
    assert row["ars_mean"] == pytest.approx(sum(r["ars"] for r in row["per_round"]) / 2)
    for name in ("acc_syn_aug", "acc_random_aug", "acc_syn_noaug", "acc_random_noaug", "ars"):
        assert 0 <= row[f"{name}_mean"] <= 1 and f"{name}_ci_low" in row


def test_mode_s_labels_the_random_baseline_with_the_teacher(herding10, teachers):
    protocol = tiny(load_protocol("digits-kd", dataset="digits"), mode="S", loss="sce", temperature=1.0)
    evaluator = Evaluator(RunSettings(protocol=protocol, teachers=[teachers["ConvNet-2-W16"]]))
    teachers = evaluator.teachers_for(protocol)
    soft = teachers.stored_labels(herding10.images)
    syn = SyntheticSet(herding10.images, soft, None, "normalized", "<memory>", "tensor")
    validated = evaluator.validate(syn, ipc=10)
    jobs, data, _ = evaluator.plan({"herding": validated})
    random_sets = [s for name, s in data.train_sets.items() if name.startswith("random:")]
    assert random_sets and all(s.soft is not None and s.soft.shape == (100, 10) for s in random_sets)
    (result,) = evaluator.evaluate_sets({"herding": validated})
    row = result.to_dict()
    for r in row["per_round"]:
        hlr, ior = r["acc_real"] - r["acc_syn_hard"], r["acc_syn"] - r["acc_random"]
        assert r["hlr"] == pytest.approx(hlr) and r["ior"] == pytest.approx(ior)
        assert r["lrs"] == pytest.approx(label_robust_score(hlr, ior, 0.5))
        assert {"syn", "random", "syn_hard", "real"} <= set(r["runs"])
    assert row["labels"] == "S" and 0.5 < row["acc_syn_mean"] <= 1


def test_mode_m_with_a_two_teacher_ensemble_runs_end_to_end(herding10, teachers):
    names = ("ConvNet-2-W32", "ConvNet-2-W16")
    protocol = tiny(load_protocol("digits-kd", dataset="digits"), epochs=60, lr=0.3, teachers=names)
    evaluator = Evaluator(RunSettings(protocol=protocol, teachers=[teachers[name] for name in names]))
    (result,) = evaluator.evaluate_sets({"herding": evaluator.validate(herding10, ipc=10)})
    row = result.to_dict()
    assert row["provenance"]["teachers"] == [teachers[name] for name in names]
    assert row["acc_syn_mean"] > 0.6 and not math.isnan(row["lrs_mean"])


def test_general_evaluation_trains_only_the_synthetic_cell(herding10):
    protocol = tiny(load_protocol("digits", dataset="digits"))
    evaluator = Evaluator(RunSettings(protocol=protocol, metric="acc"))
    jobs, _, _ = evaluator.plan({"herding": evaluator.validate(herding10, ipc=10)})
    assert {job.cell for job in jobs} == {"syn"}
    (result,) = evaluator.evaluate_sets({"herding": evaluator.validate(herding10, ipc=10)})
    assert set(result.summaries) == {"acc_syn"}


_STAND_INS: dict[str, RealData] = {}


class _IdentityZCA:
    """ZCA's maths is tested in tests/augment/test_zca.py; planning only needs its interface."""

    fingerprint = "identity"

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def to(self, device: torch.device) -> _IdentityZCA:
        return self


def _stand_in(name: str) -> RealData:
    """Random uint8 images with the dataset's shape: enough to plan, nothing to learn."""
    if name in _STAND_INS:
        return _STAND_INS[name]
    per_class, tested = (2, 1) if name == "imagenet1k" else (12, 2)
    info = dataset_info(name)
    classes = info.num_classes if info.num_classes else 10
    gen = torch.Generator().manual_seed(0)
    size = info.size

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, info.channels, size, size), generator=gen, dtype=torch.uint8)

    labels = torch.arange(classes).repeat_interleave(per_class)
    _STAND_INS[name] = RealData(
        info,
        images(len(labels)),
        labels,
        images(classes * tested),
        torch.arange(classes).repeat_interleave(tested),
        [str(c) for c in range(classes)],
        f"stand-in-{name}",
    )
    return _STAND_INS[name]


# ImageNet-1K stand-ins take ~10 s each to plan: one preset runs by default, the others under -m slow
PRESET_CASES = [
    pytest.param(
        name,
        dataset,
        ipc,
        marks=[pytest.mark.slow] if dataset == "imagenet1k" and name != "rded" else [],
    )
    for name in preset_names()
    for dataset in preset(name).get("datasets", [])
    for ipc in (1, 10)
    if not (dataset == "imagenet1k" and ipc == 10)
]


@pytest.mark.parametrize(("name", "dataset", "ipc"), PRESET_CASES)
def test_every_preset_builds_a_runnable_plan(monkeypatch, name, dataset, ipc):
    stand_in = _stand_in(dataset)
    monkeypatch.setattr(real_module, "load_real", lambda *a, **k: stand_in)
    monkeypatch.setattr("ddrank.evaluation.evaluator.load_real", lambda *a, **k: stand_in)
    monkeypatch.setattr("ddrank.evaluation.evaluator.fitted_zca", lambda *a, **k: _IdentityZCA())
    info = stand_in.info
    protocol = load_protocol(name, dataset=dataset, ipc=ipc)
    classes = info.num_classes
    images = torch.randn(classes * ipc, info.channels, info.size, info.size)
    soft = torch.randn(classes * ipc, classes) if protocol.labels.mode == "S" else None
    syn = SyntheticSet(images, soft, None, None, "<memory>", "tensor")
    for metric in ("lrs", "ars"):
        published = "published" if protocol.full_data.published_acc is not None else None
        settings = RunSettings(
            dataset=dataset, protocol=name, metric=metric, rounds=2, device="cpu", real_acc=published
        )
        evaluator = Evaluator(settings)
        jobs, data, plans = evaluator.plan({"set": evaluator.validate(syn, ipc=ipc)}, dry_run=True)
        # random subsets and the hard-label run follow the protocol's search; the synthetic run may use
        # the method's own learning rate
        per_cell = {run: len(protocol.learning_rates(run)) for run in ("random", "hard", "syn")}
        cells = [c for c in metric_definition(metric).cells if c.source != "real"]
        if protocol.labels.mode == "hard":
            cells = [c for c in cells if c.variant != "hard"]  # the P run is already hard-label
        runs = ["random" if c.source == "random" else "hard" if c.variant == "hard" else "syn" for c in cells]
        student_jobs = [j for j in jobs if j.cell != "real"]
        assert len(student_jobs) == 2 * sum(per_cell[run] for run in runs)
        assert all(j.spec.epochs == protocol.epochs and j.spec.model == protocol.model for j in student_jobs)
        if metric == "lrs" or protocol.augment.enabled:
            assert len({j.key for j in jobs}) == len(jobs)
        for job in jobs:
            assert job.train_set in data.train_sets and (job.val_set is None or job.val_set in data.val_sets)
            if job.spec.labels.mode == "M":
                assert job.spec.teachers.startswith("dry-run:")

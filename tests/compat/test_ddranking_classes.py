"""The DD-Ranking-compatible classes: one real run on digits with DD-Ranking's argument names and keys (as
fractions), and, without training, that each class turns its arguments into the run settings and its
evaluation into DD-Ranking's keys.

DD-Ranking has no protocol for digits (no full-data recipe or cached accuracy), so its reference fidelity
refuses digits configurations; the digits runs here use fidelity honest, which takes the full-data recipe
of ddrank's digits preset and says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import ddrank.compat.ddranking
from ddrank.baselines import generate
from ddrank.compat import (
    AugmentationRobustScore,
    Config,
    GeneralEvaluator,
    LabelRobustScoreHard,
    LabelRobustScoreSoft,
)
from ddrank.data.real import load_real
from ddrank.data.synthetic import SyntheticSet
from ddrank.errors import ConfigError, InputError
from ddrank.evaluation import Evaluation, RoundResult
from ddrank.metrics import label_robust_score
from ddrank.metrics.definitions import metric_definition
from ddrank.protocols import load_protocol
from ddrank.settings import RunSettings

DSA_PARAMS = {
    "flip": 0.5,
    "rotate": 15.0,
    "saturation": 2.0,
    "brightness": 1.0,
    "contrast": 0.5,
    "scale": 1.2,
    "crop": 0.125,
    "cutout": 0.5,
}
COMMON = {
    "dataset": "Digits",
    "ipc": 10,
    "model_name": "ConvNet-2-W16",
    "num_eval": 2,
    "num_epochs": 20,
    "step_size": 10,
    "data_aug_func": "dsa",
    "aug_params": DSA_PARAMS,
    "device": "cpu",
}
HARD = COMMON | {"eval_full_data": True}  # digits has no cached full-data accuracy: train it
# The keys a configuration file needs beyond the constructor's arguments (DD-Ranking reads each).
FILE_KEYS = {
    "custom_train_trans": None,
    "custom_val_trans": None,
    "optimizer": "sgd",
    "lr_scheduler": "step",
    "weight_decay": 0.0005,
    "momentum": 0.9,
    "syn_batch_size": 256,
    "real_batch_size": 256,
    "random_data_format": "tensor",
}
LRS_KEYS = {
    "hard_label_recovery_mean",
    "hard_label_recovery_std",
    "improvement_over_random_mean",
    "improvement_over_random_std",
    "label_robust_score_mean",
    "label_robust_score_std",
}
# GeneralEvaluator's DSA reads DC's parameter names.
DC_DSA_PARAMS = {
    "prob_flip": 0.5,
    "ratio_rotate": 15.0,
    "saturation": 2.0,
    "brightness": 1.0,
    "contrast": 0.5,
    "ratio_scale": 1.2,
    "ratio_crop_pad": 0.125,
    "ratio_cutout": 0.5,
}
ARS_KEYS = {
    "with_aug_scores_mean",
    "with_aug_scores_std",
    "without_aug_scores_mean",
    "without_aug_scores_std",
    "augmentation_robust_score_mean",
    "augmentation_robust_score_std",
}


@pytest.fixture(scope="module")
def images():
    return generate("herding", load_real("digits"), 10, seed=0).images


def test_label_robust_score_hard(images, tmp_path):
    config_file = tmp_path / "lrs_hard.yaml"
    # ConvNet-1 (DD-Ranking names carry no width): the cheapest student that learns digits
    config_file.write_text(
        yaml.safe_dump(COMMON | FILE_KEYS | {"eval_full_data": True, "model_name": "ConvNet-1"})
    )
    with pytest.raises(ConfigError, match="REAL_DATA_TRAINING_CONFIG.*fidelity honest"):
        LabelRobustScoreHard(Config.from_file(config_file))  # reference: DD-Ranking has no digits recipe
    metric = LabelRobustScoreHard(Config.from_file(config_file), fidelity="honest")
    digits = load_protocol("digits").full_data
    full_data = metric.config.protocol.full_data
    assert (full_data.lr, full_data.epochs, full_data.batch_size) == (
        digits.lr,
        digits.epochs,
        digits.batch_size,
    )
    assert any(
        d.key == "eval_full_data" and "ddrank's recipe" in d.ddrank_value for d in metric.config.deviations
    )
    # acc(real, hard) given, so only the synthetic and random students train (the recipe is checked above)
    metric.settings = metric.settings.replace(real_acc=0.95)
    result = metric.compute_metrics(image_tensor=images, lrs_lambda=0.5)
    assert set(result) == LRS_KEYS
    rounds = metric.last_evaluation.rounds
    hlr, ior = [r.values["hlr"] for r in rounds], [r.values["ior"] for r in rounds]
    assert result["hard_label_recovery_mean"] == pytest.approx(np.mean(hlr))
    assert result["improvement_over_random_std"] == pytest.approx(np.std(ior))  # ddof 0, as DD-Ranking
    lrs = [label_robust_score(h, i, 0.5) for h, i in zip(hlr, ior, strict=True)]
    assert result["label_robust_score_mean"] == pytest.approx(np.mean(lrs))
    assert 0 <= result["label_robust_score_mean"] <= 1  # a fraction, unlike DD-Ranking's percentages
    evaluation = metric.last_evaluation
    assert evaluation.fidelity == "honest" and evaluation.provenance["fidelity"] == "honest"
    assert {d["key"] for d in evaluation.deviations} >= {"scores", "selection", "eval_full_data"}


# -- argument translation, without training ---------------------------------------------------------


class _Recorded:
    """Stands in for the Evaluator: keeps the settings and set it is given, returns fixed round values."""

    calls: list[tuple[RunSettings, SyntheticSet]] = []

    def __init__(self, settings: RunSettings, **kwargs):
        self.settings = settings

    def evaluate_set(self, syn: SyntheticSet, method: str = "synthetic", **kwargs) -> Evaluation:
        _Recorded.calls.append((self.settings, syn))
        definition = metric_definition(self.settings.metric)
        rounds = []
        for r, acc in enumerate((0.70, 0.74, 0.77)):
            values = {f"acc_{c.name}": acc - 0.1 * (c.source == "random") for c in definition.cells}
            values |= {"acc_real": 0.95, "acc_syn_noaug": acc - 0.2}
            rounds.append(RoundResult(r, r, values | definition.scores(values, self.settings.weight), {}, {}))
        args = ("digits", 10, self.settings.metric, self.settings.weight, "p", "hash", "m", "hard", "honest")
        return Evaluation(method, *args, rounds, None, {})


@pytest.fixture
def recorded(monkeypatch) -> list[tuple[RunSettings, SyntheticSet]]:
    monkeypatch.setattr(ddrank.compat.ddranking, "Evaluator", _Recorded)
    _Recorded.calls = []
    return _Recorded.calls


def _expected(metric, name: str, per_round) -> dict[str, float]:
    values = [per_round(r.values) for r in metric.last_evaluation.rounds]
    return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}


def test_label_robust_score_soft_runs_its_teacher_protocol(images, recorded):
    metric = LabelRobustScoreSoft(
        **COMMON,
        eval_full_data=True,
        soft_label_mode="M",
        soft_label_criterion="kl",
        teacher_model_names=["ConvNet-2-W16"],
        loss_fn_kwargs={"temperature": 4.0},
        fidelity="honest",
    )
    result = metric.compute_metrics(image_tensor=images, syn_lr=torch.tensor(0.02), lrs_lambda=0.3)
    ((settings, syn),) = recorded
    labels = settings.protocol.labels
    assert (labels.mode, labels.loss, labels.temperature, labels.teachers) == (
        "M",
        "kl",
        4.0,
        ("ConvNet-2",),  # DD-Ranking's build_model reads <family>-<depth>: the width suffix is dropped
    )
    assert (settings.metric, settings.weight, settings.rounds, settings.ipc) == ("lrs", 0.3, 2, 10)
    assert settings.dataset == "digits" and settings.device == "cpu" and settings.protocol.epochs == 20
    assert syn.lr == pytest.approx(0.02) and torch.equal(syn.images, images)
    assert set(result) == LRS_KEYS
    expected: dict[str, float] = {}
    for name, field in (("hard_label_recovery", "hlr"), ("improvement_over_random", "ior")):
        expected |= _expected(metric, name, lambda v, f=field: v[f])
    assert result == expected | _expected(metric, "label_robust_score", lambda v: v["lrs"])


def test_augmentation_robust_score_returns_the_gaps_with_and_without_augmentation(images, recorded):
    with pytest.raises(ConfigError, match="crashes with hard labels.*fidelity honest"):
        AugmentationRobustScore(**COMMON, label_type="hard")  # as DD-Ranking v0.2.0 does
    metric = AugmentationRobustScore(**COMMON, label_type="hard", fidelity="honest")
    soft = torch.randn(100, 10)
    result = metric.compute_metrics(image_path=None, image_tensor=images, soft_labels=soft, ars_lambda=0.7)
    ((settings, syn),) = recorded
    assert (settings.metric, settings.weight) == ("ars", 0.7) and torch.equal(syn.labels, soft)
    assert set(result) == ARS_KEYS
    gap = _expected(metric, "with_aug_scores", lambda v: v["acc_syn_aug"] - v["acc_random_aug"])
    assert result["with_aug_scores_mean"] == pytest.approx(gap["with_aug_scores_mean"])
    assert result["augmentation_robust_score_std"] == pytest.approx(
        _expected(metric, "augmentation_robust_score", lambda v: v["ars"])["augmentation_robust_score_std"]
    )


def test_general_evaluator_returns_the_synthetic_accuracy(images, recorded):
    metric = GeneralEvaluator(**COMMON | {"aug_params": DC_DSA_PARAMS}, fidelity="honest")
    labels = torch.arange(10).repeat_interleave(10)
    result = metric.compute_metrics(image_tensor=images, labels=labels)
    ((settings, syn),) = recorded
    assert settings.metric == "acc" and torch.equal(syn.labels, labels)
    assert result == _expected(metric, "acc", lambda v: v["acc_syn"])


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="model_nam"):
        LabelRobustScoreHard(**COMMON, model_nam="ConvNet-3")
    general = COMMON | {"aug_params": DC_DSA_PARAMS}
    with pytest.raises(InputError, match="image_tensor or image_path"):
        GeneralEvaluator(**general, fidelity="honest").compute_metrics()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            GeneralEvaluator(**general | {"device": "cuda"}, fidelity="honest")


# -- DD-Ranking's defaults, positional arguments, transforms objects and save_path ------------------------


def test_classes_apply_ddranking_defaults():
    minimal = {"dataset": "Digits", "model_name": "ConvNet-2", "step_size": 10, "device": "cpu"}
    soft = LabelRobustScoreSoft(
        **minimal,
        eval_full_data=True,
        teacher_model_names=["ConvNet-2"],
        loss_fn_kwargs={"temperature": 1.0},  # DD-Ranking's default None crashes its loss
        fidelity="honest",
    ).config.protocol
    assert (soft.labels.mode, soft.labels.loss, soft.augment.cutmix) == ("S", "kl", 1.0)  # not hard labels
    general = GeneralEvaluator(
        dataset="Digits",
        ipc=10,
        model_name="ConvNet-2",
        aug_params=DC_DSA_PARAMS,
        num_eval=1,
        device="cpu",
        loss_fn_kwargs={"temperature": 1.0},
    ).config.protocol
    assert (general.optimizer.name, general.optimizer.weight_decay) == ("adamw", 0.01)
    assert general.schedule.kind == "cosine" and general.augment.dsa is not None


def test_an_explicit_none_is_a_value_and_the_defaults_fail_as_ddranking_does():
    """DD-Ranking reads data_aug_func=None as no augmentation; its own default, cutmix with
    aug_params={'cutmix_p': 1.0}, fails on the missing beta (KeyError), and so does ddrank, naming it."""
    minimal = {
        "dataset": "Digits",
        "model_name": "ConvNet-2",
        "step_size": 10,
        "device": "cpu",
        "eval_full_data": True,
    }
    plain = LabelRobustScoreHard(**minimal, fidelity="honest", data_aug_func=None).config.protocol
    assert not plain.augment.enabled
    with pytest.raises(
        ConfigError, match=r"aug_params\.beta: missing; DD-Ranking's cutmix reads params\['beta'\]"
    ):
        LabelRobustScoreHard(**minimal, fidelity="honest")
    assert (
        LabelRobustScoreHard(
            **minimal, fidelity="honest", aug_params={"beta": 1.0}
        ).config.protocol.augment.cutmix
        == 1.0
    )


def test_positional_arguments_follow_ddranking_signatures():
    by_name = LabelRobustScoreHard(**HARD, fidelity="honest").config.protocol
    by_position = LabelRobustScoreHard(
        None,
        "Digits",
        "./dataset/",
        10,
        "ConvNet-2-W16",
        "dsa",
        DSA_PARAMS,
        fidelity="honest",
        **{
            k: v
            for k, v in HARD.items()
            if k not in ("dataset", "ipc", "model_name", "data_aug_func", "aug_params")
        },
    ).config.protocol
    assert by_position.content_hash() == by_name.content_hash()
    with pytest.raises(InputError, match="both by position and by name"):
        LabelRobustScoreHard(None, "Digits", dataset="Digits", fidelity="honest")


def test_transforms_given_as_compose_objects_and_image_size_tuples():
    from torchvision import transforms

    train = Config.load_transforms_from_yaml([{"name": "RandomHorizontalFlip", "args": {"p": 0.5}}])
    assert isinstance(train, transforms.Compose)
    metric = LabelRobustScoreHard(**HARD, custom_train_trans=train, im_size=(8, 8), fidelity="honest")
    assert [t["name"] for t in metric.config.protocol.augment.transforms] == ["flip"]
    with pytest.raises(ConfigError, match="im_size"):
        LabelRobustScoreHard(**HARD, im_size=(16, 16), fidelity="honest")


def test_save_path_appends_fraction_rows(images, recorded, tmp_path):
    target = tmp_path / "results" / "scores.csv"
    metric = LabelRobustScoreHard(**HARD, save_path=str(target), fidelity="honest")
    metric.compute_metrics(image_tensor=images)
    metric.compute_metrics(image_tensor=images)
    lines = target.read_text().splitlines()
    assert lines[0] == "hard_label_recovery,improvement_over_random,label_robust_score"
    assert len(lines) == 1 + 2 * 3  # two runs of three rounds, the first kept
    assert all(0 <= float(value) <= 1 for line in lines[1:] for value in line.split(",")[2:])

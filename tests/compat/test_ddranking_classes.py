"""The DD-Ranking-compatible classes run on digits with DD-Ranking's argument names and return
DD-Ranking's keys, as fractions."""

from __future__ import annotations

import numpy as np
import pytest

from ddrank.baselines import generate
from ddrank.compat import (
    AugmentationRobustScore,
    Config,
    GeneralEvaluator,
    LabelRobustScoreHard,
    LabelRobustScoreSoft,
)
from ddrank.data.real import load_real
from ddrank.errors import ConfigError, InputError
from ddrank.metrics import label_robust_score

COMMON = {
    "dataset": "Digits",
    "ipc": 10,
    "model_name": "ConvNet-2-W16",
    "num_eval": 2,
    "num_epochs": 20,
    "data_aug_func": "dsa",
    "device": "cpu",
}
LRS_KEYS = {
    "hard_label_recovery_mean",
    "hard_label_recovery_std",
    "improvement_over_random_mean",
    "improvement_over_random_std",
    "label_robust_score_mean",
    "label_robust_score_std",
}


@pytest.fixture(scope="module")
def images():
    return generate("herding", load_real("digits"), 10, seed=0).images


def test_label_robust_score_hard(images, tmp_path):
    config_file = tmp_path / "lrs_hard.yaml"
    config_file.write_text("\n".join(f"{k}: {v}" for k, v in COMMON.items()) + "\neval_full_data: true\n")
    metric = LabelRobustScoreHard(Config.from_file(config_file))
    result = metric.compute_metrics(image_tensor=images, lrs_lambda=0.5)
    assert set(result) == LRS_KEYS
    rounds = metric.last_evaluation.rounds
    hlr, ior = [r.values["hlr"] for r in rounds], [r.values["ior"] for r in rounds]
    assert result["hard_label_recovery_mean"] == pytest.approx(np.mean(hlr))
    assert result["improvement_over_random_std"] == pytest.approx(np.std(ior))  # ddof 0, as DD-Ranking
    lrs = [label_robust_score(h, i, 0.5) for h, i in zip(hlr, ior, strict=True)]
    assert result["label_robust_score_mean"] == pytest.approx(np.mean(lrs))
    assert 0 <= result["label_robust_score_mean"] <= 1  # a fraction, unlike DD-Ranking's percentages


def test_label_robust_score_soft_with_online_teacher(images):
    metric = LabelRobustScoreSoft(
        **COMMON,
        eval_full_data=True,
        soft_label_mode="M",
        soft_label_criterion="kl",
        teacher_model_names=["ConvNet-2-W16"],
        loss_fn_kwargs={"temperature": 4.0},
    )
    assert metric.config.protocol.labels.mode == "M"
    result = metric.compute_metrics(image_tensor=images)
    assert set(result) == LRS_KEYS and 0 <= result["label_robust_score_mean"] <= 1


def test_augmentation_robust_score_and_general_evaluator(images):
    ars = AugmentationRobustScore(**COMMON, label_type="hard").compute_metrics(
        image_tensor=images, ars_lambda=0.5
    )
    assert set(ars) == {
        "with_aug_scores_mean",
        "with_aug_scores_std",
        "without_aug_scores_mean",
        "without_aug_scores_std",
        "augmentation_robust_score_mean",
        "augmentation_robust_score_std",
    }
    assert -1 <= ars["with_aug_scores_mean"] <= 1 and 0 <= ars["augmentation_robust_score_mean"] <= 1
    acc = GeneralEvaluator(**COMMON).compute_metrics(image_tensor=images)
    assert set(acc) == {"acc_mean", "acc_std"} and 0.5 < acc["acc_mean"] <= 1


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="model_nam"):
        LabelRobustScoreHard(**COMMON, model_nam="ConvNet-3")
    with pytest.raises(InputError, match="image_tensor or image_path"):
        GeneralEvaluator(**COMMON).compute_metrics()

"""Drop-in classes with DD-Ranking v0.2.0's constructor and ``compute_metrics`` arguments.

They return DD-Ranking's dictionary keys, with one deliberate difference: accuracies and scores
are **fractions** in [0, 1] (DD-Ranking passes percentages to ``exp``, so its LRS and ARS leave
[0, 1]). As in DD-Ranking, ``*_std`` is the population standard deviation (ddof 0); the full
:class:`~ddrank.evaluate.Evaluation` (sample std, 95% CIs, every run) is kept as ``last_evaluation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddrank.compat.ddranking_config import Config, TranslatedConfig, translate_ddranking_config
from ddrank.data.synthetic import load_synthetic
from ddrank.errors import InputError
from ddrank.evaluate import Evaluation, Evaluator

# Settings of how DD-Ranking runs, not of what it computes.
_RUN_KEYS = ("device", "dist", "num_workers", "save_path")


class _DDRankingMetric:
    metric = "lrs"

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any):
        raw = dict(config) if config is not None else {}
        raw.update({key: value for key, value in kwargs.items() if value is not None})
        self.device = raw.get("device")
        if self.device is not None and str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise InputError(
                f"device {self.device!r} was asked for but CUDA is not available; pass device='cpu'"
            )
        self.config: TranslatedConfig = translate_ddranking_config(raw, metric=self.metric)
        self.last_evaluation: Evaluation | None = None

    def _evaluate(
        self,
        image_tensor: Tensor | None,
        image_path: str | None,
        labels: Tensor | None,
        syn_lr: float | Tensor | None,
        weight: float,
    ) -> Evaluation:
        if image_tensor is None and image_path is None:
            raise InputError("either image_tensor or image_path must be provided")
        if isinstance(syn_lr, Tensor):
            syn_lr = float(syn_lr)
        c = self.config
        evaluator = Evaluator(
            c.dataset,
            c.protocol,
            metric=self.metric,
            data_root=c.data_root,
            rounds=c.rounds,
            seed=c.seed or 0,
            weight=weight,
            real_acc=c.real_acc,
            teacher_dir=c.teacher_dir,
            device=self.device,
        )
        source = image_tensor if image_tensor is not None else image_path
        validated = evaluator.validate(load_synthetic(source, labels, lr=syn_lr), ipc=c.ipc)
        self.last_evaluation = evaluator.evaluate_sets({"synthetic": validated})[0]
        return self.last_evaluation

    @staticmethod
    def _stats(values: list[float], name: str) -> dict[str, float]:
        return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}


class LabelRobustScoreHard(_DDRankingMetric):
    """LRS with hard labels: HLR, IOR and LRS over ``num_eval`` rounds."""

    metric = "lrs"

    def compute_metrics(
        self,
        image_tensor: Tensor | None = None,
        image_path: str | None = None,
        hard_labels: Tensor | None = None,
        syn_lr: float | None = None,
        lrs_lambda: float = 0.5,
    ) -> dict[str, float]:
        return _lrs_dict(self._evaluate(image_tensor, image_path, hard_labels, syn_lr, lrs_lambda))


class LabelRobustScoreSoft(_DDRankingMetric):
    """LRS with soft labels (mode S: stored ``soft_labels``; mode M: teachers relabel every batch)."""

    metric = "lrs"

    def compute_metrics(
        self,
        image_tensor: Tensor | None = None,
        image_path: str | None = None,
        soft_labels: Tensor | None = None,
        syn_lr: float | None = None,
        lrs_lambda: float = 0.5,
    ) -> dict[str, float]:
        return _lrs_dict(self._evaluate(image_tensor, image_path, soft_labels, syn_lr, lrs_lambda))


class AugmentationRobustScore(_DDRankingMetric):
    """ARS: the synthetic-minus-random gap with and without the protocol's augmentation."""

    metric = "ars"

    def compute_metrics(
        self,
        image_tensor: Tensor | None = None,
        image_path: str | None = None,
        soft_labels: Tensor | None = None,
        syn_lr: float | None = None,
        ars_lambda: float = 0.5,
    ) -> dict[str, float]:
        rounds = self._evaluate(image_tensor, image_path, soft_labels, syn_lr, ars_lambda).rounds
        with_aug = [r.values["acc_syn_aug"] - r.values["acc_random_aug"] for r in rounds]
        without_aug = [r.values["acc_syn_noaug"] - r.values["acc_random_noaug"] for r in rounds]
        return (
            self._stats(with_aug, "with_aug_scores")
            | self._stats(without_aug, "without_aug_scores")
            | self._stats([r.values["ars"] for r in rounds], "augmentation_robust_score")
        )


class GeneralEvaluator(_DDRankingMetric):
    """Plain test accuracy of a synthetic set under a protocol."""

    metric = "acc"

    def compute_metrics(
        self,
        image_tensor: Tensor | None = None,
        image_path: str | None = None,
        labels: Tensor | None = None,
        syn_lr: float | None = None,
    ) -> dict[str, float]:
        rounds = self._evaluate(image_tensor, image_path, labels, syn_lr, 0.5).rounds
        return self._stats([r.values["acc_syn"] for r in rounds], "acc")


def _lrs_dict(evaluation: Evaluation) -> dict[str, float]:
    rounds = evaluation.rounds
    stats = _DDRankingMetric._stats
    return (
        stats([r.values["hlr"] for r in rounds], "hard_label_recovery")
        | stats([r.values["ior"] for r in rounds], "improvement_over_random")
        | stats([r.values["lrs"] for r in rounds], "label_robust_score")
    )

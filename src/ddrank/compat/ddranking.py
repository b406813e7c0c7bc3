"""Drop-in classes with DD-Ranking v0.2.0's constructor and ``compute_metrics`` arguments.

They return DD-Ranking's dictionary keys, with one deliberate difference: accuracies and scores
are **fractions** in [0, 1] (DD-Ranking passes percentages to ``exp``, so its LRS and ARS leave
[0, 1]). As in DD-Ranking, ``*_std`` is the population standard deviation (ddof 0); the full
:class:`~ddrank.evaluation.Evaluation` (sample std, 95% CIs, every run) is kept as ``last_evaluation``.

The four classes differ only in their metric and argument names: each builds one
:class:`~ddrank.settings.RunSettings` from its configuration, and its result keys come from the
metric's definition (:data:`ddrank.metrics.definitions.METRICS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from ddrank.compat.ddranking_config import Config, TranslatedConfig, translate_ddranking_config
from ddrank.data.synthetic import load_synthetic
from ddrank.errors import InputError
from ddrank.evaluation import Evaluation, Evaluator
from ddrank.metrics.definitions import metric_definition
from ddrank.settings import RunSettings


class _DDRankingMetric:
    metric = "lrs"

    def __init__(
        self, config: Config | Mapping[str, Any] | None = None, *, fidelity: str | None = None, **kwargs: Any
    ):
        raw = dict(config) if config is not None else {}
        raw.update({key: value for key, value in kwargs.items() if value is not None})
        self.config: TranslatedConfig = translate_ddranking_config(
            raw,
            metric=self.metric,
            fidelity=fidelity,
            source_class=type(self).__name__,
            arguments=config is None,
        )
        self.settings = RunSettings.from_translated(self.config, metric=self.metric, device=raw.get("device"))
        self.last_evaluation: Evaluation | None = None

    @property
    def device(self) -> str | None:
        return self.settings.device

    def _compute(
        self,
        image_tensor: Tensor | None,
        image_path: str | None,
        labels: Tensor | None,
        syn_lr: float | Tensor | None,
        weight: float,
    ) -> dict[str, float]:
        """Score the set and return DD-Ranking's ``<name>_mean`` / ``<name>_std`` (ddof 0) per value."""
        if image_tensor is None and image_path is None:
            raise InputError("either image_tensor or image_path must be provided")
        if isinstance(syn_lr, Tensor):
            syn_lr = float(syn_lr)
        evaluator = Evaluator(self.settings.replace(weight=weight))
        source = image_tensor if image_tensor is not None else image_path
        self.last_evaluation = evaluator.evaluate_set(load_synthetic(source, labels, lr=syn_lr))
        out: dict[str, float] = {}
        for name, quantity in metric_definition(self.metric).ddranking:
            values = [quantity.of(r.values) for r in self.last_evaluation.rounds]
            out |= {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}
        return out


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
        return self._compute(image_tensor, image_path, hard_labels, syn_lr, lrs_lambda)


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
        return self._compute(image_tensor, image_path, soft_labels, syn_lr, lrs_lambda)


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
        return self._compute(image_tensor, image_path, soft_labels, syn_lr, ars_lambda)


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
        return self._compute(image_tensor, image_path, labels, syn_lr, 0.5)

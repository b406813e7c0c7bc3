"""Drop-in classes with DD-Ranking v0.2.0's constructor and ``compute_metrics`` arguments.

They return DD-Ranking's dictionary keys, with one deliberate difference: accuracies and scores
are **fractions** in [0, 1] (DD-Ranking passes percentages to ``exp``, so its LRS and ARS leave
[0, 1]). As in DD-Ranking, ``*_std`` is the population standard deviation (ddof 0); the full
:class:`~ddrank.evaluation.Evaluation` (sample std, 95% CIs, every run) is kept as ``last_evaluation``.

The four classes differ only in their metric and argument names: each builds one
:class:`~ddrank.settings.RunSettings` from its configuration, and its result keys come from the
metric's definition (:data:`ddrank.metrics.definitions.METRICS`). Their arguments are DD-Ranking's,
positional or by name, with its defaults (``LabelRobustScoreSoft``: mode S, KL, CutMix;
``GeneralEvaluator``: AdamW, cosine, weight decay 0.01, DSA); they run DD-Ranking's protocol
(``fidelity="reference"``) unless ``fidelity="honest"`` is asked for. ``save_path`` receives one CSV row
per round (fractions), appended after any rows already there.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ddrank.compat.ddranking_config import (
    CONSTRUCTOR_DEFAULTS,
    Config,
    TranslatedConfig,
    translate_ddranking_config,
)
from ddrank.data.synthetic import load_synthetic
from ddrank.errors import InputError
from ddrank.evaluation import Evaluation, Evaluator
from ddrank.metrics.definitions import metric_definition
from ddrank.settings import RunSettings


class _DDRankingMetric:
    metric = "lrs"

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *args: Any,
        fidelity: str | None = None,
        **kwargs: Any,
    ):
        names = list(CONSTRUCTOR_DEFAULTS[type(self).__name__])
        if len(args) > len(names):
            raise InputError(
                f"{type(self).__name__} takes at most {len(names) + 1} positional arguments "
                f"(config, {', '.join(names)}), got {len(args) + 1}"
            )
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise InputError(f"{type(self).__name__} got {name!r} both by position and by name")
            kwargs[name] = value
        raw = dict(config) if config is not None else {}
        # an explicit None is a value, as in DD-Ranking (data_aug_func=None: no augmentation)
        raw.update(kwargs)
        self.config: TranslatedConfig = translate_ddranking_config(
            raw,
            metric=self.metric,
            fidelity=fidelity,
            source_class=type(self).__name__,
            arguments=config is None,
        )
        self.settings = RunSettings.from_translated(self.config, metric=self.metric, device=raw.get("device"))
        save_path = raw.get("save_path")
        self.save_path = None if save_path is None else Path(os.fspath(save_path))
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
        columns: dict[str, list[float]] = {}
        for name, quantity in metric_definition(self.metric).ddranking:
            values = [quantity.of(r.values) for r in self.last_evaluation.rounds]
            columns[name] = [float(v) for v in values]
            out |= {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}
        if self.save_path is not None:
            append_rows(self.save_path, columns)
        return out


def append_rows(path: Path, columns: Mapping[str, list[float]]) -> None:
    """One CSV row per round (fractions) appended to ``path``; a new file gets a header first. A file
    whose header differs is refused rather than mixed (DD-Ranking overwrites it; ddrank never does)."""
    header = list(columns)
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as handle:
            found = next(csv.reader(handle), [])
        if found != header:
            raise InputError(
                f"save_path {str(path)!r} holds columns {found}, not {header}; give another save_path"
            )
        write_header = False
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_header = True
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if write_header:
            writer.writerow(header)
        writer.writerows(zip(*columns.values(), strict=True))


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

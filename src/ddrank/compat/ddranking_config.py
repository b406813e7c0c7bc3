"""DD-Ranking (v0.2.0) YAML / JSON configurations, read as ddrank protocols.

A DD-Ranking configuration drives one of its metric classes (``LabelRobustScoreHard``,
``LabelRobustScoreSoft``, ``AugmentationRobustScore``, ``GeneralEvaluator``). Its keys are
translated onto a validated :class:`~ddrank.protocols.Protocol` plus the run settings that are not
part of a protocol (data root, teacher directory, weight, seed).

``fidelity: reference`` (the default) reproduces what DD-Ranking v0.2.0's code does with the keys
(read in its branch ``eval``, which holds the per-method configurations; ``main`` and ``dist`` carry
the same ``ddranking`` package): its selection (best test accuracy over the lr grid and over test
checkpoints every 10 epochs for hard-label LRS, 20 for soft-label LRS and ARS), its half-period
``cosine``, CIFAR-10 statistics for CIFAR-100, its cached full-data accuracies, its full-data
training loop, its JPEG round trip of random subsets. Where DD-Ranking crashes because of a value
the configuration gives or lacks, ``reference`` refuses with DD-Ranking's error and names the
alternative; where every use of a class crashes on a defect its own code shows the intent of, ddrank
follows that intent and says so. ``fidelity: honest`` applies ddrank's corrections. Every
difference from DD-Ranking is a :class:`~ddrank.protocols.Deviation` of the protocol; no key is
dropped silently and no missing value is invented: a key DD-Ranking needs and the configuration
lacks is a :class:`~ddrank.errors.ConfigError` naming the key and what sibling configurations use.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

from ddrank.augment.dsa import DEFAULT_STRATEGY, DSAParams
from ddrank.augment.transforms import transforms_from_spec
from ddrank.data.real import dataset_info
from ddrank.errors import ConfigError, UnknownNameError
from ddrank.models import canonical_model_name
from ddrank.protocols import (
    FIDELITIES,
    AugmentSpec,
    Deviation,
    Fidelity,
    FullDataRecipe,
    Protocol,
    deviation,
    load_protocol,
    preset,
    preset_names,
    validated_protocol,
)
from ddrank.protocols.files import read_mapping
from ddrank.protocols.limits import MAX_LOSS_WEIGHT, MAX_LR, MAX_TEMPERATURE, MAX_WEIGHT_DECAY, over_limit
from ddrank.protocols.protocol import (
    FIDELITY_REASONS,
    STANDARD_DEVIATIONS,
    derived_deviations,
    describe_full_data,
    shown,
    unique_deviations,
)

Metric = Literal["lrs", "ars", "acc"]
METRICS: tuple[Metric, ...] = ("lrs", "ars", "acc")
SourceClass = Literal[
    "LabelRobustScoreHard", "LabelRobustScoreSoft", "AugmentationRobustScore", "GeneralEvaluator"
]
CLASSES: tuple[SourceClass, ...] = (
    "LabelRobustScoreHard",
    "LabelRobustScoreSoft",
    "AugmentationRobustScore",
    "GeneralEvaluator",
)
CLASS_METRIC: dict[str, Metric] = {
    "LabelRobustScoreHard": "lrs",
    "LabelRobustScoreSoft": "lrs",
    "AugmentationRobustScore": "ars",
    "GeneralEvaluator": "acc",
}

_COMMON = frozenset(
    {
        "dataset",
        "real_data_path",
        "ipc",
        "model_name",
        "data_aug_func",
        "aug_params",
        "optimizer",
        "lr_scheduler",
        "weight_decay",
        "momentum",
        "step_size",
        "num_eval",
        "im_size",
        "num_epochs",
        "save_path",
        "custom_train_trans",
        "custom_val_trans",
        "num_workers",
        "device",
        "dist",
    }
)
_SOFT = frozenset(
    {
        "soft_label_mode",
        "soft_label_criterion",
        "loss_fn_kwargs",
        "stu_use_torchvision",
        "tea_use_torchvision",
        "teacher_dir",
        "teacher_model_names",
    }
)
_RANDOM = frozenset({"random_data_format", "random_data_path"})
CLASS_KEYS: dict[str, frozenset[str]] = {
    "LabelRobustScoreHard": _COMMON
    | _RANDOM
    | {"real_batch_size", "syn_batch_size", "use_zca", "use_torchvision", "eval_full_data"},
    "LabelRobustScoreSoft": _COMMON
    | _SOFT
    | _RANDOM
    | {"real_batch_size", "syn_batch_size", "use_zca", "use_aug_for_hard", "eval_full_data"},
    "AugmentationRobustScore": _COMMON | _SOFT | _RANDOM | {"label_type", "use_zca", "batch_size"},
    "GeneralEvaluator": _COMMON
    | _SOFT
    | {"use_soft_label", "real_batch_size", "syn_batch_size", "default_lr"},
}
"""The keys each DD-Ranking v0.2.0 metric class reads from a configuration (its ``config.get`` calls)."""

DDRANKING_KEYS = frozenset().union(*CLASS_KEYS.values()) | {"temperature", "use_zca"}
"""Every key that appears in DD-Ranking configurations (``temperature`` is read by no class)."""

EXTENSION_KEYS = frozenset({"seed", "lrs_lambda", "ars_lambda", "fidelity"})
"""ddrank additions: base seed, the LRS / ARS weight of ``compute_metrics``, and the fidelity."""

RUN_KEYS = frozenset(
    {"real_data_path", "teacher_dir", "save_path", "random_data_path", "num_workers", "device"}
)
"""Keys that say where and how a run happens, not what it computes (kept in ``extras``)."""

DDRANKING_LR_GRID = (0.001, 0.005, 0.01, 0.05, 0.1)
"""``lr_list`` of every ``_hyper_param_search_*`` in DD-Ranking v0.2.0."""

TEST_INTERVAL = {"LabelRobustScoreHard": 10, "LabelRobustScoreSoft": 20, "AugmentationRobustScore": 20}
"""``self.test_interval`` of each class (GeneralEvaluator never sets one)."""

REAL_DATA_TRAINING_CONFIG: dict[str, dict[str, Any]] = {
    "ImageNet1K-ResNet-18-BN": {
        "optimizer": "sgd",
        "lr_scheduler": "step",
        "weight_decay": 0.0001,
        "momentum": 0.9,
        "num_epochs": 90,
        "batch_size": 512,
        "lr": 0.1,
        "step_size": 30,
    },
    "TinyImageNet-ResNet-18-BN": {
        "optimizer": "adamw",
        "lr_scheduler": "cosine",
        "weight_decay": 0.01,
        "lr": 0.01,
        "num_epochs": 100,
        "batch_size": 512,
        "step_size": 0,
        "momentum": (0.9, 0.999),
    },
    **{
        key: {
            "optimizer": "sgd",
            "lr_scheduler": "step",
            "weight_decay": 0.0005,
            "momentum": 0.9,
            "num_epochs": epochs,
            "batch_size": 512,
            "lr": 0.01,
            "step_size": step,
        }
        for key, epochs, step in (
            ("TinyImageNet-ConvNet-4-BN", 100, 50),
            ("CIFAR10-ConvNet-3", 200, 100),
            ("CIFAR10-ConvNet-3-BN", 200, 100),
            ("CIFAR100-ConvNet-3", 200, 100),
            ("CIFAR100-ConvNet-3-BN", 200, 100),
        )
    },
}
"""DD-Ranking v0.2.0's full-data recipes (its train_and_eval.py), keyed ``<dataset>-<model_name>``."""

REAL_DATA_ACC_CACHE = {"ImageNet1K-ResNet-18-BN": 56.5, "TinyImageNet-ResNet-18-BN": 46.4}
"""DD-Ranking v0.2.0's cached full-data accuracies (percent), used when ``eval_full_data`` is false."""

SOURCE_FILE = "ddranking/utils/train_and_eval.py"

DATASET_NAMES = {
    "CIFAR10": "cifar10",
    "CIFAR100": "cifar100",
    "TinyImageNet": "tinyimagenet",
    "ImageNet1K": "imagenet1k",
    "ImageNette": "imagenette",
    "ImageWoof": "imagewoof",
    "ImageMeow": "imagemeow",
    "ImageSquawk": "imagesquawk",
    "ImageFruit": "imagefruit",
    "ImageYellow": "imageyellow",
}
"""DD-Ranking's ``get_dataset`` names (compared exactly) and ddrank's; ``Digits`` is a ddrank extension."""


_BUILT_FAMILIES = ("ConvNet", "AlexNet", "ResNet", "LeNet", "MLP", "VGG")
"""The model families DD-Ranking's build_model makes itself; any other name goes to torchvision."""


def ddranking_spellings(dataset: str, model: str) -> tuple[list[str], list[str]]:
    """The folder names DD-Ranking's ``teacher_dir/<dataset>/<model_name>/ckpt_best.pt`` layout may use
    for ddrank's ``dataset`` and ``model`` (every configuration name that translates to that model)."""
    datasets = [dd for dd, name in DATASET_NAMES.items() if name == dataset]
    family, _, rest = model.partition(":")
    if family != "torchvision":
        return datasets, [model]
    if rest.startswith("resnet") and rest[6:] in ("18", "34", "50"):
        return datasets, [f"ResNet-{rest[6:]}", f"ResNet-{rest[6:]}-BN"]
    if rest.startswith("vgg"):
        depth = rest[3:].removesuffix("_bn")
        return datasets, [f"VGG-{depth}" + ("-BN" if rest.endswith("_bn") else "")]
    return datasets, ["AlexNet" if rest == "alexnet" else rest]


ZCA_DATASETS = ("cifar10", "cifar100", "tinyimagenet")
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))

DSA_KEYS = ("flip", "rotate", "saturation", "brightness", "contrast", "scale", "crop", "cutout")
_DC_DSA_NAMES = {
    "prob_flip": "flip",
    "ratio_rotate": "rotate",
    "ratio_scale": "scale",
    "ratio_crop_pad": "crop",
    "ratio_cutout": "cutout",
}
_MIX_KEY = {"mixup": "lambda", "cutmix": "beta"}
_LOSS_ARGS = {
    "kl": ("temperature", "scale_loss"),
    "sce": ("temperature", "scale_loss"),
    "mse_gt": ("mse_weight", "ce_weight"),
}
_LOSS_DEFAULTS = {"temperature": 1.2, "scale_loss": False, "mse_weight": 1.0, "ce_weight": 0.0}
_SCHEDULERS = ("step", "cosine", "cosineannealing")

CONSTRUCTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "LabelRobustScoreHard": {
        "dataset": "CIFAR10",
        "real_data_path": "./dataset/",
        "ipc": 10,
        "model_name": "ConvNet-3",
        "data_aug_func": "cutmix",
        "aug_params": {"cutmix_p": 1.0},
        "optimizer": "sgd",
        "lr_scheduler": "step",
        "step_size": None,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "use_zca": False,
        "num_eval": 5,
        "im_size": (32, 32),
        "num_epochs": 300,
        "real_batch_size": 256,
        "syn_batch_size": 256,
        "use_torchvision": False,
        "num_workers": 4,
        "save_path": None,
        "custom_train_trans": None,
        "custom_val_trans": None,
        "device": "cuda",
        "dist": False,
        "random_data_format": "tensor",
        "random_data_path": None,
        "eval_full_data": False,
    },
    "LabelRobustScoreSoft": {
        "dataset": "CIFAR10",
        "real_data_path": "./dataset/",
        "ipc": 10,
        "model_name": "ConvNet-3",
        "soft_label_criterion": "kl",
        "loss_fn_kwargs": None,
        "data_aug_func": "cutmix",
        "aug_params": {"beta": 1.0},
        "soft_label_mode": "S",
        "optimizer": "sgd",
        "lr_scheduler": "step",
        "step_size": None,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "num_eval": 5,
        "im_size": (32, 32),
        "num_epochs": 300,
        "use_zca": False,
        "use_aug_for_hard": False,
        "random_data_format": "tensors",
        "random_data_path": None,
        "real_batch_size": 256,
        "syn_batch_size": 256,
        "save_path": None,
        "eval_full_data": False,
        "stu_use_torchvision": False,
        "tea_use_torchvision": False,
        "num_workers": 4,
        "teacher_dir": "./teacher_models",
        "teacher_model_names": None,
        "custom_train_trans": None,
        "custom_val_trans": None,
        "device": "cuda",
        "dist": False,
    },
    "AugmentationRobustScore": {
        "dataset": "CIFAR10",
        "real_data_path": "./dataset/",
        "ipc": 10,
        "model_name": "ConvNet-3",
        "data_aug_func": "cutmix",
        "aug_params": {"beta": 1.0},
        "label_type": "soft",
        "soft_label_mode": "S",
        "soft_label_criterion": "kl",
        "optimizer": "sgd",
        "lr_scheduler": "step",
        "loss_fn_kwargs": None,
        "step_size": None,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "num_eval": 5,
        "im_size": (32, 32),
        "num_epochs": 300,
        "use_zca": False,
        "batch_size": 256,
        "save_path": None,
        "stu_use_torchvision": False,
        "tea_use_torchvision": False,
        "num_workers": 4,
        "teacher_dir": "./teacher_models",
        "teacher_model_names": None,
        "random_data_path": None,
        "random_data_format": "image",
        "custom_train_trans": None,
        "custom_val_trans": None,
        "device": "cuda",
        "dist": False,
    },
    "GeneralEvaluator": {
        "dataset": "CIFAR10",
        "real_data_path": "./dataset",
        "ipc": 10,
        "model_name": "ConvNet-3",
        "use_soft_label": False,
        "optimizer": "adamw",
        "lr_scheduler": "cosine",
        "weight_decay": 0.01,
        "momentum": 0.9,
        "step_size": None,
        "data_aug_func": "dsa",
        "aug_params": None,
        "soft_label_mode": "M",
        "soft_label_criterion": "kl",
        "loss_fn_kwargs": None,
        "num_eval": 5,
        "im_size": (32, 32),
        "num_epochs": 300,
        "syn_batch_size": 256,
        "use_zca": False,
        "stu_use_torchvision": False,
        "tea_use_torchvision": False,
        "teacher_dir": "./teacher_models",
        "teacher_model_names": None,
        "custom_train_trans": None,
        "custom_val_trans": None,
        "num_workers": 4,
        "save_path": None,
        "dist": False,
        "device": "cuda",
    },
}
"""The keyword-argument defaults of each class's constructor (what DD-Ranking uses without a Config)."""

GENERAL_CONFIG_DEFAULTS: dict[str, Any] = {
    "dataset": "CIFAR10",
    "real_data_path": "./dataset",
    "ipc": 10,
    "model_name": "ConvNet-3",
    "use_soft_label": False,
    "soft_label_criterion": "sce",
    "loss_fn_kwargs": {"temperature": 1.0, "scale_loss": False},
    "data_aug_func": "dsa",
    "aug_params": {
        "prob_flip": 0.5,
        "ratio_rotate": 15.0,
        "saturation": 2.0,
        "brightness": 1.0,
        "contrast": 0.5,
        "ratio_scale": 1.2,
        "ratio_crop_pad": 0.125,
        "ratio_cutout": 0.5,
    },
    "soft_label_mode": "M",
    "optimizer": "adamw",
    "lr_scheduler": "cosine",
    "step_size": None,
    "weight_decay": 0.01,
    "momentum": 0.9,
    "num_eval": 5,
    "im_size": (32, 32),
    "num_epochs": 300,
    "real_batch_size": 256,
    "syn_batch_size": 256,
    "default_lr": 0.01,
    "num_workers": 4,
    "stu_use_torchvision": False,
    "tea_use_torchvision": False,
    "teacher_dir": "./teacher_models",
    "device": "cuda",
    "dist": False,
}
"""``GeneralEvaluator``'s ``config.get`` defaults (it is the only class that has them)."""


class Config(Mapping[str, Any]):
    """DD-Ranking's ``Config``: the raw keys of a YAML / JSON file, by item, attribute or ``get``."""

    def __init__(self, config: Mapping[str, Any] | None = None, *, path: str | os.PathLike | None = None):
        self._config: dict[str, Any] = dict(config or {})
        self.path = None if path is None else Path(path)

    @classmethod
    def from_file(cls, filepath: str | os.PathLike) -> Config:
        """Read a ``.yaml`` / ``.yml`` or ``.json`` file holding one mapping."""
        return cls(read_mapping(filepath, "configuration"), path=filepath)

    @property
    def config(self) -> dict[str, Any]:
        """The raw key-value mapping (DD-Ranking's ``Config.config``)."""
        return self._config

    def update(self, overrides: Mapping[str, Any]) -> None:
        self._config.update(overrides)

    @staticmethod
    def load_transforms_from_yaml(values: list[Mapping[str, Any]] | None) -> Any:
        """DD-Ranking's ``Config.load_transforms_from_yaml``: ``[{name, args}]`` steps as a torchvision
        ``Compose`` (names from ``torchvision.transforms``, else ``transforms.v2``), None for None."""
        if values is None:
            return None
        from torchvision import transforms
        from torchvision.transforms import v2

        built = []
        for step in values:
            name, args = step["name"], step.get("args", [])
            owner = transforms if hasattr(transforms, name) else v2 if hasattr(v2, name) else None
            if owner is None:
                raise ConfigError(
                    f"transform {name!r} is in neither torchvision.transforms nor transforms.v2"
                )
            made = getattr(owner, name)
            built.append(made(**args) if isinstance(args, dict) else made(*args))
        return transforms.Compose(built)

    def __getitem__(self, key: str) -> Any:
        return self._config[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "path":
            raise AttributeError(name)
        try:
            return self._config[name]
        except KeyError:
            raise AttributeError(f"configuration has no key {name!r}") from None

    def __repr__(self) -> str:
        return f"Config({self._config!r})"


@dataclass
class TranslatedConfig:
    """A DD-Ranking configuration as a validated protocol plus the settings of one evaluation run."""

    protocol: Protocol
    dataset: str
    data_root: str | None
    ipc: int | None
    metric: Metric
    rounds: int
    teacher_dir: str | None
    real_acc: float | str | None
    weight: float
    seed: int | None
    fidelity: Fidelity
    source_class: SourceClass
    deviations: list[Deviation]
    extras: dict[str, Any]

    @property
    def notes(self) -> list[str]:
        """Each deviation as one line."""
        return [d.line() for d in self.deviations]


def translate_ddranking_config(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    metric: str | None = None,
    fidelity: str | None = None,
    source_class: str | None = None,
    arguments: bool = False,
) -> TranslatedConfig:
    """Translate a DD-Ranking configuration (file path, :class:`Config` or mapping) to a protocol.

    ``fidelity``: ``reference`` (default; or the file's ``fidelity`` key) or ``honest``.
    ``source_class`` names the DD-Ranking class that reads the keys; without it, ``metric``
    (``lrs``, ``ars``, ``acc``) and the keys decide: ``label_type`` / ``batch_size`` mean
    AugmentationRobustScore, ``use_soft_label`` GeneralEvaluator, soft-label keys
    LabelRobustScoreSoft, anything else LabelRobustScoreHard. ``arguments=True`` reads the mapping
    as constructor keyword arguments: missing keys take the class's defaults, as in DD-Ranking.
    """
    path: Path | None = None
    if isinstance(source, Config):
        raw, path = dict(source), source.path
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        raw = dict(Config.from_file(path))
    where = "DD-Ranking configuration" + (f" {str(path)!r}" if path is not None else "")
    return _Translation(raw, where, path).run(metric, fidelity, source_class, arguments)


class _Translation:
    """One translation: typed access to the raw keys (errors name the key), deviations, refusals."""

    def __init__(self, raw: dict[str, Any], where: str, path: Path | None):
        self.raw, self.where, self.path = raw, where, path
        self.deviations: list[Deviation] = []
        self.sources: dict[str, str] = {}
        self.fidelity: Fidelity = "reference"
        self.cls: SourceClass = "LabelRobustScoreHard"

    # --- errors, refusals, deviations ---------------------------------------------------------

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def refuse(self, key: str, message: str, honest: str) -> None:
        """DD-Ranking cannot run this: an error in ``reference``; ``honest`` does what ``honest`` says."""
        if self.fidelity == "reference":
            raise self.error(key, f"{message}; fidelity reference refuses it; with fidelity honest {honest}")

    def deviate(
        self, key: str, source: Any, ours: Any, reason: str, *, moves: bool = True, kind: str = "changed"
    ):
        self.deviations.append(deviation(key, source, ours, reason, moves_score=moves, kind=cast(Any, kind)))

    def pick(
        self, key: str, reference: Any, honest: Any, reason: str | None = None, *, moves: bool = True
    ) -> Any:
        """The value for the active fidelity; in honest, a difference from the reference is a deviation."""
        if self.fidelity == "reference":
            return reference
        if honest != reference:
            text, default_moves = FIDELITY_REASONS.get(key, (reason or "", moves))
            before, after = reference, honest
            if isinstance(reference, FullDataRecipe) and isinstance(honest, FullDataRecipe):
                before, after = describe_full_data(reference), describe_full_data(honest)
            self.deviate(key, before, after, reason or text, moves=moves if reason else default_moves)
        return honest

    def missing(self, key: str, consequence: str) -> ConfigError:
        """A key DD-Ranking needs and the configuration lacks, with what sibling configurations use."""
        hint = self.sibling_hint(key)
        return self.error(key, f"missing; DD-Ranking v0.2.0 {consequence}; {hint}")

    def sibling_hint(self, key: str) -> str:
        values: dict[str, list[str]] = {}
        if self.path is not None and self.path.parent.is_dir():
            for other in sorted(self.path.parent.glob("*.y*ml")):
                if other.resolve() == self.path.resolve():
                    continue
                try:
                    found = read_mapping(other, "configuration")
                except ConfigError:
                    continue
                if found.get(key) is not None:
                    values.setdefault(shown(found[key]), []).append(other.name)
        if not values:
            return f"add {key}"
        listed = "; ".join(f"{', '.join(names)} use {key}: {value}" for value, names in values.items())
        return f"sibling configurations {listed}: add it"

    # --- typed access -------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    def needed(self, key: str, consequence: str) -> Any:
        if self.raw.get(key) is None:
            raise self.missing(key, consequence)
        return self.raw[key]

    def integer(self, key: str, consequence: str, *, minimum: int = 1, limit: str | None = None) -> int:
        found = self.needed(key, consequence)
        if isinstance(found, bool) or not isinstance(found, int) or found < minimum:
            raise self.error(key, f"must be an integer of at least {minimum}, got {found!r}")
        if limit and (message := over_limit(limit, found, None if limit == key else limit)):
            raise self.error(key, message)
        return found

    def number(self, key: str, found: Any, low: float, high: float, *, strict: bool = False) -> float:
        ok = isinstance(found, int | float) and not isinstance(found, bool) and math.isfinite(found)
        if ok:
            ok = (found > low if strict else found >= low) and found <= high
        if not ok:
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise self.error(key, f"must be a finite number {bound} and <= {high:g}, got {found!r}")
        return float(found)

    def flag(self, key: str) -> bool:
        """A boolean key; absent or null is false, as DD-Ranking's truth tests read it."""
        found = self.raw.get(key)
        if found is None:
            return False
        if not isinstance(found, bool):
            raise self.error(key, f"must be true or false, got {found!r}")
        return found

    def exact(self, key: str, found: Any, choices: tuple[str, ...], consequence: str) -> str:
        if found not in choices:
            lowered = {c.lower(): c for c in choices}
            close = lowered.get(str(found).lower())
            hint = f"; write {close!r} (DD-Ranking compares names exactly)" if close else ""
            raise self.error(key, f"{found!r} is not one of {', '.join(choices)} ({consequence}){hint}")
        return found

    # --- the translation ------------------------------------------------------------------------

    def run(
        self, metric: str | None, fidelity: str | None, source_class: str | None, arguments: bool
    ) -> TranslatedConfig:
        self.check_keys()
        self.fidelity = self.choose_fidelity(fidelity)
        self.cls = self.choose_class(metric, source_class)
        if arguments:
            self.raw = {**CONSTRUCTOR_DEFAULTS[self.cls], **self.raw}
        elif self.cls == "GeneralEvaluator":
            self.raw = {**GENERAL_CONFIG_DEFAULTS, **self.raw}
        self.report_unread()
        dd_name, dataset = self.dataset()
        info = dataset_info(dataset)
        self.num_classes = info.num_classes
        ipc = self.ipc()
        self.image_size(info.size)
        soft = self.soft_labels()
        model = self.student(dd_name, info.size)
        labels = self.labels(soft, model, dd_name, info.size)
        zca = self.zca(dataset)
        transforms, normalise_train = self.train_transforms(info, zca)
        augment = self.augment(transforms)
        hard_augment, full_augment = self.hard_runs(augment)
        epochs = self.integer("num_epochs", "iterates range(None) (TypeError)", limit="epochs")
        optimizer = self.optimizer()
        schedule = self.schedule(epochs)
        batch_size = self.batch_size()
        rounds = self.integer("num_eval", "iterates range(None) (TypeError)", limit="rounds")
        test_transforms, normalise_test = self.test_transforms(info, zca)
        self.normalisation(dd_name, normalise_train, normalise_test)
        random_data = self.random_data(transforms, zca, labels["mode"], dd_name)
        full_data = self.full_data(dd_name, dataset, model, epochs, full_augment)
        metric_name = CLASS_METRIC[self.cls]
        eval_every = TEST_INTERVAL.get(self.cls, 20 if soft else 10)
        fields: dict[str, Any] = {
            "name": self.protocol_name(),
            "description": f"Translated from the {self.where} ({self.cls})",
            "fidelity": self.fidelity,
            "dataset": dataset,
            "ipc": ipc,
            "model": model,
            "labels": labels,
            "augment": augment,
            "hard_augment": hard_augment,
            "optimizer": optimizer,
            "schedule": schedule,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr_grid": DDRANKING_LR_GRID,
            "use_set_lr": True,
            "selection": self.pick("selection", "reference", "honest"),
            "eval_every": eval_every,
            "rounds": rounds,
            "space": "zca" if zca else "normalized",
            "stats": "cifar10" if dd_name == "CIFAR100" else None,
            "zca": zca,
            "test_transforms": test_transforms,
            "random_data": random_data,
            "full_data": full_data,
            "reference_source": f"DD-Ranking v0.2.0 {self.cls}"
            + (f" configuration {self.path.name}" if self.path else " configuration"),
        }
        self.record_sources(eval_every)
        protocol = validated_protocol(fields | {"sources": self.sources})
        refusal = protocol.reference_refusal(metric_name)
        if refusal:
            raise ConfigError(f"{self.where}: {refusal}")
        found = unique_deviations(
            [
                *STANDARD_DEVIATIONS,
                *self.deviations,
                *derived_deviations(protocol),
                *protocol.deviations_for(metric_name),
            ]
        )
        protocol = protocol.model_copy(update={"deviations": found})
        weight_key = {"lrs": "lrs_lambda", "ars": "ars_lambda"}.get(metric_name)
        weight = self.number(weight_key, self.raw.get(weight_key, 0.5), 0.0, 1.0) if weight_key else 0.5
        seed = self.raw.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise self.error("seed", f"must be a non-negative integer, got {seed!r}")
        extras = {key: self.raw[key] for key in sorted(RUN_KEYS | {"dist"}) if key in self.raw}
        return TranslatedConfig(
            protocol=protocol,
            dataset=dataset,
            data_root=self.text("real_data_path"),
            ipc=ipc,
            metric=metric_name,
            rounds=rounds,
            teacher_dir=self.text("teacher_dir") if soft else None,
            real_acc="published" if full_data.source == "published" else None,
            weight=weight,
            seed=seed,
            fidelity=self.fidelity,
            source_class=self.cls,
            deviations=list(found),
            extras=extras,
        )

    def protocol_name(self) -> str:
        """``ddranking-<Method>-<Dataset>-IPC<n>`` for DD-Ranking's layout, else ``ddranking-<stem>``."""
        if self.path is None:
            return "ddranking-config"
        if self.path.parent.name in DATASET_NAMES:
            return f"ddranking-{self.path.parent.parent.name}-{self.path.parent.name}-{self.path.stem}"
        return f"ddranking-{self.path.stem}"

    def text(self, key: str) -> str | None:
        found = self.raw.get(key)
        if found is not None and not isinstance(found, str | os.PathLike):
            raise self.error(key, f"must be a path, got {found!r}")
        return None if found is None else str(found)

    def check_keys(self) -> None:
        valid = sorted(DDRANKING_KEYS | EXTENSION_KEYS)
        for key in self.raw:
            if key == "selection":
                raise self.error("selection", "was replaced by fidelity: reference or honest")
            if not isinstance(key, str) or key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{self.where}: unknown key {str(key)!r}{hint} (DD-Ranking v0.2.0 keys: "
                    f"{', '.join(valid)})"
                )

    def choose_fidelity(self, fidelity: str | None) -> Fidelity:
        chosen = fidelity if fidelity is not None else self.raw.get("fidelity", "reference")
        if chosen not in FIDELITIES:
            raise ConfigError(f"{self.where}: fidelity must be 'reference' or 'honest', not {chosen!r}")
        return cast(Fidelity, chosen)

    def choose_class(self, metric: str | None, source_class: str | None) -> SourceClass:
        if source_class is not None:
            if source_class not in CLASSES:
                raise ConfigError(f"source_class must be one of {', '.join(CLASSES)}, got {source_class!r}")
            if metric is not None and CLASS_METRIC[source_class] != metric.lower():
                raise ConfigError(
                    f"source_class {source_class} computes {CLASS_METRIC[source_class]}, not {metric!r}"
                )
            return cast(SourceClass, source_class)
        if metric is not None and metric.lower() not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        wanted = metric.lower() if metric is not None else None
        soft_keys = any(self.has(k) for k in ("soft_label_mode", "soft_label_criterion", "loss_fn_kwargs"))
        if wanted == "ars" or (wanted is None and ("label_type" in self.raw or "batch_size" in self.raw)):
            return "AugmentationRobustScore"
        if wanted == "acc" or (wanted is None and "use_soft_label" in self.raw):
            return "GeneralEvaluator"
        return "LabelRobustScoreSoft" if soft_keys else "LabelRobustScoreHard"

    def report_unread(self) -> None:
        read = CLASS_KEYS[self.cls]
        for key in sorted(self.raw):
            if key in EXTENSION_KEYS or key in read:
                continue
            if key == "default_lr" and self.raw[key] is not None:
                self.number("default_lr", self.raw[key], 0.0, MAX_LR, strict=True)
            self.deviate(
                key,
                self.raw[key],
                None,
                f"{self.cls} does not read it",
                moves=False,
                kind="ignored",
            )
        self.raw = {k: v for k, v in self.raw.items() if k in read or k in EXTENSION_KEYS}

    def dataset(self) -> tuple[str, str]:
        name = self.needed("dataset", "falls through get_dataset (UnboundLocalError)")
        if name in ("Digits", "digits"):
            self.deviate(
                "dataset",
                "no Digits dataset (get_dataset fails)",
                "digits",
                "scikit-learn's digits is ddrank's embedded dataset, an extension DD-Ranking does not have",
                moves=False,
            )
            return "Digits", "digits"
        if name not in DATASET_NAMES:
            valid = [*DATASET_NAMES, "Digits"]
            close = {v.lower(): v for v in valid}.get(str(name).lower())
            hint = (
                f"write {close!r} (DD-Ranking compares names exactly)"
                if close
                else str(UnknownNameError("dataset", str(name), valid))
            )
            raise self.error("dataset", f"{name!r} is not a DD-Ranking dataset: {hint}")
        self.sources["dataset"] = "DD-Ranking key dataset"
        return name, DATASET_NAMES[name]

    def ipc(self) -> int:
        ipc = self.integer("ipc", "samples random subsets of None images (TypeError)", limit="ipc")
        if self.path is not None:
            named = re.search(r"IPC(\d+)", self.path.stem, re.IGNORECASE)
            if named and int(named[1]) != ipc:
                self.deviate(
                    "ipc",
                    f"{ipc} (the file is named {self.path.name})",
                    ipc,
                    f"the file name says IPC {named[1]} but the file says ipc: {ipc}; DD-Ranking and ddrank "
                    "use the file's value (random subsets of that size): check which was meant",
                    moves=False,
                    kind="note",
                )
        return ipc

    def image_size(self, size: int) -> None:
        if self.raw.get("dataset") in ("Digits", "digits") and self.raw.get("im_size") in (None, (32, 32)):
            return  # an extension dataset: DD-Ranking's constructor default of 32 px does not apply
        found = self.needed("im_size", "builds tuple(None) in Config.get (TypeError)")
        sides = [found, found] if isinstance(found, int) and not isinstance(found, bool) else found
        if not isinstance(sides, list | tuple) or list(sides) != [size, size]:
            raise self.error(
                "im_size",
                f"{found!r} differs from the dataset's {size}x{size} images; ddrank trains at the dataset's "
                "size",
            )

    # --- models and labels --------------------------------------------------------------------

    def soft_labels(self) -> bool:
        if self.cls == "LabelRobustScoreHard":
            return False
        if self.cls == "LabelRobustScoreSoft":
            return True
        if self.cls == "GeneralEvaluator":
            return self.flag("use_soft_label")
        label_type = self.needed("label_type", "takes the hard-label path and crashes on missing attributes")
        label_type = self.exact(
            "label_type", label_type, ("hard", "soft"), "AugmentationRobustScore's label_type"
        )
        if label_type == "hard":
            self.refuse(
                "label_type",
                "DD-Ranking v0.2.0's AugmentationRobustScore crashes with hard labels (it tests on a "
                "test_loader_real it deleted and passes teacher_models it never built)",
                "ddrank runs hard-label ARS",
            )
        return label_type == "soft"

    def torchvision_flag(self, student: bool) -> tuple[str, bool]:
        if self.cls == "LabelRobustScoreHard":
            return "use_torchvision", self.flag("use_torchvision")
        key = "stu_use_torchvision" if student else "tea_use_torchvision"
        return key, self.flag(key)

    def student(self, dd_name: str, size: int) -> str:
        name = self.needed("model_name", "asserts a model name")
        flag_key, torchvision = self.torchvision_flag(True)
        model = self.model(name, torchvision, "model_name", size)
        self.sources["model"] = f"DD-Ranking keys model_name, {flag_key}"
        return model

    def model(self, name: Any, torchvision: bool, key: str, size: int) -> str:
        """ddrank's name for the model DD-Ranking's build_model makes of ``name``."""
        if not isinstance(name, str) or not name.strip():
            raise self.error(key, f"must be a model name such as 'ConvNet-3' or 'ResNet-18-BN', got {name!r}")
        parts = name.split("-")
        depth = parts[1] if len(parts) > 1 else ""
        batchnorm = len(parts) > 2 and parts[2] == "BN"
        family = next((f for f in _BUILT_FAMILIES if name.startswith(f)), None)
        if family in ("ConvNet", "ResNet", "VGG") and not depth.isdigit():
            raise self.error(key, f"{name!r}: DD-Ranking reads <family>-<depth>[-BN] names (ValueError)")
        if family == "ConvNet":
            return canonical_model_name(f"ConvNet-{depth}" + ("-BN" if batchnorm else ""))
        if family == "ResNet":
            if depth not in ("18", "34", "50"):
                raise self.error(key, f"{name!r}: DD-Ranking builds ResNet-18, -34 and -50 only")
            if torchvision:
                return f"torchvision:resnet{depth}"
            return canonical_model_name(f"ResNet-{depth}" + ("-BN" if batchnorm else ""))
        if family == "VGG":
            if torchvision:
                return f"torchvision:vgg{depth}" + ("_bn" if batchnorm else "")
            return canonical_model_name(f"VGG-{depth}" + ("-BN" if batchnorm else ""))
        if family == "AlexNet":
            return "torchvision:alexnet" if torchvision else canonical_model_name("AlexNet")
        if family in ("LeNet", "MLP"):
            return canonical_model_name(family)
        try:
            return canonical_model_name(f"torchvision:{name.strip()}")
        except UnknownNameError as exc:
            raise self.error(key, str(exc)) from None

    def labels(self, soft: bool, model: str, dd_name: str, size: int) -> dict[str, Any]:
        if not soft:
            self.sources["labels"] = "hard labels, cross-entropy (DD-Ranking's hard-label path)"
            return {"mode": "hard", "loss": "ce"}
        mode = self.exact(
            "soft_label_mode",
            self.needed("soft_label_mode", "never relabels and trains soft losses on class indices"),
            ("S", "M"),
            "S: stored soft labels, M: teachers relabel every batch",
        )
        criterion = self.exact(
            "soft_label_criterion",
            self.needed("soft_label_criterion", "raises NotImplementedError"),
            tuple(_LOSS_ARGS),
            "the soft-label loss",
        )
        kwargs = self.needed("loss_fn_kwargs", "builds the loss with **None (TypeError)")
        if not isinstance(kwargs, Mapping):
            raise self.error("loss_fn_kwargs", f"must be a mapping of the loss's arguments, got {kwargs!r}")
        allowed = _LOSS_ARGS[criterion]
        for name in kwargs:
            if name not in allowed:
                raise self.error(
                    "loss_fn_kwargs",
                    f"{name!r} is not an argument of the {criterion} loss (TypeError); it takes "
                    f"{', '.join(allowed)}",
                )
        loss: dict[str, Any] = {"mode": mode, "loss": criterion}
        if criterion == "mse_gt":
            for name in allowed:
                value = kwargs.get(name, _LOSS_DEFAULTS[name])
                loss[name] = self.number(f"loss_fn_kwargs.{name}", value, 0.0, MAX_LOSS_WEIGHT)
        else:
            if "temperature" not in kwargs:
                self.deviate(
                    "loss_fn_kwargs.temperature",
                    "absent: the loss class default 1.2",
                    1.2,
                    "DD-Ranking's KL / SCE losses default to T = 1.2; ddrank uses the same",
                    moves=False,
                    kind="note",
                )
            temperature = kwargs.get("temperature", _LOSS_DEFAULTS["temperature"])
            loss["temperature"] = self.number(
                "loss_fn_kwargs.temperature", temperature, 0.0, MAX_TEMPERATURE, strict=True
            )
            scale = kwargs.get("scale_loss", False)
            if not isinstance(scale, bool):
                raise self.error("loss_fn_kwargs.scale_loss", f"must be true or false, got {scale!r}")
            loss["t2_scale"] = scale
        teachers = self.teachers(mode, size)
        loss["teachers"] = teachers
        loss["ensemble"] = "logit" if len(teachers) > 1 else "prob"
        self.sources["labels"] = (
            "DD-Ranking keys soft_label_mode, soft_label_criterion, loss_fn_kwargs, teacher_model_names"
        )
        return loss

    def teachers(self, mode: str, size: int) -> list[str]:
        names = self.raw.get("teacher_model_names")
        if names is None and self.cls == "GeneralEvaluator":
            names = [self.raw["model_name"]]
        if names is None:
            raise self.missing(
                "teacher_model_names",
                "iterates None for the teachers' checkpoint paths (TypeError); the teachers "
                + ("relabel every batch" if mode == "M" else "label the random baseline"),
            )
        if not isinstance(names, list | tuple) or not names:
            raise self.error("teacher_model_names", f"must be a non-empty list of model names, got {names!r}")
        if message := over_limit("teachers", len(names)):
            raise self.error("teacher_model_names", message)
        _, torchvision = self.torchvision_flag(False)
        models = [self.model(name, torchvision, "teacher_model_names", size) for name in names]
        for name, model in zip(names, models, strict=True):
            if not name.startswith(_BUILT_FAMILIES):
                self.pretrained_teacher(name, model)
        return models

    def pretrained_teacher(self, name: str, model: str) -> None:
        """A teacher outside DD-Ranking's own model families: its build_model takes torchvision's
        pretrained ImageNet-1K weights (``pretrained=True``) and never reads the teacher directory, so
        on another class count it crashes."""
        if self.num_classes != 1000:
            self.refuse(
                "teacher_model_names",
                f"{name!r} is built by torchvision's get_model(num_classes={self.num_classes}, "
                "pretrained=True), whose ImageNet-1K weights need 1000 classes (ValueError)",
                f"ddrank loads the {model} checkpoint from the teacher directory",
            )
            return
        # Either way the difference is said by derived_deviations.

    def zca(self, dataset: str) -> bool:
        if self.cls == "GeneralEvaluator":
            return False
        zca = self.flag("use_zca")
        if zca and dataset not in ZCA_DATASETS:
            raise self.error(
                "use_zca", f"ddrank fits ZCA for {', '.join(ZCA_DATASETS)} only, not {dataset!r}"
            )
        if zca:
            self.sources["zca"] = "DD-Ranking key use_zca (kornia ZCAWhitening, eps 0.1)"
        return zca

    # --- augmentation -------------------------------------------------------------------------

    def augment(self, transforms: list[dict[str, Any]]) -> dict[str, Any]:
        func = self.raw.get("data_aug_func")
        params = self.raw.get("aug_params")
        if func in (None, "None", "none"):
            if params:
                self.deviate(
                    "aug_params",
                    params,
                    None,
                    "data_aug_func is null, so nothing reads it",
                    moves=False,
                    kind="ignored",
                )
            self.sources["augment"] = "DD-Ranking keys data_aug_func (null), custom_train_trans"
            return {"transforms": transforms}
        names = ("dsa", "mixup", "cutmix") + (("zca",) if self.cls == "LabelRobustScoreHard" else ())
        func = self.exact(
            "data_aug_func", func, names, "DD-Ranking trains without augmentation for any other value"
        )
        if func == "zca":
            raise self.error(
                "data_aug_func",
                "'zca' refits ZCA on every batch in DD-Ranking; ddrank has no such augmentation "
                "(use use_zca)",
            )
        if not isinstance(params, Mapping):
            raise self.missing("aug_params", f"reads the {func} strengths from it (TypeError)")
        spec: dict[str, Any] = {"transforms": transforms}
        if func == "dsa":
            self.dsa_params(dict(params))
            spec.update(dsa=DEFAULT_STRATEGY, dsa_mode="S")
        else:
            key = _MIX_KEY[func]
            if key not in params:
                raise self.error(
                    f"aug_params.{key}", f"missing; DD-Ranking's {func} reads params[{key!r}] (KeyError)"
                )
            for other in params:
                if other != key:
                    self.deviate(
                        f"aug_params.{other}",
                        params[other],
                        None,
                        f"DD-Ranking's {func} reads only {key}",
                        moves=False,
                        kind="ignored",
                    )
            spec[func] = self.number(f"aug_params.{key}", params[key], 0.0, 1000.0, strict=True)
        self.sources["augment"] = "DD-Ranking keys data_aug_func, aug_params, custom_train_trans"
        return spec

    def dsa_params(self, params: dict[str, Any]) -> None:
        defaults = DSAParams()
        if self.cls == "GeneralEvaluator":
            params = {_DC_DSA_NAMES.get(k, k): v for k, v in params.items()}
        for name in DSA_KEYS:
            if name not in params:
                raise self.error(f"aug_params.{name}", "missing; DD-Ranking's DSA reads it (KeyError)")
            reference = getattr(defaults, name)
            if not math.isclose(self.number(f"aug_params.{name}", params[name], 0.0, 1000.0), reference):
                raise self.error(
                    f"aug_params.{name}",
                    f"{params[name]!r} differs from the DSA reference strength {reference}; ddrank's DSA has "
                    "the reference strengths only",
                )
        for name in params:
            if name not in DSA_KEYS:
                self.deviate(
                    f"aug_params.{name}",
                    params[name],
                    None,
                    "DD-Ranking's DSA does not read it",
                    moves=False,
                    kind="ignored",
                )

    def train_transforms(self, info: Any, zca: bool) -> tuple[list[dict[str, Any]], tuple | None | str]:
        """ddrank transform steps for ``custom_train_trans``, and the normalisation they end with."""
        if "custom_train_trans" not in self.raw:
            raise self.missing(
                "custom_train_trans", "reads config['custom_train_trans'] (KeyError); null means none"
            )
        steps = _steps(self.raw["custom_train_trans"], self, "custom_train_trans")
        if not steps:
            return [], "none"
        for name, args in steps:
            _check_step_args(name, args, self, "custom_train_trans")
        size = info.size
        out: list[dict[str, Any]] = []
        normalise: tuple | None = None
        tensor = False
        for name, args in steps:
            if name in ("ToTensor", "ToImage", "PILToTensor"):
                tensor = True
            elif name == "Normalize":
                normalise = (tuple(args.get("mean", ())), tuple(args.get("std", ())))
            elif name == "RandomResizedCrop":
                self.crop_size(args.get("size"), size)
                step: dict[str, Any] = {"name": "random_resized_crop"}
                for k in ("scale", "ratio"):
                    if args.get(k) is not None:
                        step[k] = [float(v) for v in args[k]]
                out.append(step)
            elif name == "RandomHorizontalFlip":
                out.append({"name": "flip"} | ({"p": args["p"]} if "p" in args else {}))
            elif name == "RandomCrop":
                self.crop_size(args.get("size"), size)
                padding = args.get("padding", 0) or 0
                if isinstance(padding, list | tuple):
                    raise self.error(
                        "custom_train_trans",
                        f"RandomCrop padding {padding!r}: ddrank pads every side equally",
                    )
                if zca:
                    raise self.error(
                        "custom_train_trans",
                        "RandomCrop pads with black pixels, which has no ZCA-space value in ddrank",
                    )
                mean, std = self.dataset_stats()
                fill = [round(-m / s, 6) for m, s in zip(mean, std, strict=True)]
                out.append({"name": "random_crop", "padding": int(padding), "fill": fill})
            elif name == "GaussianNoise":
                out.append(
                    {
                        "name": "gaussian_noise",
                        "mean": float(args.get("mean", 0.0)),
                        "sigma": float(args.get("sigma", 0.1)),
                        "clip": bool(args.get("clip", True)),
                    }
                )
            elif name == "ShufflePatches":
                factor = int(args.get("factor", 1))
                if self.path is not None:
                    self.refuse(
                        "custom_train_trans",
                        "ShufflePatches is RDED's Python class, which DD-Ranking's YAML loader cannot build "
                        "(NotImplementedError)",
                        "ddrank applies patch_shuffle",
                    )
                if factor > 1:
                    out.append({"name": "patch_shuffle", "grid": factor})
            elif name in ("Resize", "CenterCrop") and _side(args.get("size")) == size:
                continue
            else:
                raise self.error(
                    "custom_train_trans",
                    f"step {name!r} {args or ''} has no ddrank equivalent (supported: RandomResizedCrop, "
                    "RandomHorizontalFlip, RandomCrop, GaussianNoise, ShufflePatches, ToTensor, Normalize)",
                )
        if not tensor:
            self.refuse(
                "custom_train_trans",
                "has no ToTensor, so DD-Ranking's DataLoader cannot batch the PIL images (TypeError)",
                "ddrank applies the steps to tensors",
            )
        try:
            transforms_from_spec(out)
        except (ConfigError, UnknownNameError) as exc:
            raise self.error("custom_train_trans", str(exc)) from None
        return out, normalise

    def crop_size(self, given: Any, size: int) -> None:
        if _side(given) != size:
            raise self.error(
                "custom_train_trans",
                f"crop size {given!r} differs from the dataset's {size}-px images; ddrank trains at the "
                "dataset's size",
            )

    def dataset_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        name = self.raw.get("dataset")
        return CIFAR10_STATS if name in ("CIFAR10", "CIFAR100") else IMAGENET_STATS

    def hard_runs(self, augment: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``hard_augment`` and the full-data augmentation (DD-Ranking's use_aug_for_hard)."""
        if self.cls != "LabelRobustScoreSoft":
            self.sources["hard_augment"] = (
                f"{self.cls} has no separate hard-label run (DD-Ranking's default kept)"
            )
            return "transforms", {}
        if self.flag("use_aug_for_hard"):
            self.sources["hard_augment"] = (
                "DD-Ranking key use_aug_for_hard: true (hard and full-data runs get data_aug_func)"
            )
            return "all", {k: v for k, v in augment.items() if k != "transforms"}
        self.sources["hard_augment"] = (
            "DD-Ranking key use_aug_for_hard: false (the hard run gets custom_train_trans only)"
        )
        return "transforms", {}

    def test_transforms(self, info: Any, zca: bool) -> tuple[list[dict[str, Any]], tuple | None | str]:
        if "custom_val_trans" not in self.raw:
            raise self.missing(
                "custom_val_trans", "reads config['custom_val_trans'] (KeyError); null means none"
            )
        steps = _steps(self.raw["custom_val_trans"], self, "custom_val_trans")
        if self.cls == "GeneralEvaluator":
            if steps:
                self.deviate(
                    "custom_val_trans",
                    "given",
                    None,
                    "GeneralEvaluator tests on the dataset's standard test images",
                    moves=False,
                    kind="ignored",
                )
            return [], "none"
        if not steps:
            return [], "none"
        for name, args in steps:
            _check_step_args(name, args, self, "custom_val_trans")
        if zca:
            raise self.error(
                "custom_val_trans",
                "with use_zca DD-Ranking ZCA-whitens the transformed test images; ddrank cannot",
            )
        out: list[dict[str, Any]] = []
        normalise: tuple | None = None
        for name, args in steps:
            if name == "Resize":
                out.append({"name": "resize", "size": _size_arg(args.get("size"), self, "custom_val_trans")})
            elif name == "CenterCrop":
                if _side(args.get("size")) != info.size:
                    raise self.error(
                        "custom_val_trans",
                        f"CenterCrop {args.get('size')!r} differs from the dataset's {info.size}-px images",
                    )
                out.append({"name": "center_crop", "size": info.size})
            elif name == "Normalize":
                normalise = (tuple(args.get("mean", ())), tuple(args.get("std", ())))
            elif name in ("ToTensor", "ToImage"):
                continue
            else:
                raise self.error(
                    "custom_val_trans",
                    f"step {name!r} has no ddrank test-time equivalent (Resize, CenterCrop, ToTensor, "
                    "Normalize)",
                )
        identity = all(_side(s["size"]) == info.size and not isinstance(s["size"], list) for s in out)
        self.sources["test_transforms"] = "DD-Ranking key custom_val_trans (P cells' test images)"
        return ([] if identity else out), normalise

    def normalisation(self, dd_name: str, train: Any, test: Any) -> None:
        """Custom pipelines that normalise otherwise than DD-Ranking's dataset statistics."""
        expected = self.dataset_stats()
        for key, found in (("custom_train_trans", train), ("custom_val_trans", test)):
            if found == "none":
                continue
            close = found is not None and all(
                len(a) == len(b) and all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True))
                for a, b in zip(found, expected, strict=True)
            )
            if not close:
                self.deviate(
                    key,
                    "no Normalize ([0, 1] pixels)"
                    if found is None
                    else f"Normalize(mean={list(found[0])}, std={list(found[1])})",
                    f"the dataset's statistics (mean={list(expected[0])}, std={list(expected[1])})",
                    f"ddrank normalises every cell with one set of statistics; DD-Ranking normalises images "
                    f"that pass through {key} this way and the rest with {dd_name}'s statistics",
                )

    # --- optimisation ---------------------------------------------------------------------------

    def optimizer(self) -> dict[str, Any]:
        name = self.exact(
            "optimizer",
            self.needed("optimizer", "raises NotImplementedError"),
            ("sgd", "adam", "adamw"),
            "get_optimizer's names",
        )
        decay = self.needed(
            "weight_decay", f"passes weight_decay=None to torch.optim.{name.upper()} (TypeError)"
        )
        spec: dict[str, Any] = {
            "name": name,
            "weight_decay": self.number("weight_decay", decay, 0.0, MAX_WEIGHT_DECAY),
        }
        self.sources["optimizer"] = "DD-Ranking keys optimizer, weight_decay, momentum"
        momentum = self.raw.get("momentum")
        if name == "sgd":
            if momentum is None:
                raise self.missing("momentum", "passes momentum=None to SGD (TypeError)")
            value = self.number("momentum", momentum, 0.0, 1.0)
            if value >= 1.0:
                raise self.error("momentum", f"must be below 1, got {momentum!r}")
            spec["momentum"] = value
            return spec
        if isinstance(momentum, list | tuple) and len(momentum) == 2:
            betas = tuple(self.number("momentum", b, 0.0, 0.999999) for b in momentum)
            if isinstance(momentum, tuple):
                spec["betas"] = betas
            else:
                chosen = self.pick(
                    "momentum",
                    (0.9, 0.999),
                    betas,
                    "DD-Ranking reads betas only from a Python tuple, so a YAML list is ignored for "
                    "(0.9, 0.999); honest uses the list as the betas",
                )
                if self.fidelity == "reference":
                    self.deviate(
                        "momentum",
                        momentum,
                        None,
                        f"{name} reads betas only from a tuple; the list is ignored",
                        moves=False,
                        kind="ignored",
                    )
                spec["betas"] = chosen
        elif momentum is not None:
            self.deviate(
                "momentum",
                momentum,
                None,
                f"{name} reads momentum only as a (beta1, beta2) tuple",
                moves=False,
                kind="ignored",
            )
        return spec

    def schedule(self, epochs: int) -> dict[str, Any]:
        name = self.exact(
            "lr_scheduler",
            self.needed("lr_scheduler", "raises NotImplementedError"),
            _SCHEDULERS,
            "get_lr_scheduler's names",
        )
        self.sources["schedule"] = "DD-Ranking keys lr_scheduler, step_size (stepped once per epoch)"
        if name != "step":
            if self.has("step_size"):
                self.deviate(
                    "step_size",
                    self.raw["step_size"],
                    None,
                    f"lr_scheduler {name} does not use it",
                    moves=False,
                    kind="ignored",
                )
            if name == "cosineannealing":
                return {"kind": "cosine"}
            return {"kind": "cosine", "period": self.pick("schedule", 2.0, 1.0)}
        if self.cls == "AugmentationRobustScore":
            self.refuse(
                "lr_scheduler",
                "AugmentationRobustScore passes no step_size to StepLR (AssertionError)",
                "ddrank steps at step_size",
            )
        if not self.has("step_size"):
            raise self.missing("step_size", "asserts step_size for lr_scheduler step (AssertionError)")
        step = self.integer("step_size", "asserts it", limit="epochs")
        return _step_schedule(step, epochs)

    def batch_size(self) -> int:
        if self.cls == "AugmentationRobustScore":
            key = "batch_size"
        else:
            key = "syn_batch_size"
            if self.cls != "GeneralEvaluator" and not self.has("real_batch_size"):
                raise self.missing("real_batch_size", "divides None by the world size (TypeError)")
        found = self.integer(key, "divides None by the world size (TypeError)", limit="batch_size")
        if self.cls == "GeneralEvaluator" and found != 256:
            self.deviate(
                key,
                found,
                found,
                "GeneralEvaluator reads it and then trains hard labels with its constructor default 256; "
                "ddrank uses the configured value",
                moves=True,
            )
        if self.flag("dist"):
            self.deviate(
                "dist",
                f"true: each batch of {found} split over the GPUs (batch // world_size each, per-GPU "
                "BatchNorm statistics; DistributedSampler pads a small set with repeated images to a "
                "multiple of the GPU count)",
                f"batches of {found} on one device",
                "ddrank scales out by running whole training jobs per device, so a batch is never split",
                moves=True,
            )
        self.sources["batch_size"] = f"DD-Ranking key {key}"
        return found

    # --- random subsets and acc(real, hard) ---------------------------------------------------

    def random_data(self, transforms: list[dict[str, Any]], zca: bool, mode: str, dd_name: str) -> str:
        if self.cls == "GeneralEvaluator":
            return "tensor"
        found = self.raw.get("random_data_format")
        if found not in ("tensor", "image"):
            self.refuse(
                "random_data_format",
                f"{found!r} is not 'tensor' or 'image' (ValueError: Random data format {found} not "
                "supported)",
                "ddrank samples random subsets as tensors",
            )
            return "tensor"
        self.sources["random_data"] = "DD-Ranking key random_data_format"
        if found == "image":
            if not self.raw.get("custom_train_trans"):
                self.refuse(
                    "random_data_format",
                    "image without custom_train_trans leaves PIL images DD-Ranking cannot batch (TypeError)",
                    "ddrank samples tensors",
                )
            elif zca:
                self.refuse(
                    "random_data_format",
                    "image with use_zca de-normalises ZCA-whitened tensors as CIFAR images",
                    "ddrank samples tensors",
                )
            elif mode == "S":
                self.refuse(
                    "random_data_format",
                    "image with soft_label_mode S never labels the random images (crash)",
                    "ddrank labels tensor subsets",
                )
        return self.pick("random_data", found, "tensor")

    def full_data(
        self, dd_name: str, dataset: str, model: str, epochs: int, augment: dict[str, Any]
    ) -> FullDataRecipe:
        if self.cls not in ("LabelRobustScoreHard", "LabelRobustScoreSoft"):
            return FullDataRecipe()
        key = f"{dd_name}-{self.raw.get('model_name')}"
        if self.flag("eval_full_data"):
            table = REAL_DATA_TRAINING_CONFIG.get(key)
            if table is None:
                self.refuse(
                    "eval_full_data",
                    f"true needs REAL_DATA_TRAINING_CONFIG[{key!r}], which DD-Ranking v0.2.0 lacks "
                    "(KeyError)",
                    f"ddrank trains {model} with its own {dataset} recipe",
                )
                return self.preset_recipe(
                    dataset,
                    model,
                    augment,
                    f"no REAL_DATA_TRAINING_CONFIG[{key!r}] (KeyError)",
                    published=False,
                )
            self.sources["full_data"] = (
                f"DD-Ranking REAL_DATA_TRAINING_CONFIG[{key!r}] ({SOURCE_FILE}), num_epochs, real_batch_size"
            )
            return self.trained(table, epochs, augment)
        cached = REAL_DATA_ACC_CACHE.get(key)
        state = "false" if "eval_full_data" in self.raw else "absent (read as false)"
        if cached is None:
            self.refuse(
                "eval_full_data",
                f"{state} needs REAL_DATA_ACC_CACHE[{key!r}], which DD-Ranking v0.2.0 lacks (ValueError)",
                "ddrank uses a published full-data accuracy",
            )
            return self.preset_recipe(
                dataset,
                model,
                augment,
                f"eval_full_data {state}: no REAL_DATA_ACC_CACHE[{key!r}] (ValueError)",
                published=True,
            )
        self.sources["full_data"] = f"DD-Ranking REAL_DATA_ACC_CACHE[{key!r}] ({SOURCE_FILE})"
        return FullDataRecipe(
            source="published",
            published_acc=round(cached / 100.0, 6),
            published_source=f"DD-Ranking v0.2.0 cached full-data accuracy REAL_DATA_ACC_CACHE[{key!r}] = "
            f"{cached} ({SOURCE_FILE})",
        )

    def trained(self, table: Mapping[str, Any], epochs: int, augment: dict[str, Any]) -> FullDataRecipe:
        """The reference recipe (DD-Ranking's loop) or the honest one (the table as written)."""
        momentum = table["momentum"]
        optimizer: dict[str, Any] = {"name": table["optimizer"], "weight_decay": table["weight_decay"]}
        if isinstance(momentum, tuple):
            optimizer["betas"] = momentum
        else:
            optimizer["momentum"] = momentum
        batch = self.integer(
            "real_batch_size", "divides None by the world size (TypeError)", limit="batch_size"
        )
        if table["lr_scheduler"] == "step":
            reference_schedule = _step_schedule(table["step_size"], epochs)
            honest_schedule = _step_schedule(table["step_size"], table["num_epochs"])
        else:
            # LambdaLR over the table's num_epochs (0 after it), stepped for the loop's epochs.
            horizon = None if table["num_epochs"] == epochs else table["num_epochs"]
            reference_schedule = {"kind": "cosine", "period": 2.0, "horizon": horizon}
            honest_schedule = {"kind": "cosine"}
        reference = FullDataRecipe(
            optimizer=optimizer,
            schedule=reference_schedule,
            lr=table["lr"],
            epochs=epochs,
            batch_size=batch,
            augment=AugmentSpec(**augment),
        )
        honest = reference.model_copy(
            update={
                "schedule": type(reference.schedule)(**honest_schedule),
                "epochs": table["num_epochs"],
                "batch_size": table["batch_size"],
            }
        )
        return self.pick("full_data", reference, honest)

    def preset_recipe(
        self, dataset: str, model: str, augment: dict[str, Any], problem: str, *, published: bool
    ) -> FullDataRecipe:
        """Honest's answer where DD-Ranking has none: the recipe (or published value) of ddrank's presets."""
        recipe = _preset_recipe(dataset, model)
        if recipe is None:
            raise self.error(
                "eval_full_data",
                f"{problem}, and no ddrank preset trains {model} on {dataset}; give acc(real, hard) as a "
                "fraction "
                "(--real-acc)" + ("" if published else " or use a model DD-Ranking has a recipe for"),
            )
        if published:
            if recipe.published_acc is None:
                raise self.error(
                    "eval_full_data",
                    f"{problem}, and ddrank knows no published full-data accuracy of {model} on {dataset}; "
                    "set eval_full_data: true to train it",
                )
            chosen = FullDataRecipe(
                source="published",
                published_acc=recipe.published_acc,
                published_source=recipe.published_source,
            )
            what = f"published {recipe.published_acc:.3f} ({recipe.published_source})"
            siblings = self.sibling_hint("eval_full_data")
            if siblings.startswith("sibling"):
                what += f"; {siblings.removesuffix(': add it')}"
        else:
            chosen = recipe.model_copy(update={"augment": AugmentSpec(**augment)})
            what = (
                f"ddrank's recipe: {chosen.optimizer.name} lr {chosen.lr:g}, {chosen.epochs} epochs, "
                f"batch {chosen.batch_size}"
            )
        self.deviate(
            "eval_full_data", problem, what, "DD-Ranking has no value here; ddrank uses its own, sourced one"
        )
        self.sources["full_data"] = "ddrank preset recipe (DD-Ranking has none)"
        return chosen

    def record_sources(self, eval_every: int) -> None:
        interval = (
            f"test_interval of {self.cls}" if self.cls in TEST_INTERVAL else "LRS classes' test_interval"
        )
        self.sources.update(
            {
                "epochs": "DD-Ranking key num_epochs",
                "rounds": "DD-Ranking key num_eval",
                "ipc": "DD-Ranking key ipc",
                "lr_grid": "lr_list of DD-Ranking's _hyper_param_search_* methods",
                "lr_search": "DD-Ranking: the set's syn_lr for the synthetic run, the grid for random and "
                "hard runs",
                "selection": "DD-Ranking: best test accuracy over the grid and checkpoints"
                if self.fidelity == "reference"
                else "ddrank honest selection",
                "eval_every": f"{interval} ({eval_every})",
                "stats": "DD-Ranking get_dataset mean/std (CIFAR-100 uses CIFAR-10's)",
                "space": "DD-Ranking key use_zca",
            }
        )


def _steps(value: Any, translation: _Translation, key: str) -> list[tuple[str, dict[str, Any]]]:
    """``[{name, args}]`` YAML steps or a torchvision Compose, as (name, keyword arguments) pairs."""
    if value is None:
        return []
    if hasattr(value, "transforms") and not isinstance(value, list | tuple | Mapping):
        return [_from_object(t, translation, key) for t in value.transforms]
    if not isinstance(value, list):
        raise translation.error(
            key, f"must be a list of {{name, args}} steps or a torchvision Compose, got {value!r}"
        )
    out = []
    for step in value:
        name = step.get("name") if isinstance(step, Mapping) else None
        args = step.get("args") if isinstance(step, Mapping) else None
        if not isinstance(name, str):
            raise translation.error(key, f"step {step!r} needs a name")
        if args is None:
            args = {}
        if isinstance(args, list):
            raise translation.error(key, f"step {name}: give args as a mapping of names to values")
        if not isinstance(args, Mapping):
            raise translation.error(key, f"step {name}: args must be a mapping, got {args!r}")
        out.append((name, dict(args)))
    return out


def _from_object(transform: Any, translation: _Translation, key: str) -> tuple[str, dict[str, Any]]:
    """A torchvision transform object as (class name, the arguments ddrank reads)."""
    name = type(transform).__name__
    attrs = (*_READ_ARGS.get(name, ()), *_DEFAULT_ONLY_ARGS.get(name, {}))
    args = {a: getattr(transform, a) for a in attrs if hasattr(transform, a)}
    if name == "RandomResizedCrop" and tuple(args.get("ratio", ())) == (3 / 4, 4 / 3):
        args.pop("ratio")  # torchvision's default, which ddrank's transform also uses
    if isinstance(args.get("size"), list | tuple) and len(args["size"]) == 1:
        args["size"] = args["size"][0]
    return name, args


_READ_ARGS: dict[str, tuple[str, ...]] = {
    "RandomResizedCrop": ("size", "scale", "ratio"),
    "RandomHorizontalFlip": ("p",),
    "RandomCrop": ("size", "padding"),
    "Normalize": ("mean", "std"),
    "Resize": ("size",),
    "CenterCrop": ("size",),
    "GaussianNoise": ("mean", "sigma", "clip"),
    "ShufflePatches": ("factor",),
}
"""The arguments of each translated torchvision step that ddrank reads."""

_BILINEAR = ("bilinear", 2)  # InterpolationMode.BILINEAR, or PIL's constant for it
_DEFAULT_ONLY_ARGS: dict[str, dict[str, tuple[Any, ...]]] = {
    "RandomResizedCrop": {"interpolation": _BILINEAR, "antialias": (True, None)},
    "Resize": {"interpolation": _BILINEAR, "antialias": (True, None), "max_size": (None,)},
    "RandomCrop": {"fill": (0,), "padding_mode": ("constant",), "pad_if_needed": (False,)},
    "Normalize": {"inplace": (False,)},
}
"""Arguments ddrank does not read, accepted at torchvision's default (what ddrank does) only."""


def _check_step_args(name: str, args: Mapping[str, Any], translation: _Translation, key: str) -> None:
    """Refuse an argument of a translated step that ddrank would otherwise drop: one it does not read,
    unless it holds torchvision's default."""
    if name not in _READ_ARGS and name not in ("ToTensor", "ToImage", "PILToTensor"):
        return  # an untranslatable step is refused by name
    allowed = _DEFAULT_ONLY_ARGS.get(name, {})
    for arg, value in args.items():
        if arg in _READ_ARGS.get(name, ()):
            continue
        plain = getattr(value, "value", value)  # an enum (InterpolationMode) by its value
        if any(_same(plain, default) for default in allowed.get(arg, ())):
            continue
        read = ", ".join(_READ_ARGS.get(name, ())) or "no arguments"
        raise translation.error(
            key,
            f"step {name}: argument {arg}={value!r} has no ddrank equivalent (ddrank reads {read}"
            + (f"; {', '.join(allowed)} only at torchvision's default" if allowed else "")
            + ")",
        )


def _same(value: Any, default: Any) -> bool:
    """``value`` is ``default`` (None and booleans by identity, numbers by value, not True for 1)."""
    if default is None or isinstance(default, bool):
        return value is default
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool) and value == default
    return value == default


def _side(size: Any) -> int | None:
    """The square side a size argument gives (an int, or a pair of equal ints), else None."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, list | tuple) and len(size) == 2 and size[0] == size[1]:
        return _side(size[0])
    if isinstance(size, list | tuple) and len(size) == 1:
        return _side(size[0])
    return None


def _size_arg(size: Any, translation: _Translation, key: str) -> int | list[int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if isinstance(size, list | tuple) and len(size) == 1:
        return _size_arg(size[0], translation, key)
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return [int(s) for s in size]
    raise translation.error(key, f"Resize size {size!r} must be a positive integer or a pair")


def _step_schedule(step_size: int, epochs: int) -> dict[str, Any]:
    """StepLR(step_size, gamma 0.1) stepped once per epoch, over ``epochs`` epochs."""
    drops = list(range(step_size, epochs, step_size))
    if not drops:
        return {"kind": "constant"}
    return {"kind": "step", "milestones": [_fraction(d, epochs) for d in drops], "gamma": 0.1}


def _fraction(epoch: int, epochs: int) -> float:
    """The milestone fraction m with ``int(m * epochs) == epoch`` (plain division can land one below)."""
    m = epoch / epochs
    while int(m * epochs) < epoch:
        m = math.nextafter(m, 1.0)
    return m


@cache
def _preset_recipe(dataset: str, model: str) -> FullDataRecipe | None:
    """The full-data recipe of the first shipped preset that trains ``model`` on ``dataset``, else the
    recipe of the dataset's own preset (e.g. ``digits``) applied to ``model``."""
    for name in preset_names():
        if dataset not in (preset(name).get("datasets") or ()):
            continue
        protocol = load_protocol(name, dataset=dataset)
        if (protocol.full_data.model or protocol.model) == model:
            return protocol.full_data
    if dataset.lower() in {name.lower() for name in preset_names()}:
        return load_protocol(dataset, dataset=dataset).full_data.model_copy(update={"model": model})
    return None


__all__ = [
    "CLASSES",
    "CONSTRUCTOR_DEFAULTS",
    "Config",
    "DDRANKING_KEYS",
    "REAL_DATA_ACC_CACHE",
    "REAL_DATA_TRAINING_CONFIG",
    "TranslatedConfig",
    "translate_ddranking_config",
]

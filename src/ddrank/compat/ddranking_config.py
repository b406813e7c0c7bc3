"""DD-Ranking (v0.2.0) YAML / JSON configurations, read as ddrank protocols.

A DD-Ranking configuration drives one of its metric classes (``LabelRobustScoreHard``,
``LabelRobustScoreSoft``, ``AugmentationRobustScore``, ``GeneralEvaluator``). Its keys are
translated onto a validated :class:`~ddrank.protocols.Protocol` plus the run settings that are not
part of a protocol (data root, rounds, teacher directory, how acc(real, hard) is obtained, the score
weight). Every problem raises :class:`~ddrank.errors.ConfigError` naming the offending key; where a
DD-Ranking setting has only an approximate ddrank equivalent, the translation says so in ``notes``.

Model names follow DD-Ranking's ``build_model``: ``ResNet-18-BN`` with ``stu_use_torchvision: true``
is torchvision's ResNet-18 (``torchvision:resnet18`` here, 3x3 stem below 64 px), without it the DC
small-image ResNet. Several teachers average their logits, as DD-Ranking's do. The learning rate
is the set's own when it ships one, else the best of DD-Ranking's grid. The full-data recipe comes
from the shipped preset that trains the same model on the same dataset, with its published accuracy
where one exists.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from ddrank.augment.dsa import DEFAULT_STRATEGY, DSAParams
from ddrank.augment.transforms import transforms_from_spec
from ddrank.data.real import DATASETS, dataset_info
from ddrank.errors import ConfigError, UnknownNameError
from ddrank.models import canonical_model_name
from ddrank.protocols import FullDataRecipe, Protocol, load_protocol, preset, preset_names, validated_protocol

Metric = Literal["lrs", "ars", "acc"]
METRICS: tuple[Metric, ...] = ("lrs", "ars", "acc")

DDRANKING_KEYS = frozenset(
    {
        "dataset",
        "real_data_path",
        "ipc",
        "im_size",
        "model_name",
        "use_torchvision",
        "stu_use_torchvision",
        "tea_use_torchvision",
        "teacher_dir",
        "teacher_model_names",
        "data_aug_func",
        "aug_params",
        "use_zca",
        "use_aug_for_hard",
        "custom_train_trans",
        "custom_val_trans",
        "label_type",
        "use_soft_label",
        "soft_label_mode",
        "soft_label_criterion",
        "loss_fn_kwargs",
        "temperature",
        "optimizer",
        "lr_scheduler",
        "step_size",
        "weight_decay",
        "momentum",
        "num_eval",
        "num_epochs",
        "batch_size",
        "syn_batch_size",
        "real_batch_size",
        "default_lr",
        "num_workers",
        "device",
        "dist",
        "random_data_path",
        "random_data_format",
        "save_path",
        "eval_full_data",
    }
)
"""Every key DD-Ranking v0.2.0's metric classes read from a configuration."""

EXTENSION_KEYS = frozenset({"seed", "selection", "lrs_lambda", "ars_lambda"})
"""ddrank additions: the base seed, the selection mode and the LRS / ARS weight of ``compute_metrics``."""

RECORD_KEYS = frozenset(
    {
        "im_size",
        "custom_val_trans",
        "use_aug_for_hard",
        "default_lr",
        "num_workers",
        "device",
        "dist",
        "random_data_path",
        "random_data_format",
        "save_path",
    }
)

DDRANKING_LR_GRID = (0.001, 0.005, 0.01, 0.05, 0.1)

DATASET_NAMES = {
    "Digits": "digits",
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
ZCA_DATASETS = ("cifar10", "cifar100", "tinyimagenet")

_DSA_PARAMS = {
    "flip": "flip",
    "prob_flip": "flip",
    "rotate": "rotate",
    "ratio_rotate": "rotate",
    "saturation": "saturation",
    "brightness": "brightness",
    "contrast": "contrast",
    "scale": "scale",
    "ratio_scale": "scale",
    "crop": "crop",
    "ratio_crop_pad": "crop",
    "cutout": "cutout",
    "ratio_cutout": "cutout",
}
_MIX_PARAMS = {"mixup": ("lambda", "alpha", "mixup_p"), "cutmix": ("beta", "cutmix_p")}
_MIX_DEFAULTS = {"mixup": 0.8, "cutmix": 1.0}
_LOSS_KWARGS = {
    "kl": ("temperature", "scale_loss"),
    "sce": ("temperature", "scale_loss"),
    "mse_gt": ("mse_weight", "ce_weight"),
}
_PIPELINE_ONLY = ("ToTensor", "Normalize", "Resize", "CenterCrop")
_SCHEDULERS = ("step", "cosine", "cosineannealing", "lambda_cos")


class Config(Mapping[str, Any]):
    """DD-Ranking's ``Config``: the raw keys of a YAML / JSON file, by item, attribute or ``get``."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        self._config: dict[str, Any] = dict(config or {})

    @classmethod
    def from_file(cls, filepath: str | os.PathLike) -> Config:
        """Read a ``.yaml`` / ``.yml`` or ``.json`` file holding one mapping."""
        path = Path(filepath)
        if path.suffix not in (".yaml", ".yml", ".json"):
            raise ConfigError(
                f"configuration {str(path)!r}: unsupported format; use a .yaml, .yml or .json file"
            )
        if not path.is_file():
            raise ConfigError(f"configuration file {str(path)!r} does not exist")
        text = path.read_text()
        try:
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"configuration {str(path)!r} cannot be parsed: {first}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration {str(path)!r} must hold a mapping of keys to values")
        return cls(loaded)

    @property
    def config(self) -> dict[str, Any]:
        """The raw key-value mapping (DD-Ranking's ``Config.config``)."""
        return self._config

    def update(self, overrides: Mapping[str, Any]) -> None:
        self._config.update(overrides)

    def __getitem__(self, key: str) -> Any:
        return self._config[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
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
    extras: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def translate_ddranking_config(
    source: str | os.PathLike | Mapping[str, Any], *, metric: str | None = None
) -> TranslatedConfig:
    """Translate a DD-Ranking configuration (file path, :class:`Config` or mapping) to a protocol.

    ``metric`` (``lrs``, ``ars`` or ``acc``) says which DD-Ranking class the configuration was
    written for; without it, ARS-only keys (``label_type``, ``batch_size``) mean ``ars``,
    ``use_soft_label`` means ``acc`` and anything else ``lrs``.
    """
    if isinstance(source, Mapping):
        raw, where, stem = dict(source), "DD-Ranking configuration", "config"
    else:
        raw, where, stem = (
            dict(Config.from_file(source)),
            f"DD-Ranking configuration {str(source)!r}",
            Path(source).stem,
        )
    return _Translation(raw, where).run(stem, metric)


class _Translation:
    """One translation: typed access to the raw keys (errors name the key), notes, used keys."""

    def __init__(self, raw: dict[str, Any], where: str):
        self.raw, self.where = raw, where
        self.used: set[str] = set()
        self.notes: list[str] = []

    # --- typed access -------------------------------------------------------------------------

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def value(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        found = self.raw.get(key)
        return default if found is None else found

    def integer(self, key: str, default: int, minimum: int = 1) -> int:
        found = self.value(key, default)
        if isinstance(found, bool) or not isinstance(found, int) or found < minimum:
            raise self.error(key, f"must be an integer of at least {minimum}, got {found!r}")
        return found

    def optional_integer(self, key: str, minimum: int = 1) -> int | None:
        return self.integer(key, minimum, minimum) if self.has(key) else None

    def number(
        self, key: str, default: float, low: float, high: float = math.inf, *, strict: bool = False
    ) -> float:
        return self.check_number(key, self.value(key, default), low, high, strict=strict)

    def check_number(
        self, key: str, found: Any, low: float, high: float = math.inf, *, strict: bool = False
    ) -> float:
        ok = isinstance(found, int | float) and not isinstance(found, bool) and math.isfinite(found)
        if ok:
            ok = (found > low if strict else found >= low) and found <= high
        if not ok:
            bound = f"> {low}" if strict else f">= {low}"
            limit = f" and <= {high}" if math.isfinite(high) else ""
            raise self.error(key, f"must be a number {bound}{limit}, got {found!r}")
        return float(found)

    def flag(self, key: str, default: bool) -> bool:
        found = self.value(key, default)
        if not isinstance(found, bool):
            raise self.error(key, f"must be true or false, got {found!r}")
        return found

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        found = self.value(key, default)
        if found is None:
            return None
        if not isinstance(found, str) or found.lower() not in {c.lower() for c in choices}:
            raise self.error(key, f"{found!r} is not allowed; use one of {', '.join(choices)}")
        return next(c for c in choices if c.lower() == found.lower())

    def text(self, key: str) -> str | None:
        found = self.value(key)
        if found is not None and not isinstance(found, str | os.PathLike):
            raise self.error(key, f"must be a path, got {found!r}")
        return None if found is None else str(found)

    def mapping(self, key: str) -> dict[str, Any]:
        found = self.value(key, {})
        if not isinstance(found, Mapping):
            raise self.error(key, f"must be a mapping of names to values, got {found!r}")
        return dict(found)

    # --- the translation ------------------------------------------------------------------------

    def run(self, stem: str, metric: str | None) -> TranslatedConfig:
        self.check_keys()
        chosen = self.metric(metric)
        dataset = self.dataset()
        info = dataset_info(dataset)
        self.check_image_size(info.size)
        model = self.model(self.value("model_name"), self.student_torchvision(), "model_name")
        soft = self.soft_labels(chosen)
        zca = self.zca(dataset)
        epochs = self.integer("num_epochs", 300)
        batch_key = "batch_size" if chosen == "ars" else "syn_batch_size"
        selection = self.choice("selection", ("honest", "reference"), "honest")
        fields: dict[str, Any] = {
            "name": f"ddranking-{stem}",
            "description": f"Translated from the {self.where}",
            "dataset": dataset,
            "ipc": self.optional_integer("ipc"),
            "model": model,
            "labels": self.labels(soft, chosen, model),
            "augment": self.augment(info.size),
            "optimizer": self.optimizer(),
            "schedule": self.schedule(epochs),
            "epochs": epochs,
            "batch_size": self.integer(batch_key, 256),
            "lr_grid": DDRANKING_LR_GRID,
            "use_set_lr": True,
            "selection": selection,
            "rounds": self.integer("num_eval", 5),
            "space": "zca" if zca else "normalized",
            "zca": zca,
        }
        if selection == "reference":
            fields["eval_every"] = 10 if chosen == "lrs" and not soft else 20
        recipe, real_acc = self.full_data(chosen, dataset, model)
        fields["full_data"] = recipe
        self.note_unmapped(chosen, soft, fields["augment"])
        protocol = validated_protocol(fields)
        weight_key = {"lrs": "lrs_lambda", "ars": "ars_lambda"}.get(chosen)
        run = {
            "data_root": self.text("real_data_path"),
            "teacher_dir": self.text("teacher_dir"),
            "weight": self.number(weight_key, 0.5, 0.0, 1.0) if weight_key else 0.5,
            "seed": self.optional_integer("seed", minimum=0),
        }
        extras = {key: value for key, value in self.raw.items() if key in RECORD_KEYS or key not in self.used}
        return TranslatedConfig(
            protocol=protocol,
            dataset=dataset,
            ipc=protocol.ipc,
            metric=chosen,
            rounds=protocol.rounds,
            real_acc=real_acc,
            extras=extras,
            notes=self.notes,
            **run,
        )

    def check_keys(self) -> None:
        valid = sorted(DDRANKING_KEYS | EXTENSION_KEYS)
        for key in self.raw:
            if not isinstance(key, str) or key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{self.where}: unknown key {str(key)!r}{hint} "
                    f"(DD-Ranking v0.2.0 keys: {', '.join(valid)})"
                )

    def metric(self, metric: str | None) -> Metric:
        if metric is not None:
            lowered = metric.lower()
            if lowered not in METRICS:
                raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
            return cast(Metric, lowered)
        if "label_type" in self.raw or "batch_size" in self.raw:
            return "ars"
        return "acc" if "use_soft_label" in self.raw else "lrs"

    def dataset(self) -> str:
        name = self.value("dataset")
        if not isinstance(name, str) or not name:
            raise self.error("dataset", f"is required: one of {', '.join(DATASET_NAMES)}")
        spelled = {k.lower(): v for k, v in DATASET_NAMES.items()}
        if name.lower() in spelled:
            return spelled[name.lower()]
        if name in DATASETS:
            return DATASETS.canonical(name)
        raise self.error("dataset", str(UnknownNameError("dataset", name, DATASET_NAMES)))

    def check_image_size(self, size: int) -> None:
        found = self.raw.get("im_size")
        if found is None:
            return
        sides = [found, found] if isinstance(found, int) else found
        if not isinstance(sides, list | tuple) or list(sides) != [size, size]:
            raise self.error(
                "im_size",
                f"{found!r} differs from the dataset's {size}x{size} images; ddrank trains at the dataset's "
                "size (resize the synthetic set when loading it instead)",
            )

    def student_torchvision(self) -> bool:
        flags = {
            key: self.flag(key, False)
            for key in ("use_torchvision", "stu_use_torchvision")
            if key in self.raw
        }
        if len(set(flags.values())) > 1:
            raise self.error("stu_use_torchvision", "contradicts use_torchvision; give one of them")
        return any(flags.values())

    def model(self, name: Any, torchvision: bool, key: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise self.error(key, f"must be a model name such as 'ConvNet-3' or 'ResNet-18-BN', got {name!r}")
        lowered = name.strip().lower()
        if torchvision:
            if match := re.fullmatch(r"resnet-?(18|34|50)(-?bn)?", lowered):
                return f"torchvision:resnet{match[1]}"
            if match := re.fullmatch(r"vgg-?(11|13|16|19)(-?bn)?", lowered):
                return f"torchvision:vgg{match[1]}" + ("_bn" if match[2] else "")
            if lowered == "alexnet":
                return "torchvision:alexnet"
        try:
            return canonical_model_name(name)
        except UnknownNameError as exc:
            try:
                return canonical_model_name(f"torchvision:{lowered}")
            except UnknownNameError:
                raise self.error(key, str(exc)) from None

    def soft_labels(self, metric: Metric) -> bool:
        declared, declared_by = None, ""
        if metric == "ars" and self.has("label_type"):
            declared, declared_by = self.choice("label_type", ("hard", "soft"), None) == "soft", "label_type"
        elif metric == "acc" and self.has("use_soft_label"):
            declared, declared_by = self.flag("use_soft_label", False), "use_soft_label"
        soft_keys = [
            key for key in ("soft_label_mode", "soft_label_criterion", "loss_fn_kwargs") if self.has(key)
        ]
        if declared is False and soft_keys:
            raise self.error(
                soft_keys[0],
                f"is set but {declared_by} asks for hard labels (trained with cross-entropy); "
                "remove it or ask for soft labels",
            )
        if declared is None:
            declared = self.has("soft_label_mode")
            if not declared and soft_keys:
                raise self.error(
                    soft_keys[0],
                    "is a soft-label setting, but soft_label_mode is missing: set soft_label_mode "
                    "(S: one stored soft label per image, M: teachers relabel every batch) or remove it",
                )
        return declared

    def labels(self, soft: bool, metric: Metric, model: str) -> dict[str, Any]:
        if not soft:
            return {"mode": "hard", "loss": "ce"}
        mode = self.choice("soft_label_mode", ("S", "M"), None)
        if mode is None:
            raise self.error(
                "soft_label_mode",
                "is required for soft labels: S (stored soft labels) or M (teacher relabels)",
            )
        criterion = self.choice("soft_label_criterion", tuple(_LOSS_KWARGS), None)
        if criterion is None:
            raise self.error(
                "soft_label_criterion", f"is required for soft labels: one of {', '.join(_LOSS_KWARGS)}"
            )
        teachers = self.teachers(mode, metric, model)
        return {
            "mode": mode,
            "loss": criterion,
            **self.loss_settings(criterion),
            "teachers": teachers,
            "ensemble": "logit" if len(teachers) > 1 else "prob",
        }

    def loss_settings(self, criterion: str) -> dict[str, Any]:
        kwargs = self.mapping("loss_fn_kwargs")
        allowed = _LOSS_KWARGS[criterion]
        for name in kwargs:
            if name not in allowed:
                raise self.error(
                    "loss_fn_kwargs",
                    f"has no {name!r} for soft_label_criterion {criterion!r}; it takes {', '.join(allowed)}",
                )
        if criterion == "mse_gt":
            return {
                "mse_weight": self.check_number(
                    "loss_fn_kwargs.mse_weight", kwargs.get("mse_weight", 1.0), 0.0
                ),
                "ce_weight": self.check_number("loss_fn_kwargs.ce_weight", kwargs.get("ce_weight", 0.0), 0.0),
            }
        nested, top = kwargs.get("temperature"), self.value("temperature")
        if nested is not None and top is not None and nested != top:
            raise self.error(
                "temperature", f"{top!r} contradicts loss_fn_kwargs.temperature {nested!r}; keep one"
            )
        if nested is None and top is None:
            self.notes.append("no temperature given: the soft-label loss uses T = 1")
        key = "loss_fn_kwargs.temperature" if nested is not None else "temperature"
        given = nested if nested is not None else top
        temperature = self.check_number(key, 1.0 if given is None else given, 0.0, strict=True)
        scale = kwargs.get("scale_loss", False)
        if not isinstance(scale, bool):
            raise self.error("loss_fn_kwargs", f"scale_loss must be true or false, got {scale!r}")
        return {"temperature": temperature, "t2_scale": scale}

    def teachers(self, mode: str, metric: Metric, model: str) -> list[str]:
        names = self.value("teacher_model_names")
        if names is None:
            if metric == "acc":
                return [model]
            raise self.error(
                "teacher_model_names",
                f"is required with soft_label_mode {mode}: the teachers that "
                + ("relabel every batch" if mode == "M" else "label the random baseline"),
            )
        if not isinstance(names, list | tuple) or not names:
            raise self.error("teacher_model_names", f"must be a non-empty list of model names, got {names!r}")
        torchvision = self.flag("tea_use_torchvision", False)
        return [self.model(name, torchvision, "teacher_model_names") for name in names]

    def zca(self, dataset: str) -> bool:
        zca = self.flag("use_zca", False)
        if zca and dataset not in ZCA_DATASETS:
            raise self.error(
                "use_zca", f"ZCA whitening applies to {', '.join(ZCA_DATASETS)} only, not {dataset!r}"
            )
        return zca

    def augment(self, size: int) -> dict[str, Any]:
        func = self.value("data_aug_func")
        if isinstance(func, str) and func.lower() == "none":
            func = None
        func = self.choice("data_aug_func", ("dsa", "mixup", "cutmix"), None) if func is not None else None
        params = self.mapping("aug_params")
        if func is None and params:
            raise self.error(
                "aug_params", "is set but data_aug_func is none; set data_aug_func or remove aug_params"
            )
        spec: dict[str, Any] = {}
        if func == "dsa":
            self.check_dsa_params(params)
            spec.update(dsa=DEFAULT_STRATEGY, dsa_mode="S")
        elif func is not None:
            spec[func] = self.mix_strength(func, params)
        transforms, crop = self.train_transforms(size)
        if crop:
            if "dsa" in spec:
                raise self.error(
                    "custom_train_trans",
                    "RandomCrop cannot be combined with data_aug_func dsa (DSA crops already)",
                )
            spec.update(dsa="crop", dsa_mode="M")
        spec["transforms"] = transforms
        return spec

    def check_dsa_params(self, params: dict[str, Any]) -> None:
        defaults = DSAParams()
        for name, value in params.items():
            if name not in _DSA_PARAMS:
                raise self.error(
                    "aug_params",
                    f"has no DSA parameter {name!r}; DSA takes {', '.join(sorted(set(_DSA_PARAMS)))}",
                )
            reference = getattr(defaults, _DSA_PARAMS[name])
            strength = self.check_number(f"aug_params.{name}", value, 0.0)
            if not math.isclose(strength, reference):
                raise self.error(
                    f"aug_params.{name}",
                    f"{value!r} differs from the DSA reference strength {reference}; "
                    "ddrank's DSA uses the reference strengths only",
                )

    def mix_strength(self, func: str, params: dict[str, Any]) -> float:
        names = _MIX_PARAMS[func]
        for name in params:
            if name not in names:
                raise self.error(
                    "aug_params", f"has no {name!r} for data_aug_func {func}; it takes {names[0]}"
                )
        given = {
            self.check_number(f"aug_params.{n}", params[n], 0.0, strict=True) for n in names if n in params
        }
        if len(given) > 1:
            raise self.error("aug_params", f"gives {func} two different strengths: {sorted(given)}")
        return given.pop() if given else _MIX_DEFAULTS[func]

    def train_transforms(self, size: int) -> tuple[list[dict[str, Any]], bool]:
        steps = self.value("custom_train_trans", [])
        if not isinstance(steps, list):
            raise self.error("custom_train_trans", f"must be a list of {{name, args}} steps, got {steps!r}")
        out: list[dict[str, Any]] = []
        crop = False
        for step in steps:
            name = step.get("name") if isinstance(step, Mapping) else None
            args = dict(step.get("args") or {}) if isinstance(step, Mapping) else {}
            if name == "RandomResizedCrop":
                self.check_size(args.get("size", size), size)
                out.append(
                    {"name": "random_resized_crop"}
                    | {k: list(args[k]) for k in ("scale", "ratio") if args.get(k) is not None}
                )
            elif name == "RandomHorizontalFlip":
                out.append({"name": "flip"} | ({"p": args["p"]} if "p" in args else {}))
            elif name == "RandomCrop":
                self.check_size(args.get("size", size), size)
                padding = args.get("padding", 0)
                if (
                    not isinstance(padding, int)
                    or isinstance(padding, bool)
                    or padding / size != DSAParams().crop
                ):
                    raise self.error(
                        "custom_train_trans",
                        f"RandomCrop padding {padding!r} on {size}-px images has no ddrank "
                        f"equivalent; only padding {int(size * DSAParams().crop)} (a DSA crop) translates",
                    )
                crop = True
            elif name not in _PIPELINE_ONLY:
                supported = ("RandomResizedCrop", "RandomHorizontalFlip", "RandomCrop", *_PIPELINE_ONLY)
                raise self.error(
                    "custom_train_trans", f"step {step!r} is not supported; use {', '.join(supported)}"
                )
        try:
            transforms_from_spec(out)
        except (ConfigError, UnknownNameError) as exc:
            raise self.error("custom_train_trans", str(exc)) from None
        return out, crop

    def check_size(self, given: Any, size: int) -> None:
        if given not in (size, [size, size], (size, size)):
            raise self.error(
                "custom_train_trans", f"crop size {given!r} differs from the dataset's {size}-px images"
            )

    def optimizer(self) -> dict[str, Any]:
        name = self.choice("optimizer", ("sgd", "adam", "adamw"), "sgd")
        spec: dict[str, Any] = {"name": name, "weight_decay": self.number("weight_decay", 0.0005, 0.0)}
        if name == "sgd":
            momentum = self.number("momentum", 0.9, 0.0, 1.0)
            if momentum >= 1.0:
                raise self.error("momentum", f"must be below 1, got {momentum}")
            spec["momentum"] = momentum
            return spec
        momentum = self.value("momentum")
        if isinstance(momentum, list | tuple):
            if len(momentum) != 2:
                raise self.error("momentum", f"for {name} must be a pair of betas, got {momentum!r}")
            betas = tuple(self.check_number("momentum", b, 0.0, 1.0) for b in momentum)
            if max(betas) >= 1.0:
                raise self.error("momentum", f"betas must be below 1, got {momentum!r}")
            spec["betas"] = betas
        elif momentum is not None:
            self.notes.append(f"momentum {momentum!r} is unused by {name} (only a pair of betas is)")
        return spec

    def schedule(self, epochs: int) -> dict[str, Any]:
        if self.value("lr_scheduler") == "lambda_step":
            raise self.error(
                "lr_scheduler",
                f"'lambda_step' (linear decay) has no ddrank schedule; use one of {', '.join(_SCHEDULERS)}",
            )
        name = self.choice("lr_scheduler", _SCHEDULERS, "step")
        if name != "step":
            if self.has("step_size"):
                raise self.error("step_size", f"applies to lr_scheduler step only, not {name!r}; remove it")
            if name in ("cosine", "lambda_cos"):
                self.notes.append(
                    f"lr_scheduler {name!r} is DD-Ranking's 0.5 (1 + cos(pi t / 2T)), ending at half the "
                    "base lr; ddrank's cosine schedule decays to zero"
                )
            return {"kind": "cosine"}
        step_size = self.optional_integer("step_size")
        if step_size is None:
            self.notes.append("no step_size: the lr drops x0.1 at half the epochs")
            return {"kind": "step", "milestones": [0.5], "gamma": 0.1}
        drops = list(range(step_size, epochs, step_size))
        if not drops:
            self.notes.append(f"step_size {step_size} >= num_epochs {epochs}: the lr never drops")
            return {"kind": "constant"}
        return {"kind": "step", "milestones": [_fraction(d, epochs) for d in drops], "gamma": 0.1}

    def full_data(
        self, metric: Metric, dataset: str, model: str
    ) -> tuple[FullDataRecipe, float | str | None]:
        recipe = _preset_recipe(dataset, model)
        if recipe is None:
            recipe = FullDataRecipe()
            self.notes.append(
                f"no shipped preset trains {model} on {dataset}: acc(real, hard) uses the default recipe"
            )
        if metric != "lrs":
            return recipe, None
        if self.flag("eval_full_data", False):
            if self.has("real_batch_size"):
                recipe = recipe.model_copy(update={"batch_size": self.integer("real_batch_size", 256)})
            return recipe, None
        if recipe.published_acc is None:
            raise self.error(
                "eval_full_data",
                f"is false, but there is no published full-data accuracy for {model} on {dataset}; "
                "set eval_full_data: true to train acc(real, hard)",
            )
        return recipe, "published"

    def note_unmapped(self, metric: Metric, soft: bool, augment: dict[str, Any]) -> None:
        enabled = any(augment.get(k) for k in ("dsa", "mixup", "cutmix", "transforms"))
        if metric == "lrs" and soft and enabled and not self.raw.get("use_aug_for_hard", False):
            self.notes.append(
                "use_aug_for_hard is false: DD-Ranking trains acc(syn, hard) without augmentation, "
                "ddrank with the protocol's augmentation"
            )
        if self.has("default_lr"):
            self.notes.append(
                "default_lr is not read by DD-Ranking v0.2.0's metrics; ddrank uses the set's own lr when it "
                "ships one and otherwise searches the lr grid"
            )
        if augment["transforms"]:
            self.notes.append(
                "DD-Ranking applies custom_train_trans to image-folder sets only; ddrank applies the "
                "transforms to every training set of the protocol"
            )


def _fraction(epoch: int, epochs: int) -> float:
    """The milestone fraction m with ``int(m * epochs) == epoch`` (plain division can land one below)."""
    m = epoch / epochs
    while int(m * epochs) < epoch:
        m = math.nextafter(m, 1.0)
    return m


@cache
def _preset_recipe(dataset: str, model: str) -> FullDataRecipe | None:
    """The full-data recipe of the first shipped preset that trains ``model`` on ``dataset``."""
    for name in preset_names():
        if dataset not in (preset(name).get("datasets") or ()):
            continue
        protocol = load_protocol(name, dataset=dataset)
        if (protocol.full_data.model or protocol.model) == model:
            return protocol.full_data
    return None

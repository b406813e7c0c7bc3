"""The settings of one evaluation run, validated once: every entry point (the command line,
``ddrank.evaluate``, the DD-Ranking classes and configurations, the demo, sweeps) builds a
:class:`RunSettings` and hands it down, so no setting is checked, defaulted or forgotten twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ddrank.data.real import dataset_info
from ddrank.engine.options import EngineOptions, Precision, default_precision
from ddrank.engine.runner import BACKENDS, Backend
from ddrank.errors import DDRankError, InputError, UnknownNameError
from ddrank.metrics.definitions import METRICS
from ddrank.metrics.scores import DEFAULT_WEIGHT
from ddrank.protocols import Protocol, default_protocol, load_protocol

if TYPE_CHECKING:
    from ddrank.compat.ddranking_config import TranslatedConfig

Fidelity = Literal["reference", "honest"]
PRECISIONS = ("auto", "fp32", "bf16")


class SettingError(InputError):
    """A run setting is invalid; ``setting`` names it (the command line shows it as its flag)."""

    def __init__(self, setting: str, problem: str):
        self.setting, self.problem = setting, problem
        super().__init__(f"{setting} {problem}")

    def renamed(self, name: str) -> SettingError:
        """The same problem, naming the setting as ``name`` (e.g. the command-line flag)."""
        return SettingError(name, self.problem)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device; None and "auto" mean CUDA when available, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingError(
            "device", f"must name a torch device (cpu, cuda, cuda:1, ...), got {device!r}"
        ) from None


def real_accuracy(value: Any) -> float | Literal["published"] | None:
    """A given acc(real, hard): None (train it), 'published' (the protocol's), or a fraction in [0, 1]."""
    if value is None or value == "published":
        return value
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = None
    if fraction is None or isinstance(value, bool) or not 0.0 <= fraction <= 1.0:
        hint = ""
        if fraction is not None and fraction > 1:
            hint = f" (accuracies are fractions, not percentages: {fraction:g}% is {fraction / 100:g})"
        raise SettingError("real_acc", f"must be a fraction in [0, 1] or 'published', got {value!r}{hint}")
    return fraction


class RunSettings(BaseModel):
    """What one evaluation run computes (dataset, protocol, metric, rounds, seed, weight, acc(real))
    and how it executes (teachers, backend, device, precision, engine options).

    ``protocol`` is a preset name, a YAML path or a :class:`~ddrank.protocols.Protocol` (default:
    the dataset's preset). ``fidelity`` (``reference`` or ``honest``; None: the source's default,
    ``reference`` for DD-Ranking configurations and ``honest`` for presets) resolves the protocol; it is
    part of the protocol's content hash and so of every job and store key. ``download`` fetches a
    missing dataset into ``data_root`` (default: the cache's ``data/``); ``calibration`` is a table of
    published baselines (default: the packaged one) that random-subset and whole-data accuracies
    are compared with. Invalid values raise
    :class:`SettingError` (an :class:`~ddrank.errors.InputError`) naming the setting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    dataset: str = "digits"
    data_root: str | None = None
    protocol: str | Protocol | None = None
    ipc: int | None = None
    metric: str = "lrs"
    rounds: int | None = None
    seed: int = 0
    weight: float = DEFAULT_WEIGHT
    real_acc: float | Literal["published"] | None = None
    teacher_dir: str | None = None
    teachers: tuple[str, ...] = ()
    backend: Backend = "auto"
    device: str | None = None
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    options: EngineOptions = EngineOptions()
    fidelity: Fidelity | None = None
    download: bool = False
    calibration: str | None = None

    def __init__(self, **fields: Any):
        unknown = sorted(set(fields) - set(type(self).model_fields))
        if unknown:
            raise UnknownNameError("setting", unknown[0], type(self).model_fields)
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise _setting_error(exc) from None

    # -- validation: every rule lives here ---------------------------------------------------------

    @field_validator("dataset", mode="before")
    @classmethod
    def _known_dataset(cls, value: Any) -> str:
        return dataset_info(str(value)).name  # canonical name; unknown names say the closest one

    @field_validator("data_root", "teacher_dir", "calibration", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> str | None:
        return None if value is None else os.fspath(value)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_source(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("teachers", mode="before")
    @classmethod
    def _teacher_paths(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str | os.PathLike):
            value = [value]
        try:
            return tuple(os.fspath(path) for path in value)
        except TypeError:
            raise SettingError("teachers", f"must be checkpoint paths, got {value!r}") from None

    @field_validator("download", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise SettingError("download", f"must be True or False, got {value!r}")
        return value

    @field_validator("ipc", mode="before")
    @classmethod
    def _positive_ipc(cls, value: Any) -> int | None:
        if value is not None and (not _is_int(value) or value < 1):
            raise SettingError("ipc", f"must be a positive integer; got {value!r}")
        return value

    @field_validator("metric", mode="before")
    @classmethod
    def _known_metric(cls, value: Any) -> str:
        if value not in METRICS:
            raise UnknownNameError("metric", str(value), METRICS)
        return value

    @field_validator("rounds", mode="before")
    @classmethod
    def _positive_rounds(cls, value: Any) -> int | None:
        if value is not None and (not _is_int(value) or value < 1):
            raise SettingError("rounds", f"must be at least 1, got {value!r}")
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _integer_seed(cls, value: Any) -> int:
        if not _is_int(value) or value < 0:
            raise SettingError("seed", f"must be a non-negative integer, got {value!r}")
        return value

    @field_validator("weight", mode="before")
    @classmethod
    def _unit_weight(cls, value: Any) -> float:
        try:
            weight = float(value)
        except (TypeError, ValueError):
            weight = None
        if weight is None or isinstance(value, bool) or not 0.0 <= weight <= 1.0:
            raise SettingError("weight", f"must lie in [0, 1], got {value!r}")
        return weight

    @field_validator("real_acc", mode="before")
    @classmethod
    def _real_accuracy(cls, value: Any) -> float | str | None:
        return real_accuracy(value)

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, value: Any) -> str:
        if value not in BACKENDS:
            raise UnknownNameError("backend", str(value), BACKENDS)
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: Any) -> str:
        if value not in PRECISIONS:
            raise SettingError("precision", f"must be one of {', '.join(PRECISIONS)}, got {value!r}")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _usable_device(cls, value: Any) -> str | None:
        if value is None:
            return None
        device = resolve_device(value)
        if device.type not in ("cpu", "cuda"):
            raise SettingError(
                "device", f"{str(value)!r} is not supported: ddrank trains on cpu or cuda (cuda:1, ...)"
            )
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SettingError("device", f"{str(value)!r} was asked for but CUDA is not available; use cpu")
        if device.type == "cuda" and device.index is not None:
            count = torch.cuda.device_count()
            if device.index >= count:
                raise SettingError(
                    "device",
                    f"{str(value)!r} does not exist: this machine has {count} CUDA device(s), "
                    f"cuda:0 to cuda:{count - 1}",
                )
        return str(value)

    @model_validator(mode="after")
    def _precision_fits_device(self) -> RunSettings:
        if self.precision == "bf16" and self.torch_device.type == "cpu":
            raise SettingError("precision", "bf16 is for CUDA devices; use fp32 on the CPU")
        return self

    # -- derived values ----------------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        """The device students train on (CUDA when available unless one was named)."""
        return resolve_device(self.device)

    def precision_for(self, protocol: Protocol) -> Precision:
        """fp32 or bf16 for the students of ``protocol``. ``auto`` is fp32 for a reference protocol
        (the published evaluations train in fp32) and, for any other, bf16 autocast on CUDA devices
        that support it, fp32 elsewhere. An explicit bf16 under a reference protocol is said as a
        deviation (:func:`ddrank.protocols.protocol.precision_deviation`)."""
        if self.precision != "auto":
            return self.precision
        return "fp32" if protocol.fidelity == "reference" else default_precision(self.torch_device)

    @property
    def protocol_source(self) -> str | Protocol:
        """The protocol as given, or the dataset's default (:func:`ddrank.protocols.default_protocol`)."""
        return self.protocol if self.protocol is not None else default_protocol(self.dataset)

    # -- building ----------------------------------------------------------------------------------

    def fields(self) -> dict[str, Any]:
        """Every setting by name, values as held (a Protocol stays a Protocol)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def replace(self, **changes: Any) -> RunSettings:
        """A validated copy with some settings changed."""
        return type(self)(**(self.fields() | changes))

    @classmethod
    def from_translated(cls, config: TranslatedConfig, **overrides: Any) -> RunSettings:
        """The settings of a translated DD-Ranking configuration; ``overrides`` that are not None win."""
        fields = {
            "dataset": config.dataset,
            "data_root": config.data_root,
            "protocol": config.protocol,
            "ipc": config.ipc,
            "metric": config.metric,
            "rounds": config.rounds,
            "teacher_dir": config.teacher_dir,
            "real_acc": config.real_acc,
            "weight": config.weight,
            "seed": config.seed,
            "fidelity": config.fidelity,
        }
        fields |= {name: value for name, value in overrides.items() if value is not None}
        return cls(**{name: value for name, value in fields.items() if value is not None})

    def for_students(self, students: Sequence[str]) -> list[RunSettings]:
        """One settings per student model (a cross-architecture matrix): the protocol, resolved for the
        dataset and IPC, with its student replaced. An empty list or name, or a student named twice (in
        any spelling of its registered name), is refused: it would train nothing, or the same twice."""
        from ddrank.models import canonical_model_name

        if not students:
            raise SettingError("students", "must name at least one model (e.g. ConvNet-3,MLP)")
        seen: dict[str, str] = {}
        for student in students:
            if not student.strip():
                raise SettingError("students", "has an empty model name; separate names by single commas")
            canonical = canonical_model_name(student.strip())
            if canonical in seen:
                spellings = "" if seen[canonical] == student else f" ({seen[canonical]!r} and {student!r})"
                raise SettingError("students", f"names {canonical} twice{spellings}; give each student once")
            seen[canonical] = student
        source = self.protocol_source
        base = (
            source
            if isinstance(source, Protocol)
            else load_protocol(source, dataset=self.dataset, ipc=self.ipc, fidelity=self.fidelity)
        )
        return [self.replace(protocol=base.with_overrides(model=model)) for model in seen]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _setting_error(exc: ValidationError) -> DDRankError:
    """The first problem of a failed validation as the DDRankError a user can act on."""
    first = exc.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, DDRankError):
        return original
    setting = ".".join(str(part) for part in first["loc"]) or "settings"
    return SettingError(setting, f"{first['msg'][0].lower()}{first['msg'][1:]}, got {first['input']!r}")

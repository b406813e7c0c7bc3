"""Protocol presets: named, versioned YAML files, resolved per dataset, IPC and fidelity.

A preset document holds the ``honest`` protocol (``protocol`` plus ``overrides`` rules whose
``set`` applies when their ``when`` matches the dataset / IPC) and what its ``reference`` form
changes in it (top-level ``reference``, then each matching rule's ``reference``), the published
protocol the reference form reproduces (``reference_source``; absent: none is published), where
every setting comes from (``sources``), the reference form's known ``deviations`` from its source,
and ``reasons`` for preset-specific differences between the two forms. Every difference between
the forms becomes a deviation of the honest form; a difference without a reason is an error.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ddrank.errors import ConfigError, UnknownNameError
from ddrank.protocols.files import parse_yaml, read_mapping
from ddrank.protocols.protocol import (
    FIDELITIES,
    METADATA_FIELDS,
    STANDARD_DEVIATIONS,
    AugmentSpec,
    Deviation,
    Fidelity,
    FullDataRecipe,
    LabelSpec,
    LrSearch,
    OptimizerSpec,
    Protocol,
    ScheduleSpec,
    derived_deviations,
    deviation,
    fidelity_deviations,
    metric_deviations,
    unique_deviations,
    validated_protocol,
)

__all__ = [
    "FIDELITIES",
    "AugmentSpec",
    "Deviation",
    "Fidelity",
    "FullDataRecipe",
    "LabelSpec",
    "LrSearch",
    "OptimizerSpec",
    "Protocol",
    "ScheduleSpec",
    "default_protocol",
    "deviation",
    "load_protocol",
    "metric_deviations",
    "preset",
    "preset_names",
    "resolve",
    "validated_protocol",
]


@cache
def _presets() -> dict[str, dict[str, Any]]:
    folder = resources.files("ddrank.protocols") / "presets"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = parse_yaml(entry.read_text(), f"preset {entry.name!r}")
            found[doc["name"].lower()] = doc
    return found


def preset_names() -> list[str]:
    return [doc["name"] for doc in _presets().values()]


def preset(name: str) -> dict[str, Any]:
    """The raw preset document (name, description, datasets, protocol, overrides, ...)."""
    try:
        return _presets()[name.lower()]
    except KeyError:
        raise UnknownNameError("protocol", name, preset_names()) from None


# The founding papers' hard-label protocols, in the order a dataset without a preset of its own takes them.
DEFAULT_FAMILY = ("dsa", "dc", "dm", "mtt")


def default_protocol(dataset: str) -> str:
    """The preset a dataset is evaluated under when no protocol is given: its own (digits), else the
    first founding-paper preset that covers it (DSA for CIFAR, TinyImageNet, the MNIST family, SVHN).
    A dataset none covers is a ConfigError naming the presets that do cover it, if any."""
    names = {name.lower(): name for name in preset_names()}
    if dataset.lower() in names:
        return names[dataset.lower()]
    for name in DEFAULT_FAMILY:
        if dataset in (preset(name).get("datasets") or ()):
            return name
    covering = [name for name in preset_names() if dataset in (preset(name).get("datasets") or ())]
    if covering:
        raise ConfigError(
            f"dataset {dataset!r} has no default protocol (its presets need teachers or soft labels): "
            f"pass --protocol, one of {', '.join(covering)}"
        )
    raise ConfigError(
        f"no preset covers dataset {dataset!r}: pass --protocol with a protocol YAML file "
        "(see PROTOCOLS.md; ddrank protocol show dsa --dataset cifar10 prints one to start from)"
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _matches(when: dict[str, Any], dataset: str | None, ipc: int | None) -> bool:
    for field, value in when.items():
        actual = {"dataset": dataset, "ipc": ipc}.get(field, KeyError)
        if actual is KeyError:
            raise ConfigError(f"override condition on unknown field {field!r} (use 'dataset' or 'ipc')")
        allowed = value if isinstance(value, list) else [value]
        if actual not in allowed:
            return False
    return True


PRESET_KEYS = (
    "name",
    "version",
    "description",
    "datasets",
    "protocol",
    "overrides",
    "reference",
    "reference_source",
    "sources",
    "reasons",
    "deviations",
)
RULE_KEYS = ("when", "set", "reference", "reference_source", "sources", "reasons", "deviations")


def _check_keys(found: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in found if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(allowed)})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


FILE_METADATA = ("version", *sorted(METADATA_FIELDS - {"name"}))
"""Keys a protocol file keeps at its top, beside ``protocol`` (the name too): what the file says about
the protocol, never a setting of it."""


def _texts(value: Any, where: str) -> dict[str, str]:
    """A mapping of setting names to sentences (``sources``, ``reasons``): anything else is refused."""
    found = _mapping(value, where)
    for key, text in found.items():
        if not isinstance(text, str):
            raise ConfigError(f"{where}: {key} must be a sentence (a string), not {type(text).__name__}")
    return found


def _deviations(value: Any, where: str) -> list[Deviation]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: deviations must be a list of {{key, source_value, ddrank_value, ...}}")
    try:
        return [
            deviation(
                d["key"],
                d["source_value"],
                d["ddrank_value"],
                d["reason"],
                moves_score=d["moves_score"],
                kind=d.get("kind", "changed"),
            )
            for d in value
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: malformed deviation ({type(exc).__name__}: {exc})") from None


def _check_fidelity(fidelity: str | None, default: Fidelity) -> Fidelity:
    if fidelity is None:
        return default
    if fidelity not in FIDELITIES:
        raise ConfigError(f"fidelity must be 'reference' or 'honest', not {fidelity!r}")
    return fidelity  # type: ignore[return-value]


def resolve(
    doc: dict[str, Any], dataset: str | None = None, ipc: int | None = None, fidelity: str | None = None
) -> Protocol:
    """Build the protocol a preset document defines for ``dataset``, ``ipc`` and ``fidelity``
    (default ``honest``)."""
    chosen = _check_fidelity(fidelity, "honest")
    name = doc.get("name", "custom")
    where = f"protocol {name!r}"
    _check_keys(doc, PRESET_KEYS, where)
    rules = doc.get("overrides") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}: overrides must be a list of {{when, set}} rules")
    for rule in rules:
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: each override must be a mapping with 'when' and 'set'")
        _check_keys(rule, RULE_KEYS, f"{where}: override")
    datasets = doc.get("datasets")
    if datasets is not None and (
        not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets)
    ):
        raise ConfigError(f"{where}: datasets must be a list of dataset names, got {datasets!r}")
    if dataset is not None and datasets and dataset not in datasets:
        raise ConfigError(
            f"protocol {name!r} is defined for {', '.join(datasets)}, not {dataset!r}; "
            "pick a protocol for this dataset (ddrank list protocols)"
        )
    honest = dict(_mapping(doc.get("protocol"), f"{where}: protocol"))
    misplaced = sorted({"name", *FILE_METADATA} & set(honest))
    if misplaced:  # it would be overwritten by the file's own (or the default) without a word
        raise ConfigError(
            f"{where}: protocol.{misplaced[0]} belongs at the top of the file, beside 'protocol'"
        )
    changes = [_mapping(doc.get("reference"), f"{where}: reference")]
    sources = dict(_texts(doc.get("sources"), f"{where}: sources"))
    reasons = dict(_texts(doc.get("reasons"), f"{where}: reasons"))
    found = _deviations(doc.get("deviations"), where)
    reference_source = doc.get("reference_source")
    for rule in rules:
        if _matches(_mapping(rule.get("when"), f"{where}: when"), dataset, ipc):
            honest = _merge(honest, _mapping(rule.get("set"), f"{where}: set"))
            changes.append(_mapping(rule.get("reference"), f"{where}: reference"))
            sources.update(_texts(rule.get("sources"), f"{where}: sources"))
            reasons.update(_texts(rule.get("reasons"), f"{where}: reasons"))
            found += _deviations(rule.get("deviations"), where)
            reference_source = rule.get("reference_source", reference_source)
    # The reference form is the honest form with every matching reference change, in order.
    reference = honest
    for change in changes:
        reference = _merge(reference, change)
    honest, reference = dict(honest), dict(reference)
    # A protocol that selects on the test set is a reference protocol, whether it says so or not.
    declared = honest.get("fidelity") or ("reference" if honest.get("selection") == "reference" else None)
    if declared is not None:
        # A protocol that declares its fidelity has that one form only.
        _check_fidelity(declared, "honest")
        if fidelity is not None and fidelity != declared:
            raise ConfigError(
                f"protocol {name!r} declares fidelity {declared!r} and has no {fidelity!r} form; "
                "remove 'fidelity' from it to get both"
            )
    meta = {
        "name": name,
        "version": doc.get("version", 1),
        "description": doc.get("description", ""),
        "sources": {str(k): str(v) for k, v in sources.items()},
        "reference_source": reference_source,
    }
    for fields in (honest, reference):
        if dataset is not None and fields.get("dataset") not in (None, dataset):
            raise ConfigError(f"protocol {name!r} sets dataset {fields['dataset']!r}, not {dataset!r}")
        fields.setdefault("dataset", dataset if dataset is not None else (datasets[0] if datasets else None))
        fields.setdefault("ipc", ipc)
    if declared is not None:
        only = validated_protocol(honest | meta | {"fidelity": declared})
        return only.model_copy(
            update={
                "deviations": unique_deviations([*STANDARD_DEVIATIONS, *found, *derived_deviations(only)])
            }
        )
    ref = validated_protocol(reference | meta | {"fidelity": "reference", "selection": "reference"})
    ref = ref.model_copy(
        update={"deviations": unique_deviations([*STANDARD_DEVIATIONS, *found, *derived_deviations(ref)])}
    )
    if chosen == "reference":
        return ref
    out = validated_protocol(honest | meta | {"fidelity": "honest"})
    changes = fidelity_deviations(ref, out, reasons)
    return out.model_copy(
        update={
            "deviations": unique_deviations(
                [*STANDARD_DEVIATIONS, *found, *derived_deviations(out), *changes]
            )
        }
    )


def _is_ddranking(doc: dict[str, Any]) -> bool:
    """A DD-Ranking configuration names its student ``model_name`` (ddrank protocols say ``model``)."""
    return "protocol" not in doc and "model_name" in doc and "model" not in doc


def load_protocol(
    name_or_path: str | os.PathLike,
    *,
    dataset: str | None = None,
    ipc: int | None = None,
    fidelity: str | None = None,
) -> Protocol:
    """A preset by name, a YAML protocol file, or a DD-Ranking configuration file, resolved for
    ``dataset``, ``ipc`` and ``fidelity`` (presets and protocol files default to ``honest``,
    DD-Ranking configurations to ``reference``)."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml", ".json"}:
        doc = read_mapping(path, "protocol file")
        if _is_ddranking(doc):
            return _translated(path, dataset, ipc, fidelity)
        if path.suffix == ".json":
            raise ConfigError(
                f"protocol file {str(path)!r}: ddrank protocols are YAML; JSON is read as DD-Ranking"
            )
        if "protocol" not in doc:
            # a flat file (as protocol show prints it): its metadata goes where a preset keeps it
            meta = {key: doc.pop(key) for key in ("datasets", *FILE_METADATA) if key in doc}
            doc = {"name": doc.pop("name", path.stem), **meta, "protocol": doc}
        return resolve(doc, dataset, ipc, fidelity)
    if str(name_or_path).lower() not in _presets() and path.exists():
        kind = "a folder" if path.is_dir() else "a file"
        raise ConfigError(
            f"protocol {str(path)!r} is {kind}, not a protocol YAML file (.yaml, .yml) or a preset "
            "(ddrank list protocols)"
        )
    return resolve(preset(str(name_or_path)), dataset, ipc, fidelity)


def _translated(path: Path, dataset: str | None, ipc: int | None, fidelity: str | None) -> Protocol:
    from ddrank.compat.ddranking_config import translate_ddranking_config

    translated = translate_ddranking_config(path, fidelity=_check_fidelity(fidelity, "reference"))
    protocol = translated.protocol
    if dataset is not None and protocol.dataset != dataset:
        raise ConfigError(
            f"DD-Ranking configuration {str(path)!r} is for dataset {protocol.dataset!r}, not {dataset!r}"
        )
    if ipc is not None and protocol.ipc not in (None, ipc):
        raise ConfigError(f"DD-Ranking configuration {str(path)!r} is for IPC {protocol.ipc}, not {ipc}")
    return protocol

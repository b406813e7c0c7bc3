"""Protocol presets: named, versioned YAML files, resolved per dataset and IPC."""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ddrank.errors import ConfigError, UnknownNameError
from ddrank.protocols.protocol import (
    AugmentSpec,
    FullDataRecipe,
    LabelSpec,
    OptimizerSpec,
    Protocol,
    ScheduleSpec,
    validated_protocol,
)

__all__ = [
    "AugmentSpec",
    "FullDataRecipe",
    "LabelSpec",
    "OptimizerSpec",
    "Protocol",
    "ScheduleSpec",
    "load_protocol",
    "preset",
    "preset_names",
    "validated_protocol",
]


@cache
def _presets() -> dict[str, dict[str, Any]]:
    folder = resources.files("ddrank.protocols") / "presets"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = yaml.safe_load(entry.read_text())
            found[doc["name"].lower()] = doc
    return found


def preset_names() -> list[str]:
    return [doc["name"] for doc in _presets().values()]


def preset(name: str) -> dict[str, Any]:
    """The raw preset document (name, description, datasets, protocol, overrides)."""
    try:
        return _presets()[name.lower()]
    except KeyError:
        raise UnknownNameError("protocol", name, preset_names()) from None


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


PRESET_KEYS = ("name", "version", "description", "datasets", "protocol", "overrides")
RULE_KEYS = ("when", "set")


def _check_keys(found: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in found if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(allowed)})")


def resolve(doc: dict[str, Any], dataset: str | None = None, ipc: int | None = None) -> Protocol:
    """Build the protocol a preset document defines for ``dataset`` and ``ipc``."""
    name = doc.get("name", "custom")
    _check_keys(doc, PRESET_KEYS, f"protocol {name!r}")
    for rule in doc.get("overrides", []):
        _check_keys(rule, RULE_KEYS, f"protocol {name!r}: override")
    datasets = doc.get("datasets")
    if dataset is not None and datasets and dataset not in datasets:
        raise ConfigError(
            f"protocol {name!r} is defined for {', '.join(datasets)}, not {dataset!r}; "
            "pick a protocol for this dataset (ddrank list protocols)"
        )
    fields = dict(doc.get("protocol", {}))
    for rule in doc.get("overrides", []):
        if _matches(rule.get("when", {}), dataset, ipc):
            fields = _merge(fields, rule.get("set", {}))
    fields.update(name=name, version=doc.get("version", 1), description=doc.get("description", ""))
    if dataset is not None and fields.get("dataset") not in (None, dataset):
        raise ConfigError(f"protocol {name!r} sets dataset {fields['dataset']!r}, not {dataset!r}")
    fields.setdefault("dataset", dataset if dataset is not None else (datasets[0] if datasets else None))
    fields.setdefault("ipc", ipc)
    return validated_protocol(fields)


def load_protocol(
    name_or_path: str | os.PathLike, *, dataset: str | None = None, ipc: int | None = None
) -> Protocol:
    """A preset by name, or a YAML file in the preset format, resolved for ``dataset`` and ``ipc``."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"protocol file {str(path)!r} does not exist")
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict):
            raise ConfigError(f"protocol file {str(path)!r} must hold a mapping")
        if "protocol" not in doc:
            meta = {key: doc.pop(key) for key in ("version", "description", "datasets") if key in doc}
            doc = {"name": doc.pop("name", path.stem), **meta, "protocol": doc}
        return resolve(doc, dataset, ipc)
    return resolve(preset(str(name_or_path)), dataset, ipc)

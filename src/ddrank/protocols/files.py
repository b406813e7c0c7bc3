"""Reading YAML and JSON configuration files into plain values, every failure a one-line ConfigError.

Only plain YAML is read (``yaml.SafeLoader``): ``!!python/...`` tags are refused, never constructed.
Binary or non-UTF-8 files, tabs used for indentation, syntax errors, oversized files and alias
bombs are refused with the file name, the line and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ddrank.errors import ConfigError

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 256


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with more than :data:`MAX_ALIASES` aliases (YAML bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(
                    problem=f"more than {MAX_ALIASES} aliases (*name references)", problem_mark=mark
                )
        return super().compose_node(parent, index)


def read_text(path: str | os.PathLike, what: str) -> str:
    """The file's text, refusing missing, oversized, binary and non-UTF-8 files."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{what} {str(file)!r} is a folder, not a file")
    if not file.is_file():
        raise ConfigError(f"{what} {str(file)!r} does not exist")
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"{what} {str(file)!r} is {size} bytes; configuration files are at most {MAX_FILE_BYTES} bytes"
        )
    data = file.read_bytes()
    if b"\x00" in data:
        raise ConfigError(f"{what} {str(file)!r} is a binary file, not YAML or JSON text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(file)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML or JSON"
        ) from None


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` with every error as a one-line ConfigError naming ``where``."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        tag = str(exc.problem or "").partition("tag ")[2].strip() or "an unsafe tag"
        line = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise ConfigError(
            f"{where}: {tag}{line} is not plain YAML; ddrank never constructs Python objects from files"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        hint = "; indent with spaces, not tabs" if "\\t" in problem or "tab" in problem else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{where}: invalid YAML: {first}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None


def read_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A ``.yaml`` / ``.yml`` / ``.json`` file holding one mapping, as a dict."""
    file = Path(path)
    where = f"{what} {str(file)!r}"
    if file.suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"{where}: unsupported format; use a .yaml, .yml or .json file")
    text = read_text(file, what)
    if file.suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise ConfigError(f"{where}: JSON nested too deeply") from None
    else:
        loaded = parse_yaml(text, where)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where} must hold a mapping of keys to values, not {type(loaded).__name__}")
    return loaded

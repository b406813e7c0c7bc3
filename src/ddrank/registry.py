"""Name → object registries (models, datasets, losses, protocols, ...).

Names are matched case-insensitively; an unknown name raises :class:`UnknownNameError` with
the closest valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ddrank.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    description: str


class Registry(Generic[T]):
    """A case-insensitive mapping from names to registered objects."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, *, aliases: tuple[str, ...] = (), description: str = ""
    ) -> Callable[[T], T]:
        """Decorator registering ``value`` under ``name`` (and ``aliases``)."""

        def add(value: T) -> T:
            self.add(name, value, aliases=aliases, description=description)
            return value

        return add

    def add(self, name: str, value: T, *, aliases: tuple[str, ...] = (), description: str = "") -> None:
        key = name.lower()
        if key in self._entries or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if not description and getattr(value, "__doc__", None):
            description = (value.__doc__ or "").strip().splitlines()[0]
        self._entries[key] = Entry(name, value, description)
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name``; raises UnknownNameError."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[key].name

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name).lower()].value

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._entries or key in self._aliases

    def names(self) -> list[str]:
        return [e.name for e in self._entries.values()]

    def entries(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

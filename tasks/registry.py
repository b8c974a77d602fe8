"""A tiny name -> object registry shared by data sources, model adapters, task kinds and metrics.

Adding an entry is one new module in the registry's package whose definition is decorated with
``register(name)``: the registry imports every module of its package on first lookup, so nothing
dispatches on names with if/elif and nothing lists the entries by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """Unknown or duplicate registry entry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Entries of one kind; ``package`` is imported module by module (those in ``skip`` and
    those starting with "_" excepted) before the first lookup, so its modules register."""

    def __init__(self, kind: str, package: str | None = None, skip: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.package = package
        self.skip = skip
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    def add(self, name: str, value: T) -> T:
        if name in self._entries and self._entries[name] is not value:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@SOURCES.register("manifest")``."""
        return lambda value: self.add(name, value)

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def load(self) -> None:
        if not self._loaded and self.package is not None:
            self._loaded = True
            import_submodules(self.package, self.skip)


def import_submodules(package: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Import every module of ``package`` (not those in ``skip`` or starting with "_")."""
    names = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("_") or info.name in skip:
            continue
        importlib.import_module(f"{package}.{info.name}")
        names.append(info.name)
    return names

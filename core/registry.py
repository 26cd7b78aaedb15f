"""Open registries: built-ins register themselves, installed packages add their own.

A ``Registry`` maps names to objects. Built-ins register on import (a decorator); other
distributions add theirs through an entry-point group (``ttc.tasks``,
``ttc.strategies``), loaded the first time the registry is read. A plug-in that fails
to load is skipped and its error kept in ``errors``, so one broken package cannot take
the CLI down.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from ttc.backends.errors import BadInputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, filled by built-in modules and entry points.

    Args:
        kind: What it holds, for messages ("task", "strategy").
        group: Entry-point group of plug-ins.
        builtins: Modules whose import registers the built-ins.
        adapt: Turns a loaded entry-point object into a registry value (name, object).
    """

    def __init__(self, kind: str, group: str, builtins: tuple[str, ...],
                 adapt: Callable[[str, Any], T] | None = None, *, plural: str | None = None):
        self.kind, self.group, self._builtins = kind, group, builtins
        self.plural = plural or kind + "s"
        self._adapt = adapt or (lambda name, obj: obj)
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, name: str, obj: T, *, origin: str = "builtin") -> T:
        """Adds ``obj`` under ``name``; a second object under one name is an error."""
        with self._lock:
            if name in self._items and self._items[name] is not obj:
                raise BadInputError(f"{self.kind} {name!r} is registered twice "
                                    f"({self._origin[name]} and {origin})")
            self._items[name] = obj
            self._origin[name] = origin
        return obj

    def origin(self, name: str) -> str:
        """"builtin", or the distribution an entry point came from."""
        self._load()
        return self._origin[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            BadInputError: Unknown name; the message lists the valid ones.
        """
        self._load()
        if name not in self._items:
            hint = f" (plug-in failed to load: {self.errors[name]})" if name in self.errors else ""
            raise BadInputError(f"unknown {self.kind} {name!r}{hint}; valid {self.plural}: "
                                f"{', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._items.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def reload_plugins(self) -> None:
        """Reads the entry points again (after a package was installed at run time)."""
        with self._lock:
            self._loaded = False
        self._load()

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)
            for ep in entry_points(group=self.group):
                if ep.name in self._items and self._origin.get(ep.name) != "builtin":
                    continue  # loaded by an earlier reload
                origin = ep.dist.name if ep.dist is not None else ep.value
                try:
                    self.register(ep.name, self._adapt(ep.name, ep.load()), origin=origin)
                except Exception as exc:  # a broken plug-in must not break the rest
                    self.errors[ep.name] = f"{type(exc).__name__}: {exc}"

"""``Registry``: the one name -> object table behind every pluggable concept.

Models, datasets, public/private split kinds, partition schemes and mask strategies are all
registered by name in a :class:`Registry` (cf. ``opacus/accountants/registry.py``): registering
a name twice raises, and looking up an unknown name raises a ``ValueError`` that lists the known
ones, so a typo in a config fails with the same message wherever it is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names it in error messages, e.g. ``"model"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises
        ------
        ValueError
            ``name`` is already registered.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")``: register the decorated object under ``name``."""
        return lambda entry: self.register(name, entry)

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises
        ------
        ValueError
            Unknown ``name`` (the message lists the known names).
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; expected one of {self.names()}"
            ) from None

    def check(self, name: str, *, extra: tuple[str, ...] = ()) -> str:
        """Return ``name`` if registered (or one of ``extra``); else raise as :meth:`get` does."""
        if name not in self._entries and name not in extra:
            known = [*extra, *self.names()]
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {known}")
        return name

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

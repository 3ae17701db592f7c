"""One registry helper for every named family of things: adapters, trace-sqrt backends, tiny-model
builders, CLI commands, connectors, objectives.

    CONNECTORS = Registry("connector")

    @CONNECTORS.register("linear")
    class LinearConnector(nn.Module): ...

    CONNECTORS["linear"]           # the class; an unknown name is a ConfigError listing the choices

A registry is filled when the module defining its entries is imported; each package's
`__init__` imports those modules, so `from modalign.models import ADAPTERS` is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from modalign.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, filled by the `register` decorator; read like a dict."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: file the decorated object under every name given (duplicates refused)."""
        if not names:
            raise TypeError(f"{self.kind} registry: register() needs at least one name")

        def add(obj: T) -> T:
            for name in names:
                if name in self._entries:
                    raise ValueError(f"{self.kind} {name!r} is already registered")
                self._entries[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries)) or "none registered"
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted (for help texts and argparse choices)."""
        return sorted(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

"""Frozen: the base of aotc's small immutable records (Arch, Diagnostic, Field, SmemModel, Device):
dataclass-like eq/hash/repr/pickle over `__slots__` (in constructor order), without the 1-2 ms a
dataclass costs to create — these modules are imported by every serving process. Stdlib only."""

from __future__ import annotations

from typing import Any


class Frozen:
    __slots__ = ()

    def __init__(self, **values: Any):
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple:  # pickling (build workers) would otherwise go through __setattr__
        return (type(self), self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

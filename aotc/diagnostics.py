"""Diagnostics: the one error shape every user-facing check produces (stable code, where, numbers, fix).
Pure data; shared by spec loading, rules, verification and the runtime.
"""

from __future__ import annotations

from typing import Any

_NEW_DICT: Any = object()  # default of `details`: a fresh dict per Diagnostic


class Diagnostic:
    """Immutable; eq/hash/repr/pickle like the frozen dataclass it was. A plain slotted class because
    serving processes import this module and creating a dataclass costs ~1-2 ms."""

    __slots__ = ("code", "message", "spec", "file", "fix", "details")  # noqa: RUF023 - field order
    code: str  # stable, e.g. AOTC-SMEM-001
    message: str  # what is wrong, with the numbers
    spec: str  # spec name ("" when not about one spec)
    file: str  # file the spec came from
    fix: str  # what to do
    details: dict  # machine-readable numbers (json output)

    def __init__(self, code: str, message: str, spec: str = "", file: str = "", fix: str = "",
                 details: dict = _NEW_DICT):
        values = (code, message, spec, file, fix, {} if details is _NEW_DICT else details)
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple:
        return (self.code, self.message, self.spec, self.file, self.fix, self.details)

    def __eq__(self, other: object) -> bool:
        return type(other) is Diagnostic and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"Diagnostic(code={self.code!r}, message={self.message!r}, spec={self.spec!r}, "
                f"file={self.file!r}, fix={self.fix!r}, details={self.details!r})")

    def __reduce__(self) -> tuple:
        return (Diagnostic, self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Diagnostic is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Diagnostic is immutable: cannot delete {name!r}")

    def format(self) -> str:
        where = ":".join(p for p in (self.file, self.spec) if p)
        head = f"{self.code} {where}: {self.message}" if where else f"{self.code}: {self.message}"
        return head + (f"\n  fix: {self.fix}" if self.fix else "")

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "spec": self.spec,
            "file": self.file,
            "fix": self.fix,
            "details": self.details,
        }


class AotcError(Exception):
    """An error that carries diagnostics; the CLI prints them and exits non-zero."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        self.diagnostics = [diagnostics] if isinstance(diagnostics, Diagnostic) else list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))

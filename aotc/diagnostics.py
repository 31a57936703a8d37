"""Diagnostics: the one error shape every user-facing check produces (stable code, where, numbers, fix).
Pure data; shared by spec loading, rules, verification and the runtime.
"""

from __future__ import annotations

from typing import Any

from aotc.frozen import Frozen

_NEW_DICT: Any = object()  # default of `details`: a fresh dict per Diagnostic


def did_you_mean(word: str, known) -> str:
    """'; did you mean block_m?' for a near miss (a typo) among `known`, '' otherwise."""
    import difflib  # only on error paths: serving processes import this module

    close = difflib.get_close_matches(word, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


class Diagnostic(Frozen):
    """Immutable record (aotc.frozen)."""

    __slots__ = ("code", "message", "spec", "file", "fix", "details")  # noqa: RUF023 - field order
    code: str  # stable, e.g. AOTC-SMEM-001
    message: str  # what is wrong, with the numbers
    spec: str  # spec name ("" when not about one spec)
    file: str  # file the spec came from
    fix: str  # what to do
    details: dict  # machine-readable numbers (json output)

    def __init__(self, code: str, message: str, spec: str = "", file: str = "", fix: str = "",
                 details: dict = _NEW_DICT):
        super().__init__(code=code, message=message, spec=spec, file=file, fix=fix,
                         details={} if details is _NEW_DICT else details)

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

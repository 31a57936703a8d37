"""The contract every kernel family implements: its typed parameter schema, its byte-exact SMEM
model, its legality rules, its template and render context, and its runtime argument ABI.
Pure Python (no Jinja2, no nvcc): the runtime imports families to pack launch arguments.

Subclass contract
-----------------
- `name`: stable family id used in specs and cache keys (never rename: it is part of every key).
- `fields`: name -> Field. Every spec value is validated against it before anything else sees it;
  only validated, typed values reach templates.
- `requires(p)`: arch features (aotc.arch constants) the rendered kernel uses.
- `smem(p, arch)`: SmemModel whose total equals the compiler's sizeof(SharedStorage) (+ dynamic
  extras the kernel requests); proven against real sizeof probes compiled by nvcc
  (tests/test_smem_probe_gemm.py, tests/test_smem_probe_fmha.py).
- `check(p, arch)`: extra legality diagnostics (shapes, alignment, dtypes); [] when legal.
- `template`: path of the Jinja2 template under templates/; `render_context(p, arch)` its inputs.
- `probe_template`: template that prints sizeof(SharedStorage) parts on the host (SMEM ground truth).
- `expected_mma(p, arch)`: SASS opcode family the verified cubin must contain (e.g. "OMMA", "HMMA"),
  or None when there is none to require.
- `tile_of(p)`: the problem dimensions one CTA covers, for the runtime's tile choice (default: a
  declared "tile" shape field; None: nothing to score).
- `args_struct`: ctypes.Structure mirroring the C `AotcArgs` of the template (runtime ABI).
Raise nothing for bad parameters: return diagnostics. Exceptions are for bugs.
"""

from __future__ import annotations

import ctypes
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from aotc.arch import Arch
from aotc.diagnostics import Diagnostic, did_you_mean
from aotc.frozen import Frozen

_REQUIRED = object()
# Compiled on first use (re caches it), not at import: re.compile costs ~0.2 ms, on the import path
# of every serving process, and kernels served by their typed params rarely have a free-text field.
_PLAIN = r"[A-Za-z0-9_.-]{1,64}"


class Field(Frozen):
    """One typed spec parameter. `kind` is int, str, bool, or "shape" (tuple of ints)."""

    __slots__ = ("kind", "doc", "default", "choices", "min", "max", "length", "multiple_of")  # noqa: RUF023 - field order
    kind: Any
    doc: str
    default: Any
    choices: tuple | None
    min: int | None
    max: int | None
    length: int | None  # for shapes
    multiple_of: int | None

    def __init__(self, kind: Any, doc: str, default: Any = _REQUIRED, choices: tuple | None = None,
                 min: int | None = None, max: int | None = None, length: int | None = None,
                 multiple_of: int | None = None):
        super().__init__(kind=kind, doc=doc, default=default, choices=choices, min=min, max=max, length=length,
                         multiple_of=multiple_of)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def coerce(self, name: str, value: Any) -> tuple[Any, str | None]:
        """Return (typed value, None) or (None, error text)."""
        if self.kind == "shape":
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                return None, f"{name} must be a list of integers, got {value!r}"
            if self.length is not None and len(value) != self.length:
                return None, f"{name} must have {self.length} entries, got {len(value)}"
            value = tuple(value)
            items = value
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return None, f"{name} must be an integer, got {value!r}"
            items = (value,)
        elif self.kind is bool:
            if not isinstance(value, bool):
                return None, f"{name} must be true or false, got {value!r}"
            items = ()
        elif self.kind is str:
            if not isinstance(value, str):
                return None, f"{name} must be a string, got {value!r}"
            # strings reach templates: a field without choices takes identifier characters only
            if self.choices is None and not re.fullmatch(_PLAIN, value):
                return None, f"{name} = {value[:80]!r}: only 1-64 characters of [A-Za-z0-9_.-] are allowed"
            items = ()
        else:  # pragma: no cover - schema bug
            raise TypeError(f"unknown field kind {self.kind!r}")
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(repr(c) for c in self.choices)
            return None, f"{name} = {value!r} is not one of {shown}"
        for v in items:
            if self.min is not None and v < self.min:
                return None, f"{name} = {value!r}: every value must be >= {self.min}"
            if self.max is not None and v > self.max:
                return None, f"{name} = {value!r}: every value must be <= {self.max}"
            if self.multiple_of and v % self.multiple_of:
                return None, f"{name} = {value!r}: every value must be a multiple of {self.multiple_of}"
        return value, None


class SmemModel(Frozen):
    """Per-component bytes of a kernel's shared memory, in layout order, and what was chosen
    (e.g. the stage count an `auto` spec resolved to)."""

    __slots__ = ("components", "chosen")  # noqa: RUF023 - field order
    components: tuple[tuple[str, int], ...]
    chosen: tuple[tuple[str, Any], ...]

    def __init__(self, components: tuple[tuple[str, int], ...], chosen: tuple[tuple[str, Any], ...] = ()):
        super().__init__(components=components, chosen=chosen)

    @property
    def total(self) -> int:
        return sum(b for _, b in self.components)

    def to_json(self) -> dict:
        return {"total": self.total, "components": dict(self.components), "chosen": dict(self.chosen)}


class Family(ABC):
    name: ClassVar[str]
    doc: ClassVar[str]
    fields: ClassVar[dict[str, Field]]
    template: ClassVar[str]
    probe_template: ClassVar[str]
    args_struct: ClassVar[type[ctypes.Structure]]

    @abstractmethod
    def requires(self, p: dict) -> frozenset[str]: ...

    @abstractmethod
    def smem(self, p: dict, arch: Arch) -> SmemModel: ...

    @abstractmethod
    def check(self, p: dict, arch: Arch) -> list[Diagnostic]: ...

    @abstractmethod
    def render_context(self, p: dict, arch: Arch) -> dict: ...

    @abstractmethod
    def expected_mma(self, p: dict, arch: Arch) -> str | None: ...

    def tile_of(self, p: dict) -> tuple[int, ...] | None:
        """The problem dimensions one CTA covers, in the order the runtime's select() reads a problem
        ((m, n, k) for GEMMs, (seqlen_q,) for attention); None: no tile to score. The default reads a
        declared "tile" shape field; families that name it otherwise override this."""
        if "tile" in self.fields and isinstance(p.get("tile"), (list, tuple)):
            return tuple(int(v) for v in p["tile"])
        return None

    def fit_hint(self, p: dict, arch: Arch) -> str:
        """A concrete fix when the SMEM model exceeds the budget (override for better advice)."""
        return "choose a smaller tile or fewer stages"

    def validate(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Typed params (defaults filled) and a list of error texts."""
        errors = [f"unknown parameter {k!r}{did_you_mean(k, self.fields)} (known: {', '.join(self.fields)})"
                  for k in raw if k not in self.fields]
        typed: dict[str, Any] = {}
        for key, f in self.fields.items():
            if key not in raw:
                if f.required:
                    errors.append(f"missing required parameter {key!r} ({f.doc})")
                else:
                    typed[key] = f.default
                continue
            value, err = f.coerce(key, raw[key])
            if err:
                errors.append(err)
            else:
                typed[key] = value
        return typed, errors

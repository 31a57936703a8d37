"""Tile specs: TOML files -> validated, typed, sweep-expanded KernelSpecs.

A file holds `[[kernel]]` tables: `name`, `family`, optional `archs`, and the family's parameters.
A list where the family expects one value (a list of lists for a shape) is a sweep: the cartesian
product of all sweeps becomes one KernelSpec each. Every problem is a Diagnostic (AOTC-SPEC-*),
never an exception, so one bad spec never hides the others.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aotc.arch import UnknownArchError, get_arch
from aotc.diagnostics import Diagnostic, did_you_mean
from aotc.families import FAMILY_MODULES, UnknownFamilyError, get_family
from aotc.resources import catalog_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_RESERVED = ("name", "family", "archs", "doc")
# A name reaches the generated source's header and the cache's records: plain characters only, so
# no newline, quote or comment terminator from a spec can ever become code.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# An expanded name: the base name, then `/key=value,...` of typed, validated sweep values.
EXPANDED_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_.=,-]{1,512})?")
MAX_DOC_CHARS = 500
# One table's sweep may expand to at most this many kernels (the catalog's largest is 8): a few
# lines of TOML must not ask for millions of compiles, or for the memory to list them.
MAX_SWEEP_PRODUCT = 4096
MAX_SPEC_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class KernelSpec:
    name: str  # unique: base name plus the swept values, e.g. moe_w4a4/tile=128x128x256
    family: str
    params: dict[str, Any] = field(hash=False)
    archs: tuple[str, ...]  # () = every arch whose rules accept it
    file: str = ""
    doc: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "family": self.family, "params": self.params, "archs": list(self.archs),
                "file": self.file}


@dataclass
class LoadResult:
    specs: list[KernelSpec]
    diagnostics: list[Diagnostic]


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_sweep(family, key: str, value: Any) -> bool:
    f = family.fields.get(key)
    if f is None or not isinstance(value, list):
        return False
    if f.kind == "shape":
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def expand_table(table: dict[str, Any], file: str) -> LoadResult:
    """One `[[kernel]]` table -> its expanded specs, or diagnostics."""
    diags: list[Diagnostic] = []
    name = table.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = repr(name)[:80]
        diags.append(Diagnostic("AOTC-SPEC-002", f"kernel needs a `name` of 1-64 characters of [A-Za-z0-9_.-] "
                                f"starting with a letter or digit; got {shown}",
                                fix='use e.g. name = "moe_w4a4"', file=file, spec="?"))
        return LoadResult([], diags)
    where = {"file": file, "spec": name}
    doc = table.get("doc", "")
    if not isinstance(doc, str) or len(doc) > MAX_DOC_CHARS or not doc.isprintable():
        diags.append(Diagnostic("AOTC-SPEC-008", f"`doc` must be one line of at most {MAX_DOC_CHARS} printable "
                                f"characters; got {repr(doc)[:80]}", fix="shorten the doc to one plain line",
                                **where))
    family_name = table.get("family")
    try:
        family = get_family(family_name if isinstance(family_name, str) else "")
    except UnknownFamilyError:
        typo = did_you_mean(family_name, FAMILY_MODULES) if isinstance(family_name, str) else ""
        diags.append(Diagnostic("AOTC-SPEC-003", f"unknown family {repr(family_name)[:80]}{typo}",
                                fix=f"use one of: {', '.join(FAMILY_MODULES)}", **where))
        return LoadResult([], diags)
    archs_raw = table.get("archs", [])
    archs: list[str] = []
    if not isinstance(archs_raw, list):
        archs_raw = [archs_raw]
    for a in archs_raw:
        try:
            if not isinstance(a, str):
                raise UnknownArchError(f"arch names are strings, got {repr(a)[:80]}")
            archs.append(get_arch(a).name)
        except UnknownArchError as e:
            diags.append(Diagnostic("AOTC-SPEC-006", str(e), fix="fix the `archs` list", **where))
    params_raw = {k: v for k, v in table.items() if k not in _RESERVED}
    swept = [k for k, v in params_raw.items() if _is_sweep(family, k, v)]
    if any(not params_raw[k] for k in swept):
        diags.append(Diagnostic("AOTC-SPEC-007", "a sweep list is empty", fix="give at least one value", **where))
    product = math.prod(len(params_raw[k]) for k in swept)
    if product > MAX_SWEEP_PRODUCT:
        sizes = " x ".join(f"{len(params_raw[k])} {k}" for k in swept)
        diags.append(Diagnostic("AOTC-SPEC-009", f"the sweep expands to {product:,} kernels ({sizes}); at most "
                                f"{MAX_SWEEP_PRODUCT:,} per [[kernel]] table", fix="split the sweep over several "
                                "tables or sweep fewer values", details={"product": product,
                                                                         "max": MAX_SWEEP_PRODUCT}, **where))
    if diags:
        return LoadResult([], diags)
    specs = []
    for combo in itertools.product(*(params_raw[k] for k in swept)):
        raw = dict(params_raw)
        raw.update(zip(swept, combo))
        full_name = name + ("/" + ",".join(f"{k}={_format_value(v)}" for k, v in zip(swept, combo)) if swept else "")
        typed, errors = family.validate(raw)
        if errors:
            diags.extend(Diagnostic("AOTC-SPEC-004", e, file=file, spec=full_name,
                                    fix=f"see `aotc families {family.name}` for the parameters") for e in errors)
            continue
        specs.append(KernelSpec(full_name, family.name, typed, tuple(archs), file, doc))
    return LoadResult(specs, diags)


def load_spec_file(path: Path) -> LoadResult:
    file = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_FILE_BYTES + 1)
    except OSError as e:
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", f"cannot read spec file: {e.strerror}", file=file,
                                          fix="check the path and its permissions")])
    if len(raw) > MAX_SPEC_FILE_BYTES:
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", f"spec file is over {MAX_SPEC_FILE_BYTES:,} B",
                                          file=file, fix="split it into several files")])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", f"not UTF-8 text: byte {e.object[e.start]:#04x} at "
                                          f"offset {e.start}", file=file, fix="save the file as UTF-8")])
    except tomllib.TOMLDecodeError as e:
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", f"not valid TOML: {e}", file=file,
                                          fix="fix the syntax at the line shown")])
    except RecursionError:
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", "not valid TOML: arrays or tables nested too deeply",
                                          file=file, fix="a spec needs at most two levels of lists")])
    tables = data.get("kernel")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        return LoadResult([], [Diagnostic("AOTC-SPEC-001", "expected one or more [[kernel]] tables", file=file,
                                          fix="start each spec with a [[kernel]] line")])
    result = LoadResult([], [])
    for table in tables:
        part = expand_table(table, file)
        result.specs.extend(part.specs)
        result.diagnostics.extend(part.diagnostics)
    return result


def default_spec_files() -> list[Path]:
    return sorted(catalog_dir().glob("*.toml"))


def load_specs(paths: list[Path] | None = None) -> LoadResult:
    """Load spec files (directories are searched for *.toml); default: the embedded catalog."""
    files: list[Path] = []
    for p in paths or default_spec_files():
        p = Path(p)
        files.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])
    result = LoadResult([], [])
    seen: dict[str, str] = {}
    for f in files:
        part = load_spec_file(f)
        for spec in part.specs:
            if spec.name in seen:
                result.diagnostics.append(Diagnostic(
                    "AOTC-SPEC-005", f"duplicate kernel name (first defined in {seen[spec.name]})",
                    file=spec.file, spec=spec.name, fix="give each [[kernel]] a unique name"))
                continue
            seen[spec.name] = spec.file
            result.specs.append(spec)
        result.diagnostics.extend(part.diagnostics)
    return result


def filter_specs(specs: list[KernelSpec], patterns: list[str]) -> list[KernelSpec]:
    """Keep specs whose name or family matches any shell-style pattern (substring if no wildcard)."""
    import fnmatch

    if not patterns:
        return specs

    def match(spec: KernelSpec, pat: str) -> bool:
        if any(c in pat for c in "*?["):
            return fnmatch.fnmatchcase(spec.name, pat) or fnmatch.fnmatchcase(spec.family, pat)
        return pat in spec.name or pat == spec.family

    return [s for s in specs if any(match(s, p) for p in patterns)]

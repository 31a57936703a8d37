"""The manifest record: what one cache entry is (schema in docs/CONTRACTS.md). Written by the build's
store step for both producers (aotc kernels, FlashInfer modules), parsed strictly wherever a stored
manifest is read, so a malformed one is a coded error (AOTC-CACHE-005) rather than a KeyError later.
"""

from __future__ import annotations

from typing import Any

from aotc.diagnostics import AotcError, Diagnostic
from aotc.keys import is_digest

SCHEMA = 1
_NUMBER = (int, float)


class ManifestError(AotcError):
    """A manifest that is not what docs/CONTRACTS.md says (missing, mistyped or unknown fields)."""

    def __init__(self, problems: list[str], where: str = ""):
        super().__init__(Diagnostic(
            code="AOTC-CACHE-005",
            message=f"manifest {where or '(unnamed)'} is malformed: {len(problems)} problem(s): " + "; ".join(problems),
            fix="run `aotc verify` (it moves bad entries to quarantine/), then rebuild (`aotc build`); a manifest "
            "written by a newer aotc needs that aotc to read it",
            details={"problems": problems, "where": where}))
        self.problems = problems


class Manifest:
    """One entry. Required: name, family, params, arch, target (and key, blobs once stored); the
    rest depend on the producer: aotc kernels fill resources/smem_model/sass/template/
    cutlass_version, FlashInfer modules cubins/needed/flashinfer_version/smem_probe.
    A slotted class rather than a dataclass: serving processes parse manifests, and creating a
    dataclass costs milliseconds there (tests/test_runtime.py checks none is created)."""

    __slots__ = ("aotc_version", "arch", "blobs", "built_at", "compile_seconds", "cubins", "cutlass_version",
                 "entry", "family", "flags", "flashinfer_version", "inputs", "key", "name", "needed", "params",
                 "peak_rss_bytes", "resources", "sass", "schema", "smem_model", "smem_probe", "spec_file",
                 "spec_key", "steps", "target", "template", "toolchain")

    def __init__(self, **values: Any):
        unknown = set(values) - set(_FIELDS)
        missing = [n for n in ("name", "family", "params", "arch", "target") if n not in values]
        if unknown or missing:
            raise TypeError(f"Manifest: unknown {sorted(unknown)}, missing {missing}")
        for name, default in _FIELDS.items():
            if name in values:
                setattr(self, name, values[name])
            else:  # a fresh copy of a mutable default
                setattr(self, name, default.copy() if isinstance(default, (dict, list)) else default)

    def to_json(self) -> dict[str, Any]:
        """The stored form: every field, unset optional ones (None) left out."""
        return {n: v for n in _FIELDS if (v := getattr(self, n)) is not None}

    def __eq__(self, other: object) -> bool:
        return type(other) is Manifest and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment] - mutable

    def __repr__(self) -> str:
        return f"Manifest(name={self.name!r}, arch={self.arch!r}, key={self.key!r})"

    @classmethod
    def from_json(cls, data: Any, where: str = "", key: str | None = None) -> Manifest:
        """Parse a stored manifest; ManifestError naming every problem (manifest_problems) if it is
        malformed. `key`: the action key it is stored under, which its own key must equal."""
        problems = manifest_problems(data, key)
        if problems:
            raise ManifestError(problems, where or str(data.get("key", "") if isinstance(data, dict) else ""))
        return cls(**data)

    def blob_digest(self, role: str) -> str | None:
        blob = self.blobs.get(role)
        return blob["sha256"] if blob else None


# name -> default (None: optional, left out of the stored form when unset)
_FIELDS: dict[str, Any] = {
    "name": None, "family": None, "params": None, "arch": None, "target": None,  # required
    "key": "",  # the action key; filled by the store step
    "blobs": {},  # role -> {"sha256": str, "size": int}; filled by Cache.put_entry
    "schema": SCHEMA, "spec_key": "", "entry": "",  # entry: the kernel symbol; "" for a module
    "inputs": {},  # keys.action_inputs; filled by the store step
    "flags": [], "toolchain": {},  # toolchain: identity, nvcc_version, source
    "built_at": "",  # ISO-8601 UTC
    "spec_file": "", "aotc_version": None, "compile_seconds": None,
    "peak_rss_bytes": None,  # of the compile's largest process, where measured
    "template": None, "cutlass_version": None, "resources": None, "smem_model": None, "sass": None,
    "cubins": None, "needed": None, "flashinfer_version": None, "smem_probe": None,
    "steps": None,  # FlashInfer modules: object file name -> {seconds, peak_rss_bytes} of its compile step
}


def _as_tuple(kinds: Any) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def manifest_problems(data: Any, key: str | None = None) -> list[str]:
    """Every way `data` differs from a stored manifest (docs/CONTRACTS.md), [] when it is one: the one
    check of every reader (the runtime's lookup, ls/show/wheel listings, `aotc verify`, wheel --check).
    `key`: the action key (file name) it is stored under, which its own key must equal."""
    if not isinstance(data, dict):
        return [f"expected a JSON object, got {type(data).__name__}"]
    problems = [f"unknown field {name[:40]!r}" for name in data if name not in _TYPES]
    for name, kinds in _TYPES.items():
        if name not in data:
            if name in _REQUIRED:
                problems.append(f"missing field {name!r}")
        elif not isinstance(data[name], kinds) or isinstance(data[name], bool) and bool not in _as_tuple(kinds):
            problems.append(f"field {name!r} is {type(data[name]).__name__}, expected "
                            + "/".join(k.__name__ for k in _as_tuple(kinds)))
    if not problems:
        problems = _check_nested(data)
    if key is not None and data.get("key") != key:
        problems.append(f"its key {str(data.get('key'))[:20]!r} differs from its file name")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_nested(data: dict) -> list[str]:
    problems = []
    if data.get("schema") != SCHEMA and "schema" in data:
        problems.append(f"schema {data['schema']} is not {SCHEMA}")
    for role, blob in data["blobs"].items():
        if not (isinstance(blob, dict) and is_digest(blob.get("sha256")) and _is_int(blob.get("size"))):
            problems.append(f"blob {role[:20]!r} is not {{sha256: hex digest, size: int}}: {str(blob)[:80]}")
    target = data["target"]
    if not (_is_int(target.get("sm")) and isinstance(target.get("variant"), str)):
        problems.append(f"target is not {{sm: int, variant: str}}: {str(target)[:80]}")
    if any(not isinstance(c, dict) for c in data.get("cubins", [])):
        problems.append("`cubins` holds something that is not an object")
    for name, step in data.get("steps", {}).items():
        if not (isinstance(step, dict) and all(_is_int(v) or isinstance(v, float) for v in step.values())):
            problems.append(f"step {name[:40]!r} is not {{seconds: number, peak_rss_bytes: int}}: {str(step)[:80]}")
            break
    return problems


_REQUIRED = frozenset({"key", "name", "family", "params", "arch", "target", "blobs"})
_TYPES: dict[str, Any] = {
    "key": str, "name": str, "family": str, "params": dict, "arch": str, "target": dict, "blobs": dict,
    "schema": int, "spec_key": str, "entry": str, "inputs": dict, "flags": list, "toolchain": dict,
    "built_at": str, "spec_file": str, "aotc_version": str, "compile_seconds": _NUMBER,
    "peak_rss_bytes": int, "template": str, "cutlass_version": str, "resources": dict,
    "smem_model": (dict, type(None)), "sass": dict, "cubins": list, "needed": list,
    "flashinfer_version": str, "smem_probe": dict, "steps": dict,
}

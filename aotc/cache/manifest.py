"""The manifest record: what one cache entry is (schema in docs/CONTRACTS.md). Written by the build's
store step for both producers (aotc kernels, FlashInfer modules), parsed strictly wherever a stored
manifest is read, so a malformed one is a coded error (AOTC-CACHE-005) rather than a KeyError later.
"""

from __future__ import annotations

from typing import Any

# The schema check lives in aotc.cache.records (no class there: the FlashInfer hook checks manifests
# without importing this module); re-exported here for every other reader.
from aotc.cache.records import SCHEMA, manifest_problems
from aotc.diagnostics import AotcError, Diagnostic

__all__ = ["SCHEMA", "Manifest", "ManifestError", "manifest_problems"]


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

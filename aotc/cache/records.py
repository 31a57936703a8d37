"""The read side of the cache's records, for serving processes: the sharded path of a record, a
record's checksum check and the manifest schema check. Stdlib and aotc.keys only, and no class
created at import: the FlashInfer hook reads a module's ref and manifest through this
module alone, without importing the Cache class, the blob store or the diagnostics (aotc.cache.entries
and aotc.cache.manifest re-export everything here; layout in docs/CONTRACTS.md). Errors are raised
as the cache's coded errors (CacheFormatError, ManifestError), whose modules load on that path only.
Where the default cache lives is aotc.resources.default_cache_dir.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aotc.keys import check_digest, is_digest

LAYOUT_VERSION = "v1"  # the folder under the cache root that holds records and blobs
SCHEMA = 1  # of a manifest (docs/CONTRACTS.md)
# Every record (manifest, ref, prekey, header set) carries the sha256 of its canonical JSON: a flipped
# bit that still parses (a digit in a size, a letter in a name) is caught on read like a bad blob.
RECORD_SUM = "record_sha256"


def record_path(root: Path, kind: str, key: str) -> Path:
    """<root>/v1/<kind>/<key[:2]>/<key>.json; a key that is not a sha256 hex digest is a ValueError
    (it could name a path outside the cache)."""
    check_digest(key)
    return root / LAYOUT_VERSION / kind / key[:2] / f"{key}.json"


def _format_error(path: Path, what: str, problem: str) -> Exception:
    from aotc.cache.entries import CacheFormatError  # the error path only

    return CacheFormatError(path, what, problem)


def read_json(path: Path, what: str) -> dict | None:
    """The JSON object at path, None if absent; CacheFormatError (file untouched) if unreadable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_record(text, path, what)


def parse_record(text: bytes, path: Path, what: str) -> dict:
    """A stored record's JSON object, its checksum verified and removed; CacheFormatError if it is
    no JSON object, nested beyond reason, or its content differs from what was written (bit rot,
    an edit). Records written before checksums existed (no RECORD_SUM) are taken as they are."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _format_error(path, what, f"not JSON ({e}; {len(text)} bytes)") from None
    except RecursionError:
        raise _format_error(path, what, f"nested too deeply to be a cache record ({len(text)} bytes)") from None
    if not isinstance(value, dict):
        raise _format_error(path, what, f"expected a JSON object, got {type(value).__name__}")
    stored = value.pop(RECORD_SUM, None)
    if stored is None and any(_one_bit_from_sum_key(key) for key in value):
        stored = ""  # the checksum's own key was hit: not a record from before checksums
    if stored is not None and stored != record_sum(value):
        raise _format_error(path, what, "its content does not match its checksum (bit rot or an edit)")
    return value


def _one_bit_from_sum_key(key: str) -> bool:
    if len(key) != len(RECORD_SUM):
        return False
    bits = sum((ord(a) ^ ord(b)).bit_count() for a, b in zip(key, RECORD_SUM))
    return bits == 1


def record_sum(value: dict) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_bytes(value: dict) -> bytes:
    """A record's stored form: indented JSON with its checksum."""
    body = {k: v for k, v in value.items() if k != RECORD_SUM}
    return (json.dumps({**body, RECORD_SUM: record_sum(body)}, indent=1, sort_keys=True) + "\n").encode()


def ref_problem(ref: dict, name: str) -> str:
    if not is_digest(ref.get("key")):
        return "no action key (a sha256 hex digest) in it"
    return ""


def resolve_local(root: Path, spec_key: str) -> dict | None:
    """Cache(root).resolve_ref(spec_key) where both records are local files (the same checks: the
    ref's checksum and action key, the manifest's checksum); None when either is not a local file,
    so that the caller asks the Cache, whose store may hold it in a remote layer."""
    path = record_path(root, "refs", spec_key)
    ref = read_json(path, "ref")
    if ref is None:
        return None
    problem = ref_problem(ref, spec_key)
    if problem:
        raise _format_error(path, "ref", f"{problem}: {ref!r}")
    return read_json(record_path(root, "actions", ref["key"]), "manifest")


# --- the manifest schema (docs/CONTRACTS.md) ------------------------------------------------------

_NUMBER = (int, float)
_REQUIRED = frozenset({"key", "name", "family", "params", "arch", "target", "blobs"})
_TYPES: dict[str, Any] = {
    "key": str, "name": str, "family": str, "params": dict, "arch": str, "target": dict, "blobs": dict,
    "schema": int, "spec_key": str, "entry": str, "inputs": dict, "flags": list, "toolchain": dict,
    "built_at": str, "spec_file": str, "aotc_version": str, "compile_seconds": _NUMBER,
    "peak_rss_bytes": int, "template": str, "cutlass_version": str, "resources": dict,
    "smem_model": (dict, type(None)), "sass": dict, "cubins": list, "needed": list,
    "flashinfer_version": str, "smem_probe": dict, "steps": dict,
}


def _as_tuple(kinds: Any) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def manifest_problems(data: Any, key: str | None = None) -> list[str]:
    """Every way `data` differs from a stored manifest (docs/CONTRACTS.md), [] when it is one: the one
    check of every reader (the runtime's lookup, the FlashInfer hook, ls/show/wheel listings, `aotc
    verify`, wheel --check). `key`: the action key (file name) it is stored under, which its own key
    must equal."""
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

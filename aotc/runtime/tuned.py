"""Measured tile choice: the selection tables `aotc tune` writes (aotc/tune.py) and the runtime reads.

A table maps a shape bucket of one family (the match values the entry point fixes, e.g. head_dim and
dtype, plus every problem dimension rounded up to a power of two) to the spec key of the tile that
measured fastest there. It is stored under a content key: the sha256 of (family, device name,
compute capability, the driver's CUDA version, every candidate spec key timed). The runtime computes
the same key from the device and the candidates it lists, so a table for another device, driver or
candidate set (a kernel built or removed since) is never found, and choose() falls back to the
heuristic of tile_select. Read once per (family, device) and memoized with the candidate list.
Stdlib only: imported on the serving path's first choice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

SCHEMA = "aotc-tune/1"
KIND = "tunes"  # the cache's record folder (v1/tunes/xx/<key>.json), also inside kernel wheels

_driver: int | None = None
# (family, ordinal) -> (the candidate list the table was looked up for, bucket -> spec key or None)
_memo: dict[tuple[str, int], tuple[list, dict | None]] = {}


def driver_version(device: Any) -> int:
    """The driver's CUDA version (cuDriverGetVersion, e.g. 12080), asked once per process; 0 for a
    Device known only by its capability (no driver is asked)."""
    global _driver
    if not device.smem_optin_bytes:
        return 0
    if _driver is None:
        from aotc.runtime.device import check, driver

        cu = driver()
        _driver = int(check(cu, cu.cuDriverGetVersion(), "cuDriverGetVersion"))
    return _driver


def device_identity(device: Any) -> dict:
    """What a table is keyed on besides its kernels: device name, capability, driver CUDA version."""
    return {"name": device.name, "cc": [int(device.cc[0]), int(device.cc[1])], "driver": driver_version(device)}


def table_key(family: str, identity: dict, spec_keys: Sequence[str]) -> str:
    """The content key of a table: sha256 of its family, device identity and sorted candidate keys."""
    material = {"schema": SCHEMA, "family": family, "device": identity, "kernels": sorted(spec_keys)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pow2(value: int) -> int:
    return 1 << max(int(value) - 1, 0).bit_length()


def bucket(matches: dict, problem: dict) -> str:
    """The bucket a problem falls in: match values as they are, problem dimensions rounded up to a
    power of two, e.g. `dtype=bf16,head_dim=128|batch=32,seqlen_q=1024`."""
    fixed = ",".join(f"{k}={matches[k]}" for k in sorted(matches))
    dims = ",".join(f"{k}={_pow2(problem[k])}" for k in sorted(problem))
    return f"{fixed}|{dims}"


def table_problem(table: dict, name: str) -> str:
    """Why a stored table cannot be used as one ("" when it can): schema, key = content key = file
    name, choices naming kernels the table timed."""
    if table.get("schema") != SCHEMA:
        return f"schema {str(table.get('schema'))[:20]!r}, expected {SCHEMA}"
    family, device, kernels, choices = (table.get(k) for k in ("family", "device", "kernels", "choices"))
    if not (isinstance(family, str) and isinstance(device, dict) and isinstance(kernels, list)
            and all(isinstance(k, str) for k in kernels) and isinstance(choices, dict)):
        return "family, device, kernels or choices missing or of the wrong type"
    try:
        key = table_key(family, device, kernels)
    except TypeError:
        return "its device identity is not plain JSON"
    if table.get("key") != key or name != key:
        return "its key differs from its content key or its file name"
    if not set(map(str, choices.values())) <= set(kernels):
        return "a choice names a kernel the table did not time"
    return ""


def lookup_table(family: str, device: Any, candidates: list, sources: list) -> dict | None:
    """bucket -> spec key of the table stored for exactly these candidates on this device, from the
    first source that holds one (sources with a `tuned_table(key)` method); None when there is none."""
    key = table_key(family, device_identity(device), [f.spec_key for f in candidates])
    for src in sources:
        read = getattr(src, "tuned_table", None)
        table = read(key) if read is not None else None
        if table is not None and not table_problem(table, key) and table["family"] == family:
            return table["choices"]
    return None


def tuned_choice(family: str, device: Any, stored: list, matches: dict, problem: dict) -> Any:
    """The Found the stored table picks for this problem, or None (no table, bucket not measured,
    or its kernel is not among `stored`, the family's candidates for the device). `stored` is
    lookup.stored_candidates' list: the table is looked up again only when that list is renewed."""
    choices = stored_table(family, device, stored)
    if not choices:
        return None
    chosen = choices.get(bucket(matches, problem))
    return next((f for f in stored if f.spec_key == chosen and all(f.params.get(k) == v for k, v in matches.items())),
                None)


def stored_table(family: str, device: Any, stored: list) -> dict | None:
    """bucket -> spec key of the table stored for exactly `stored` on this device (memoized with the
    list), None when there is none."""
    memo_key = (family, device.ordinal)
    hit = _memo.get(memo_key)
    if hit is None or hit[0] is not stored:
        from aotc.runtime.lookup import default_sources

        hit = _memo[memo_key] = (stored, lookup_table(family, device, stored, default_sources()) if stored else None)
    return hit[1]


def table_key_for(family: str, device: Any, stored: list) -> str | None:
    """The key of the table that would serve `stored` on this device (None for no candidates)."""
    return table_key(family, device_identity(device), [f.spec_key for f in stored]) if stored else None


def table_path(cache: Any, key: str) -> Any:
    """Where a cache (or a kernel wheel's cache tree) keeps the table of `key`."""
    return cache.base / KIND / key[:2] / f"{key}.json"


def read_table(cache: Any, key: str) -> dict | None:
    """The table stored under `key` in `cache`, its record checksum verified; None if absent or
    unreadable (an unreadable table only costs the heuristic's choice)."""
    from aotc.cache.entries import CacheFormatError, read_json

    try:
        return read_json(table_path(cache, key), "tune table")
    except (CacheFormatError, OSError):
        return None


def write_table(cache: Any, table: dict) -> Any:
    """Store a table under its content key (atomic, with the record checksum); returns its path."""
    problem = table_problem(table, str(table.get("key")))
    if problem:
        raise ValueError(f"not a selection table: {problem}")
    path = table_path(cache, table["key"])
    cache.write_json(path, table)
    return path


def stored_tables(cache: Any) -> list[tuple[Any, dict]]:
    """(path, table) of every readable, well-formed table in `cache` (for wheels)."""
    from aotc.cache.entries import CacheFormatError, read_json

    found = []
    for path in cache.record_paths(KIND):
        try:
            table = read_json(path, "tune table")
        except CacheFormatError:
            continue
        if table is not None and not table_problem(table, path.stem):
            found.append((path, table))
    return found


def forget() -> None:
    """Drop the memoized tables (tests)."""
    _memo.clear()

"""A size cap for the cache (`--max-size`, AOTC_CACHE_MAXSIZE), as ccache's max_size: at the end of
a build, whole entries go least-recently-used first until the blobs fit, never one the build just
used. An entry's refs go before its manifest, its blobs last and only when no remaining entry shares
them, so a reader sees a whole entry or none (a missing one is rebuilt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aotc.cache import usage
from aotc.cache.entries import Cache, CacheFormatError, read_json
from aotc.diagnostics import AotcError, Diagnostic

MAXSIZE_ENV = "AOTC_CACHE_MAXSIZE"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """'20G' -> 20,000,000,000 B; '512MiB' -> 536,870,912 B; '0' -> 0 (no cap). ccache's spellings."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", text, re.IGNORECASE)
    if not m:
        raise AotcError(Diagnostic("AOTC-CACHE-010", f"cache size {text[:40]!r} is not a size",
                                   fix="give bytes or a number with K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti "
                                   "(powers of 1024), e.g. 20G or 512MiB; 0 means no cap"))
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass
class EvictReport:
    max_bytes: int
    stored_before: int
    stored_after: int
    evicted: list[dict] = field(default_factory=list)  # key, name, arch, stored bytes freed
    kept_in_use: int = 0  # entries over the cap that the build used (never evicted)

    def to_json(self) -> dict:
        return {"max_bytes": self.max_bytes, "stored_before": self.stored_before, "stored_after": self.stored_after,
                "evicted": self.evicted, "kept_in_use": self.kept_in_use}


def _stored_sizes(cache: Cache) -> dict[str, int]:
    sizes = {}
    for digest in cache.store.iter_digests():
        st = cache.store.stat(digest)
        if st is not None:
            sizes[digest] = st.stored_bytes
    return sizes


def _entries(cache: Cache) -> dict[str, dict]:
    found = {}
    for path in cache.record_paths("actions"):
        try:
            manifest = read_json(path, "manifest")
        except (CacheFormatError, FileNotFoundError):
            continue  # verify's business; it pins nothing here
        if isinstance(manifest, dict):
            found[path.stem] = manifest
    return found


def _blob_digests(manifest: dict) -> set[str]:
    blobs = manifest.get("blobs") if isinstance(manifest.get("blobs"), dict) else {}
    return {b["sha256"] for b in blobs.values() if isinstance(b, dict) and isinstance(b.get("sha256"), str)}


def _refs_to(cache: Cache) -> dict[str, list]:
    refs: dict[str, list] = {}
    for path in cache.record_paths("refs"):
        try:
            ref = read_json(path, "ref") or {}
        except CacheFormatError:
            continue
        if isinstance(ref.get("key"), str):
            refs.setdefault(ref["key"], []).append(path)
    return refs


def _remove(cache: Cache, key: str, manifest: dict, ref_paths: list) -> bool:
    """Refs to the entry, then its manifest, each re-read under its writers' lock: an entry rewritten
    meanwhile stays."""
    for path in ref_paths:
        with cache.lock(f"ref-{path.stem}"):
            try:
                if (read_json(path, "ref") or {}).get("key") == key:
                    path.unlink(missing_ok=True)
            except CacheFormatError:
                continue
    path = cache.manifest_path(key)
    with cache.lock(f"action-{key}"):
        try:
            if read_json(path, "manifest") != manifest:
                return False
        except (CacheFormatError, FileNotFoundError):
            return False
        path.unlink(missing_ok=True)
        cache.log_path(key).unlink(missing_ok=True)
    return True


def evict_to_size(cache: Cache, max_bytes: int, in_use: set[str]) -> EvictReport:
    """Evict least-recently-used entries (last build use, else build time) until the stored blob bytes
    are at most max_bytes; entries in `in_use` (the current build's) are never evicted."""
    sizes = _stored_sizes(cache)
    total = sum(sizes.values())
    report = EvictReport(max_bytes, total, total)
    if max_bytes <= 0 or total <= max_bytes:
        return report
    entries = _entries(cache)
    holders: dict[str, set[str]] = {}
    for key, manifest in entries.items():
        for digest in _blob_digests(manifest):
            holders.setdefault(digest, set()).add(key)
    used = usage.last_used(cache)

    def recency(key: str) -> float:
        if key in used:
            return used[key]
        try:
            return cache.manifest_path(key).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    refs = _refs_to(cache)
    for key in sorted(entries, key=lambda k: (recency(k), k)):
        if total <= max_bytes:
            break
        if key in in_use:
            report.kept_in_use += 1
            continue
        manifest = entries[key]
        if not _remove(cache, key, manifest, refs.get(key, [])):
            continue
        freed = 0
        for digest in _blob_digests(manifest):
            holders[digest].discard(key)
            if not holders[digest] and digest in sizes:  # no remaining entry shares it
                cache.store.delete(digest)
                freed += sizes.pop(digest)
        total -= freed
        report.evicted.append({"key": key, "name": str(manifest.get("name", "")),
                               "arch": str(manifest.get("arch", "")), "bytes": freed})
    report.stored_after = total
    if report.evicted:
        usage.record_eviction(cache, len(report.evicted), report.stored_before - total,
                              [e["key"] for e in report.evicted])
    return report


def max_size_from(option: str | None) -> int | None:
    """--max-size wins over AOTC_CACHE_MAXSIZE; None when neither is set."""
    import os

    text = option if option is not None else os.environ.get(MAXSIZE_ENV, "").strip() or None
    return parse_size(text) if text is not None else None

"""Cache maintenance for `aotc verify`, `aotc gc` and `aotc stats`: re-hash and quarantine, collect
what nothing reaches, count. Functions over a Cache; never imported by serving processes, so the
reports are plain dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aotc.cache.entries import Cache, CacheFormatError, read_json
from aotc.cache.store import CorruptBlobError, quarantine_file

# A sweep of build leftovers gc runs last: (now, dry_run) -> paths removed (or that would be).
Sweep = Callable[[float, bool], list[str]]
LOCK_MAX_AGE_S = 86_400.0


@dataclass
class VerifyReport:
    blobs_checked: int = 0
    manifests_checked: int = 0
    corrupt_blobs: list[dict] = field(default_factory=list)  # digest, file, actual, quarantined
    bad_files: list[dict] = field(default_factory=list)  # unreadable manifests/refs/prekeys/header sets
    broken_entries: list[dict] = field(default_factory=list)  # key, name, missing/corrupt blobs
    refs_dropped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.corrupt_blobs or self.bad_files or self.broken_entries or self.refs_dropped)

    def to_json(self) -> dict:
        return {"ok": self.ok, **dataclasses.asdict(self)}


@dataclass
class GcReport:
    dry_run: bool
    manifests_removed: list[str] = field(default_factory=list)
    refs_removed: list[str] = field(default_factory=list)
    prekeys_pruned: int = 0  # header-set entries dropped from prekey records
    header_sets_removed: int = 0
    blobs_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0  # stored (compressed) bytes of removed blobs
    logs_removed: int = 0
    tmp_removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class CacheStats:
    entries: int
    refs: int
    blobs: int
    stored_bytes: int  # compressed, on the medium
    raw_bytes: int  # uncompressed content

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "compression_ratio": round(self.compression_ratio, 3)}


def _bad_file(cache: Cache, path: Path, error: CacheFormatError, quarantine: bool = True) -> dict:
    moved = quarantine_file(path, cache.quarantine_dir) if quarantine else None
    return {"file": str(path), "problem": str(error), "quarantined": moved}


# --- verify ---------------------------------------------------------------------------------------


def verify(cache: Cache) -> VerifyReport:
    """Re-hash every blob (quarantining corrupt ones); move manifests that are unreadable or
    reference missing/corrupt blobs to quarantine/, and drop the refs and prekey hints that lead
    to them, so the next build rebuilds exactly those entries."""
    report = VerifyReport()
    bad_blobs: set[str] = set()
    for digest in list(cache.store.iter_digests()):
        report.blobs_checked += 1
        try:
            cache.store.get(digest)
        except CorruptBlobError as e:
            bad_blobs.add(digest)
            report.corrupt_blobs.append({"digest": digest, "file": e.path, "actual": e.actual,
                                         "quarantined": e.moved_to})
        except KeyError:  # removed meanwhile (gc, another verify)
            continue
    good: set[str] = set()
    for path in list(cache.record_paths("actions")):
        report.manifests_checked += 1
        _verify_manifest(cache, path, bad_blobs, good, report)
    for path in list(cache.record_paths("refs")):
        _verify_ref(cache, path, good, report)
    for path in list(cache.record_paths("prekeys")):
        _prune_prekey(cache, path, good, dry_run=False, on_bad=report.bad_files)
    for path in list(cache.record_paths("headersets")):
        try:
            read_json(path, "header set")
        except CacheFormatError as e:
            report.bad_files.append(_bad_file(cache, path, e))
    return report


def _verify_manifest(cache: Cache, path: Path, bad_blobs: set[str], good: set[str], report: VerifyReport) -> None:
    try:
        manifest = read_json(path, "manifest")
    except CacheFormatError as e:
        report.bad_files.append(_bad_file(cache, path, e))
        return
    if manifest is None:
        return
    problems = {}
    for name, blob in (manifest.get("blobs") or {}).items():
        digest = blob.get("sha256") if isinstance(blob, dict) else None
        if not isinstance(digest, str):
            problems[name] = "no digest"
        elif digest in bad_blobs:
            problems[name] = f"corrupt blob {digest}"
        elif not cache.store.has(digest):
            problems[name] = f"missing blob {digest}"
    if problems:
        moved = quarantine_file(path, cache.quarantine_dir)
        report.broken_entries.append({"key": path.stem, "name": manifest.get("name", ""), "problems": problems,
                                      "quarantined": moved})
    else:
        good.add(path.stem)


def _verify_ref(cache: Cache, path: Path, good: set[str], report: VerifyReport) -> None:
    try:
        ref = read_json(path, "ref")
    except CacheFormatError as e:
        report.bad_files.append(_bad_file(cache, path, e))
        report.refs_dropped.append(path.stem)
        return
    if ref is not None and ref.get("key") not in good:
        path.unlink(missing_ok=True)
        report.refs_dropped.append(path.stem)


def _prune_prekey(cache: Cache, path: Path, live: set[str], dry_run: bool, on_bad: list[dict] | None = None,
                  sets_in_use: set[str] | None = None) -> int:
    """Drop header sets whose action key is not live; returns how many were dropped and adds the
    header-set digests still referenced to sets_in_use."""
    try:
        record = read_json(path, "prekey record")
    except CacheFormatError as e:
        if on_bad is not None:
            on_bad.append(_bad_file(cache, path, e, quarantine=False))
        if not dry_run:
            path.unlink(missing_ok=True)  # only a hint; dropping it costs one compile
        return 1
    if record is None:
        return 0
    sets = record.get("sets", [])
    kept = [s for s in sets if isinstance(s, dict) and s.get("key") in live]
    if sets_in_use is not None:
        sets_in_use.update(s["headers"] for s in kept if isinstance(s.get("headers"), str))
    if len(kept) == len(sets) or dry_run:
        return len(sets) - len(kept)
    with cache.lock(f"prekey-{path.stem}"):
        if kept:
            cache.write_json(path, {**record, "sets": kept})
        else:
            path.unlink(missing_ok=True)
    return len(sets) - len(kept)


# --- gc -------------------------------------------------------------------------------------------


def gc(cache: Cache, keep_spec_keys: set[str] | None = None, older_than_seconds: float | None = None,
       dry_run: bool = False, blob_grace_seconds: float = 3600.0, sweeps: Iterable[Sweep] = ()) -> GcReport:
    """Drop refs not in keep_spec_keys (when given) and manifests that no kept ref reaches (when
    given) or that are older than the bound (when given); then blobs no remaining manifest
    references (blobs younger than blob_grace_seconds stay: a writer may be between its blob puts
    and its manifest); then dead writers' temp files, old lock files, and what `sweeps` remove
    (the build side passes its workspace sweep)."""
    report = GcReport(dry_run=dry_run)
    now = time.time()
    manifests = _scan_manifests(cache)
    reachable = _gc_refs(cache, keep_spec_keys, manifests, now, older_than_seconds, report)
    live: set[str] = set()
    referenced: set[str] = set()
    for key, (path, manifest, mtime) in manifests.items():
        too_old = older_than_seconds is not None and now - mtime > older_than_seconds
        unreachable = keep_spec_keys is not None and key not in reachable
        if (too_old or unreachable) and manifest is not None:
            report.manifests_removed.append(key)
            if not dry_run:
                path.unlink(missing_ok=True)
                cache.log_path(key).unlink(missing_ok=True)
            continue
        live.add(key)
        for blob in (manifest or {}).get("blobs", {}).values():
            if isinstance(blob, dict) and isinstance(blob.get("sha256"), str):
                referenced.add(blob["sha256"])
    sets_in_use: set[str] = set()
    for path in list(cache.record_paths("prekeys")):
        report.prekeys_pruned += _prune_prekey(cache, path, live, dry_run, sets_in_use=sets_in_use)
    _gc_header_sets(cache, sets_in_use, now, blob_grace_seconds, report)
    _gc_blobs(cache, referenced, now, blob_grace_seconds, report)
    _gc_logs(cache, live, now, older_than_seconds, report)
    report.tmp_removed = cache.store.sweep_tmp(dry_run=dry_run) + _sweep_locks(cache, now, dry_run)
    for sweep in sweeps:
        report.tmp_removed += sweep(now, dry_run)
    return report


def _scan_manifests(cache: Cache) -> dict[str, tuple[Path, dict | None, float]]:
    """key -> (path, manifest or None if unreadable, mtime). Unreadable ones are kept for verify
    (they still pin nothing)."""
    found = {}
    for path in cache.record_paths("actions"):
        try:
            mtime = path.stat().st_mtime
            manifest = read_json(path, "manifest")
        except (CacheFormatError, FileNotFoundError):
            manifest, mtime = None, time.time()
        found[path.stem] = (path, manifest, mtime)
    return found


def _gc_refs(cache: Cache, keep: set[str] | None, manifests: dict, now: float, older_than: float | None,
             report: GcReport) -> set[str]:
    """Drop refs not kept or pointing to missing/expiring manifests; return the action keys the
    kept refs reach."""
    reachable: set[str] = set()
    for path in list(cache.record_paths("refs")):
        try:
            ref = read_json(path, "ref") or {}
        except CacheFormatError:
            ref = {}
        key = ref.get("key")
        entry = manifests.get(key) if isinstance(key, str) else None
        expiring = entry is not None and older_than is not None and now - entry[2] > older_than
        if (keep is not None and path.stem not in keep) or entry is None or expiring:
            report.refs_removed.append(path.stem)
            if not report.dry_run:
                path.unlink(missing_ok=True)
            continue
        reachable.add(key)
    return reachable


def _gc_header_sets(cache: Cache, in_use: set[str], now: float, grace: float, report: GcReport) -> None:
    for path in list(cache.record_paths("headersets")):
        try:
            young = now - path.stat().st_mtime < grace
        except FileNotFoundError:
            continue
        if path.stem not in in_use and not young:
            report.header_sets_removed += 1
            if not report.dry_run:
                path.unlink(missing_ok=True)


def _gc_blobs(cache: Cache, referenced: set[str], now: float, grace: float, report: GcReport) -> None:
    for digest in list(cache.store.iter_digests()):
        if digest in referenced:
            continue
        st = cache.store.stat(digest)
        if st is None or now - st.mtime < grace:
            continue
        report.blobs_removed.append(digest)
        report.bytes_freed += st.stored_bytes
        if not report.dry_run:
            cache.store.delete(digest)


def _gc_logs(cache: Cache, live: set[str], now: float, older_than: float | None, report: GcReport) -> None:
    """Logs of failed builds (no manifest) go when older than the bound."""
    logs = cache.base / "logs"
    if older_than is None or not logs.is_dir():
        return
    for entry in os.scandir(logs):
        if entry.name.removesuffix(".log") in live:
            continue
        try:
            old = now - entry.stat().st_mtime > older_than
        except FileNotFoundError:
            continue
        if old:
            report.logs_removed += 1
            if not report.dry_run:
                Path(entry.path).unlink(missing_ok=True)


def _sweep_locks(cache: Cache, now: float, dry_run: bool, max_age: float = LOCK_MAX_AGE_S) -> list[str]:
    """Lock files are empty and harmless; sweep those untouched for a day (correctness never
    depends on them: every write is an atomic replace of identical content)."""
    swept = []
    if cache.lock_dir.is_dir():
        for entry in os.scandir(cache.lock_dir):
            try:
                if now - entry.stat().st_mtime > max_age:
                    swept.append(entry.path)
                    if not dry_run:
                        Path(entry.path).unlink(missing_ok=True)
            except FileNotFoundError:
                continue
    return swept


# --- stats ----------------------------------------------------------------------------------------


def stats(cache: Cache) -> CacheStats:
    entries = sum(1 for _ in cache.record_paths("actions"))
    refs = sum(1 for _ in cache.record_paths("refs"))
    blobs = stored = raw = 0
    for digest in cache.store.iter_digests():
        st = cache.store.stat(digest)
        if st is None:
            continue
        blobs += 1
        stored += st.stored_bytes
        raw += max(st.raw_bytes, 0)
    return CacheStats(entries=entries, refs=refs, blobs=blobs, stored_bytes=stored, raw_bytes=raw)

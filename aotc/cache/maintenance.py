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

from aotc.cache.entries import Cache, CacheFormatError, read_json, ref_problem
from aotc.cache.manifest import ManifestError, manifest_problems
from aotc.cache.store import CorruptBlobError, quarantine_file

# A sweep of build leftovers gc runs last: (now, dry_run) -> paths removed (or that would be).
Sweep = Callable[[float, bool], list[str]]
LOCK_MAX_AGE_S = 86_400.0


@dataclass
class VerifyReport:
    blobs_checked: int = 0
    manifests_checked: int = 0
    manifests_migrated: int = 0  # rewritten with their inline header map moved to a blob (header_map)
    corrupt_blobs: list[dict] = field(default_factory=list)  # digest, file, actual, quarantined
    bad_files: list[dict] = field(default_factory=list)  # unreadable manifests/refs/prekeys/header sets
    broken_entries: list[dict] = field(default_factory=list)  # key, name, missing/corrupt blobs
    refs_dropped: list[str] = field(default_factory=list)
    read_only: bool = False  # the cache could not be written: problems reported, nothing moved

    @property
    def ok(self) -> bool:
        return not (self.corrupt_blobs or self.bad_files or self.broken_entries or self.refs_dropped)

    def to_json(self) -> dict:
        return {"ok": self.ok, **dataclasses.asdict(self)}


@dataclass
class GcReport:
    dry_run: bool
    manifests_removed: list[str] = field(default_factory=list)
    entries_removed: list[dict] = field(default_factory=list)  # key, name, arch, bytes (raw size of its blobs)
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


# What maintenance finds unreadable: not the JSON written (CacheFormatError), or a manifest that is not one.
_UNREADABLE = (CacheFormatError, ManifestError)


def _read_checked(path: Path, what: str) -> dict | None:
    """read_json, then the shape every reader relies on: a malformed manifest is a ManifestError
    (the typed Manifest's own check), a malformed ref a CacheFormatError."""
    value = read_json(path, what)
    if value is not None and what == "manifest":
        problems = manifest_problems(value, path.stem)
        if problems:
            raise ManifestError(problems, str(path))
    elif value is not None and (problem := ref_problem(value, path.stem)):
        raise CacheFormatError(path, what, problem)
    return value


def _bad_file(cache: Cache, path: Path, error: Exception, quarantine: bool = True) -> dict:
    moved = quarantine_file(path, cache.quarantine_dir) if quarantine else None
    return {"file": str(path), "problem": str(error), "quarantined": moved}


# --- verify ---------------------------------------------------------------------------------------


def writable(cache: Cache) -> bool:
    """Whether maintenance may change the cache (a read-only mount or a lost permission: no)."""
    return os.access(cache.base if cache.base.is_dir() else cache.root, os.W_OK)


def verify(cache: Cache) -> VerifyReport:
    """Re-hash every blob (quarantining corrupt ones); move manifests that are unreadable or
    reference missing/corrupt blobs to quarantine/, and drop the refs and prekey hints that lead
    to them, so the next build rebuilds exactly those entries. Nothing is removed on a scan's word:
    each removal re-checks its file under the writers' lock for it (builds may commit meanwhile).
    On a cache it cannot write, verify reports and moves nothing."""
    if not writable(cache):
        return _verify_read_only(cache)
    report = VerifyReport()
    bad_blobs = _check_blobs(cache, report)
    good: set[str] = set()
    for path in list(cache.record_paths("actions")):
        report.manifests_checked += 1
        _verify_manifest(cache, path, bad_blobs, good, report)
        if path.stem in good and cache.migrate_manifest(path.stem):
            report.manifests_migrated += 1
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


def _check_blobs(cache: Cache, report: VerifyReport) -> set[str]:
    """Re-hash every blob (the store quarantines a corrupt one where it can write); the corrupt digests."""
    bad_blobs: set[str] = set()
    for digest in list(cache.store.iter_digests()):
        report.blobs_checked += 1
        try:
            cache.store.get(digest)
        except CorruptBlobError as e:
            bad_blobs.add(digest)
            report.corrupt_blobs.append({"digest": digest, "file": e.path, "actual": e.actual,
                                         "quarantined": None if report.read_only else e.moved_to})
        except KeyError:  # removed meanwhile (gc, another verify)
            continue
    return bad_blobs


def _verify_manifest(cache: Cache, path: Path, bad_blobs: set[str], good: set[str], report: VerifyReport) -> None:
    try:
        manifest = _read_checked(path, "manifest")
    except _UNREADABLE as e:
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
    if problems and _still_broken_entry(cache, path):
        with cache.lock(f"action-{path.stem}"):
            moved = quarantine_file(path, cache.quarantine_dir) if _still_broken_entry(cache, path) else None
        if moved is not None:
            report.broken_entries.append({"key": path.stem, "name": manifest.get("name", ""), "problems": problems,
                                          "quarantined": moved})
            return
    good.add(path.stem)


def _still_broken_entry(cache: Cache, path: Path) -> bool:
    """True when the manifest at path (read now) is unreadable or misses a blob; a writer that
    re-stored the entry or its blobs meanwhile makes it whole again."""
    try:
        manifest = _read_checked(path, "manifest")
    except _UNREADABLE:
        return True
    if manifest is None:
        return False  # gone: nothing to move
    blobs = manifest.get("blobs")
    if not isinstance(blobs, dict):
        return True
    for blob in blobs.values():
        digest = blob.get("sha256") if isinstance(blob, dict) else None
        if not isinstance(digest, str) or not _has_blob(cache, digest):
            return True
    return False


def _has_blob(cache: Cache, digest: str) -> bool:
    try:
        return cache.store.has(digest)
    except ValueError:  # not a digest at all
        return False


def _live_key(cache: Cache, key: object) -> bool:
    """A ref's action key names a manifest that is whole now."""
    if not isinstance(key, str):
        return False
    try:
        path = cache.manifest_path(key)
    except ValueError:
        return False
    return path.is_file() and not _still_broken_entry(cache, path)


def _verify_ref(cache: Cache, path: Path, good: set[str], report: VerifyReport) -> None:
    try:
        ref = _read_checked(path, "ref")
    except CacheFormatError:
        ref = None
    else:
        if ref is None or ref.get("key") in good:
            return
    with cache.lock(f"ref-{path.stem}"):  # set_ref takes it too: a ref written meanwhile is seen here
        try:
            ref = _read_checked(path, "ref")
        except CacheFormatError as e:
            report.bad_files.append(_bad_file(cache, path, e))
            report.refs_dropped.append(path.stem)
            return
        if ref is None or _live_key(cache, ref.get("key")):
            return
        path.unlink(missing_ok=True)
    report.refs_dropped.append(path.stem)


def _verify_read_only(cache: Cache) -> VerifyReport:
    """verify's findings without moving anything (the cache cannot be written)."""
    report = VerifyReport(read_only=True)
    bad_blobs = _check_blobs(cache, report)
    good: set[str] = set()
    for path in list(cache.record_paths("actions")):
        report.manifests_checked += 1
        try:
            manifest = _read_checked(path, "manifest")
        except _UNREADABLE as e:
            report.bad_files.append({"file": str(path), "problem": str(e), "quarantined": None})
            continue
        blobs = (manifest or {}).get("blobs")
        digests = [b.get("sha256") if isinstance(b, dict) else None for b in (blobs.values() if isinstance(blobs, dict) else [None])]
        if all(isinstance(d, str) and d not in bad_blobs and _has_blob(cache, d) for d in digests):
            good.add(path.stem)
        else:
            report.broken_entries.append({"key": path.stem, "name": str((manifest or {}).get("name", "")),
                                          "problems": {"blobs": "missing or corrupt"}, "quarantined": None})
    for path in list(cache.record_paths("refs")):
        try:
            ref = _read_checked(path, "ref")
        except CacheFormatError as e:
            report.bad_files.append({"file": str(path), "problem": str(e), "quarantined": None})
            continue
        if ref is not None and ref.get("key") not in good:
            report.refs_dropped.append(path.stem)  # would be dropped: reported, not removed
    return report


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
        # a manifest younger than the grace may have its ref still to come (a build between the two)
        unreachable = keep_spec_keys is not None and key not in reachable and now - mtime >= blob_grace_seconds
        if (too_old or unreachable) and manifest is not None and _remove_entry(cache, key, path, manifest, now,
                                                                               older_than_seconds, keep_spec_keys,
                                                                               dry_run):
            report.manifests_removed.append(key)
            report.entries_removed.append(_entry_summary(key, manifest))
            continue
        live.add(key)
        blobs = (manifest or {}).get("blobs")
        for blob in blobs.values() if isinstance(blobs, dict) else ():
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


def _entry_summary(key: str, manifest: dict) -> dict:
    blobs = manifest.get("blobs") if isinstance(manifest.get("blobs"), dict) else {}
    size = sum(b.get("size", 0) for b in blobs.values() if isinstance(b, dict) and isinstance(b.get("size"), int))
    return {"key": key, "name": str(manifest.get("name", "")), "arch": str(manifest.get("arch", "")), "bytes": size}


def _remove_entry(cache: Cache, key: str, path: Path, manifest: dict, now: float, older_than: float | None,
                  keep: set[str] | None, dry_run: bool) -> bool:
    """Remove a manifest gc chose, after re-checking under its writers' lock that it still is what
    was chosen: unchanged since the scan, and (when kept refs were given) not reached by a ref to
    its own spec key written meanwhile."""
    if dry_run:
        return True
    with cache.lock(f"action-{key}"):
        try:
            mtime = path.stat().st_mtime
            current = read_json(path, "manifest")
        except (FileNotFoundError, CacheFormatError):
            return False
        if current != manifest:
            return False
        too_old = older_than is not None and now - mtime > older_than
        sk = current.get("spec_key")
        if not too_old and keep is not None and isinstance(sk, str) and sk in keep:
            try:
                ref = cache.get_ref(sk)
            except (CacheFormatError, ValueError):
                ref = None
            if ref is not None and ref.get("key") == key:
                return False
        path.unlink(missing_ok=True)
        cache.log_path(key).unlink(missing_ok=True)
    return True


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
        unkept = keep is not None and path.stem not in keep
        if (unkept or entry is None or expiring) and _remove_ref(cache, path, unkept or expiring, report.dry_run):
            report.refs_removed.append(path.stem)
            continue
        if isinstance(key, str):
            reachable.add(key)
    return reachable


def _remove_ref(cache: Cache, path: Path, regardless: bool, dry_run: bool) -> bool:
    """Remove a ref gc chose; one chosen only because its manifest was missing at the scan is
    re-read under the lock set_ref takes, and kept if it now leads to a whole entry."""
    if dry_run:
        return True
    with cache.lock(f"ref-{path.stem}"):
        if not regardless:
            try:
                ref = read_json(path, "ref")
            except CacheFormatError:
                ref = {}
            if ref is None or _live_key(cache, ref.get("key")):
                return False
        path.unlink(missing_ok=True)
    return True


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

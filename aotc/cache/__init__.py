"""The kernel cache: action key -> manifest -> content-addressed blobs, spec key -> action key refs,
direct-mode prekeys, compile logs, and verify/gc/stats over them (layout in docs/CONTRACTS.md).
Imported by serving processes: resolve_ref + read_blob never scan directories; no Jinja2/nvcc here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from aotc.cache.store import (
    LAYOUT_VERSION,
    BlobStore,
    CorruptBlobError,
    atomic_write,
    check_digest,
    open_blob_store,
)
from aotc.diagnostics import AotcError, Diagnostic
from aotc.keys import canonical_json, sha256_hex
from aotc.resources import checkout_root

SCHEMA = 1
CACHE_DIR_ENV = "AOTC_CACHE_DIR"
# Header sets remembered per prekey: a few variants (e.g. toggling a CUTLASS checkout) stay warm.
MAX_PREKEY_SETS = 8
_LOG_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # compiled on use (re caches it): not on the serving path
# A workspace kept for resuming an interrupted build (tmp/<name>/) that no build touched for a week
# is swept by gc.
WORKSPACE_MAX_AGE_S = 7 * 86_400.0
LOCK_TIMEOUT_S = 600.0  # a build of one TU takes ~1 min; 10 min means a stuck writer


class CacheFormatError(AotcError):
    """A cache file (manifest, ref, prekey record) that cannot be read as what it should be."""

    def __init__(self, path: Path, what: str, problem: str):
        super().__init__(
            Diagnostic(
                code="AOTC-CACHE-002",
                message=f"{what} {path} is unreadable: {problem}",
                fix="run `aotc verify` (moves unreadable files to quarantine/ and drops their refs), "
                "then rebuild (`aotc build`)",
                details={"file": str(path), "problem": problem},
            )
        )
        self.path = path


def default_cache_dir() -> Path:
    """$AOTC_CACHE_DIR; else cache/ of a source checkout; else $XDG_CACHE_HOME/aotc (~/.cache/aotc)."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    checkout = checkout_root()
    if checkout is not None:
        return checkout / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aotc"


# --- header hashing for direct mode -------------------------------------------------------------

_file_digests: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str) -> str | None:
    """sha256 of a file, hashed once per process per (path, size, mtime_ns, inode); None if absent."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    memo_key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _file_digests.get(memo_key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = _file_digests[memo_key] = h.hexdigest()
    return digest


def _digest_or_none(hash_file: Callable[[str], str | None], path: str) -> str | None:
    try:
        return hash_file(path)
    except OSError:  # a header that vanished or became unreadable: a miss, not a crash
        return None


class HeaderSnapshot:
    """Header digests for one build run (pass it as lookup_prekey's hash_file): each path is
    stat'ed at most once and each header set checked at most once per snapshot, because files are
    taken not to change while one build runs (as make/ninja do). Take a new one per run."""

    def __init__(self) -> None:
        self._digests: dict[str, str | None] = {}
        self.verified_sets: dict[str, bool] = {}  # header-set digest -> all files still match

    def __call__(self, path: str) -> str | None:
        try:
            return self._digests[path]
        except KeyError:
            digest = self._digests[path] = _digest_or_none(file_sha256, path)
            return digest


# --- reports ------------------------------------------------------------------------------------


class _Report:
    """A mutable record with dataclass-like keyword init, eq, repr and to-dict over `_defaults`
    (name -> default, or a factory for lists). Not a dataclass: serving processes import this module
    and each dataclass costs ~1-2 ms to create; these reports are only built by verify/gc/stats."""

    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **values: Any):
        unknown = set(values) - set(self._defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        for name, default in self._defaults.items():
            if name in values:
                value = values[name]
            elif default is _MISSING:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)

    def _asdict(self) -> dict:
        return {name: copy.deepcopy(getattr(self, name)) for name in self._defaults}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._asdict() == other._asdict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclasses these were

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._defaults)
        return f"{type(self).__name__}({inner})"


_MISSING = object()


class VerifyReport(_Report):
    _defaults: ClassVar[dict[str, Any]] = {
        "blobs_checked": 0,
        "manifests_checked": 0,
        "corrupt_blobs": list,  # digest, file, actual, quarantined
        "bad_files": list,  # unreadable manifests/refs/prekeys/header sets
        "broken_entries": list,  # key, name, missing/corrupt blobs
        "refs_dropped": list,
    }
    blobs_checked: int
    manifests_checked: int
    corrupt_blobs: list[dict]
    bad_files: list[dict]
    broken_entries: list[dict]
    refs_dropped: list[str]

    @property
    def ok(self) -> bool:
        return not (self.corrupt_blobs or self.bad_files or self.broken_entries or self.refs_dropped)

    def to_json(self) -> dict:
        return {"ok": self.ok, **self._asdict()}


class GcReport(_Report):
    _defaults: ClassVar[dict[str, Any]] = {
        "dry_run": _MISSING,
        "manifests_removed": list,
        "refs_removed": list,
        "prekeys_pruned": 0,  # header-set entries dropped from prekey records
        "header_sets_removed": 0,
        "blobs_removed": list,
        "bytes_freed": 0,  # stored (compressed) bytes of removed blobs
        "logs_removed": 0,
        "tmp_removed": list,
    }
    dry_run: bool
    manifests_removed: list[str]
    refs_removed: list[str]
    prekeys_pruned: int
    header_sets_removed: int
    blobs_removed: list[str]
    bytes_freed: int
    logs_removed: int
    tmp_removed: list[str]

    def to_json(self) -> dict:
        return self._asdict()


class CacheStats(_Report):
    _defaults: ClassVar[dict[str, Any]] = dict.fromkeys(
        ("entries", "refs", "blobs", "stored_bytes", "raw_bytes"), _MISSING)
    entries: int
    refs: int
    blobs: int
    stored_bytes: int  # compressed, on the medium
    raw_bytes: int  # uncompressed content

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        return {**self._asdict(), "compression_ratio": round(self.compression_ratio, 3)}


# --- the cache ----------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict | None:
    """The JSON object at path, None if absent; CacheFormatError (file untouched) if unreadable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheFormatError(path, what, f"not JSON ({e}; {len(text)} bytes)") from None
    if not isinstance(value, dict):
        raise CacheFormatError(path, what, f"expected a JSON object, got {type(value).__name__}")
    return value


def _json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


class Cache:
    """One cache root. Readers never lock; writers lock only per key (two builds of one key)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, store: BlobStore | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.base = self.root / LAYOUT_VERSION
        self.store = store if store is not None else open_blob_store(self.root)
        self.tmp_dir = self.base / "tmp"
        self.lock_dir = self.tmp_dir / "locks"
        self.quarantine_dir = self.base / "quarantine"

    # paths
    def _sharded(self, kind: str, key: str) -> Path:
        check_digest(key)
        return self.base / kind / key[:2] / f"{key}.json"

    def manifest_path(self, key: str) -> Path:
        return self._sharded("actions", key)

    def ref_path(self, spec_key: str) -> Path:
        return self._sharded("refs", spec_key)

    def prekey_path(self, prekey: str) -> Path:
        return self._sharded("prekeys", prekey)

    def header_set_path(self, digest: str) -> Path:
        return self._sharded("headersets", digest)

    def log_path(self, name: str) -> Path:
        if not re.fullmatch(_LOG_NAME, name):
            raise ValueError(f"log name {name!r} must be 1-128 chars of [A-Za-z0-9._-] (use the action key)")
        return self.base / "logs" / f"{name}.log"

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Per-key writer lock; only saves duplicate work (every write is an atomic replace)."""
        from filelock import FileLock, Timeout  # writers only: keeps the serving import light

        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.lock_dir / f"{name}.lock"
        try:
            with FileLock(str(path), timeout=LOCK_TIMEOUT_S):
                yield
        except Timeout:
            raise AotcError(
                Diagnostic(
                    code="AOTC-CACHE-004",
                    message=f"waited {LOCK_TIMEOUT_S:.0f} s for the writer lock {path}; another process holds it",
                    fix="wait for the other `aotc build` to finish; if none runs, delete the lock file",
                )
            ) from None

    def _write_json(self, path: Path, value: dict) -> None:
        atomic_write(path, [_json_bytes(value)], self.tmp_dir)

    # entries
    def get_manifest(self, key: str) -> dict | None:
        return _read_json(self.manifest_path(key), "manifest")

    def put_entry(self, key: str, blobs: dict[str, bytes], manifest: dict) -> dict:
        """Store blobs, then the manifest (atomic, last). Returns the stored manifest: if another
        writer stored this key first, its manifest is returned and nothing is written."""
        check_digest(key)
        with self._lock(f"action-{key}"):
            try:
                existing = self.get_manifest(key)
            except CacheFormatError:
                existing = None  # unreadable: replace it with a good one
            if existing is not None and self._blobs_present(existing):
                return existing
            record = dict(manifest)
            record["schema"] = SCHEMA
            record["key"] = key
            record["blobs"] = {
                name: {"sha256": self.store.put(data), "size": len(data)} for name, data in blobs.items()
            }
            self._write_json(self.manifest_path(key), record)
            return record

    def _blobs_present(self, manifest: dict) -> bool:
        return all(self.store.has(b["sha256"]) for b in manifest.get("blobs", {}).values())

    def read_blob(self, digest: str) -> bytes:
        """Verified bytes of a blob; KeyError if absent, CorruptBlobError (quarantined) if bad."""
        return self.store.get(digest)

    def _readable(self, kind: str, what: str) -> Iterator[dict]:
        """Every readable record of one kind; unreadable ones are left to verify()."""
        for path in self._iter_json(kind):
            try:
                record = _read_json(path, what)
            except CacheFormatError:
                continue
            if record is not None:
                yield record

    def entries(self) -> Iterator[dict]:
        """Every readable manifest (for `ls`)."""
        return self._readable("actions", "manifest")

    # refs
    def set_ref(self, spec_key: str, action_key: str, info: dict | None = None) -> None:
        check_digest(action_key)
        ref = {**(info or {}), "schema": SCHEMA, "spec_key": spec_key, "key": action_key}
        self._write_json(self.ref_path(spec_key), ref)

    def get_ref(self, spec_key: str) -> dict | None:
        return _read_json(self.ref_path(spec_key), "ref")

    def resolve_ref(self, spec_key: str) -> dict | None:
        """The manifest a spec key points to; None if no ref or the entry is gone. Two file reads."""
        ref = self.get_ref(spec_key)
        if ref is None:
            return None
        key = ref.get("key")
        if not isinstance(key, str):
            raise CacheFormatError(self.ref_path(spec_key), "ref", f"no action key in it: {ref!r}")
        return self.get_manifest(key)

    def refs(self) -> Iterator[dict]:
        """Every readable ref (spec key -> action key)."""
        return self._readable("refs", "ref")

    # direct mode
    def record_prekey(self, prekey: str, headers: dict[str, str], action_key: str) -> None:
        """Remember that compiling `prekey` read exactly `headers` (path -> sha256) and gave
        `action_key`; newest first, at most MAX_PREKEY_SETS header sets per prekey. The header set
        is stored once by its digest: most kernels of a family read the same ~1,100 headers."""
        check_digest(action_key)
        headers = dict(sorted(headers.items()))
        set_digest = sha256_hex(canonical_json(headers))
        set_path = self.header_set_path(set_digest)
        if set_path.is_file():
            os.utime(set_path)  # in use again: gc's grace period starts over
        else:
            self._write_json(set_path, {"schema": SCHEMA, "headers": headers})
        path = self.prekey_path(prekey)
        new = {"key": action_key, "headers": set_digest}
        with self._lock(f"prekey-{prekey}"):
            try:
                old = _read_json(path, "prekey record") or {}
            except CacheFormatError:
                old = {}  # a lost direct-mode hint costs one compile, never a wrong result
            sets = [s for s in old.get("sets", []) if isinstance(s, dict) and s != new]
            record = {"schema": SCHEMA, "prekey": prekey, "sets": [new, *sets][:MAX_PREKEY_SETS]}
            self._write_json(path, record)

    def lookup_prekey(self, prekey: str, hash_file: Callable[[str], str | None] = file_sha256) -> str | None:
        """The action key of a recorded header set whose files still have the recorded digests and
        whose manifest exists; None otherwise (then compile, and record_prekey the result).
        Pass one HeaderSnapshot per build run as hash_file to check shared header sets once."""
        try:
            record = _read_json(self.prekey_path(prekey), "prekey record")
        except CacheFormatError:
            return None
        for entry in (record or {}).get("sets", []):
            key, set_digest = entry.get("key"), entry.get("headers")
            if not (isinstance(key, str) and isinstance(set_digest, str)):
                continue
            if self._header_set_matches(set_digest, hash_file) and self.manifest_path(key).is_file():
                return key
        return None

    def _header_set_matches(self, set_digest: str, hash_file: Callable[[str], str | None]) -> bool:
        memo = getattr(hash_file, "verified_sets", None)
        if memo is not None and set_digest in memo:
            return memo[set_digest]
        try:
            record = _read_json(self.header_set_path(set_digest), "header set")
        except (CacheFormatError, ValueError):
            record = None
        headers = (record or {}).get("headers")
        ok = isinstance(headers, dict) and all(_digest_or_none(hash_file, p) == d for p, d in headers.items())
        if memo is not None:
            memo[set_digest] = ok
        return ok

    # logs
    def write_log(self, key: str, text: str) -> Path:
        path = self.log_path(key)
        atomic_write(path, [text.encode("utf-8", "replace")], self.tmp_dir)
        return path

    # maintenance
    def _iter_json(self, kind: str) -> Iterator[Path]:
        top = self.base / kind
        if not top.is_dir():
            return
        for shard in sorted(os.scandir(top), key=lambda e: e.name):
            if shard.is_dir():
                for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
                    if entry.name.endswith(".json"):
                        yield Path(entry.path)

    def _quarantine_file(self, path: Path) -> str | None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dst = self.quarantine_dir / f"{path.stem}.{time.time_ns()}{path.suffix}"
        try:
            os.replace(path, dst)
        except FileNotFoundError:
            return None
        return str(dst)

    def verify(self) -> VerifyReport:
        """Re-hash every blob (quarantining corrupt ones); move manifests that are unreadable or
        reference missing/corrupt blobs to quarantine/, and drop the refs and prekey hints that
        lead to them, so the next build rebuilds exactly those entries."""
        report = VerifyReport()
        bad_blobs: set[str] = set()
        for digest in list(self.store.iter_digests()):
            report.blobs_checked += 1
            try:
                self.store.get(digest)
            except CorruptBlobError as e:
                bad_blobs.add(digest)
                report.corrupt_blobs.append(
                    {"digest": digest, "file": e.path, "actual": e.actual, "quarantined": e.moved_to}
                )
            except KeyError:  # removed meanwhile (gc, another verify)
                continue
        good: set[str] = set()
        for path in list(self._iter_json("actions")):
            report.manifests_checked += 1
            self._verify_manifest(path, bad_blobs, good, report)
        for path in list(self._iter_json("refs")):
            self._verify_ref(path, good, report)
        for path in list(self._iter_json("prekeys")):
            self._prune_prekey(path, good, dry_run=False, on_bad=report.bad_files)
        for path in list(self._iter_json("headersets")):
            try:
                _read_json(path, "header set")
            except CacheFormatError as e:
                report.bad_files.append(
                    {"file": str(path), "problem": str(e), "quarantined": self._quarantine_file(path)}
                )
        return report

    def _verify_manifest(self, path: Path, bad_blobs: set[str], good: set[str], report: VerifyReport) -> None:
        try:
            manifest = _read_json(path, "manifest")
        except CacheFormatError as e:
            report.bad_files.append(
                {"file": str(path), "problem": str(e), "quarantined": self._quarantine_file(path)}
            )
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
            elif not self.store.has(digest):
                problems[name] = f"missing blob {digest}"
        if problems:
            moved = self._quarantine_file(path)
            report.broken_entries.append(
                {
                    "key": path.stem,
                    "name": manifest.get("name", ""),
                    "problems": problems,
                    "quarantined": moved,
                }
            )
        else:
            good.add(path.stem)

    def _verify_ref(self, path: Path, good: set[str], report: VerifyReport) -> None:
        try:
            ref = _read_json(path, "ref")
        except CacheFormatError as e:
            report.bad_files.append(
                {"file": str(path), "problem": str(e), "quarantined": self._quarantine_file(path)}
            )
            report.refs_dropped.append(path.stem)
            return
        if ref is not None and ref.get("key") not in good:
            path.unlink(missing_ok=True)
            report.refs_dropped.append(path.stem)

    def _prune_prekey(
        self,
        path: Path,
        live: set[str],
        dry_run: bool,
        on_bad: list[dict] | None = None,
        sets_in_use: set[str] | None = None,
    ) -> int:
        """Drop header sets whose action key is not live; returns how many were dropped and adds
        the header-set digests still referenced to sets_in_use."""
        try:
            record = _read_json(path, "prekey record")
        except CacheFormatError as e:
            if on_bad is not None:
                on_bad.append({"file": str(path), "problem": str(e), "quarantined": None})
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
        with self._lock(f"prekey-{path.stem}"):
            if kept:
                self._write_json(path, {**record, "sets": kept})
            else:
                path.unlink(missing_ok=True)
        return len(sets) - len(kept)

    def gc(
        self,
        keep_spec_keys: set[str] | None = None,
        older_than_seconds: float | None = None,
        dry_run: bool = False,
        blob_grace_seconds: float = 3600.0,
    ) -> GcReport:
        """Drop refs not in keep_spec_keys (when given) and manifests that no kept ref reaches
        (when given) or that are older than the bound (when given); then blobs no remaining
        manifest references (blobs younger than blob_grace_seconds stay: a writer may be between
        its blob puts and its manifest); then dead writers' temp files."""
        report = GcReport(dry_run=dry_run)
        now = time.time()
        manifests = self._scan_manifests()
        reachable = self._gc_refs(keep_spec_keys, manifests, now, older_than_seconds, report)
        live: set[str] = set()
        referenced: set[str] = set()
        for key, (path, manifest, mtime) in manifests.items():
            too_old = older_than_seconds is not None and now - mtime > older_than_seconds
            unreachable = keep_spec_keys is not None and key not in reachable
            if (too_old or unreachable) and manifest is not None:
                report.manifests_removed.append(key)
                if not dry_run:
                    path.unlink(missing_ok=True)
                    self.log_path(key).unlink(missing_ok=True)
                continue
            live.add(key)
            for blob in (manifest or {}).get("blobs", {}).values():
                if isinstance(blob, dict) and isinstance(blob.get("sha256"), str):
                    referenced.add(blob["sha256"])
        sets_in_use: set[str] = set()
        for path in list(self._iter_json("prekeys")):
            report.prekeys_pruned += self._prune_prekey(path, live, dry_run, sets_in_use=sets_in_use)
        self._gc_header_sets(sets_in_use, now, blob_grace_seconds, dry_run, report)
        self._gc_blobs(referenced, now, blob_grace_seconds, dry_run, report)
        self._gc_logs(live, now, older_than_seconds, dry_run, report)
        report.tmp_removed = (self.store.sweep_tmp(dry_run=dry_run) + self._sweep_locks(now, dry_run)
                              + self._sweep_workspaces(now, dry_run))
        return report

    def _scan_manifests(self) -> dict[str, tuple[Path, dict | None, float]]:
        """key -> (path, manifest or None if unreadable, mtime). Unreadable ones are kept for
        verify (they still pin nothing)."""
        found = {}
        for path in self._iter_json("actions"):
            try:
                mtime = path.stat().st_mtime
                manifest = _read_json(path, "manifest")
            except (CacheFormatError, FileNotFoundError):
                manifest, mtime = None, time.time()
            found[path.stem] = (path, manifest, mtime)
        return found

    def _gc_refs(
        self, keep: set[str] | None, manifests: dict, now: float, older_than: float | None, report: GcReport
    ) -> set[str]:
        """Drop refs not kept or pointing to missing/expiring manifests; return the action keys
        the kept refs reach."""
        reachable: set[str] = set()
        for path in list(self._iter_json("refs")):
            try:
                ref = _read_json(path, "ref") or {}
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

    def _gc_header_sets(
        self, in_use: set[str], now: float, grace: float, dry_run: bool, report: GcReport
    ) -> None:
        for path in list(self._iter_json("headersets")):
            try:
                young = now - path.stat().st_mtime < grace
            except FileNotFoundError:
                continue
            if path.stem not in in_use and not young:
                report.header_sets_removed += 1
                if not dry_run:
                    path.unlink(missing_ok=True)

    def _gc_blobs(
        self, referenced: set[str], now: float, grace: float, dry_run: bool, report: GcReport
    ) -> None:
        for digest in list(self.store.iter_digests()):
            if digest in referenced:
                continue
            st = self.store.stat(digest)
            if st is None or now - st.mtime < grace:
                continue
            report.blobs_removed.append(digest)
            report.bytes_freed += st.stored_bytes
            if not dry_run:
                self.store.delete(digest)

    def _gc_logs(
        self, live: set[str], now: float, older_than: float | None, dry_run: bool, report: GcReport
    ) -> None:
        """Logs of failed builds (no manifest) go when older than the bound."""
        logs = self.base / "logs"
        if older_than is None or not logs.is_dir():
            return
        for entry in os.scandir(logs):
            name = entry.name.removesuffix(".log")
            if name in live:
                continue
            try:
                old = now - entry.stat().st_mtime > older_than
            except FileNotFoundError:
                continue
            if old:
                report.logs_removed += 1
                if not dry_run:
                    Path(entry.path).unlink(missing_ok=True)

    def _sweep_workspaces(self, now: float, dry_run: bool, max_age: float = WORKSPACE_MAX_AGE_S) -> list[str]:
        """Build workspaces kept for resuming (folders in tmp/, e.g. a FlashInfer build stopped
        halfway: gigabytes of objects) that no build has touched for max_age and none holds now."""
        from filelock import FileLock, Timeout  # writers only: keeps the serving import light

        swept = []
        if not self.tmp_dir.is_dir():
            return swept
        for entry in os.scandir(self.tmp_dir):
            if not entry.is_dir(follow_symlinks=False) or entry.path == str(self.lock_dir):
                continue
            folder = Path(entry.path)
            try:
                touched = max(p.stat().st_mtime for p in (folder, *folder.glob("*"), *folder.glob("*/.ninja_log")))
            except FileNotFoundError:
                continue
            if now - touched <= max_age:
                continue
            lock = FileLock(f"{folder}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:  # a build is using it right now
                continue
            try:
                swept.append(str(folder))
                if not dry_run:
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
        return swept

    def _sweep_locks(self, now: float, dry_run: bool, max_age: float = 86_400.0) -> list[str]:
        """Lock files are empty and harmless; sweep those untouched for a day (correctness never
        depends on them: every write is an atomic replace of identical content)."""
        swept = []
        if self.lock_dir.is_dir():
            for entry in os.scandir(self.lock_dir):
                try:
                    if now - entry.stat().st_mtime > max_age:
                        swept.append(entry.path)
                        if not dry_run:
                            Path(entry.path).unlink(missing_ok=True)
                except FileNotFoundError:
                    continue
        return swept

    def stats(self) -> CacheStats:
        entries = sum(1 for _ in self._iter_json("actions"))
        refs = sum(1 for _ in self._iter_json("refs"))
        blobs = stored = raw = 0
        for digest in self.store.iter_digests():
            st = self.store.stat(digest)
            if st is None:
                continue
            blobs += 1
            stored += st.stored_bytes
            raw += max(st.raw_bytes, 0)
        return CacheStats(entries=entries, refs=refs, blobs=blobs, stored_bytes=stored, raw_bytes=raw)

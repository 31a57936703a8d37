"""The cache's entries: action key -> manifest -> content-addressed blobs, spec key -> action key
refs, compile logs, and where every record kind lives (layout in docs/CONTRACTS.md). Imported by
serving processes: resolve_ref + read_blob never scan directories; no Jinja2/nvcc/filelock here.
The blob store (aotc.cache.store), the header map and the writers' helpers are imported on first use:
a serving process whose kept cubin and helper are already in its runtime folder reads two records
and never needs them (each module costs ~0.2-0.5 ms to import).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# The read side (record paths and checksums) lives in aotc.cache.records, which the FlashInfer hook
# imports alone; re-exported here, where every other reader and writer finds them.
from aotc.cache.records import (  # noqa: F401 - re-exported
    LAYOUT_VERSION,
    RECORD_SUM,
    SCHEMA,
    json_bytes,
    manifest_problems,
    parse_record,
    read_json,
    record_path,
    record_sum,
    ref_problem,
)
from aotc.diagnostics import AotcError, Diagnostic
from aotc.keys import check_digest

if TYPE_CHECKING:  # pragma: no cover
    from aotc.cache.store import BlobStore

_LOG_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # compiled on use (re caches it): not on the serving path
# Record kinds a remote layer shares (docs/cache.md); logs, stats and workspaces stay on this machine.
SHARED_RECORDS = frozenset({"actions", "refs", "prekeys", "headersets"})
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


# Old names of records.record_sum / records.json_bytes (tests and tools use them).
_record_sum = record_sum
_json_bytes = json_bytes


class Cache:
    """One cache root. Readers never lock; writers lock only per key (two builds of one key).
    Direct-mode records are written by aotc.build.direct_mode, verify/gc/stats live in
    aotc.cache.maintenance; both reach the files through the paths defined here."""

    def __init__(self, root: str | os.PathLike[str] | None = None, store: BlobStore | None = None):
        if root is None:  # a given root (every serving lookup) needs no default
            from aotc.resources import default_cache_dir

            root = default_cache_dir()
        self.root = Path(root)
        self.base = self.root / LAYOUT_VERSION
        self._store = store
        self.tmp_dir = self.base / "tmp"
        self.lock_dir = self.tmp_dir / "locks"
        self.quarantine_dir = self.base / "quarantine"

    @property
    def store(self) -> BlobStore:
        """The blob store (AOTC_BLOB_STORE / AOTC_REMOTE select it), opened on first use."""
        if self._store is None:
            from aotc.cache.store import open_blob_store

            self._store = open_blob_store(self.root)
        return self._store

    # paths
    def _sharded(self, kind: str, key: str) -> Path:
        return record_path(self.root, kind, key)

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

    def record_paths(self, kind: str) -> Iterator[Path]:
        """Every record file of one kind (actions, refs, prekeys, headersets), in a stable order."""
        top = self.base / kind
        if not top.is_dir():
            return
        for shard in sorted(os.scandir(top), key=lambda e: e.name):
            if shard.is_dir():
                for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
                    if entry.name.endswith(".json"):
                        yield Path(entry.path)

    # writing
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Per-key writer lock; only saves duplicate work (every write is an atomic replace)."""
        from filelock import FileLock, Timeout  # writers only: keeps the serving import light

        path = self.lock_dir / f"{name}.lock"
        lock = FileLock(str(path), timeout=LOCK_TIMEOUT_S)
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            # filelock retries an unwritable lock file until its timeout: find out at once instead
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
            lock.acquire()
        except Timeout:
            raise AotcError(
                Diagnostic(
                    code="AOTC-CACHE-004",
                    message=f"waited {LOCK_TIMEOUT_S:.0f} s for the writer lock {path}; another process holds it",
                    fix="wait for the other `aotc build` to finish; if none runs, delete the lock file",
                )
            ) from None
        except OSError as e:  # a read-only or full cache: say so, with the fix
            from aotc.cache.store import CacheWriteError

            if CacheWriteError.covers(e):
                raise CacheWriteError(path, e) from None
            raise
        try:
            yield
        finally:
            lock.release()

    def write_json(self, path: Path, value: dict) -> None:
        from aotc.cache.store import atomic_write

        data = _json_bytes(value)
        atomic_write(path, [data], self.tmp_dir)
        kind = path.parent.parent.name
        if kind in SHARED_RECORDS and path.parent.parent.parent == self.base:  # through a remote layer
            self.store.put_record(kind, path.stem, data)

    def read_record(self, kind: str, name: str, what: str) -> dict | None:
        """A record (actions, refs, prekeys, headersets) from its local file; on a local miss from the
        store's remote layer (checked there against its name), then kept locally."""
        path = self._sharded(kind, name)
        value = read_json(path, what)
        if value is None:
            data = self.store.get_record(kind, name)
            if data is not None:
                from aotc.cache.store import atomic_write

                atomic_write(path, [data], self.tmp_dir)
                value = read_json(path, what)
        return value

    def has_manifest(self, key: str) -> bool:
        return self.manifest_path(key).is_file() or self.read_record("actions", key, "manifest") is not None

    # entries
    def get_manifest(self, key: str) -> dict | None:
        return self.read_record("actions", key, "manifest")

    def put_entry(self, key: str, blobs: dict[str, bytes], manifest: dict) -> dict:
        """Store blobs, then the manifest (atomic, last); an inline header map goes into a blob of
        its own (header_map). Returns the stored manifest: if another writer stored this key first,
        its manifest is returned (moved to the header-map blob form if it is older)."""
        from aotc.cache import header_map

        check_digest(key)
        with self.lock(f"action-{key}"):
            try:
                existing = self.get_manifest(key)
            except CacheFormatError:
                existing = None  # unreadable: replace it with a good one
            if existing is not None and self._blobs_present(existing):
                return self._move_header_map(key, existing)
            record, headers = header_map.split(dict(manifest))
            record["schema"] = SCHEMA
            record["key"] = key
            record["blobs"] = {
                name: {"sha256": self.store.put(data), "size": len(data)}
                for name, data in {**blobs, **({header_map.ROLE: headers} if headers else {})}.items()
            }
            self.write_json(self.manifest_path(key), record)
            return record

    def migrate_manifest(self, key: str) -> bool:
        """Rewrite a manifest whose header map is inline (written before header-map blobs) in the
        current form; True if it was rewritten. The action key stays: the same inputs hash to it."""
        with self.lock(f"action-{key}"):
            manifest = self.get_manifest(key)
            return manifest is not None and self._move_header_map(key, manifest) is not manifest

    def _move_header_map(self, key: str, manifest: dict) -> dict:
        """(Under the key's lock.) The manifest with its inline header map stored as a blob, written
        back; the manifest itself when it has none inline."""
        from aotc.cache import header_map

        record, headers = header_map.split(manifest)
        if headers is None:
            return manifest
        record["blobs"] = {**record["blobs"], header_map.ROLE: {"sha256": self.store.put(headers),
                                                                "size": len(headers)}}
        self.write_json(self.manifest_path(key), record)
        return record

    def _blobs_present(self, manifest: dict) -> bool:
        return all(self.store.has(b["sha256"]) for b in manifest.get("blobs", {}).values())

    def read_blob(self, digest: str) -> bytes:
        """Verified bytes of a blob; KeyError if absent, CorruptBlobError (quarantined) if bad."""
        return self.store.get(digest)

    def _readable(self, kind: str, what: str, check=None) -> Iterator[dict]:
        """Every readable record of one kind; unreadable ones are left to `aotc verify`."""
        for path in self.record_paths(kind):
            try:
                record = read_json(path, what)
            except CacheFormatError:
                continue
            if record is not None and not (check and check(record, path.stem)):
                yield record

    def entries(self) -> Iterator[dict]:
        """Every readable, well-formed manifest (for `ls`, `show`, wheels); the others are left to
        `aotc verify`."""
        return self._readable("actions", "manifest", manifest_problems)

    # refs
    def set_ref(self, spec_key: str, action_key: str, info: dict | None = None) -> None:
        check_digest(action_key)
        ref = {**(info or {}), "schema": SCHEMA, "spec_key": spec_key, "key": action_key}
        try:
            if self.get_ref(spec_key) == json.loads(json.dumps(ref)):  # tuples read back as lists
                return  # a cache hit writes nothing (and so works on a read-only cache)
        except CacheFormatError:
            pass  # unreadable: replace it
        with self.lock(f"ref-{spec_key}"):  # verify/gc re-check a ref under this lock before removing it
            self.write_json(self.ref_path(spec_key), ref)

    def get_ref(self, spec_key: str) -> dict | None:
        return self.read_record("refs", spec_key, "ref")

    def resolve_ref(self, spec_key: str) -> dict | None:
        """The manifest a spec key points to; None if no ref or the entry is gone. Two file reads."""
        ref = self.get_ref(spec_key)
        if ref is None:
            return None
        problem = ref_problem(ref, spec_key)  # an empty or non-hex key would name no (or another) path
        if problem:
            raise CacheFormatError(self.ref_path(spec_key), "ref", f"{problem}: {ref!r}")
        return self.get_manifest(ref["key"])

    def refs(self) -> Iterator[dict]:
        """Every readable ref (spec key -> action key)."""
        return self._readable("refs", "ref", ref_problem)

    # logs
    def write_log(self, key: str, text: str) -> Path:
        from aotc.cache.store import atomic_write

        path = self.log_path(key)
        atomic_write(path, [text.encode("utf-8", "replace")], self.tmp_dir)
        return path

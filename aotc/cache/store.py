"""Blob stores: bytes stored under the sha256 of their uncompressed content. `BlobStore` is the
small pluggable interface; `LocalBlobStore` is the directory backend (zstd, sharded, atomic,
verified on read). Imported by serving processes: no Jinja2, no nvcc, no subprocess here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import os
import stat as stat_module
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aotc.cache.entries import LAYOUT_VERSION
from aotc.diagnostics import AotcError, Diagnostic
from aotc.keys import check_digest, is_digest  # in aotc.keys: a lookup needs them, not this module

BLOB_STORE_ENV = "AOTC_BLOB_STORE"
_CHUNK = 1 << 20
# Measured 2026-11-25 (docs/cache.md): level 19 stores a CUTLASS SM120 cubin 7.2x smaller (level 9:
# 6.7x) in ~0.1 s, but costs ~2 s per MB of helper .so (level 9: 0.14 s) — that alone made aotc's
# own time per kernel 8% of nvcc's (target 2%). Blobs above 256 KiB (the host helpers) use level 9;
# the digest is of the raw bytes either way.
ZSTD_LEVEL = 19
ZSTD_LEVEL_LARGE = 9
LARGE_BLOB_BYTES = 256 << 10


class CorruptBlobError(AotcError):
    """A stored blob whose bytes do not hash to its name (or do not decompress)."""

    def __init__(self, digest: str, path: str, actual: str, moved_to: str | None):
        where = f"moved to {moved_to}" if moved_to else "left in place"
        super().__init__(
            Diagnostic(
                code="AOTC-CACHE-001",
                message=(
                    f"blob {digest} in {path} is corrupt: expected sha256 {digest}, got {actual}; "
                    f"it was not loaded ({where})"
                ),
                fix="run `aotc verify` to find every entry that uses it, then rebuild (`aotc build`)",
                details={
                    "digest": digest,
                    "file": path,
                    "expected": digest,
                    "actual": actual,
                    "quarantined": moved_to,
                },
            )
        )
        self.digest = digest
        self.path = path
        self.actual = actual
        self.moved_to = moved_to


class BlobStat(tuple):
    """(stored_bytes, raw_bytes, mtime) of one blob. A tuple subclass with named fields rather than a
    dataclass: this module is on the serving path, where creating a dataclass costs milliseconds."""

    __slots__ = ()

    def __new__(cls, stored_bytes: int, raw_bytes: int, mtime: float) -> BlobStat:  # noqa: PYI034 - a tuple subclass, like a NamedTuple
        return tuple.__new__(cls, (stored_bytes, raw_bytes, mtime))

    stored_bytes = property(lambda self: self[0], doc="bytes on the medium (compressed)")
    raw_bytes = property(lambda self: self[1], doc="content bytes (uncompressed); -1 if the store cannot tell cheaply")
    mtime = property(lambda self: self[2], doc="last write or dedup hit (gc's grace period is measured from it)")

    def __getnewargs__(self) -> tuple:  # pickle/copy: __new__ takes the fields, not one tuple
        return tuple(self)

    def __repr__(self) -> str:
        return f"BlobStat(stored_bytes={self[0]}, raw_bytes={self[1]}, mtime={self[2]})"


class BlobStore(ABC):
    """Content-addressed bytes. Contract for every backend:
    - `put(data)` returns sha256(data) and is idempotent; a present blob is not rewritten, but its
      age is refreshed (gc never collects a blob a writer just deduplicated against).
    - `get(digest)` returns bytes whose sha256 equals `digest`, or raises KeyError when absent and
      CorruptBlobError (after quarantining the blob) when the stored bytes do not match.
    - a blob is visible whole or not at all, also after a writer is killed mid-put.
    Constructed as `Class(root)` with the cache root, so `AOTC_BLOB_STORE=module:Class` can pick it.
    """

    @abstractmethod
    def has(self, digest: str) -> bool: ...

    @abstractmethod
    def get(self, digest: str) -> bytes: ...

    @abstractmethod
    def put(self, data: bytes) -> str: ...

    @abstractmethod
    def delete(self, digest: str) -> bool: ...

    @abstractmethod
    def iter_digests(self) -> Iterator[str]: ...

    @abstractmethod
    def stat(self, digest: str) -> BlobStat | None: ...

    @abstractmethod
    def quarantine(self, digest: str) -> str | None:
        """Move a blob out of the store (kept for inspection); returns where it went, or None."""

    def sweep_tmp(self, dry_run: bool = False) -> list[str]:
        """Remove what crashed writers left behind; backends without temp files have nothing."""
        return []

    # Small records (manifests, refs, direct-mode hints) shared through a remote layer; the Cache
    # keeps them as local files and asks the store only on a local miss. Local stores share nothing.
    def get_record(self, kind: str, name: str) -> bytes | None:
        """A record's bytes from a remote layer, already checked against its name; None: none there."""
        return None

    def put_record(self, kind: str, name: str, data: bytes) -> None:
        """Share a record the Cache just wrote locally."""


def tmp_name(suffix: str) -> str:
    """Temp file name that says who wrote it, so gc can tell a crashed writer's file from a live one."""
    import socket  # writers only: keeps the serving import light

    return f"{socket.gethostname()}.{os.getpid()}.{os.urandom(6).hex()}{suffix}"


def tmp_is_stale(name: str, mtime: float, now: float, max_age: float) -> bool:
    """A temp file is stale when its writer (this host, that pid) is gone, or when it is old."""
    import socket

    if now - mtime > max_age:
        return True
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


# errno -> (what it means for the cache, the fix): a write the medium refuses is the user's to fix,
# not "a bug in aotc"; atomic_write leaves nothing partial either way.
_WRITE_REFUSALS = {
    errno.ENOSPC: ("AOTC-CACHE-006", "the cache is full (no space left on its filesystem)",
                   "free space there (`aotc gc --max-age-days N`) or use a roomier AOTC_CACHE_DIR"),
    errno.EDQUOT: ("AOTC-CACHE-006", "the cache is full (disk quota exceeded)",
                   "free space in your quota (`aotc gc --max-age-days N`) or point AOTC_CACHE_DIR elsewhere"),
    errno.EROFS: ("AOTC-CACHE-007", "the cache is on a read-only filesystem",
                  "use a writable cache (--cache-dir or AOTC_CACHE_DIR); reading a read-only cache needs no writes"),
    errno.EACCES: ("AOTC-CACHE-007", "the cache cannot be written (permission denied)",
                   "fix the permissions of the cache folder or use another one (--cache-dir or AOTC_CACHE_DIR)"),
    errno.EPERM: ("AOTC-CACHE-007", "the cache cannot be written (operation not permitted)",
                  "fix the permissions of the cache folder or use another one (--cache-dir or AOTC_CACHE_DIR)"),
}


class CacheWriteError(AotcError):
    """A cache write the filesystem refused (full, read-only, no permission): nothing was written."""

    def __init__(self, path: Path, error: OSError):
        code, what, fix = _WRITE_REFUSALS[error.errno]
        super().__init__(Diagnostic(code=code, message=f"cannot write {path}: {what}; nothing partial was kept",
                                    fix=fix, details={"file": str(path), "errno": error.errno}))
        self.errno = error.errno

    @staticmethod
    def covers(error: OSError) -> bool:
        """Whether this OSError is the filesystem refusing a write (and not a bug)."""
        return error.errno in _WRITE_REFUSALS


def fsync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry), where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Iterator[bytes] | list[bytes], tmp_dir: Path) -> None:
    """Write to a temp file in the same filesystem, fsync, then os.replace: readers see the old
    file, the whole new file, or nothing; a killed writer leaves only a temp file in tmp_dir."""
    tmp = tmp_dir / tmp_name(".tmp")
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _WRITE_REFUSALS:
            raise CacheWriteError(path, e) from None
        raise
    fsync_dir(path.parent)


def quarantine_file(path: Path, quarantine_dir: Path) -> str | None:
    """Move a bad file into quarantine_dir (kept for inspection, named <stem>.<time_ns><suffix>);
    returns where it went, or None if it was already gone (another reader moved it first) or the
    cache cannot be written (a read-only mount: the file stays, and is refused on every read)."""
    dst = quarantine_dir / f"{path.stem}.{time.time_ns()}{path.suffix}"
    try:
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, dst)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in _WRITE_REFUSALS:
            return None
        raise
    return str(dst)


def _zstd() -> Any:
    """The zstandard module, imported on first blob access: a serving process that never reads a
    blob (e.g. a lookup miss) does not load the C extension."""
    import zstandard

    return zstandard


def _compressed_chunks(data: bytes, level: int) -> Iterator[bytes]:
    """Stream zstd output chunk by chunk (content size in the frame header, for stats and a
    one-shot decompress). Deterministic: same bytes and level give the same frame."""
    cctx = _zstd().ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    chunker = cctx.chunker(size=len(data), chunk_size=_CHUNK)
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        yield from chunker.compress(view[start : start + _CHUNK])
    yield from chunker.finish()


class LocalBlobStore(BlobStore):
    """`<root>/v1/blobs/<ab>/<sha256>.zst`; temp files in `<root>/v1/tmp/`, bad blobs moved to
    `<root>/v1/quarantine/`."""

    def __init__(self, root: str | os.PathLike[str], level: int | None = None, read_only: bool = False):
        base = Path(root) / LAYOUT_VERSION
        self.blob_dir = base / "blobs"
        self.tmp_dir = base / "tmp"
        self.quarantine_dir = base / "quarantine"
        self.level = level  # None: choose by size
        self.read_only = read_only  # e.g. an installed kernel wheel: a bad blob is refused, never moved

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.blob_dir / digest[:2] / f"{digest}.zst"

    def has(self, digest: str) -> bool:
        try:
            return stat_module.S_ISREG(os.lstat(self.path(digest)).st_mode)
        except FileNotFoundError:
            return False

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        try:  # never through a symlink, never a device or fifo: a blob is a regular file in the store
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise KeyError(digest) from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            self._corrupt(digest, path, "a symbolic link (not followed)")
        with os.fdopen(fd, "rb") as f:
            if not stat_module.S_ISREG(os.fstat(f.fileno()).st_mode):
                self._corrupt(digest, path, "not a regular file")
            stored = f.read()
        zstandard = _zstd()
        try:
            data = zstandard.ZstdDecompressor().decompress(stored)
        except zstandard.ZstdError as e:
            self._corrupt(digest, path, f"an undecodable zstd frame ({e}; {len(stored)} bytes on disk)")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            self._corrupt(digest, path, actual)
        return data

    def _corrupt(self, digest: str, path: Path, actual: str) -> None:
        moved = None if self.read_only else self.quarantine(digest)
        raise CorruptBlobError(digest, str(path), actual, moved)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.is_file():
            try:  # refresh the age: this blob is in use again (gc grace period)
                os.utime(path)
            except FileNotFoundError:  # a concurrent gc/quarantine took it: write it again
                pass
            else:
                return digest
        level = self.level or (ZSTD_LEVEL if len(data) <= LARGE_BLOB_BYTES else ZSTD_LEVEL_LARGE)
        atomic_write(path, _compressed_chunks(data, level), self.tmp_dir)
        return digest

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_digests(self) -> Iterator[str]:
        if not self.blob_dir.is_dir():
            return
        for shard in sorted(os.scandir(self.blob_dir), key=lambda e: e.name):
            if not shard.is_dir():
                continue
            for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
                name = entry.name
                if name.endswith(".zst") and is_digest(name[:-4]):
                    yield name[:-4]

    def stat(self, digest: str) -> BlobStat | None:
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                header = f.read(18)  # the longest zstd frame header
        except FileNotFoundError:
            return None
        zstandard = _zstd()
        try:
            raw = zstandard.frame_content_size(header)
        except zstandard.ZstdError:
            raw = -1
        return BlobStat(stored_bytes=st.st_size, raw_bytes=raw, mtime=st.st_mtime)

    def quarantine(self, digest: str) -> str | None:
        return quarantine_file(self.path(digest), self.quarantine_dir)

    def sweep_tmp(self, dry_run: bool = False, max_age: float = 86_400.0) -> list[str]:
        """Delete temp files of writers that died (this host) or that are older than max_age."""
        if not self.tmp_dir.is_dir():
            return []
        now = time.time()
        swept = []
        for entry in os.scandir(self.tmp_dir):
            if not entry.is_file(follow_symlinks=False) or not entry.name.endswith(".tmp"):
                continue
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:  # its writer finished meanwhile
                continue
            if tmp_is_stale(entry.name, mtime, now, max_age):
                if not dry_run:
                    Path(entry.path).unlink(missing_ok=True)
                swept.append(entry.path)
        return swept


def _config_error(spec: str, problem: str) -> AotcError:
    return AotcError(
        Diagnostic(
            code="AOTC-CACHE-003",
            message=f"{BLOB_STORE_ENV}={spec!r}: {problem}",
            fix=f"set {BLOB_STORE_ENV} to module:Class naming an importable aotc.cache.store.BlobStore subclass "
            "(e.g. mypkg.stores:RedisBlobStore), or unset it to use the local store",
        )
    )


def blob_store_class() -> type[BlobStore]:
    """The backend class: `AOTC_BLOB_STORE=module:Class` if set, else the Redis layer if `AOTC_REMOTE`
    is set, else LocalBlobStore."""
    spec = os.environ.get(BLOB_STORE_ENV, "").strip()
    if not spec and os.environ.get("AOTC_REMOTE", "").strip():
        spec = "aotc.cache.remote:RedisBlobStore"  # local -> Redis (aotc/cache/remote.py)
    if not spec:
        return LocalBlobStore
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise _config_error(spec, "not of the form module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise _config_error(spec, f"cannot load it ({type(e).__name__}: {e})") from e
    if not (isinstance(cls, type) and issubclass(cls, BlobStore)):
        raise _config_error(spec, f"it names {cls!r}, which is not a subclass of aotc.cache.store.BlobStore")
    return cls


def open_blob_store(root: str | os.PathLike[str]) -> BlobStore:
    return blob_store_class()(root)

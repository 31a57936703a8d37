"""The private per-user runtime folder: host helper .so files (ctypes and FlashInfer need a file),
kept cubins and lookup records, each blob named by its digest and checked against it on every use.
Stdlib only and outside aotc.runtime: the FlashInfer hook serves modules through it without
importing the runtime package, its error codes or the kernel loader.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["helper_dir", "helper_path", "stamp", "stamps_hold", "verified_read", "write_atomic"]

_dirs: dict[tuple, Path] = {}  # (AOTC_RUNTIME_DIR, XDG_RUNTIME_DIR) -> the checked folder


def helper_dir() -> Path:
    """Private per-user folder for helper .so files (ctypes needs a file) and kept cubins:
    AOTC_RUNTIME_DIR, else $XDG_RUNTIME_DIR/aotc, else <tmp>/aotc-<uid>. Created and checked (owned
    by this user, writable by no one else) once per process and setting."""
    env, xdg = os.environ.get("AOTC_RUNTIME_DIR"), os.environ.get("XDG_RUNTIME_DIR")
    root = _dirs.get((env, xdg))
    if root is not None:
        return root
    if env:
        root = Path(env)
    elif xdg:
        root = Path(xdg) / "aotc"
    else:
        root = _in_tmp(f"aotc-{os.getuid()}")
    try:  # one stat when it exists (every process after the first), not a failing mkdir and a stat
        st = os.stat(root)
    except FileNotFoundError:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise _unsafe(f"helper folder {root} is not a folder")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise _unsafe(f"helper folder {root} is owned by uid {st.st_uid} or writable by others "
                      f"(mode {oct(st.st_mode & 0o777)}); loading code from it is unsafe")
    _dirs[(env, xdg)] = root
    return root


def _unsafe(message: str) -> Exception:
    from aotc.runtime.errors import HELPER_ABI, runtime_error  # the error path only

    return runtime_error(HELPER_ABI, message, "set AOTC_RUNTIME_DIR to a private folder")


def _in_tmp(name: str) -> Path:
    """`name` in the temporary folder tempfile.gettempdir() would pick, without its probe: it proves a
    folder writable by creating and deleting a file there (~0.2 ms on every serving process's first
    load). Its first candidate is taken as is when the folder can be made there (the ownership and
    mode check in helper_dir follows either way); gettempdir() decides otherwise."""
    first = tempfile.tempdir or next((os.environ[v] for v in ("TMPDIR", "TEMP", "TMP") if os.environ.get(v)), "/tmp")
    path = Path(first) / name
    if os.path.isdir(path):  # every process after the first: one stat
        return path
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / name
    return path


def helper_path(digest: str, fetch: Any) -> Path:
    """A file holding the blob `digest` (a helper or FlashInfer .so) in the private runtime folder:
    reused when its sha256 equals the digest, else `fetch()`ed (verified by the source) and written
    atomically. A later process then hashes the file instead of importing zstandard and
    decompressing: every loaded byte is still checked against the manifest's digest."""
    root = helper_dir()
    path = root / f"{digest}.so"
    if not _hashes_to(path, digest):
        write_atomic(root, path, fetch())
    return path


def _hashes_to(path: Path, digest: str) -> bool:
    """Whether the file's sha256 is `digest` (False when absent), read through one reused buffer: a
    FlashInfer module is megabytes, which a whole read would first allocate and copy."""
    try:
        with open(path, "rb") as fh:
            if hasattr(hashlib, "file_digest"):  # Python 3.11+
                return hashlib.file_digest(fh, "sha256").hexdigest() == digest
            return hashlib.sha256(fh.read()).hexdigest() == digest
    except FileNotFoundError:  # absent, or removed since (one open instead of exists() + open)
        return False


def verified_read(path: Path, digest: str) -> bytes | None:
    """The file's bytes if their sha256 is `digest`; None when absent or different."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # absent, or removed since (one read instead of exists() + read)
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def stamp(path: str) -> list[int] | None:
    """(device, inode, size, mtime_ns, ctime_ns) of a file or folder; None when it does not exist. Any
    write, truncation, rename over it, chmod or link change moves its ctime, which (unlike mtime) no
    user can set back."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def stamps_hold(probes: Any) -> bool:
    """Whether every [path, stamp] of a record still holds; an unreadable folder, a bad path type or a
    malformed pair is not provably current."""
    if not isinstance(probes, list) or not probes:
        return False
    for probe in probes:
        try:
            path, expected = probe
            if stamp(path) != expected:
                return False
        except (OSError, TypeError, ValueError):  # unreadable, or not a [path, stamp] pair
            return False
    return True


def write_atomic(root: Path, path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, suffix=f"{path.suffix}.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

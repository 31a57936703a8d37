"""Direct mode (ccache's idea): a prekey (everything known before compiling) -> the header sets its
compiles read -> the action key, so a rebuild whose headers did not change runs no compiler.
Records live in the cache's prekeys/ and headersets/ (docs/CONTRACTS.md); only builds use them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aotc.cache import Cache, CacheFormatError
from aotc.cache.entries import SCHEMA, read_json
from aotc.cache.store import check_digest
from aotc.keys import canonical_json, sha256_file, sha256_hex

# Header sets remembered per prekey: a few variants (e.g. toggling a CUTLASS checkout) stay warm.
MAX_PREKEY_SETS = 8

_file_digests: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str) -> str | None:
    """sha256 of a file, hashed once per process per (path, size, mtime_ns, inode); None if absent
    or unreadable (a header that vanished is a miss, not a crash)."""
    try:
        st = os.stat(path)
        memo_key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        digest = _file_digests.get(memo_key)
        if digest is None:
            digest = _file_digests[memo_key] = sha256_file(path)
        return digest
    except OSError:
        return None


class HeaderSnapshot:
    """Header digests for one build run: each path is hashed at most once and each header set
    checked at most once per snapshot, because files are taken not to change while one build
    runs (as make/ninja do). Take a new one per run. `locate` maps a recorded (portable) path to
    where the file is in this build."""

    def __init__(self, locate: Callable[[str], str] | None = None) -> None:
        self._locate = locate
        self._digests: dict[str, str | None] = {}
        self.verified_sets: dict[str, bool] = {}  # header-set digest -> all files still match

    def __call__(self, path: str) -> str | None:
        try:
            return self._digests[path]
        except KeyError:
            digest = self._digests[path] = file_sha256(self._locate(path) if self._locate else path)
            return digest

    def set_matches(self, cache: Cache, set_digest: str) -> bool:
        """Do all files of a stored header set still have their recorded digests?"""
        if set_digest not in self.verified_sets:
            try:
                record = cache.read_record("headersets", set_digest, "header set")
            except (CacheFormatError, ValueError):
                record = None
            headers = (record or {}).get("headers")
            self.verified_sets[set_digest] = isinstance(headers, dict) and all(
                self(p) == d for p, d in headers.items())
        return self.verified_sets[set_digest]


def record_prekey(cache: Cache, prekey: str, headers: dict[str, str], action_key: str) -> None:
    """Remember that compiling `prekey` read exactly `headers` (path -> sha256) and gave
    `action_key`; newest first, at most MAX_PREKEY_SETS header sets per prekey. The header set is
    stored once by its digest: most kernels of a family read the same ~1,100 headers."""
    check_digest(action_key)
    headers = dict(sorted(headers.items()))
    set_digest = sha256_hex(canonical_json(headers))
    set_path = cache.header_set_path(set_digest)
    if set_path.is_file():
        os.utime(set_path)  # in use again: gc's grace period starts over
    else:
        cache.write_json(set_path, {"schema": SCHEMA, "headers": headers})
    path = cache.prekey_path(prekey)
    new = {"key": action_key, "headers": set_digest}
    with cache.lock(f"prekey-{prekey}"):
        try:
            old = read_json(path, "prekey record") or {}
        except CacheFormatError:
            old = {}  # a lost direct-mode hint costs one compile, never a wrong result
        sets = [s for s in old.get("sets", []) if isinstance(s, dict) and s != new]
        cache.write_json(path, {"schema": SCHEMA, "prekey": prekey, "sets": [new, *sets][:MAX_PREKEY_SETS]})


def lookup_prekey(cache: Cache, prekey: str, snapshot: HeaderSnapshot | None = None) -> str | None:
    """The action key of a recorded header set whose files still have the recorded digests and
    whose manifest exists; None otherwise (then compile, and record_prekey the result). Pass one
    HeaderSnapshot per build run so shared header sets are checked once."""
    snapshot = snapshot if snapshot is not None else HeaderSnapshot()
    try:
        record = cache.read_record("prekeys", prekey, "prekey record")
    except CacheFormatError:
        return None
    for entry in (record or {}).get("sets", []):
        key, set_digest = entry.get("key"), entry.get("headers")
        if not (isinstance(key, str) and isinstance(set_digest, str)):
            continue
        if snapshot.set_matches(cache, set_digest) and cache.has_manifest(key):
            return key
    return None

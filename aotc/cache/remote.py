"""A shared remote layer under the local blob store: local -> Redis (`AOTC_REMOTE=redis://host:port/db`).
Reads go local first, then remote; writes go to both; every remote blob is digest-checked before use
and a bad one is refused, reported and never stored locally. Also carries small records (manifests,
refs, direct-mode hints) for the Cache. Imported only when a remote is configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator

from aotc.cache.store import (
    BlobStat,
    BlobStore,
    CorruptBlobError,
    LocalBlobStore,
    _compressed_chunks,
    _zstd,
    atomic_write,
    check_digest,
)
from aotc.diagnostics import AotcError, Diagnostic

REMOTE_ENV = "AOTC_REMOTE"
PREFIX = "aotc:v1:"
# Redis keeps each value in one allocation and serves it in one reply: chunks bound both (a fused-MoE
# module .so is ~64 MB raw). 4 MiB keeps a reply short next to a ~2 ms network round trip.
CHUNK_BYTES = 4 << 20
CONNECT_TIMEOUT_S = 5.0


class RemoteCorruptBlobError(CorruptBlobError):
    """A remote blob whose bytes do not hash to its name: refused, moved aside in Redis, never
    stored locally."""

    def __init__(self, digest: str, url: str, actual: str, moved_to: str | None):
        super().__init__(digest, f"{url} {PREFIX}blob:{digest}", actual, moved_to)
        self.diagnostics = [Diagnostic(
            code="AOTC-REMOTE-001",
            message=(
                f"remote blob {digest} in {url} is corrupt: expected sha256 {digest}, got {actual}; "
                f"it was not used and not copied into the local cache "
                f"({'moved to ' + moved_to if moved_to else 'left in place'})"
            ),
            fix="rebuild it (`aotc build`): the build stores a good copy locally and in the remote cache",
            details={"digest": digest, "remote": url, "expected": digest, "actual": actual,
                     "quarantined": moved_to},
        )]
        self.args = (self.diagnostics[0].format(),)


def _remote_error(url: str, problem: str, fix: str) -> AotcError:
    return AotcError(Diagnostic(code="AOTC-REMOTE-002", message=f"{REMOTE_ENV}={url!r}: {problem}", fix=fix))


def parse_remote_url(url: str) -> str:
    """Only redis:// (and rediss:// for TLS) is understood; anything else is a coded error."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("redis", "rediss"):
        raise _remote_error(url, "not a redis:// or rediss:// URL",
                            "set it like redis://host:6379/0, or unset it to use the local cache only")
    return url


class RedisBlobStore(BlobStore):
    """The local directory store with Redis behind it. Redis layout (all under `aotc:v1:`):
    `blob:<sha256>` a hash {nonce, chunks, stored, raw, mtime}, written last; `chunk:<sha256>:<nonce>:<i>`
    the zstd frame in chunks (a writer's own nonce, so two writers never interleave their chunks);
    `rec:<kind>:<name>` small JSON records; `quarantine:<sha256>:<ns>` refused blobs' metadata.
    If Redis cannot be reached the store says so once on stderr and goes on with the local layer."""

    def __init__(self, root: str | os.PathLike[str], url: str | None = None, chunk_bytes: int = CHUNK_BYTES):
        self.local = LocalBlobStore(root)
        self.url = parse_remote_url(url if url is not None else os.environ.get(REMOTE_ENV, "").strip())
        self.chunk_bytes = chunk_bytes
        self._client = None
        self._down: str | None = None  # why the remote is unusable in this process, once known
        self.stats = {"remote_hits": 0, "remote_puts": 0, "refused": 0}

    # --- connection ---------------------------------------------------------------------------
    def _redis(self):
        """The client, or None when the remote is down (reported once; the local layer carries on)."""
        if self._down is not None:
            return None
        if self._client is None:
            import redis  # only when a remote is configured: not on the plain serving path

            self._client = redis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                                socket_timeout=60.0)
        return self._client

    def _call(self, fn, default):
        """Run one remote operation; a connection failure marks the remote down and returns default."""
        client = self._redis()
        if client is None:
            return default
        import redis

        try:
            return fn(client)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._down = f"{type(e).__name__}: {e}"
            print(Diagnostic(code="AOTC-REMOTE-003",
                             message=f"remote cache {self.url} unreachable ({self._down}); "
                                     "going on with the local cache only",
                             fix="start the Redis server or fix AOTC_REMOTE; nothing is lost, builds "
                                 "simply share nothing until it is back").format(), file=sys.stderr)
            return default

    @property
    def remote_ok(self) -> bool:
        return self._call(lambda r: bool(r.ping()), False)

    # --- blobs --------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        return self.local.has(digest) or self._call(lambda r: bool(r.exists(PREFIX + "blob:" + digest)), False)

    def get(self, digest: str) -> bytes:
        try:
            return self.local.get(digest)
        except KeyError:
            pass
        frame = self._fetch_frame(check_digest(digest))
        if frame is None:
            raise KeyError(digest)
        zstandard = _zstd()
        try:
            data = zstandard.ZstdDecompressor().decompress(frame)
        except zstandard.ZstdError as e:
            self._refuse(digest, f"an undecodable zstd frame ({e}; {len(frame)} bytes)")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            self._refuse(digest, actual)
        # Verified: keep it locally as the same frame (no recompression; whole-or-nothing write).
        atomic_write(self.local.path(digest), [frame], self.local.tmp_dir)
        self.stats["remote_hits"] += 1
        return data

    def _fetch_frame(self, digest: str) -> bytes | None:
        def fetch(r) -> bytes | None:
            meta = r.hgetall(PREFIX + "blob:" + digest)
            if not meta:
                return None
            nonce, n = meta[b"nonce"].decode(), int(meta[b"chunks"])
            parts = r.mget([f"{PREFIX}chunk:{digest}:{nonce}:{i}" for i in range(n)]) if n else []
            if any(p is None for p in parts):  # evicted or deleted under us: absent, not corrupt
                return None
            return b"".join(parts)

        return self._call(fetch, None)

    def _refuse(self, digest: str, actual: str) -> None:
        """Move the bad remote entry aside (so no other machine uses it) and raise."""
        moved = self._move_aside(PREFIX + "blob:" + digest, f"{PREFIX}quarantine:{digest}:{time.time_ns()}")
        self.stats["refused"] += 1
        err = RemoteCorruptBlobError(digest, self.url, actual, moved)
        print(err.diagnostics[0].format(), file=sys.stderr)
        raise err

    def _move_aside(self, key: str, dst: str) -> str | None:
        """Rename a bad remote key out of every reader's way (kept as evidence); None if already gone."""
        import redis

        def move(r) -> str | None:
            try:
                r.rename(key, dst)
            except redis.ResponseError:  # another reader moved it first
                return None
            return dst

        return self._call(move, None)

    def put(self, data: bytes) -> str:
        digest = self.local.put(data)
        self._push(digest)
        return digest

    def _push(self, digest: str) -> None:
        """Upload the local frame unless Redis has the blob; chunks first, the meta hash last."""
        meta_key = PREFIX + "blob:" + digest

        def push(r) -> None:
            if r.exists(meta_key):
                r.hset(meta_key, "mtime", time.time())  # in use again, like the local dedup hit
                return
            frame = self.local.path(digest).read_bytes()
            nonce = os.urandom(6).hex()
            n = max(1, -(-len(frame) // self.chunk_bytes))
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                pipe.set(f"{PREFIX}chunk:{digest}:{nonce}:{i}", frame[i * self.chunk_bytes:(i + 1) * self.chunk_bytes])
            pipe.execute()
            raw = _zstd().frame_content_size(frame[:18])
            fields = {"nonce": nonce, "chunks": n, "stored": len(frame), "raw": raw, "mtime": time.time()}
            # First writer wins (HSETNX on the nonce); a loser removes its own chunks.
            if r.hsetnx(meta_key, "nonce", nonce):
                r.hset(meta_key, mapping=fields)
                self.stats["remote_puts"] += 1
            else:
                r.delete(*[f"{PREFIX}chunk:{digest}:{nonce}:{i}" for i in range(n)])

        self._call(push, None)

    def delete(self, digest: str) -> bool:
        # gc and verify act on this machine's layer only: the shared remote is not one client's to prune.
        return self.local.delete(digest)

    def iter_digests(self) -> Iterator[str]:
        return self.local.iter_digests()

    def stat(self, digest: str) -> BlobStat | None:
        local = self.local.stat(digest)
        if local is not None:
            return local

        def remote(r) -> BlobStat | None:
            meta = r.hgetall(PREFIX + "blob:" + check_digest(digest))
            if not meta or b"stored" not in meta:
                return None
            return BlobStat(int(meta[b"stored"]), int(meta[b"raw"]), float(meta[b"mtime"]))

        return self._call(remote, None)

    def quarantine(self, digest: str) -> str | None:
        return self.local.quarantine(digest)

    def sweep_tmp(self, dry_run: bool = False) -> list[str]:
        return self.local.sweep_tmp(dry_run)

    # --- small records (manifests, refs, direct-mode hints) -----------------------------------
    def get_record(self, kind: str, name: str) -> bytes | None:
        """The remote record if it is what its name says (record_problem); a bad one is moved aside
        in Redis, reported, and answered as absent, so the caller builds instead of trusting it."""
        rkey = f"{PREFIX}rec:{kind}:{check_digest(name)}"
        data = self._call(lambda r: r.get(rkey), None)
        if data is None:
            return None
        problem = record_problem(kind, name, data, self.get)
        if not problem:
            return data
        moved = self._move_aside(rkey, f"{PREFIX}quarantine:rec:{kind}:{name}:{time.time_ns()}")
        self.stats["refused"] += 1
        print(Diagnostic(code="AOTC-REMOTE-004",
                         message=f"remote {kind} record {name} in {self.url} refused: {problem}; not used, "
                                 f"not copied into the local cache ({'moved to ' + moved if moved else 'left'})",
                         fix="nothing to do: the build makes and shares a good one").format(), file=sys.stderr)
        return None

    def put_record(self, kind: str, name: str, data: bytes) -> None:
        self._call(lambda r: r.set(f"{PREFIX}rec:{kind}:{check_digest(name)}", data), None)


def record_problem(kind: str, name: str, data: bytes, read_blob=None) -> str:
    """Why a shared record cannot be what its name says ("" when it can). Manifests carry the inputs
    their action key hashes (the header map in a blob, read with `read_blob`), refs the (family,
    params, arch) their spec key hashes, header sets are named by their own digest: a record is only
    taken when its content hashes to its name."""
    from aotc.cache import header_map
    from aotc.keys import action_key, canonical_json, sha256_hex, spec_key

    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"not JSON ({e})"
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    try:
        if kind == "actions":
            got = action_key(header_map.inputs(value, read_blob)) if value.get("key") == name else value.get("key")
        elif kind == "refs":
            got = spec_key(value["family"], value["params"], value["arch"])
            if not isinstance(value.get("key"), str) or len(value["key"]) != 64:
                return "no action key in it"
        elif kind == "headersets":
            got = sha256_hex(canonical_json(value["headers"]))
        elif kind == "prekeys":
            got = value.get("prekey")  # a hint only: the header sets and manifest it names are checked
        else:
            return f"unknown record kind {kind!r}"
    except (KeyError, TypeError) as e:
        return f"missing field {e}"
    except (ValueError, CorruptBlobError) as e:  # a header-map blob that is no JSON object, or corrupt
        return f"its header map is unreadable ({e})"
    return "" if got == name else f"its content hashes to {got}, not to its name"


def compress_for_remote(data: bytes, level: int = 19) -> bytes:
    """One zstd frame of `data` as the local store writes it (tests and tools seed Redis with it)."""
    return b"".join(_compressed_chunks(data, level))

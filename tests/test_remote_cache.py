"""The Redis remote layer against a real redis-server on a loopback port: two cache folders sharing
one Redis (blobs, manifests, refs), chunked large blobs, a flipped byte in a Redis blob refused and
never stored locally, forged records refused, and a Redis that is down costing nothing but sharing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aotc.build.direct_mode import HeaderSnapshot, lookup_prekey, record_prekey
from aotc.cache import Cache
from aotc.cache.remote import PREFIX, RedisBlobStore, RemoteCorruptBlobError, compress_for_remote
from aotc.cache.store import open_blob_store
from aotc.diagnostics import AotcError
from aotc.keys import action_inputs, action_key, spec_key
from tests.redis_server import free_port, start_redis, stop_redis

redis = pytest.importorskip("redis", reason="the redis client is part of the build extra")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop_redis(proc)


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


def two_caches(tmp_path: Path, url: str, **kw) -> tuple[Cache, Cache]:
    return (Cache(tmp_path / "a", store=RedisBlobStore(tmp_path / "a", url, **kw)),
            Cache(tmp_path / "b", store=RedisBlobStore(tmp_path / "b", url, **kw)))


def real_entry(name: str) -> tuple[str, str, dict, dict, dict]:
    """(action key, spec key, manifest, ref info, blobs) shaped as the build writes them."""
    inputs = action_inputs(f"// {name}\n", "nvcc-identity", ["-O3"], "sm120a", {"<cutlass0>/cute/x.hpp": "0" * 64})
    key = action_key(inputs)
    params = {"tile": name}
    sk = spec_key("test_family", params, "sm120a")
    info = {"name": name, "family": "test_family", "params": params, "arch": "sm120a"}
    manifest = {"name": name, "family": "test_family", "arch": "sm120a", "inputs": inputs, "spec_key": sk}
    blobs = {"cubin": os.urandom(1000) + name.encode(), "source": f"// {name}\n".encode()}
    return key, sk, manifest, info, blobs


def local_blob_file(cache: Cache, digest: str) -> Path:
    return cache.root / "v1" / "blobs" / digest[:2] / f"{digest}.zst"


def test_aotc_remote_env_selects_the_redis_layer(tmp_path: Path, monkeypatch, redis_url) -> None:
    monkeypatch.delenv("AOTC_BLOB_STORE", raising=False)
    monkeypatch.setenv("AOTC_REMOTE", redis_url)
    store = open_blob_store(tmp_path)
    assert isinstance(store, RedisBlobStore) and store.url == redis_url and store.remote_ok
    monkeypatch.setenv("AOTC_REMOTE", "http://127.0.0.1:1/0")
    with pytest.raises(AotcError) as err:
        open_blob_store(tmp_path)
    assert err.value.diagnostics[0].code == "AOTC-REMOTE-002" and "redis://" in err.value.diagnostics[0].fix


def test_two_cache_folders_share_entries_refs_and_blobs(tmp_path: Path, r) -> None:
    a, b = two_caches(tmp_path, _url(r))
    key, sk, manifest, info, blobs = real_entry("shared")
    stored = a.put_entry(key, blobs, manifest)
    a.set_ref(sk, key, info)
    # b has nothing locally, and finds everything through Redis
    assert not (b.root / "v1" / "actions").exists()
    got = b.resolve_ref(sk)
    assert got == stored
    for name, data in blobs.items():
        digest = got["blobs"][name]["sha256"]
        assert not local_blob_file(b, digest).exists()
        assert b.read_blob(digest) == data
        assert local_blob_file(b, digest).is_file()  # verified, then kept locally
    # the header map was fetched (and kept) to check the manifest against its key: one more remote hit
    assert set(got["blobs"]) == {*blobs, "headers"} and local_blob_file(b, got["blobs"]["headers"]["sha256"]).is_file()
    assert b.store.stats["remote_hits"] == len(got["blobs"])
    # now local: a second read does not touch Redis
    r.flushdb()
    assert b.resolve_ref(sk) == stored and b.read_blob(got["blobs"]["cubin"]["sha256"]) == blobs["cubin"]


def _url(r) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def test_direct_mode_records_are_shared_so_a_second_folder_hits(tmp_path: Path, r) -> None:
    a, b = two_caches(tmp_path, _url(r))
    header = tmp_path / "h.hpp"
    header.write_text("// header\n")
    digest = hashlib.sha256(header.read_bytes()).hexdigest()
    key, _, manifest, _, blobs = real_entry("direct")
    a.put_entry(key, blobs, manifest)
    record_prekey(a, "1" * 64, {str(header): digest}, key)
    assert lookup_prekey(b, "1" * 64, HeaderSnapshot()) == key
    header.write_text("// changed\n")  # the shared hint still follows header contents
    assert lookup_prekey(b, "1" * 64, HeaderSnapshot()) is None


def test_large_blob_is_chunked_and_reassembled(tmp_path: Path, r) -> None:
    a, b = two_caches(tmp_path, _url(r), chunk_bytes=64 << 10)
    data = os.urandom(300_000)  # incompressible: the frame is ~300 KB, 5 chunks of 64 KiB
    digest = a.store.put(data)
    meta = r.hgetall(PREFIX + "blob:" + digest)
    frame_len = local_blob_file(a, digest).stat().st_size
    assert int(meta[b"chunks"]) == -(-frame_len // (64 << 10)) == 5
    assert int(meta[b"stored"]) == frame_len and int(meta[b"raw"]) == len(data)
    assert len(r.keys(PREFIX + "chunk:" + digest + ":*")) == 5
    assert b.store.get(digest) == data
    a.store.put(data)  # idempotent: no second copy of the chunks
    assert len(r.keys(PREFIX + "chunk:" + digest + ":*")) == 5


def test_flipped_byte_in_a_redis_blob_is_refused_reported_and_not_stored(tmp_path: Path, r, capsys) -> None:
    a, b = two_caches(tmp_path, _url(r))
    data = b"cubin bytes " * 2000
    digest = a.store.put(data)
    meta = r.hgetall(PREFIX + "blob:" + digest)
    chunk = f"{PREFIX}chunk:{digest}:{meta[b'nonce'].decode()}:0"
    frame = bytearray(r.get(chunk))
    frame[len(frame) // 2] ^= 0x01
    r.set(chunk, bytes(frame))
    with pytest.raises(RemoteCorruptBlobError) as err:
        b.store.get(digest)
    diag = err.value.diagnostics[0]
    assert diag.code == "AOTC-REMOTE-001" and diag.details["expected"] == digest
    assert diag.details["actual"] != digest and diag.details["quarantined"].startswith(PREFIX + "quarantine:")
    assert "AOTC-REMOTE-001" in capsys.readouterr().err
    assert not local_blob_file(b, digest).exists()  # never stored locally
    assert not b.store.has(digest)  # moved aside: no other machine takes it either
    with pytest.raises(KeyError):
        b.store.get(digest)
    # the next build that has it re-shares a good copy
    a.store.put(data)
    assert b.store.get(digest) == data


def test_valid_frame_of_other_bytes_is_refused_with_the_actual_hash(tmp_path: Path, r) -> None:
    a, b = two_caches(tmp_path, _url(r))
    digest = a.store.put(b"the real cubin")
    meta = r.hgetall(PREFIX + "blob:" + digest)
    r.set(f"{PREFIX}chunk:{digest}:{meta[b'nonce'].decode()}:0", compress_for_remote(b"a forged cubin"))
    with pytest.raises(RemoteCorruptBlobError) as err:
        b.store.get(digest)
    assert err.value.diagnostics[0].details["actual"] == hashlib.sha256(b"a forged cubin").hexdigest()
    assert not local_blob_file(b, digest).exists()


def test_forged_manifest_and_ref_are_refused(tmp_path: Path, r, capsys) -> None:
    a, b = two_caches(tmp_path, _url(r))
    key, sk, manifest, info, blobs = real_entry("forged")
    a.put_entry(key, blobs, manifest)
    a.set_ref(sk, key, info)
    rec = f"{PREFIX}rec:actions:{key}"
    forged = json.loads(r.get(rec))
    forged["inputs"]["flags"] = ["-O0"]  # a manifest that no longer hashes to its key
    r.set(rec, json.dumps(forged))
    assert b.get_manifest(key) is None
    assert "AOTC-REMOTE-004" in capsys.readouterr().err
    assert not b.manifest_path(key).exists() and r.get(rec) is None
    # the header map is checked too: a manifest pointing to another (intact) map blob is refused
    a.write_json(a.manifest_path(key), {**a.get_manifest(key), "blobs": {
        **a.get_manifest(key)["blobs"], "headers": {"sha256": a.store.put(b'{"<cuda>/y.h":"0"}'), "size": 18}}})
    assert b.get_manifest(key) is None and not b.manifest_path(key).exists()
    assert "hashes to" in capsys.readouterr().err
    ref = f"{PREFIX}rec:refs:{sk}"
    forged_ref = json.loads(r.get(ref))
    forged_ref["params"] = {"tile": "other"}
    r.set(ref, json.dumps(forged_ref))
    assert b.get_ref(sk) is None and not b.ref_path(sk).exists()


def test_redis_down_is_reported_once_and_the_local_cache_carries_on(tmp_path: Path, capsys) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = Cache(tmp_path, store=RedisBlobStore(tmp_path, url))
    key, sk, manifest, info, blobs = real_entry("offline")
    stored = cache.put_entry(key, blobs, manifest)
    cache.set_ref(sk, key, info)
    assert cache.resolve_ref(sk) == stored
    assert cache.read_blob(stored["blobs"]["cubin"]["sha256"]) == blobs["cubin"]
    assert cache.get_manifest("f" * 64) is None
    err = capsys.readouterr().err
    assert err.count("AOTC-REMOTE-003") == 1 and url in err


def test_second_folders_build_of_a_real_kernel_is_all_hits(tmp_path: Path, r) -> None:
    from aotc.arch import get_arch
    from aotc.build.pipeline import BUILT, HIT, build
    from aotc.build.spec import load_specs

    a, b = two_caches(tmp_path, _url(r))
    chosen = [s for s in load_specs().specs if s.name == "moe_bf16_64x128"]  # ~15 s of nvcc
    first = build(chosen, [get_arch("sm80")], a, progress=False)
    assert [x.status for x in first.results] == [BUILT]
    second = build(chosen, [get_arch("sm80")], b, progress=False)
    assert [x.status for x in second.results] == [HIT] and second.results[0].compile_seconds == 0
    assert second.results[0].key == first.results[0].key
    m = b.get_manifest(second.results[0].key)
    assert b.read_blob(m["blobs"]["cubin"]["sha256"]) == a.read_blob(m["blobs"]["cubin"]["sha256"])

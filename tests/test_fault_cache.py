"""Cache maintenance that loses nothing: `aotc verify` exits 1 on any problem; `aotc gc` keeps
entries outside the catalog unless asked (--unreachable), names what it removes with sizes, and
--dry-run shows the same; verify and gc racing real writer processes never drop a committed entry."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from aotc.cache import Cache
from aotc.cache.maintenance import gc, verify
from aotc.keys import sha256_hex


def k(name: str) -> str:
    return sha256_hex(name.encode())


def commit(cache: Cache, name: str) -> None:
    """What the build's store step does: blobs + manifest (atomic, last), then the ref."""
    key = k(name)
    cache.put_entry(key, {"cubin": f"cubin of {name}".encode(), "source": b"shared source"}, {
        "name": name, "family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a", "spec_key": k("spec-" + name),
        "target": {"sm": 120, "variant": "a"}})
    cache.set_ref(k("spec-" + name), key, {"family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a",
                                           "name": name})


def aotc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aotc", *args], capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


def test_verify_exit_status_follows_what_it_found(tmp_path):
    cache = Cache(tmp_path)
    commit(cache, "a")
    commit(cache, "b")
    ok = aotc("verify", "--cache-dir", str(tmp_path))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("ok"), ok.stdout + ok.stderr
    blob = cache.store.path(cache.get_manifest(k("a"))["blobs"]["cubin"]["sha256"])
    blob.write_bytes(blob.read_bytes()[:-3])  # truncated
    bad = aotc("verify", "--cache-dir", str(tmp_path), "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert not report["ok"] and len(report["corrupt_blobs"]) == 1 and report["refs_dropped"] == [k("spec-a")]
    assert aotc("verify", "--cache-dir", str(tmp_path)).returncode == 0  # the damage is now quarantined
    cache.ref_path(k("spec-b")).write_text('{"key": null')  # unreadable ref
    assert aotc("verify", "--cache-dir", str(tmp_path)).returncode == 1


def test_gc_keeps_entries_outside_the_catalog_unless_asked(tmp_path):
    cache = Cache(tmp_path)
    hour_ago = time.time() - 3700  # past gc's grace for entries whose ref may still be coming
    for name in ("mine", "module"):
        commit(cache, name)
        os.utime(cache.manifest_path(k(name)), (hour_ago, hour_ago))
    plain = aotc("gc", "--cache-dir", str(tmp_path))
    assert plain.returncode == 0 and "removed 0 entries" in plain.stdout, plain.stdout + plain.stderr
    assert cache.resolve_ref(k("spec-mine")) is not None and cache.resolve_ref(k("spec-module")) is not None
    dry = aotc("gc", "--unreachable", "--dry-run", "--cache-dir", str(tmp_path))
    assert dry.returncode == 0
    for name in ("mine", "module"):
        size = len(f"cubin of {name}".encode()) + len(b"shared source")
        assert f"would remove {name} (sm120a) {size:,} B" in dry.stdout
    assert cache.resolve_ref(k("spec-mine")) is not None  # a dry run removes nothing
    real = aotc("gc", "--unreachable", "--cache-dir", str(tmp_path))
    assert real.stdout.replace("removed", "would remove") .splitlines()[:2] == dry.stdout.splitlines()[:2]
    assert cache.resolve_ref(k("spec-mine")) is None and list(cache.entries()) == []


def _writer(root: str, first: int, count: int, done) -> None:
    cache = Cache(root)
    for i in range(first, first + count):
        commit(cache, f"w{i}")
        done.put(i)


def test_verify_and_gc_racing_writers_drop_no_committed_entry(tmp_path):
    """Two writer processes commit 60 entries while verify and gc loop over the cache; every
    committed entry must stay whole and reachable. (gc's blob grace covers a writer between its blob
    puts and its manifest; the ref/manifest re-checks under the writers' locks cover the rest.)"""
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), n * 30, 30, done)) for n in range(2)]
    for w in writers:
        w.start()
    cache = Cache(tmp_path)
    rounds = 0
    deadline = time.monotonic() + 120
    while any(w.is_alive() for w in writers) and time.monotonic() < deadline:
        assert verify(cache).ok
        gc(cache, older_than_seconds=3600)
        rounds += 1
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    assert rounds >= 1
    committed = sorted(done.get() for _ in range(60))
    assert committed == list(range(60))
    for i in committed:
        m = cache.resolve_ref(k(f"spec-w{i}"))
        assert m is not None, f"w{i} lost its ref"
        assert cache.read_blob(m["blobs"]["cubin"]["sha256"]) == f"cubin of w{i}".encode()
    assert verify(cache).ok


def test_blob_reads_never_follow_a_symlink_nor_read_a_fifo(tmp_path):
    import pytest

    from aotc.cache.store import CorruptBlobError

    cache = Cache(tmp_path / "cache")
    commit(cache, "a")
    digest = cache.get_manifest(k("a"))["blobs"]["cubin"]["sha256"]
    blob = cache.store.path(digest)
    outside = tmp_path / "outside.zst"
    outside.write_bytes(blob.read_bytes())  # the right bytes, but outside the store
    blob.unlink()
    blob.symlink_to(outside)
    assert not cache.store.has(digest)
    with pytest.raises(CorruptBlobError) as e:
        cache.read_blob(digest)
    assert "symbolic link" in e.value.diagnostics[0].message and outside.exists()
    os.mkfifo(blob)  # a reader must not block on it either
    with pytest.raises(CorruptBlobError):
        cache.read_blob(digest)


def test_a_read_only_store_refuses_a_corrupt_blob_without_moving_it(tmp_path):
    import pytest

    from aotc.cache.store import CorruptBlobError, LocalBlobStore

    commit(Cache(tmp_path), "a")
    wheel_like = Cache(tmp_path, store=LocalBlobStore(tmp_path, read_only=True))  # as installed wheels are read
    digest = wheel_like.get_manifest(k("a"))["blobs"]["cubin"]["sha256"]
    path = wheel_like.store.path(digest)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptBlobError) as e:
        wheel_like.read_blob(digest)
    assert e.value.moved_to is None and path.exists() and not (tmp_path / "v1" / "quarantine").exists()

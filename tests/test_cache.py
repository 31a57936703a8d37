"""Cache over a real directory and real processes: entries (blobs first, manifest last), refs,
direct mode over real CUTLASS headers, concurrent writers/readers, a SIGKILLed writer, verify of
corrupt/unreadable files, gc reachability, stats, and where the default cache lives."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.direct_mode import MAX_PREKEY_SETS, HeaderSnapshot, file_sha256, lookup_prekey, record_prekey
from aotc.build.flashinfer import workspaces
from aotc.cache import SCHEMA, Cache, CacheFormatError, default_cache_dir, header_map
from aotc.cache.maintenance import gc, stats, verify
from aotc.cache.manifest import Manifest, ManifestError
from aotc.cache.store import CorruptBlobError, LocalBlobStore
from aotc.keys import action_inputs, action_key, sha256_hex

REPO = Path(__file__).resolve().parent.parent


def k(name: str) -> str:
    """A 64-hex key for a readable test name."""
    return sha256_hex(name)


def blobs_for(name: str) -> dict[str, bytes]:
    shared = b"shared helper bytes " * 500  # one blob referenced by every entry (dedup, gc)
    return {"cubin": (name.encode() + b"\x00") * 3000, "helper": shared, "source": f"// {name}\n".encode()}


def put(cache: Cache, name: str, **extra: object) -> dict:
    manifest = {"name": name, "family": "test", "params": {}, "arch": "sm120a", "target": {"sm": 120, "variant": "a"},
                **extra}
    return cache.put_entry(k(name), blobs_for(name), manifest)


# --- entries and refs ---------------------------------------------------------------------------


def test_put_entry_stores_blobs_then_manifest(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    stored = put(cache, "a")
    path = tmp_path / "v1" / "actions" / k("a")[:2] / f"{k('a')}.json"
    on_disk = json.loads(path.read_text())
    assert len(on_disk.pop("record_sha256")) == 64  # every record carries its checksum; readers drop it
    assert on_disk == stored == cache.get_manifest(k("a"))
    assert on_disk["schema"] == 1 and on_disk["key"] == k("a") and on_disk["name"] == "a"
    for name, data in blobs_for("a").items():
        ref = on_disk["blobs"][name]
        assert ref == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        assert cache.read_blob(ref["sha256"]) == data
    assert cache.get_manifest(k("missing")) is None


def test_second_writer_finds_entry_and_returns_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    first = put(cache, "a", built_at="first")
    second = put(cache, "a", built_at="second")
    assert second == first and cache.get_manifest(k("a"))["built_at"] == "first"


def test_entry_with_missing_blob_is_rewritten(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    first = put(cache, "a", built_at="first")
    cache.store.delete(first["blobs"]["cubin"]["sha256"])
    again = put(cache, "a", built_at="second")
    assert again["built_at"] == "second" and cache.read_blob(again["blobs"]["cubin"]["sha256"])


def put_keyed(cache: Cache, name: str, headers: dict[str, str], old_format: bool = False) -> dict:
    """An entry under its real action key; old_format writes the manifest as aotc did before header-map
    blobs (the map inline in `inputs.headers`)."""
    inputs = action_inputs(f"// {name}\n", "nvcc-identity", ["-O3"], "sm120a", headers)
    manifest = {"name": name, "family": "test", "params": {}, "arch": "sm120a", "target": {"sm": 120, "variant": "a"},
                "inputs": inputs}
    if not old_format:
        return cache.put_entry(action_key(inputs), blobs_for(name), manifest)
    blobs = {role: {"sha256": cache.store.put(data), "size": len(data)} for role, data in blobs_for(name).items()}
    cache.write_json(cache.manifest_path(action_key(inputs)),
                     {**manifest, "schema": SCHEMA, "key": action_key(inputs), "blobs": blobs})
    return cache.get_manifest(action_key(inputs))


def test_header_map_is_one_shared_blob_and_old_manifests_migrate_under_their_key(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    headers = {"<cutlass>/include/cute/tensor.hpp": k("tensor"), "<cuda>/include/cuda_fp16.h": k("fp16")}
    a, b = put_keyed(cache, "a", headers), put_keyed(cache, "b", headers)
    assert "headers" not in a["inputs"] and a["blobs"]["headers"] == b["blobs"]["headers"]  # stored once
    assert json.loads(cache.read_blob(a["blobs"]["headers"]["sha256"])) == headers
    for m in (a, b):  # the key is still the sha256 of the inputs with the map in them
        assert action_key(header_map.inputs(m, cache.read_blob)) == m["key"]
    # an old-format manifest is read as it is, by every reader
    old = put_keyed(cache, "c", headers, old_format=True)
    assert old["inputs"]["headers"] == headers and "headers" not in old["blobs"]
    assert Manifest.from_json(old).key == old["key"] == action_key(header_map.inputs(old, cache.read_blob))
    assert sorted(m["name"] for m in cache.entries()) == ["a", "b", "c"]
    # verify rewrites it, key unchanged, sharing the blob the others use; a second verify has nothing to do
    report = verify(cache)
    assert report.ok and report.manifests_migrated == 1
    new = cache.get_manifest(old["key"])
    assert "headers" not in new["inputs"] and new["blobs"]["headers"] == a["blobs"]["headers"]
    assert {r: new["blobs"][r] for r in old["blobs"]} == old["blobs"]
    assert action_key(header_map.inputs(new, cache.read_blob)) == old["key"]
    assert verify(cache).manifests_migrated == 0
    # the next store of an old-format key migrates it too (a second writer gets the new form back)
    old = put_keyed(cache, "d", {"<cuda>/include/other.h": k("other")}, old_format=True)
    again = put_keyed(cache, "d", {"<cuda>/include/other.h": k("other")})
    assert again == cache.get_manifest(old["key"]) and "headers" not in again["inputs"]
    assert json.loads(cache.read_blob(again["blobs"]["headers"]["sha256"])) == {"<cuda>/include/other.h": k("other")}


def test_unreadable_manifest_is_a_clear_error_and_is_left_alone(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    put(cache, "good")
    bad = cache.manifest_path(k("bad"))
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b'{"schema": 1, "key": "trunc')
    with pytest.raises(CacheFormatError) as info:
        cache.get_manifest(k("bad"))
    d = info.value.diagnostics[0]
    assert (
        d.code == "AOTC-CACHE-002"
        and str(bad) in d.message
        and "not JSON" in d.message
        and "aotc verify" in d.fix
    )
    assert bad.read_bytes() == b'{"schema": 1, "key": "trunc'  # reading never deletes
    assert cache.get_manifest(k("good"))["name"] == "good"
    assert [m["name"] for m in cache.entries()] == ["good"]
    assert put(cache, "bad")["name"] == "bad"  # a build replaces the unreadable file


def test_refs_resolve_to_manifests(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    stored = put(cache, "a")
    spec = k("spec-a")
    assert cache.resolve_ref(spec) is None
    cache.set_ref(spec, k("a"), {"family": "test", "params": {"tile": [128, 128]}, "arch": "sm120a"})
    assert cache.resolve_ref(spec) == stored
    ref = json.loads((tmp_path / "v1" / "refs" / spec[:2] / f"{spec}.json").read_text())
    assert ref["key"] == k("a") and ref["spec_key"] == spec and ref["params"] == {"tile": [128, 128]}
    cache.set_ref(spec, k("nothing-built"))
    assert cache.resolve_ref(spec) is None  # a ref to a missing entry is a miss, not an error


def test_ref_without_a_valid_action_key_is_a_format_error(tmp_path: Path) -> None:
    """A ref whose "key" is empty, not hex, or not a string names no entry (or a path outside the
    store): resolve_ref says so with a coded CacheFormatError and the file untouched, never a
    ValueError from the digest check (found by tests/test_fuzz_inputs.py with key '')."""
    cache = Cache(tmp_path)
    put(cache, "a")
    spec = k("spec-a")
    cache.set_ref(spec, k("a"))
    path = tmp_path / "v1" / "refs" / spec[:2] / f"{spec}.json"
    for bad in ("", "../../escape", k("a").upper(), 7, None):
        path.write_text(json.dumps({"schema": SCHEMA, "spec_key": spec, "key": bad}))
        with pytest.raises(CacheFormatError) as info:
            cache.resolve_ref(spec)
        assert info.value.diagnostics[0].code.startswith("AOTC-CACHE-") and "action key" in str(info.value)
        assert json.loads(path.read_text())["key"] == bad


def test_write_log(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path = cache.write_log(k("a"), "error: ptxas failed\n")
    assert path == tmp_path / "v1" / "logs" / f"{k('a')}.log" and path.read_text() == "error: ptxas failed\n"
    with pytest.raises(ValueError, match="log name"):
        cache.write_log("../escape", "x")


def test_stats_report_compression(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    put(cache, "a")
    put(cache, "b")
    st = stats(cache)
    raw = (
        sum(len(b) for b in blobs_for("a").values())
        + len(blobs_for("b")["cubin"])
        + len(blobs_for("b")["source"])
    )
    stored = sum(p.stat().st_size for p in (tmp_path / "v1" / "blobs").rglob("*.zst"))
    assert (st.entries, st.blobs, st.raw_bytes, st.stored_bytes) == (2, 5, raw, stored)
    assert st.compression_ratio == pytest.approx(raw / stored) and st.compression_ratio > 10


# --- direct mode --------------------------------------------------------------------------------


def write_headers(root: Path, n: int) -> dict[str, str]:
    headers = {}
    for i in range(n):
        p = root / f"h{i}.h"
        p.write_text(f"#pragma once\nint v{i};\n")
        headers[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return headers


def test_prekey_lookup_follows_header_contents(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    (tmp_path / "inc").mkdir()
    headers = write_headers(tmp_path / "inc", 3)
    pk = k("prekey")
    put(cache, "a")
    record_prekey(cache, pk, headers, k("a"))
    assert lookup_prekey(cache, pk) == k("a")
    h0 = Path(next(iter(headers)))
    h0.write_text("#pragma once\nint changed;\n")
    assert lookup_prekey(cache, pk) is None  # content changed: must compile
    h0.write_text("#pragma once\nint v0;\n")  # same content, new mtime
    assert lookup_prekey(cache, pk) == k("a")
    h0.unlink()
    assert lookup_prekey(cache, pk) is None


def test_prekey_keeps_several_header_sets_newest_first(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    (tmp_path / "inc").mkdir()
    headers = write_headers(tmp_path / "inc", 2)
    h0 = next(iter(headers))
    pk = k("prekey")
    put(cache, "v1")
    record_prekey(cache, pk, headers, k("v1"))
    Path(h0).write_text("// version 2\n")
    headers2 = {**headers, h0: hashlib.sha256(b"// version 2\n").hexdigest()}
    put(cache, "v2")
    record_prekey(cache, pk, headers2, k("v2"))
    assert lookup_prekey(cache, pk) == k("v2")
    Path(h0).write_text("#pragma once\nint v0;\n")  # switch back: the older set still hits
    assert lookup_prekey(cache, pk) == k("v1")
    cache.manifest_path(k("v1")).unlink()
    assert lookup_prekey(cache, pk) is None  # a recorded set whose entry is gone is a miss
    for i in range(MAX_PREKEY_SETS + 3):
        record_prekey(cache, pk, {h0: f"{i:064x}"}, k(f"x{i}"))
    record = json.loads(cache.prekey_path(pk).read_text())
    assert len(record["sets"]) == MAX_PREKEY_SETS and record["sets"][0]["key"] == k(f"x{MAX_PREKEY_SETS + 2}")


def cutlass_headers(n: int) -> list[str]:
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        pytest.skip("nvidia-cutlass (pip) is not installed")
    source = Path(spec.origin).parent / "source"
    suffixes = {".h", ".hpp", ".cuh", ".inl"}
    files = sorted(str(p) for p in source.rglob("*") if p.suffix in suffixes and p.is_file())
    assert len(files) >= n, f"only {len(files)} CUTLASS headers found under {source}"
    return files[:n]


_NOOP_REBUILD = """
import json, sys, time
t0 = time.perf_counter()
from aotc.build.direct_mode import HeaderSnapshot, lookup_prekey
from aotc.cache import Cache
cache = Cache(sys.argv[1])
snapshot = HeaderSnapshot()  # one per build run
hits = sum(lookup_prekey(cache, pk, snapshot) is not None for pk in json.loads(sys.argv[2]))
print(json.dumps({"hits": hits, "seconds": time.perf_counter() - t0}))
"""


def test_noop_rebuild_of_a_catalog_is_well_under_a_second(tmp_path: Path) -> None:
    # 120 (spec, arch) jobs x 1000 real CUTLASS headers each: about what `nvcc -MD` reports for
    # one CUTLASS SM120 TU (1,108 files for example 79a, measured 2026-11-25).
    headers = cutlass_headers(1000)
    digests = {p: file_sha256(p) for p in headers}
    cache = Cache(tmp_path)
    prekeys = []
    for i in range(120):
        put(cache, f"job{i}")
        record_prekey(cache, k(f"pk{i}"), digests, k(f"job{i}"))
        prekeys.append(k(f"pk{i}"))
    out = subprocess.run(
        [sys.executable, "-c", _NOOP_REBUILD, str(tmp_path), json.dumps(prekeys)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    print(f"no-op lookup of 120 jobs x 1000 headers in a fresh process: {result['seconds']:.3f} s")
    assert result["hits"] == 120
    assert result["seconds"] < 1.0
    assert len(list((tmp_path / "v1" / "headersets").rglob("*.json"))) == 1  # stored once, shared


def test_header_snapshot_is_one_build_run(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    (tmp_path / "inc").mkdir()
    headers = write_headers(tmp_path / "inc", 2)
    put(cache, "a")
    record_prekey(cache, k("pk1"), headers, k("a"))
    record_prekey(cache, k("pk2"), headers, k("a"))
    snapshot = HeaderSnapshot()
    assert lookup_prekey(cache, k("pk1"), snapshot) == k("a")
    assert list(snapshot.verified_sets.values()) == [True]
    Path(next(iter(headers))).write_text("// edited during the run\n")
    assert lookup_prekey(cache, k("pk2"), snapshot) == k("a")  # the run's view: files as at its start
    assert lookup_prekey(cache, k("pk2"), HeaderSnapshot()) is None  # the next run sees the edit
    assert lookup_prekey(cache, k("pk2")) is None  # so does the default, per-call hasher


# --- concurrency with real processes ------------------------------------------------------------

NAMES = [f"entry{i}" for i in range(6)]


def _worker(root: str, start: float, errors: multiprocessing.Queue, results: multiprocessing.Queue) -> None:
    while time.time() < start:  # all processes begin together
        time.sleep(0.001)
    cache = Cache(root)
    got = {}
    try:
        for round_ in range(3):
            for name in NAMES[os.getpid() % len(NAMES) :] + NAMES[: os.getpid() % len(NAMES)]:
                for other in NAMES:  # read whatever is visible: it must be whole
                    m = cache.resolve_ref(k("spec-" + other))
                    if m is not None:
                        for bname, data in blobs_for(other).items():
                            assert cache.read_blob(m["blobs"][bname]["sha256"]) == data
                if round_ == 0:
                    got[name] = put(cache, name, built_at=str(os.getpid()))["built_at"]
                    cache.set_ref(k("spec-" + name), k(name), {"name": name})
    except Exception as e:  # noqa: BLE001 - any failure is reported to the parent, which fails the test
        errors.put(f"{os.getpid()}: {type(e).__name__}: {e}")
    results.put(got)


def test_many_processes_put_and_read_the_same_keys(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors, results = ctx.Queue(), ctx.Queue()
    start = time.time() + 1.0
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), start, errors, results)) for _ in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert errors.empty(), errors.get()
    cache = Cache(tmp_path)
    for name in NAMES:  # every process got the one manifest that was stored first
        stored = cache.get_manifest(k(name))
        assert {o[name] for o in outcomes} == {stored["built_at"]}
    blob_files = [p for p in (tmp_path / "v1" / "blobs").rglob("*") if p.is_file()]
    expected = {hashlib.sha256(d).hexdigest() for n in NAMES for d in blobs_for(n).values()}
    assert sorted(p.name for p in blob_files) == sorted(f"{d}.zst" for d in expected)  # one file per digest
    assert [p for p in (tmp_path / "v1" / "tmp").iterdir() if p.is_file()] == []  # no temp leftovers
    assert verify(cache).ok


_KILLED_PUT = """
import random, sys
from aotc.cache import Cache
from aotc.cache.store import LocalBlobStore
root, key = sys.argv[1], sys.argv[2]
cache = Cache(root, store=LocalBlobStore(root, level=19))
huge = random.Random(1).randbytes(16 << 20).translate(bytes(i & 15 for i in range(256)))  # ~1 min at level 19
cache.put_entry(key, {"source": b"small first", "cubin": huge}, {"name": "killed"})
print("finished")
"""


def test_writer_killed_mid_put_entry_leaves_no_visible_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    put(cache, "survivor")
    key = k("killed")
    child = subprocess.Popen([sys.executable, "-c", _KILLED_PUT, str(tmp_path), key], cwd=REPO)
    tmp_dir = tmp_path / "v1" / "tmp"
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 4096 for p in tmp_dir.glob("*.tmp")):  # the huge blob's, not the small one's
        assert child.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert cache.get_manifest(key) is None and [m["name"] for m in cache.entries()] == ["survivor"]
    assert cache.read_blob(hashlib.sha256(b"small first").hexdigest()) == b"small first"  # an orphan, fine
    report = gc(cache, blob_grace_seconds=0)
    assert len(report.tmp_removed) == 1 and not list(tmp_dir.glob("*.tmp"))
    assert report.blobs_removed == [hashlib.sha256(b"small first").hexdigest()]
    assert put(cache, "killed")["name"] == "killed"  # the key's lock died with its holder
    assert verify(cache).ok


# --- verify -------------------------------------------------------------------------------------


def flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def test_corrupt_blob_is_found_quarantined_and_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    (tmp_path / "inc.h").write_text("// header\n")
    a, b = put(cache, "a"), put(cache, "b")
    for name in ("a", "b"):
        cache.set_ref(k("spec-" + name), k(name))
        record_prekey(cache, k("pk-" + name), {str(tmp_path / "inc.h"): file_sha256(str(tmp_path / "inc.h"))}, k(name))
    digest = a["blobs"]["cubin"]["sha256"]
    assert isinstance(cache.store, LocalBlobStore)
    flip_last_byte(cache.store.path(digest))

    report = verify(cache)
    assert not report.ok and report.blobs_checked == 5  # 2 cubins, 2 sources, 1 shared helper
    assert [c["digest"] for c in report.corrupt_blobs] == [digest]
    assert Path(report.corrupt_blobs[0]["quarantined"]).parent == tmp_path / "v1" / "quarantine"
    assert [e["key"] for e in report.broken_entries] == [k("a")]
    assert report.refs_dropped == [k("spec-a")]
    assert cache.resolve_ref(k("spec-a")) is None and lookup_prekey(cache, k("pk-a")) is None  # so it rebuilds
    assert cache.resolve_ref(k("spec-b")) == b and lookup_prekey(cache, k("pk-b")) == k("b")  # untouched
    rebuilt = put(cache, "a")
    assert cache.read_blob(rebuilt["blobs"]["cubin"]["sha256"]) == blobs_for("a")["cubin"]
    assert verify(cache).ok


def test_read_of_corrupt_blob_raises_and_verify_then_reports_the_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    a = put(cache, "a")
    cache.set_ref(k("spec-a"), k("a"))
    digest = a["blobs"]["cubin"]["sha256"]
    assert isinstance(cache.store, LocalBlobStore)
    flip_last_byte(cache.store.path(digest))
    m = cache.resolve_ref(k("spec-a"))
    with pytest.raises(CorruptBlobError, match=digest):
        cache.read_blob(m["blobs"]["cubin"]["sha256"])
    report = verify(cache)  # the blob is already in quarantine: the entry now misses it
    assert report.broken_entries[0]["problems"] == {"cubin": f"missing blob {digest}"}
    assert report.refs_dropped == [k("spec-a")]


def test_verify_quarantines_unreadable_manifest_and_ref(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    put(cache, "good")
    cache.set_ref(k("spec-good"), k("good"))
    bad = cache.manifest_path(k("bad"))
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("not json")
    badref = cache.ref_path(k("spec-bad"))
    badref.parent.mkdir(parents=True, exist_ok=True)
    badref.write_text("[1, 2]")
    with pytest.raises(CacheFormatError, match="expected a JSON object"):
        cache.resolve_ref(k("spec-bad"))
    report = verify(cache)
    assert sorted(f["file"] for f in report.bad_files) == sorted([str(bad), str(badref)])
    assert not bad.exists() and not badref.exists()
    assert len(list((tmp_path / "v1" / "quarantine").iterdir())) == 2
    assert cache.resolve_ref(k("spec-good"))["name"] == "good"
    assert verify(cache).ok


def test_malformed_manifest_is_a_coded_error_for_readers_and_quarantined_by_verify(tmp_path: Path) -> None:
    """JSON that is not a manifest (a field missing, one mistyped, one unknown): the runtime's
    source says which, with a code and a fix, instead of a KeyError while loading; verify moves it
    aside and drops its ref."""
    from aotc.runtime.lookup import CacheSource

    cache = Cache(tmp_path)
    stored = put(cache, "good")
    bad = {k_: v for k_, v in stored.items() if k_ != "target"} | {"key": k("bad"), "params": [1], "colour": "red"}
    cache.write_json(cache.manifest_path(k("bad")), bad)
    cache.set_ref(k("spec-bad"), k("bad"))
    cache.set_ref(k("spec-good"), k("good"))
    assert stored.items() <= Manifest.from_json(stored).to_json().items()  # parsed as stored, defaults added
    with pytest.raises(ManifestError) as err:
        CacheSource(cache).resolve(k("spec-bad"))
    diag = err.value.diagnostics[0]
    assert diag.code == "AOTC-CACHE-005" and "aotc verify" in diag.fix
    assert sorted(err.value.problems) == ["field 'params' is list, expected dict", "missing field 'target'",
                                          "unknown field 'colour'"]
    assert CacheSource(cache).resolve(k("spec-good")) == stored
    report = verify(cache)
    assert [f["file"] for f in report.bad_files] == [str(cache.manifest_path(k("bad")))]
    assert report.refs_dropped == [k("spec-bad")] and cache.get_ref(k("spec-bad")) is None
    assert verify(cache).ok


# Each of these once passed one of the two manifest checks the cache had (a lenient one for listings and
# verify's first pass, the typed one for the runtime) and failed the other.
ONE_CHECK_CASES = {
    "unknown field": lambda m: {**m, "colour": "red"},
    "params missing": lambda m: {n: v for n, v in m.items() if n != "params"},
    "key of another entry": lambda m: {**m, "key": k("other")},
    "blob digest a path": lambda m: {**m, "blobs": {"cubin": {"sha256": "../../x", "size": 1}}},
    "size a bool": lambda m: {**m, "blobs": {r: {**b, "size": True} for r, b in m["blobs"].items()}},
    "a cubin record not an object": lambda m: {**m, "cubins": [1]},
}


@pytest.mark.parametrize("case", sorted(ONE_CHECK_CASES))
def test_one_manifest_check_for_every_reader(tmp_path: Path, case: str) -> None:
    """Listings, the wheel packer, the runtime's source and verify agree on what a manifest is."""
    from aotc.build.wheel_pack import select_entries
    from aotc.cache.manifest import manifest_problems
    from aotc.runtime.lookup import CacheSource

    cache = Cache(tmp_path)
    good = put(cache, "good")
    bad = ONE_CHECK_CASES[case]({**put(cache, "bad"), "name": "bad"})
    cache.write_json(cache.manifest_path(k("bad")), bad)
    for name in ("good", "bad"):
        cache.set_ref(k(f"spec-{name}"), k(name), {"arch": "sm120a", "name": name})
    assert manifest_problems(bad, k("bad")) and manifest_problems(good, k("good")) == []
    assert [m["name"] for m in cache.entries()] == ["good"]
    assert [m["name"] for _, m in select_entries(cache, [get_arch("sm120a")])] == ["good"]
    if case != "key of another entry":  # the runtime reads it through its ref, not its file name
        with pytest.raises(ManifestError):
            CacheSource(cache).resolve(k("spec-bad"))
    assert CacheSource(cache).resolve(k("spec-good")) == good
    report = verify(cache)
    assert [f["file"] for f in report.bad_files] == [str(cache.manifest_path(k("bad")))]
    assert "AOTC-CACHE-005" in report.bad_files[0]["problem"]
    assert report.refs_dropped == [k("spec-bad")]
    assert verify(cache).ok and cache.resolve_ref(k("spec-good")) == good  # valid work kept


# --- gc -----------------------------------------------------------------------------------------


def populate(cache: Cache, names: list[str]) -> None:
    for name in names:
        put(cache, name)
        cache.set_ref(k("spec-" + name), k(name))
        cache.write_log(k(name), f"log of {name}")


def test_gc_keeps_what_is_reachable(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    populate(cache, ["a", "b", "c"])
    put(cache, "orphan")  # an entry no ref reaches
    before = sorted(p for p in (tmp_path / "v1").rglob("*") if p.is_file())

    dry = gc(cache, keep_spec_keys={k("spec-a")}, dry_run=True, blob_grace_seconds=0)
    assert sorted(p for p in (tmp_path / "v1").rglob("*") if p.is_file()) == before  # dry run deletes nothing
    report = gc(cache, keep_spec_keys={k("spec-a")}, blob_grace_seconds=0)
    assert report.to_json() == {**dry.to_json(), "dry_run": False}
    assert sorted(report.manifests_removed) == sorted([k("b"), k("c"), k("orphan")])
    assert sorted(report.refs_removed) == sorted([k("spec-b"), k("spec-c")])
    kept = cache.resolve_ref(k("spec-a"))
    for name, data in blobs_for("a").items():  # including the blob it shares with removed entries
        assert cache.read_blob(kept["blobs"][name]["sha256"]) == data
    gone = {hashlib.sha256(blobs_for(n)["cubin"]).hexdigest() for n in ("b", "c", "orphan")}
    assert set(report.blobs_removed) == gone | {
        hashlib.sha256(blobs_for(n)["source"]).hexdigest() for n in ("b", "c", "orphan")
    }
    assert set(cache.store.iter_digests()) == {b["sha256"] for b in kept["blobs"].values()}
    assert report.bytes_freed > 0 and report.logs_removed == 0
    assert not cache.log_path(k("b")).exists() and cache.log_path(k("a")).exists()
    assert verify(cache).ok


def test_gc_by_age_and_blob_grace(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    populate(cache, ["old", "new"])
    cache.write_log(k("failed-build"), "error")
    week = time.time() - 7 * 86_400
    for path in (cache.manifest_path(k("old")), cache.log_path(k("failed-build"))):
        os.utime(path, (week, week))
    report = gc(cache, older_than_seconds=86_400)  # default grace: fresh unreferenced blobs stay
    assert report.manifests_removed == [k("old")] and report.refs_removed == [k("spec-old")]
    assert report.blobs_removed == [] and report.logs_removed == 1
    assert cache.resolve_ref(k("spec-new"))["name"] == "new"
    report = gc(cache, blob_grace_seconds=0)
    assert len(report.blobs_removed) == 2  # old's cubin and source; the shared helper stays
    assert verify(cache).ok


def test_gc_never_removes_everything_when_nothing_is_kept_by_default(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    populate(cache, ["a"])
    report = gc(cache, blob_grace_seconds=0)
    assert report.manifests_removed == [] and report.blobs_removed == []
    assert cache.resolve_ref(k("spec-a"))["name"] == "a"


def test_gc_sweeps_abandoned_build_workspaces_only(tmp_path: Path) -> None:
    """A workspace kept to resume a stopped build goes after a week untouched, unless a build holds
    its lock; a recent one stays."""
    from filelock import FileLock

    cache = Cache(tmp_path)
    week_ago = time.time() - 8 * 86_400
    folders = {}
    for name in ("old", "old-but-locked", "recent"):
        folder = cache.tmp_dir / f"flashinfer-{name}"
        (folder / "ninja").mkdir(parents=True)
        (folder / "ninja" / ".ninja_log").write_text("# ninja log v7\n")
        if name != "recent":
            for p in (folder / "ninja" / ".ninja_log", folder / "ninja", folder):
                os.utime(p, (week_ago, week_ago))
        folders[name] = folder
    with FileLock(f"{folders['old-but-locked']}.lock"):
        dry = gc(cache, dry_run=True, sweeps=[workspaces.sweeper(cache)])
        assert str(folders["old"]) in dry.tmp_removed and folders["old"].exists()
        report = gc(cache, sweeps=[workspaces.sweeper(cache)])
    assert str(folders["old"]) in report.tmp_removed and not folders["old"].exists()
    assert folders["old-but-locked"].exists() and folders["recent"].exists()
    assert str(folders["recent"]) not in report.tmp_removed


# --- where the cache lives ----------------------------------------------------------------------


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOTC_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("AOTC_CACHE_DIR")
    assert default_cache_dir() == REPO / "cache"  # running from this source checkout
    # An installed copy (no pyproject.toml/tile_specs next to it) uses the XDG cache directory.
    site = tmp_path / "site"
    shutil.copytree(REPO / "aotc", site / "aotc", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("AOTC_CACHE_DIR", None)
    code = "from aotc.cache import default_cache_dir; print(default_cache_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / "xdg" / "aotc")
    env.pop("XDG_CACHE_HOME")
    env["HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / "home" / ".cache" / "aotc")


def test_runtime_import_stays_light() -> None:
    code = (
        "import sys, aotc.cache, aotc.cache.store\n"
        "bad = [m for m in ('jinja2', 'subprocess', 'filelock', 'aotc.build', 'aotc.build.compile') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

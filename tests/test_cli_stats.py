"""The cache as ccache users expect it: `aotc stats` (entries, bytes, compression, hits and misses
persisted across processes, --zero) and a size cap that evicts least-recently-used entries at the end
of a build, never one the build used, never a blob another entry still needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aotc.cache import Cache, usage
from aotc.cache.evict import evict_to_size, parse_size
from aotc.cli import main
from aotc.diagnostics import AotcError
from tests.conftest import BUILT_SPEC

ROOT = Path(__file__).resolve().parent.parent


def entry(cache: Cache, n: int, size: int = 50_000, shared: bytes = b"") -> str:
    """A whole cache entry (blobs, manifest, ref) of about `size` incompressible bytes."""
    key = f"{n:064x}"
    blobs = {"cubin": os.urandom(size)}
    if shared:
        blobs["source"] = shared
    cache.put_entry(key, blobs, {"name": f"k{n}", "family": "fmha_fwd", "arch": "sm120a", "spec_key": f"{n + 1000:064x}"})
    cache.set_ref(f"{n + 1000:064x}", key, {"name": f"k{n}"})
    return key


def stored(cache: Cache) -> int:
    return sum(cache.store.stat(d).stored_bytes for d in cache.store.iter_digests())


def test_sizes_parse_like_ccache():
    assert parse_size("20G") == 20 * 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size("0") == 0
    assert parse_size("1.5k") == 1500 and parse_size("100") == 100
    with pytest.raises(AotcError) as err:
        parse_size("lots")
    assert err.value.diagnostics[0].code == "AOTC-CACHE-010"


def test_eviction_is_lru_keeps_what_the_build_used_and_shared_blobs(tmp_path):
    cache = Cache(tmp_path / "c")
    common = os.urandom(30_000)
    keys = [entry(cache, n, shared=common if n in (0, 3) else b"") for n in range(5)]
    # builds used them in this order: 2 longest ago, then 0, 4, 1, 3 (most recent)
    for k in (keys[2], keys[0], keys[4], keys[1], keys[3]):
        usage.record_build(cache, hits=1, misses=0, used_keys=[k])
        time.sleep(0.01)
    before = stored(cache)
    per_entry = 50_000  # urandom: zstd cannot shrink it
    cap = before - 2 * per_entry  # room only after two entries go
    report = evict_to_size(cache, cap, in_use={keys[2]})  # the oldest, but this build used it
    assert [e["key"] for e in report.evicted] == [keys[0], keys[4]]
    assert report.stored_after == stored(cache) <= cap
    assert cache.get_manifest(keys[0]) is None and cache.get_ref(f"{1000:064x}") is None  # whole entry gone
    assert cache.get_manifest(keys[2]) is not None  # used by the build: kept although least recent
    m3 = cache.get_manifest(keys[3])
    assert cache.read_blob(m3["blobs"]["source"]["sha256"]) == common  # still needed by entry 3: kept
    counts = usage.read_stats(Cache(tmp_path / "c"))  # persisted: a fresh Cache object reads them
    assert counts["evicted_entries"] == 2 and counts["evicted_bytes"] == before - report.stored_after
    assert counts["hits"] == 5 and counts["builds"] == 5
    # under the cap: nothing happens
    assert evict_to_size(cache, 10**12, set()).evicted == []


def test_stats_command_and_zero(tmp_path):
    cache = Cache(tmp_path / "c")
    for n in range(3):
        entry(cache, n)
    usage.record_build(cache, hits=7, misses=2, used_keys=[])

    def stats(*extra):
        out = subprocess.run([sys.executable, "-m", "aotc", "stats", "--cache-dir", str(cache.root), *extra],
                             capture_output=True, text=True, cwd=ROOT, check=True).stdout
        return out

    data = json.loads(stats("--json"))
    assert (data["entries"], data["refs"], data["hits"], data["misses"]) == (3, 3, 7, 2)
    assert data["stored_bytes"] == stored(cache) and data["hit_rate"] == pytest.approx(7 / 9)
    text = stats()
    assert "hit rate          77.8%" in text and "entries           3" in text
    zeroed = json.loads(stats("--zero", "--json"))
    assert (zeroed["hits"], zeroed["misses"], zeroed["entries"]) == (0, 0, 3) and zeroed["since"]


@pytest.mark.compile
def test_build_counts_hits_and_the_cap_never_evicts_what_it_used(built_cache, tmp_path, capsys):
    cache, _ = built_cache
    root = tmp_path / "c"
    shutil.copytree(cache.root, root)  # the session's cache stays whole
    copy = Cache(root)
    old = [entry(copy, n) for n in range(3)]  # not part of the catalog build below: evictable
    for k in old:
        os.utime(copy.manifest_path(k), (1, 1))  # never used by a build, built long ago
    code = main(["build", "--arch", "sm90a,sm120a", "--filter", BUILT_SPEC, "--cache-dir", str(root), "-q",
                 "--max-size", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["results"] and all(r["status"] == "hit" for r in out["results"])
    used = {r["key"] for r in out["results"]}
    evicted = {e["key"] for e in out["eviction"]["evicted"]}
    assert evicted == set(old)  # everything else over the 1-byte cap, but used by this build
    assert all(copy.get_manifest(k) is not None for k in used)
    assert usage.read_stats(copy)["hits"] == len(used)
    main(["stats", "--cache-dir", str(root)])
    assert f"hits              {len(used)}" in capsys.readouterr().out


def test_gc_names_entries_and_says_what_to_run_next(tmp_path, capsys):
    cache = Cache(tmp_path / "c")
    key = entry(cache, 7)
    os.utime(cache.manifest_path(key), (1, 1))  # built long ago
    assert main(["gc", "--cache-dir", str(cache.root), "--max-age-days", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove k7 (sm120a)" in out and "without --dry-run" in out
    assert cache.get_manifest(key) is not None
    assert main(["gc", "--cache-dir", str(cache.root), "--max-age-days", "1"]) == 0
    out = capsys.readouterr().out
    assert "removed k7 (sm120a)" in out and "aotc stats" in out and cache.get_manifest(key) is None

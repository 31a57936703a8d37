"""Scale-out on one machine: a small catalog subset (SM80-class grouped GEMMs) built into fresh caches
by the local pool with 1 job, and by `--executor ray` on a local cluster of 1 and of 2 worker nodes
(1 CPU each); with --flashinfer also the `ci` preset's cascade module (2 compile steps) the same
three ways; then the Redis layer: a second cache folder's build that is all remote hits, and per
kernel the cold fetch (ref -> manifest -> cubin + helper from Redis) against a warm local read.
The load average is recorded before and after every build (the machine may be shared).

    python tools/bench_scale_out.py --out bench/results/scale_out_local.json [--flashinfer]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aotc.arch import get_arch
from aotc.build.pipeline import build
from aotc.build.spec import load_specs
from aotc.build.toolchain import find_toolchain
from aotc.cache import Cache
from aotc.keys import spec_key

SUBSET = ("moe_bf16_128x256", "moe_bf16_64x128")
ARCH = "sm80"
GIB = 1 << 30


def subset():
    return [s for s in load_specs().specs if s.name in SUBSET]


def timed_build(cache: Cache, executor=None, jobs=None) -> dict:
    return _timed(lambda: build(subset(), [get_arch(ARCH)], cache, jobs=jobs, executor=executor, progress=False))


def timed_flashinfer(cache: Cache, executor=None, jobs=None) -> dict:
    from aotc.build.flashinfer.module_build import build_modules

    return _timed(lambda: build_modules(["ci"], ["sm120a"], cache, jobs=jobs, progress=False, executor=executor))


def _timed(run) -> dict:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    summary = run()
    wall = time.perf_counter() - t0
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return {"wall_s": round(wall, 2), "built": summary.count("built"), "hit": summary.count("hit"),
            "compile_s_sum": round(sum(r.compile_seconds for r in summary.results), 2),
            "load_avg_before": load_before, "load_avg_after": os.getloadavg()}


def ray_build(tmp: Path, workers: int, timed=timed_build) -> dict:
    from aotc.build.executor_ray import RayExecutor
    from tests.ray_cluster import LocalCluster

    name = f"{timed.__name__}-ray{workers}"
    (tmp / name).mkdir()
    cluster = LocalCluster(tmp / name)
    try:
        cluster.start_node(cpus=0, memory=1 * GIB)  # the head schedules; workers compile
        for _ in range(workers):
            cluster.start_node(cpus=1, memory=4 * GIB)
        cluster.wait_for(workers + 1)
        cache = Cache(tmp / f"cache-{name}")
        ex = RayExecutor(cluster.address, cache, find_toolchain().identity, {s.name: s.family for s in subset()})
        return timed(cache, executor=ex) | {"workers": workers}
    finally:
        cluster.stop()


def redis_hits(tmp: Path, source: Cache) -> dict:
    from aotc.cache.remote import RedisBlobStore
    from tests.redis_server import start_redis, stop_redis

    proc, url = start_redis(tmp)
    try:
        shared = Cache(source.root, store=RedisBlobStore(source.root, url))
        for m in source.entries():  # share what the local build made (as a build with AOTC_REMOTE would)
            shared.write_json(shared.manifest_path(m["key"]), m)
            for b in m["blobs"].values():
                shared.store.put(source.read_blob(b["sha256"]))
        for ref in source.refs():
            shared.write_json(shared.ref_path(ref["spec_key"]), ref)
        for kind in ("prekeys", "headersets"):
            for path in source.record_paths(kind):
                shared.write_json(path, json.loads(path.read_text()))
        # a second folder's build: every kernel a hit through Redis
        second = Cache(tmp / "second", store=RedisBlobStore(tmp / "second", url))
        build_hits = timed_build(second)
        # per kernel: cold (ref, manifest, cubin, helper from Redis into an empty folder) vs warm local
        keys = [spec_key(s.family, s.params, ARCH) for s in subset()]
        cold, warm = [], []
        for i in range(5):
            fresh = Cache(tmp / f"fresh{i}", store=RedisBlobStore(tmp / f"fresh{i}", url))
            for sk in keys:
                t0 = time.perf_counter()
                m = fresh.resolve_ref(sk)
                for b in m["blobs"].values():
                    fresh.read_blob(b["sha256"])
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                m = fresh.resolve_ref(sk)
                for b in m["blobs"].values():
                    fresh.read_blob(b["sha256"])
                warm.append(time.perf_counter() - t0)
        sizes = [sum(b["size"] for b in fresh.resolve_ref(sk)["blobs"].values()) for sk in keys]
        return {"second_folder_build": build_hits,
                "per_kernel_ms": {"remote_cold_median": round(statistics.median(cold) * 1e3, 2),
                                  "remote_cold_max": round(max(cold) * 1e3, 2),
                                  "local_warm_median": round(statistics.median(warm) * 1e3, 2),
                                  "samples": len(cold)},
                "bytes_per_kernel": sizes}
    finally:
        stop_redis(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--flashinfer", action="store_true", help="also the cascade module (needs flashinfer-python)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aotc-scale-"))
    local_cache = Cache(tmp / "cache-local1")
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python tools/bench_scale_out.py --out " + str(args.out) + (" --flashinfer" if args.flashinfer else ""),
        "kernels": f"{SUBSET} for {ARCH}",
        "load_avg_before": os.getloadavg(),
        "local_1_job": timed_build(local_cache, jobs=1),
        "ray_1_worker": ray_build(tmp, 1),
        "ray_2_workers": ray_build(tmp, 2),
    }
    if args.flashinfer:
        result["flashinfer_cascade"] = {
            "local_1_job": timed_flashinfer(Cache(tmp / "cache-fi-local1"), jobs=1),
            "ray_1_worker": ray_build(tmp, 1, timed_flashinfer),
            "ray_2_workers": ray_build(tmp, 2, timed_flashinfer)}
    result["redis"] = redis_hits(tmp, local_cache)
    for part in (result, result.get("flashinfer_cascade")):
        if part:
            base = part["local_1_job"]["wall_s"]
            part["speedup_vs_local_1_job"] = {k: round(base / part[k]["wall_s"], 2)
                                              for k in ("ray_1_worker", "ray_2_workers")}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

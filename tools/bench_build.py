"""Build benchmark: cold build of N kernels at 1 job and at the maximum job count (parallel
efficiency), no-op rebuild of a whole catalog view, aotc's own overhead per kernel (everything but
nvcc) as a fraction of nvcc's time, and the cache's zstd compression ratio.

    python tools/bench_build.py --arch sm120a --filter fmha_fwd_m64n64 --out bench/results/build.md

The no-op rebuild is measured over `--noop-cache` (default: the embedded cache) for every catalog
spec matching `--noop-filter`, after building whatever is missing there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aotc.arch import parse_arch_list
from aotc.build.pipeline import BUILT, build
from aotc.build.spec import filter_specs, load_specs
from aotc.build.toolchain import find_toolchain, plan_parallel_jobs
from aotc.cache import Cache, default_cache_dir
from aotc.cache.maintenance import stats as cache_stats


def cold(specs, archs, jobs):
    with tempfile.TemporaryDirectory(prefix="aotc-bench-") as d:
        cache = Cache(Path(d))
        summary = build(specs, archs, cache, jobs=jobs, progress=False)
        built = [r for r in summary.results if r.status == BUILT]
        stats = cache_stats(cache).to_json()
    return summary, built, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sm120a")
    ap.add_argument("--filter", action="append", default=[], help="kernels for the cold builds")
    ap.add_argument("--max-jobs", type=int, default=None)
    ap.add_argument("--noop-cache", default=None)
    ap.add_argument("--noop-filter", action="append", default=[])
    ap.add_argument("--out", default="bench/results/build.md")
    args = ap.parse_args()

    archs = parse_arch_list(args.arch)
    catalog = load_specs().specs
    specs = filter_specs(catalog, args.filter)
    max_jobs = plan_parallel_jobs(args.max_jobs, 1).jobs if args.max_jobs is None else args.max_jobs

    s1, built1, stats = cold(specs, archs, 1)
    sN, _, _ = cold(specs, archs, max_jobs)
    n = len(built1)
    nvcc = sum(r.compile_seconds for r in built1)
    overhead = [(r.seconds - r.compile_seconds) / r.compile_seconds for r in built1 if r.compile_seconds]

    noop_cache = Cache(Path(args.noop_cache) if args.noop_cache else default_cache_dir())
    noop_specs = filter_specs(catalog, args.noop_filter)
    build(noop_specs, archs, noop_cache, progress=False)  # fill what is missing
    # a fresh process, as a user runs it: interpreter start + imports + every spec checked
    cmd = [sys.executable, "-m", "aotc.cli", "build", "--arch", args.arch, "--cache-dir", str(noop_cache.root),
           "-q", "--json", *[x for f in args.noop_filter for x in ("--filter", f)]]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    noop_process = time.perf_counter() - t
    noop = json.loads(out.stdout)

    tc = find_toolchain()
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node() or 'host'}: {os.cpu_count()} cores, {platform.machine()}, no GPU needed",
        "command": " ".join(["python", "tools/bench_build.py", *sys.argv[1:]]),
        "toolchain": f"nvcc {tc.release} ({tc.source})",
        "kernels": [r.spec.name + " " + r.arch.name for r in built1],
        "cold_1_job_s": round(s1.seconds, 2), f"cold_{sN.jobs}_jobs_s": round(sN.seconds, 2),
        "parallel_efficiency": round(s1.seconds / (sN.seconds * sN.jobs), 3) if sN.seconds else None,
        "nvcc_seconds_per_kernel": round(nvcc / n, 2) if n else None,
        "aotc_overhead_fraction_median": round(sorted(overhead)[len(overhead) // 2], 4) if overhead else None,
        "aotc_overhead_fraction_max": round(max(overhead), 4) if overhead else None,
        "noop_rebuild": {"kernels": noop["hit"] + noop["built"], "hits": noop["hit"],
                         "in_process_s": noop["seconds"], "whole_process_s": round(noop_process, 3)},
        "cache_stats_of_cold_build": stats,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Build benchmark ({result['date']})", "", f"- machine: {result['machine']}",
             f"- toolchain: {result['toolchain']}", f"- command: `{result['command']}`",
             f"- kernels (cold builds): {', '.join(result['kernels'])}", "",
             "| figure | value |", "|---|---|",
             f"| cold build, 1 job | {result['cold_1_job_s']} s |",
             f"| cold build, {sN.jobs} jobs | {result[f'cold_{sN.jobs}_jobs_s']} s |",
             f"| parallel efficiency (T1 / (Tn × n)) | {result['parallel_efficiency']} |",
             f"| nvcc time per kernel (device + host helper) | {result['nvcc_seconds_per_kernel']} s |",
             (f"| aotc overhead / nvcc time, median (max) | {result['aotc_overhead_fraction_median']} "
              f"({result['aotc_overhead_fraction_max']}) |"),
             (f"| no-op rebuild of {result['noop_rebuild']['kernels']} kernels, in process | "
              f"{result['noop_rebuild']['in_process_s']} s |"),
             f"| same, whole `aotc build` process | {result['noop_rebuild']['whole_process_s']} s |",
             f"| zstd compression ratio of the cache | {stats.get('compression_ratio')} |", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Simulate FlashInfer's fused-MoE build (96 CUTLASS translation units) on 1/4/16/64 nodes of 16 cores
and 64 GiB: aotc's memory-declared tasks (Ray packs a node by the memory each task declares) beside
FlashInfer's fixed MAX_JOBS = memory / 8 GB and a naive one-job-per-core rule. Prints a Markdown
table and writes the per-TU inputs and the results as JSON.

Per-TU inputs: compile times are reconstructed from a recorded 16-job build's completion times
(bench/results/flashinfer_sm120/progress_sm120_moe_run1.txt) under ninja's start-in-source-order;
per-TU peak RSS was not recorded there, so two memory models are calibrated to the one measured
figure, the host's peak memory in use during that build (peak_mem_sm120_moe_run1.txt). A third,
"measured", takes each TU's peak as aotc recorded it in two later builds on the same kind of host
(flashinfer_sm120/fused_moe_steps_h200_host.json: 75 TUs complete, 13 stopped mid-compile, 8 not
started; fused_moe_steps_h200_host_run2.json: 95 complete, 1 stopped), the larger of the two: a
step's peak varies by a few percent between builds, and a declared peak must not be the low one.

    python tools/simulate_scale_out.py [--json bench/results/scale_out.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROGRESS = RESULTS / "flashinfer_sm120" / "progress_sm120_moe_run1.txt"
PEAK_MEM = RESULTS / "flashinfer_sm120" / "peak_mem_sm120_moe_run1.txt"
PROBE_RUN2 = RESULTS / "flashinfer_sm120" / "progress_sm120_moe_probe_run2.txt"
TU_TABLE = RESULTS / "scale_out_fused_moe_tus.json"
MEASURED_STEPS = [RESULTS / "flashinfer_sm120" / f"fused_moe_steps_h200_host{run}.json" for run in ("", "_run2")]
GIB = 1 << 30
RECORDED_JOBS = 16  # the recorded build ran ninja -j 16
LINK_SECONDS = 3  # 8m21s (link done) - 8m18s (last object) in the recorded build
NODE_CORES, NODE_MEM = 16, 64 * GIB
RAY_NODE_MEM = 60 * GIB  # what the node offers tasks: 4 GiB left for the OS, raylet and object store
DEFAULT_DECLARED = int(5.1 * GIB)  # aotc's default when nothing is recorded (docs/verify.md)
FLASHINFER_JOB_BYTES = 8 * 10**9  # FlashInfer's AOT rule: MAX_JOBS = memory / 8 GB


def _completions(path: Path, total: int) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(rf"\[\d+/{total}\] .*: (\S+) \((\d+)m(\d+)s\)", line)
        if m:
            out[m[1]] = int(m[2]) * 60 + int(m[3])
    return out


def _source_order() -> list[str]:
    """FlashInfer's own source order of the module (ninja's edge order), as object names."""
    os.environ.setdefault("FLASHINFER_CUDA_ARCH_LIST", "12.0a")
    from flashinfer.jit.fused_moe import gen_cutlass_fused_moe_sm120_module

    names = []
    for src in gen_cutlass_fused_moe_sm120_module().sources:
        src = Path(src)
        names.append(f"{src.parent.name}_{src.stem}{'.cuda' if src.suffix == '.cu' else ''}.o")
    return names


def reconstruct_tus() -> dict:
    """Per-TU seconds: ninja with 16 slots starts the first 16 sources at 0 and each later one at the
    next completion, so duration = completion - start. Checked three ways below."""
    done = _completions(PROGRESS, 96)
    order = _source_order()
    assert sorted(order) == sorted(done), "the progress file and FlashInfer's source list disagree"
    events = sorted(done.values())
    start = {n: 0 if i < RECORDED_JOBS else events[i - RECORDED_JOBS] for i, n in enumerate(order)}
    seconds = {n: done[n] - start[n] for n in order}
    direct = _completions(PROBE_RUN2, 12)  # 12 TUs that all started at 0 in a resumed run: timed directly
    return {
        "source": "reconstructed from completion times of a 16-job build (see the module docstring)",
        "progress_file": str(PROGRESS.relative_to(ROOT)),
        "checks": {
            "sum_seconds": sum(seconds.values()), "ninja_log_sum_seconds": 7080,
            "nonpositive_durations": sum(v <= 0 for v in seconds.values()),
            "directly_timed_in_probe_run2": {n: {"direct_s": s, "reconstructed_s": seconds[n]}
                                             for n, s in direct.items()},
        },
        "tus": [{"name": n, "seconds": seconds[n], "start_in_recorded_run": start[n]} for n in order],
    }


def load_tus() -> dict:
    try:
        table = reconstruct_tus()
    except ImportError:  # no FlashInfer here: the committed table of an earlier run
        return json.loads(TU_TABLE.read_text())
    TU_TABLE.write_text(json.dumps(table, indent=1) + "\n")
    return table


def _peak_concurrent(intervals: list[tuple[float, float, int]]) -> int:
    points = sorted([(s, w) for s, _, w in intervals] + [(e, -w) for _, e, w in intervals], key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, w in points:
        level += w
        peak = max(peak, level)
    return peak


def memory_models(tus: list[dict]) -> dict[str, dict[str, int]]:
    """Per-TU peak RSS, calibrated so the recorded 16-job schedule peaks at the measured host figure."""
    measured = int(PEAK_MEM.read_text().split()[0])
    runs = [(t["start_in_recorded_run"], t["start_in_recorded_run"] + t["seconds"], t) for t in tus]
    uniform = measured // RECORDED_JOBS
    # Proportional to compile time (longer CUTLASS TUs instantiate more templates), clipped to the
    # 1-8 GiB range FlashInfer users report per nvcc process; the scale is bisected to the measurement.
    lo, hi = 0.0, 1e9
    for _ in range(60):
        c = (lo + hi) / 2
        peak = _peak_concurrent([(s, e, min(8 * GIB, max(GIB, int(c * t["seconds"])))) for s, e, t in runs])
        lo, hi = (c, hi) if peak < measured else (lo, c)
    return {
        "uniform": {t["name"]: uniform for t in tus},
        "proportional": {t["name"]: min(8 * GIB, max(GIB, int(lo * t["seconds"]))) for t in tus},
        "measured": measured_model(tus),
    }


def measured_model(tus: list[dict]) -> dict[str, int]:
    """Each TU's peak as recorded by aotc's builds, the larger where both recorded it (a lower bound
    where every build stopped that step); TUs never started get the median of the measured host-side
    (.o, not .cuda.o) TUs, else of all."""
    peaks: dict[str, int] = {}
    for path in MEASURED_STEPS:
        for n, s in json.loads(path.read_text())["steps"].items():
            if "peak_rss_bytes" in s:
                peaks[n] = max(peaks.get(n, 0), s["peak_rss_bytes"])
    host = sorted(v for n, v in peaks.items() if not n.endswith(".cuda.o")) or sorted(peaks.values())
    fill = host[len(host) // 2]
    return {t["name"]: peaks.get(t["name"], fill) for t in tus}


def simulate(tus: list[dict], rss: dict[str, int], nodes: int, *, slots: int | None = None,
             declared: dict[str, int] | None = None, node_mem: int = RAY_NODE_MEM, longest_first: bool = False
             ) -> dict:
    """List scheduling on `nodes` nodes. Fixed rules: `slots` jobs per node, in source order. Memory-
    declared tasks: a node takes a task while its cores and the memory its running tasks declared
    allow (Ray's admission), tasks offered longest recorded first. Returns makespan and per-node peaks."""
    queue = sorted(tus, key=lambda t: -t["seconds"]) if longest_first else list(tus)
    free_cores = [slots or NODE_CORES] * nodes
    free_mem = [node_mem] * nodes
    running: list[tuple[float, int, int, str]] = []  # (end, seq, node, name)
    intervals: list[list[tuple[float, float, int]]] = [[] for _ in range(nodes)]
    now, seq = 0.0, 0
    while queue or running:
        placed = True
        while placed and queue:
            placed = False
            for i, t in enumerate(queue):
                need = declared[t["name"]] if declared else 0
                node = next((n for n in range(nodes) if free_cores[n] and free_mem[n] >= need), None)
                if node is None:
                    if declared and need > node_mem:
                        raise ValueError(f"{t['name']} declares more than a node has")
                    break  # in order: the head waits (ninja and Ray's queue alike)
                free_cores[node] -= 1
                free_mem[node] -= need
                heapq.heappush(running, (now + t["seconds"], seq, node, t["name"]))
                intervals[node].append((now, now + t["seconds"], rss[t["name"]]))
                seq += 1
                queue.pop(i)
                placed = True
                break
        end, _, node, name = heapq.heappop(running)
        now = end
        free_cores[node] += 1
        free_mem[node] += declared[name] if declared else 0
    peaks = [_peak_concurrent(iv) for iv in intervals]
    return {"nodes": nodes, "makespan_s": now + LINK_SECONDS, "peak_node_gib": round(max(peaks) / GIB, 1),
            "oom_free": max(peaks) <= NODE_MEM}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    table = load_tus()
    tus = table["tus"]
    models = memory_models(tus)
    fixed_slots = NODE_MEM // FLASHINFER_JOB_BYTES  # 64 GiB / 8 GB = 8
    results = []
    print(f"fused MoE: {len(tus)} TUs, {sum(t['seconds'] for t in tus)} s of compiler time, longest "
          f"{max(t['seconds'] for t in tus)} s; nodes of {NODE_CORES} cores / {NODE_MEM // GIB} GiB\n")
    print("| RSS model | scheduler | nodes | makespan | peak memory of a node | OOM-free |")
    print("|---|---|---|---|---|---|")
    for model, rss in models.items():
        policies = {
            f"FlashInfer MAX_JOBS = 64 GiB / 8 GB = {fixed_slots} per node": {"slots": fixed_slots},
            "one job per core (16 per node)": {"slots": NODE_CORES},
            "aotc + Ray, declared = recorded peak RSS": {"declared": rss, "longest_first": True},
            "aotc + Ray, nothing recorded: 5.1 GiB each": {"declared": dict.fromkeys(rss, DEFAULT_DECLARED),
                                                          "longest_first": True},
        }
        for label, kw in policies.items():
            for nodes in (1, 4, 16, 64):
                r = simulate(tus, rss, nodes, **kw) | {"rss_model": model, "scheduler": label}
                results.append(r)
                m, s = divmod(round(r["makespan_s"]), 60)
                print(f"| {model} | {label} | {nodes} | {m} min {s:02d} s | {r['peak_node_gib']} GiB | "
                      f"{'yes' if r['oom_free'] else '**no**'} |")
    summary = {"tus": len(tus), "rss_models_gib": {m: {"min": round(min(v.values()) / GIB, 2),
                                                       "max": round(max(v.values()) / GIB, 2)}
                                                   for m, v in models.items()},
               "checks": table["checks"], "results": results}
    print("\nRSS models (GiB per TU):", json.dumps(summary["rss_models_gib"]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""aotc's block-scaled GEMMs vs NVIDIA's SM120 examples (CUTLASS 79a dense, 79d grouped), per catalog
spec: the example re-targeted to the spec (aotc/build/cutlass_reference.py) and aotc's own build,
both compiled here with aotc's nvcc flags; device-kernel SASS compared instruction by instruction.

    python tools/sass_equal_cutlass.py [--spec PREFIX ...] [--arch sm120a ...] [-j N]
        [--out bench/results/sass_equal_cutlass]

Writes OUT.json and OUT.md; records already in OUT.json are kept (rerun to add specs), so the
catalog can be done in several runs. Two nvcc runs of 50-300 s and up to ~10 GB each per spec and
arch; -j N compares N (spec, arch) pairs at once (a many-core host: -j 8 on 16 cores, 128 GiB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aotc.arch import get_arch
from aotc.build.cutlass_reference import EXAMPLES, compare_with_example
from aotc.build.spec import load_specs
from aotc.build.toolchain import cutlass_version, find_toolchain


def machine() -> str:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal"))) // 2**20
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {mem} GiB RAM, {platform.machine()}, no GPU used"


def row(r: dict) -> str:
    if "comparison" not in r:
        return f"| {r['spec']} {r.get('arch', '')} | {r['example'][:3]} | — | — | — | — | — | — | — | error: {r.get('error', '')[:200]} |"
    c, e = r["comparison"], r["entry_point_effect"]
    mma = " / ".join(", ".join(f"{k} {v}" for k, v in side.items()) or "none" for side in c["mma"])
    regs = " / ".join(str(side.get("registers", "?")) for side in (e["resources"][0], *c["resources"]))
    smem = " / ".join(str(side.get("smem_static", "?")) for side in (e["resources"][0], *c["resources"]))
    first = c["first_difference"]
    diff = "" if not first else f"#{first['index']}: `{first['a']}` vs `{first['b']}`"
    delta = ", ".join(f"{op} {n:+d}" for op, n in e["opcode_delta"].items()) or "none"
    eq = "yes" if e["equal"] else ("mod regs" if e["equal_modulo_registers"] else "no")
    return (f"| {r['spec']} {r.get('arch', '')} | {r['example'][:3]} | {c['instructions'][0]} / {c['instructions'][1]} | "
            f"{'yes' if c['equal'] else 'no'} | {'yes' if c['equal_modulo_registers'] else 'no'} | "
            f"{e['instructions'][0]}: {eq}; {delta} | {mma} | {regs} | "
            f"{smem} static + {r['smem_dynamic_both']} dynamic | {diff} |")


def write(records: dict, out: Path, meta: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    lines = [
        "# aotc's block-scaled GEMMs vs NVIDIA's SM120 examples: SASS",
        "",
        "- built with (machine, toolchain, date UTC; both sides of a row always with the same nvcc):",
        *sorted({f"  - {r.get('built_with', '?')}: {sum(x.get('built_with') == r.get('built_with') for x in records.values())} rows"
                 for r in records.values()}),
        f"- CUTLASS {meta['cutlass']} (pip nvidia-cutlass)",
        f"- commands: {'; '.join(f'`{c}`' for c in meta['commands'])}",
        ("- reference: CUTLASS example 79a (dense) / 79d (grouped) from the pinned package, the spec's tile, stages, "
        "schedules, operand types, BF16 D and no C substituted, cut after `GemmKernel`, "
        "`cutlass::device_kernel<GemmKernel>` instantiated (aotc/build/cutlass_reference.py); both compiled with "
        "aotc's device flags for the arch; the reference only compiles if its `sizeof(SharedStorage)` equals "
        "aotc's SMEM model of the spec (the dynamic SMEM both launch with)."),
        ("- columns: instructions = SASS instructions of the example's `GemmKernel` under aotc's entry point / "
         "aotc's `aotc_kernel`; equal = same instruction sequence after normalising addresses, branch targets and "
         "symbol names; equal mod regs = the same with register numbers dropped too; vs device_kernel = the "
         "example's own `cutlass::device_kernel<GemmKernel>` vs aotc's `aotc_kernel`: its instruction count, "
         "whether equal, and the opcode count difference (aotc minus example); MMA: example / aotc; registers "
         "and SMEM: example device_kernel / example under aotc's entry / aotc."),
        "",
        ("| spec | example | instructions | equal | equal mod regs | vs device_kernel | MMA | registers | SMEM B "
         "| first difference |"),
        "|---|---|---|---|---|---|---|---|---|---|",
        *[row(r) for _, r in sorted(records.items())],
        "",
    ]
    missing = [f"{s.name} {a}" for s in load_specs().specs if s.family in EXAMPLES for a in s.archs
               if f"{s.name} {a}" not in records]
    if missing:
        lines += [f"Not compared ({len(missing)}): " + ", ".join(f"`{m}`" for m in missing) + ". " +
                  meta.get("not_compared_why", "Not run yet: run the command above with `--spec` for them."), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", action="append", default=[], help="spec name prefix (default: every block-scaled spec)")
    ap.add_argument("--arch", action="append", default=[], help="target arch, repeatable (default: sm120a)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="(spec, arch) pairs compared at once")
    ap.add_argument("--out", default="bench/results/sass_equal_cutlass")
    ap.add_argument("--missing", action="store_true", help="skip pairs OUT.json already holds a comparison for")
    args = ap.parse_args()
    archs, tc, out = [get_arch(a) for a in (args.arch or ["sm120a"])], find_toolchain(), Path(args.out)
    pairs = [(s, arch) for arch in archs for s in load_specs().specs
             if s.family in EXAMPLES and arch.name in (s.archs or (arch.name,))
             and (not args.spec or any(s.name.startswith(p) for p in args.spec))]
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    records = old.get("records", {})
    if args.missing:
        pairs = [(s, a) for s, a in pairs if "comparison" not in records.get(f"{s.name} {a.name}", {})]
    meta = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "nvcc": tc.release, "toolchain": tc.source, "cutlass": cutlass_version(),
            "commands": [*old.get("meta", {}).get("commands", []),
                         "python tools/sass_equal_cutlass.py " + " ".join(sys.argv[1:])]}
    lock = threading.Lock()

    def compare(pair) -> None:
        spec, arch = pair
        started = time.perf_counter()
        record = compare_with_example(spec, arch, tc)
        record["wall_seconds"] = round(time.perf_counter() - started, 1)
        record["built_with"] = f"nvcc {tc.release} ({tc.source}), {machine()}, {meta['date']}"
        c = record.get("comparison", {})
        with lock:
            records[f"{spec.name} {arch.name}"] = record
            print(f"{spec.name} {arch.name}: equal={c.get('equal')} mod-regs={c.get('equal_modulo_registers')} "
                  f"{record.get('error', '')[:300]} ({record['wall_seconds']} s)", flush=True)
            write(records, out, meta)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(compare, pairs))
    return 0 if all(r.get("comparison", {}).get("equal") for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""aotc's FlashInfer module builds vs FlashInfer's own JIT builds, module by module: each preset call
built both ways for one arch (aotc/build/flashinfer/equality.py), every embedded cubin compared.

    python tools/sass_equal_flashinfer.py [--preset sm120 --preset attention] [--only TEXT ...]
        [--skip TEXT=REASON ...] [--arch sm120a] [-j 2] [--work DIR] [--out bench/results/sass_equal_flashinfer]

--only keeps calls whose description contains TEXT; --skip records a call as not compared, with the
reason. Records already in OUT.json are kept, so a preset can be done over several runs (one module
is two full compiles: run the big ones on a many-core host).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sass_equal_cutlass import machine

from aotc.arch import get_arch
from aotc.build.flashinfer.equality import compare_call, compare_objects
from aotc.build.toolchain import find_toolchain
from aotc.flashinfer.index import flashinfer_arch_list
from aotc.flashinfer.presets import load_preset


def _row(key: str, r: dict) -> str:
    name = r.get("module") or key
    if "not_compared" in r:
        return f"| {r['preset']} | {name} | — | — | — | — | not compared: {r['not_compared']} |"
    if "comparison" not in r and r.get("partial", {}).get("objects"):
        p = r["partial"]
        cubins = {k: sum(o.get("counts", {}).get(k, 0) for o in p["objects"].values())
                  for k in ("byte-identical", "normalised-equal", "different")}
        how = ("object by object, every object compared (no device link: the library embeds exactly these "
               "cubins)" if not p["not_compared"] else
               f"object by object (both builds stopped before linking); not compared: {', '.join(p['not_compared'])}")
        return (f"| {r['preset']} | {name} | {sum(cubins.values())} in {len(p['objects'])} of {p['targets']} "
                f"objects | {cubins['byte-identical']} | {cubins['normalised-equal']} | {cubins['different']} | "
                f"{how}{'; ' + r['note'] if r.get('note') else ''} |")
    if "comparison" not in r:
        why = r.get("aotc", {}).get("error") or r.get("flashinfer", {}).get("error") or "?"
        return f"| {r['preset']} | {name} | — | — | — | — | build failed: {why[:300]} |"
    c = r["comparison"]
    n = c["counts"]
    notes = "; ".join(f"{x['a']}: sections {', '.join(x['differing_sections'])}"
                      for x in c["cubins"] if x["verdict"] == "normalised-equal")
    diffs = "; ".join(f"{x['a']}: {len(x['different_kernels'])} kernels differ" for x in c["cubins"]
                      if x["verdict"] == "different")
    unmatched = c["unmatched"]["a"] + c["unmatched"]["b"]
    kernels = sum(x["kernels"] for x in c["cubins"])
    note = "; ".join(t for t in (notes, diffs, f"unpaired {unmatched}" if unmatched else "") if t)
    return (f"| {r['preset']} | {name} | {len(c['cubins'])} ({kernels} kernels) | {n['byte-identical']} | "
            f"{n['normalised-equal']} | {n['different']} | {note} |")


def write(records: dict, out: Path, meta: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    compared = [r for r in records.values() if "comparison" in r]
    by_object = [r for r in records.values() if "comparison" not in r and r.get("partial", {}).get("objects")
                 and not r["partial"]["not_compared"]]
    object_counts = {k: sum(o.get("counts", {}).get(k, 0) for r in by_object for o in r["partial"]["objects"].values())
                     for k in ("byte-identical", "normalised-equal", "different")}
    lines = [
        "# aotc's FlashInfer module builds vs FlashInfer's own JIT: cubin by cubin",
        "",
        "- built with (toolchain, machine, date UTC; both builds of a module always on one machine with one nvcc):",
        *sorted({f"  - {r.get('built_with', '?')}: {sum(x.get('built_with') == r.get('built_with') for x in records.values())} records"
                 for r in records.values()}),
        (f"- both builds of a module with the same toolchain; FlashInfer's JIT with "
        f"`FLASHINFER_CUDA_ARCH_LIST={meta['flashinfer_arch']}`, `CUDA_HOME` = that toolkit, `MAX_JOBS`, and "
        "`FLASHINFER_EXTRA_LDFLAGS=-L<dir>` holding libcudart.so and an empty libcuda.so (link only; no GPU)"),
        f"- commands: {'; '.join(f'`{c}`' for c in meta['commands'])}",
        ("- a = FlashInfer's JIT `.so`, b = aotc's stored `.so`; every embedded cubin extracted with "
        "`cuobjdump -xelf all` and paired by target and kernel set. byte-identical: same bytes; normalised-equal: "
        "bytes differ but every function's SASS is the same once addresses, branch targets and symbol names are "
        "normalised (the differing ELF sections are named); different: anything else."),
        (f"- modules compared: {len(compared)}; cubins byte-identical "
        f"{sum(r['comparison']['counts']['byte-identical'] for r in compared)}, normalised-equal "
        f"{sum(r['comparison']['counts']['normalised-equal'] for r in compared)}, different "
        f"{sum(r['comparison']['counts']['different'] for r in compared)}"),
        (f"- modules compared object by object, every object (builds stopped after their last compile): "
         f"{len(by_object)}; cubins byte-identical {object_counts['byte-identical']}, normalised-equal "
         f"{object_counts['normalised-equal']}, different {object_counts['different']}"),
        "",
        "| preset | module | cubins | byte-identical | normalised-equal | different | notes |",
        "|---|---|---|---|---|---|---|",
        *[_row(k, r) for k, r in sorted(records.items(), key=lambda kv: (kv[1]["preset"], kv[0]))],
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", action="append", default=[])
    ap.add_argument("--only", action="append", default=[], help="keep calls whose description contains this")
    ap.add_argument("--skip", action="append", default=[], help="TEXT=REASON: record matching calls as not compared")
    ap.add_argument("--arch", default="sm120a")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--work", default="")
    ap.add_argument("--out", default="bench/results/sass_equal_flashinfer")
    ap.add_argument("--side", choices=("both", "aotc", "flashinfer", "objects"), default="both",
                    help="build one way only, recording nothing (a second process builds the other way at "
                         "once into the same --work); a later `--side both` compares, rebuilding nothing. "
                         "`objects` builds nothing: it compares, object by object, what two stopped builds in "
                         "--work completed, and records it beside the module's earlier object results")
    args = ap.parse_args()
    arch, tc, out = get_arch(args.arch), find_toolchain(), Path(args.out)
    work = Path(args.work or tempfile.mkdtemp(prefix="sass-equal-fi-")).resolve()
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    records, meta = old.get("records", {}), old.get("meta", {})
    records = json.loads(json.dumps(records).replace(str(work.resolve()), "<work>").replace(str(work), "<work>"))
    command = "python tools/sass_equal_flashinfer.py " + " ".join(sys.argv[1:])
    meta = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "nvcc": tc.release, "toolchain": tc.source, "flashinfer_arch": flashinfer_arch_list(arch.name),
            "commands": [*meta.get("commands", []), command]}
    skips = dict(s.split("=", 1) for s in args.skip)
    for preset in args.preset or ["sm120", "attention"]:
        for call in load_preset(preset).calls:
            key = f"{preset} {call.describe()} {arch.name}"
            reason = next((why for text, why in skips.items() if text in call.describe()), None)
            if reason is not None:
                if "comparison" not in records.get(key, {}):
                    records[key] = {"preset": preset, "call": call.describe(), "arch": arch.name,
                                    "module": call.module, "not_compared": reason}
                continue
            if args.only and not any(t in call.describe() for t in args.only):
                continue
            started = time.perf_counter()
            if args.side == "objects":
                record = records.get(key, {"preset": preset, "call": call.describe(), "arch": arch.name,
                                           "module": call.module})
                if "comparison" not in record:  # a linked comparison says more: it stays
                    built_with = f"nvcc {tc.release} ({tc.source}), {machine()}, {meta['date']}"
                    partial = compare_objects(call, work, tc, record.get("partial", {}).get("objects"), args.jobs)
                    for entry in partial["objects"].values():
                        entry.setdefault("built_with", built_with)
                    record["partial"] = partial
                    if partial["objects"]:
                        record.pop("not_compared", None)  # compared in part now: the row says how far
                    records[key] = record
                    n = len(partial["objects"])
                    print(f"{call.describe()}: {n} of {partial['targets']} objects compared "
                          f"({time.perf_counter() - started:.1f} s)", flush=True)
                continue
            if args.side != "both":
                one = compare_call(call, arch, work, tc, args.jobs, (args.side,))
                print(f"{args.side}: {json.dumps(one.get(args.side))[:2000]} "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)
                continue
            record = compare_call(call, arch, work, tc, args.jobs)
            # where this run's files were is no result: paths are kept relative to the work folder
            record = json.loads(json.dumps(record).replace(str(work.resolve()), "<work>").replace(str(work), "<work>"))
            record["wall_seconds"] = round(time.perf_counter() - started, 1)
            record["built_with"] = f"nvcc {tc.release} ({tc.source}), {machine()}, {meta['date']}"
            records[key] = record
            print(f"{record.get('module')}: {record.get('comparison', {}).get('counts')} "
                  f"({record['wall_seconds']} s)", flush=True)
            write(records, out, meta)
    write(records, out, meta)
    return 0 if all(r.get("comparison", {}).get("equal", "not_compared" in r) for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

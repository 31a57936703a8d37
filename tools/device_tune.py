"""`aotc tune` proof on a GPU host (torch and nvcc present): build the FMHA prefill and BF16 grouped
GEMM candidate tiles for the device's arch into a cache (or use a given one), run the tune, then time
every stored tile again per benchmark shape and report the heuristic's choice, the tuned choice (as
the runtime makes it, from the stored table) and the fastest tile side by side. Goal: for every shape
the tuned choice is within 3% of the fastest. Writes tune_<card>.json and tune_<card>.md.

    python3 tools/device_tune.py --out bench/results [--cache DIR] [--jobs 16] [--skip-build]
    python3 tools/device_tune.py --out DIR --cache DIR --build-only sm90a   (build machine: no GPU needed)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ("fmha_fwd", "grouped_gemm_sm80")
# The catalog's candidates for the default shapes (bf16; attention head_dim 128 and 64).
BUILD = ("fmha_fwd_m64n128/head_dim=128,dtype=bf16", "fmha_fwd_m64n64/head_dim=128,dtype=bf16",
         "fmha_fwd_m64n128/head_dim=64,dtype=bf16", "fmha_fwd_m64n64/head_dim=64,dtype=bf16",
         "fmha_fwd_d64_m128n128", "fmha_fwd_m128n64", "fmha_fwd_m128n64_qsmem",
         "moe_bf16_128x128/dtype=bf16", "moe_bf16_128x256", "moe_bf16_64x128")
GOAL = 0.03  # tuned within 3% of the fastest tile
REP = 50  # CUDA-event runs per timing in the check (the tune itself uses aotc.tune's default)
CHECK_ROUNDS = 3  # interleaved rounds per shape in the check; a tile's time is the mean of its rounds


def card_slug(card: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_")


def commit_of(root: Path) -> str:
    """The commit measured: `git rev-parse HEAD` (with -dirty when tracked files differ from it), else
    AOTC_COMMIT (a copy of the tree without .git, e.g. `git archive` output), else unknown."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("AOTC_COMMIT", "unknown")


def build(cache, arch_name: str, jobs: int) -> dict:
    """Build the BUILD specs for `arch_name` into `cache`; seconds and per-kernel status."""
    from aotc.arch import get_arch
    from aotc.build.pipeline import build as run_build
    from aotc.build.spec import load_specs

    specs = [s for s in load_specs().specs if s.name in BUILD]
    missing = sorted(set(BUILD) - {s.name for s in specs})
    if missing:
        raise SystemExit(f"the catalog lost {missing}")
    t0 = time.perf_counter()
    summary = run_build(specs, [get_arch(arch_name)], cache, jobs=jobs, progress=True)
    return {"arch": arch_name, "seconds": round(time.perf_counter() - t0, 1), "ok": summary.ok,
            "kernels": [{"name": r.spec.name, "status": r.status} for r in summary.results]}


def check_rows(result: dict, family_shapes: dict[str, list[dict]], ordinal: int) -> list[dict]:
    """Per shape: every stored tile timed again, the runtime's own choice (table) and the heuristic's."""
    from aotc.runtime import registry
    from aotc.runtime.device import query_device
    from aotc.runtime.lookup import stored_candidates
    from aotc.runtime.tile_select import best
    from aotc.tune import choice_inputs, gpu_ms, label, measure, runner

    device = query_device(ordinal)
    rows = []
    for family, shapes in family_shapes.items():
        stored = stored_candidates(family, device)
        for s in shapes:
            matches, problem = choice_inputs(family, s)
            group = [f for f in stored if all(f.params.get(k) == v for k, v in matches.items())]
            if not group:
                continue
            make = runner(family, s, ordinal)
            registry.clear()  # the runtime's choice as a fresh process makes it: table first, then heuristic
            runtime_choice = make(None)()
            by_key = {f.spec_key: label(f) for f in group}
            # a tile that cannot run this shape is reported, not fatal
            got = measure({f.spec_key: make(f.params) for f in group}, lambda fn: gpu_ms(fn, rep=REP),
                          rounds=CHECK_ROUNDS, retime=0, errors=(Exception,))
            for key, why in got["failed"].items():
                print(f"{family} {s}: {by_key[key]} failed: {why}", file=sys.stderr)
            ms = {by_key[k]: v for k, v in got["ms"].items()}
            rows.append({"family": family, "shape": s, "ms": ms,
                         "rounds": {by_key[k]: v for k, v in got["rounds"].items()},
                         "timing": sorted(set(got["how"].values())),
                         "heuristic": label(best(group, problem, device.sm_count)),
                         "tuned": by_key.get(runtime_choice.spec_key, runtime_choice.spec_key)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def judge(rows: list[dict]) -> list[dict]:
    """Add fastest, each choice's slowdown against it, and whether the tuned one is within GOAL."""
    for r in rows:
        ms = r["ms"]
        r["fastest"] = min(ms, key=ms.__getitem__)
        best_ms = ms[r["fastest"]]
        for role in ("heuristic", "tuned"):
            r[f"{role}_vs_fastest"] = ms[r[role]] / best_ms - 1 if r[role] in ms else None
        r["ok"] = r["tuned_vs_fastest"] is not None and r["tuned_vs_fastest"] <= GOAL
    return rows


def build_line(build: dict) -> str:
    if "seconds" not in build:  # --skip-build: the cache came from an earlier --build-only step
        return "done before this run (--skip-build)"
    return f"{build['seconds']} s for {len(build.get('kernels', []))} kernels ({build.get('arch', '')})"


def markdown(data: dict) -> str:
    rows = data["rows"]
    ok = sum(r["ok"] for r in rows)
    slow = [r["tuned_vs_fastest"] for r in rows if r["tuned_vs_fastest"] is not None]
    worst = f"; worst tuned slowdown {max(slow):+.1%}" if slow else ""
    lines = [f"# aotc tune on {data['card']}", "", f"- date: {data['date']}", f"- commit: {data.get('commit', 'unknown')}",
             f"- command: `{data['command']}`",
             f"- device: {json.dumps(data['device'])}",
             (f"- build: {build_line(data['build'])}; tune: {data['tune_seconds']:.1f} s; check: "
             f"{data['check_seconds']:.1f} s"),
             f"- goal (tuned within {GOAL:.0%} of the fastest stored tile): {ok}/{len(rows)} shapes{worst}", "",
             ("GPU time per call: 10 calls through aotc's typed entry points captured in one CUDA graph; in this "
              f"check (after the tune, its own timings) each tile is timed in {CHECK_ROUNDS} interleaved rounds "
              f"over the shape's tiles, each round the median of {REP} timed replays, and its time is the mean "
              "of its rounds (JSON `rounds`; a shape timed eagerly says so in `timing`). The tune times "
              "likewise with aotc.tune's rounds (its per-round times are in the JSON `tune`). "
              "Slowdown = time / fastest tile's time - 1."), "",
             "| family | shape | heuristic | tuned | fastest | heuristic slowdown | tuned slowdown | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = " ".join(f"{k}={v}" for k, v in r["shape"].items() if k not in ("dtype", "causal", "seqlen_k"))
        cells = [f"{r[role]} {r['ms'][r[role]]:.4f} ms" if r[role] in r["ms"] else f"{r[role]} (failed)"
                 for role in ("heuristic", "tuned", "fastest")]
        slow = [f"{r[f'{role}_vs_fastest']:+.1%}" if r[f"{role}_vs_fastest"] is not None else "n/a"
                for role in ("heuristic", "tuned")]
        lines.append(f"| {r['family']} | {shape} | {' | '.join(cells)} | {' | '.join(slow)} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def write(out: Path, data: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"tune_{card_slug(data['card'])}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(data))
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for tune_<card>.json/.md")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "aotc-device-tune-cache",
                        help="cache to build into and tune (default: aotc-device-tune-cache in the temp folder)")
    parser.add_argument("--jobs", type=int, default=16, help="parallel compiles (default 16)")
    parser.add_argument("--skip-build", action="store_true", help="tune what --cache holds already")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--build-only", metavar="ARCH", help="only build the candidates for ARCH into --cache "
                        "(no GPU, no torch: e.g. on a build machine), then stop")
    args = parser.parse_args(argv)
    from aotc.arch import ARCHES
    from aotc.cache import Cache

    if args.build_only:
        report = build(Cache(args.cache), args.build_only, args.jobs)
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
    import torch

    from aotc.tune import DEFAULT_SHAPES, run_tune

    torch.zeros(1, device=f"cuda:{args.device}")
    card = torch.cuda.get_device_name(args.device)
    cc = torch.cuda.get_device_capability(args.device)
    arch = next(a for a in (f"sm{cc[0]}{cc[1]}a", f"sm{cc[0]}{cc[1]}") if a in ARCHES)
    cache = Cache(args.cache)
    built = {} if args.skip_build else build(cache, arch, args.jobs)
    t0 = time.perf_counter()
    result = run_tune(cache, list(FAMILIES), None, args.device)
    tune_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = judge(check_rows(result, {f: DEFAULT_SHAPES[f] for f in FAMILIES}, args.device))
    data = {"card": card, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit_of(Path(__file__).resolve().parent.parent),
            "command": " ".join(["python3", *sys.argv]), "device": result["device"], "build": built,
            "tune_seconds": tune_seconds, "check_seconds": time.perf_counter() - t0, "tables": result["tables"],
            "tune": result["shapes"], "rows": rows}
    for path in write(args.out, data):
        print(path)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

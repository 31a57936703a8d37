"""A/B timing of template variants of one catalog FMHA prefill spec on a real GPU, in one process.

Each variant is the same spec built from a different tree (template) into its own aotc cache; the
runtime finds a kernel by (family, parameters, target), so the variants are loaded here from their
caches one by one, bypassing its per-key memo. Every pass times each prefill shape of the spec's
head_dim (tools/device_fmha_speed.py's shapes, causal and not) with SDPA flash once and then every
variant, the variant order rotated from pass to pass, so variants are compared on their own TFLOP/s
within one pass and one process (SDPA's own figure moves by a few percent between passes). Checks
each variant once against float32 attention, reads registers/spills/SMEM from each cache's
manifests, and writes fmha_ab_<spec>.md/.json.

    python3 tools/device_fmha_ab.py --spec fmha_fwd_d256 --variant o=CACHE_O --variant x=CACHE_X \\
        --passes 3 --out OUT [--shapes 16x512 1x4096]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling device scripts
from device_fmha_speed import PREFILL_SHAPES, bench_ms, check, fmha_args, prefill_problem


class Variant:
    def __init__(self, name: str, cache_dir: Path, spec, kernel, cubin_sha: str, resources: list[dict]):
        self.name, self.cache_dir, self.spec, self.kernel = name, cache_dir, spec, kernel
        self.cubin_sha, self.resources = cubin_sha, resources


def load_variants(spec_name: str, pairs: list[str], archs: list[str]) -> list[Variant]:
    from aotc.build.spec import load_specs
    from aotc.cache import Cache
    from aotc.keys import spec_key
    from aotc.runtime import registry
    from aotc.runtime.device import query_device
    from aotc.runtime.lookup import CacheSource, find

    (spec,) = [s for s in load_specs().specs if s.name == spec_name]
    dev = query_device(0)
    out = []
    for pair in pairs:
        name, _, path = pair.partition("=")
        cache = Cache(Path(path))
        found = find(spec.family, spec.params, dev, sources=[CacheSource(cache)])
        registry._host.pop(found.spec_key, None)  # the memo holds the previous variant's cubin under this key
        host = registry.host_kernel(found)
        kernel = registry.load_kernel(found, dev)
        res = []
        for arch in archs:
            ref = cache.resolve_ref(spec_key(spec.family, found.params, arch))
            if ref:
                r = ref.get("resources", {})
                res.append({"arch": arch, "registers": r.get("registers"), "spills_bytes": r.get("spills_bytes"),
                            "smem": r.get("smem_dynamic"), "mma": ref.get("sass", {}).get("mma")})
        out.append(Variant(name, Path(path), spec, kernel, hashlib.sha256(host.cubin).hexdigest()[:12], res))
        print(f"variant {name}: cubin {out[-1].cubin_sha}, {res}", flush=True)
    return out


def time_passes(variants: list[Variant], shapes: list[tuple[int, int]], passes: int) -> list[dict]:
    import torch

    stream = torch.cuda.current_stream().cuda_stream
    d = variants[0].spec.params["head_dim"]
    rows = []
    for p in range(passes):
        order = variants[p % len(variants):] + variants[:p % len(variants)]
        for (batch, s), causal in [(sh, c) for sh in shapes for c in (False, True)]:
            q, k, v, o, flops, ref_ms, ref = prefill_problem(batch, s, d, causal)
            row = {"pass": p + 1, "batch": batch, "seqlen": s, "causal": causal, "sdpa_flash_ms": ref_ms,
                   "sdpa_flash_tflops": flops / ref_ms / 1e9, "order": [v_.name for v_ in order], "aotc": {}}
            for var in order:
                args = fmha_args(q, k, v, o, causal=causal)
                ms = bench_ms(lambda kern=var.kernel, args=args: kern.launch(args, stream))
                agree = float((o.float() - ref).norm() / ref.norm())
                row["aotc"][var.name] = {"ms": ms, "tflops": flops / ms / 1e9, "vs_sdpa": ref_ms / ms,
                                         "rel_diff_vs_sdpa": agree}
            rows.append(row)
            print(f"pass {p + 1} b={batch:<2} s={s:<5} causal={int(causal)} sdpa {row['sdpa_flash_tflops']:.1f} | "
                  + " ".join(f"{n} {r['tflops']:.1f} ({r['vs_sdpa']:.3f}x)" for n, r in row["aotc"].items()),
                  flush=True)
    return rows


def report(out: Path, card: str, command: str, variants: list[Variant], checks: list[dict], rows: list[dict]) -> Path:
    spec = variants[0].spec.name
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = {"card": card, "date": date, "command": command, "spec": spec,
            "variants": [{"name": v.name, "cubin_sha256_12": v.cubin_sha, "resources": v.resources} for v in variants],
            "correctness": checks, "bench": rows}
    (out / f"fmha_ab_{spec}.json").write_text(json.dumps(data, indent=1))
    names = [v.name for v in variants]
    base = names[0]
    lines = [f"# {spec}: template variants on {card}", "", f"- date: {date}", f"- command: `{command}`",
             (f"- correctness: {sum(c['ok'] for c in checks)}/{len(checks)} checks pass, worst rel. err "
              f"{max((c['rel_err'] for c in checks), default=0):.2e}"), "",
             "| variant | cubin | " + " | ".join(f"{r['arch']} regs / spill B / SMEM B" for r in variants[0].resources)
             + " |", "|---|---|" + "---|" * len(variants[0].resources)]
    for v in variants:
        lines.append(f"| {v.name} | {v.cubin_sha} | " + " | ".join(
            f"{r['registers']} / {r['spills_bytes']} / {r['smem']}" for r in v.resources) + " |")
    lines += ["", ("aotc TFLOP/s per pass (ratio to SDPA flash of the same pass in brackets); last columns: median "
                   f"over passes relative to `{base}`"), "",
              "| b | s | causal | " + " | ".join(names) + " | " + " | ".join(f"{n} / {base}" for n in names[1:]) + " |",
              "|---|---|---|" + "---|" * (2 * len(names) - 1)]
    shapes = list(dict.fromkeys((r["batch"], r["seqlen"], r["causal"]) for r in rows))
    for b, s, c in shapes:
        rs = [r for r in rows if (r["batch"], r["seqlen"], r["causal"]) == (b, s, c)]
        cells = [" / ".join(f"{r['aotc'][n]['tflops']:.1f}" for r in rs)
                 + f" ({min(r['aotc'][n]['vs_sdpa'] for r in rs):.3f}-{max(r['aotc'][n]['vs_sdpa'] for r in rs):.3f}x)"
                 for n in names]
        med = {n: statistics.median(r["aotc"][n]["tflops"] for r in rs) for n in names}
        lines.append(f"| {b} | {s} | {int(c)} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{med[n] / med[base]:.3f}" for n in names[1:]) + " |")
    path = out / f"fmha_ab_{spec}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="fmha_fwd_d256", help="catalog fmha_fwd spec name")
    parser.add_argument("--variant", action="append", required=True, help="NAME=CACHE_DIR (first: the baseline)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", default=None, help="BATCHxSEQLEN (default: the speed script's)")
    parser.add_argument("--archs", default="sm90a,sm120a", help="targets whose resources to report")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import torch

    variants = load_variants(args.spec, args.variant, [a for a in args.archs.split(",") if a])
    d = variants[0].spec.params["head_dim"]
    shapes = ([tuple(int(x) for x in sh.split("x")) for sh in args.shapes] if args.shapes
              else PREFILL_SHAPES[d])
    checks = check({v.name: (v.spec, v.kernel) for v in variants})
    rows = time_passes(variants, shapes, args.passes)
    args.out.mkdir(parents=True, exist_ok=True)
    path = report(args.out, torch.cuda.get_device_name(0), " ".join(["python3", *sys.argv]), variants, checks, rows)
    print(f"wrote {path}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

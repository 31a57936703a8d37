"""A/B of paged-decode template variants on one GPU, in one process, from kernel caches built elsewhere.

Each variant is an aotc cache holding fmha_paged_decode_m64n64 (bf16 and fp16) for this GPU's target,
built from one version of the template (e.g. on a CPU machine: `aotc build --arch sm90a --filter
fmha_paged_decode_m64n64 --cache-dir CACHE`); --twin is a cache with the contiguous fmha_decode_m64n64.
Nothing is compiled here. The script (1) runs the paged decode correctness cases of
tools/device_fmha_paged.py against every variant, and (2) times every variant on the decode rows of that
script (bf16, 32 q / 8 kv heads, head_dim 128; batch 1/8/32/64 at KV 32768/8192/4096/2048; pages of 16
and 64 tokens), on the same pages and block tables: per row and page, the contiguous twin, then each
variant in an order rotated from row to row and pass to pass, then the twin again (the ratio takes the
mean of the two twin timings); --passes N repeats the whole table. Every timing checks which cubin the
runtime loaded. Writes OUT/paged_decode_ab.json and OUT/paged_decode_ab.md.

    python3 tools/device_paged_decode_ab.py --out OUT --twin TWIN_CACHE --variant base=CACHE \\
        --variant new=CACHE [--passes 3] [--skip-check] [--sequential-pages]

--sequential-pages adds "<first variant>@sequential": the first variant's kernel on the same K/V laid
out in pages in request order (block table row b = b*n .. b*n+n-1, the pages' memory as contiguous as
the contiguous kernel's), timed in the same rotation: what the block table's indirection costs apart
from where scattered pages lie in memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_fmha_paged import DECODE_PAGED, TWINS, correctness, kernel_ms, scatter_pages, use_caches

ROWS = [(1, 32768), (8, 8192), (32, 4096), (64, 2048)]
PAGES = (16, 64)


def catalog_params(names: list[str]) -> dict:
    from aotc.build.spec import load_specs

    out = {}
    for s in load_specs().specs:
        if s.name.split("/")[0] in names and s.params.get("dtype") in ("bf16", "fp16"):
            out[s.name] = dict(s.params)
    return out


def loaded_cubin(name: str) -> str:
    from aotc.runtime import registry

    for k in registry.loaded():
        if k.name == name:
            return k.manifest.get("blobs", {}).get("cubin", {}).get("sha256", "?")
    return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--twin", type=Path, required=True)
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=CACHE")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--sequential-pages", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from aotc import runtime as rt
    from aotc.runtime import query_device

    args.out.mkdir(parents=True, exist_ok=True)
    variants = dict(v.split("=", 1) for v in args.variant)
    caches = {n: [Path(c), args.twin] for n, c in variants.items()}
    built = catalog_params([DECODE_PAGED, TWINS[DECODE_PAGED]])
    decode = built[f"{DECODE_PAGED}/dtype=bf16"]
    twin = built[f"{TWINS[DECODE_PAGED]}/dtype=bf16"]
    paged_only = {n: p for n, p in built.items() if n.startswith(DECODE_PAGED)}
    card = torch.cuda.get_device_name(0)
    dev = query_device(0)
    print(f"{card}, targets {dev.runnable_targets()}, variants {list(variants)}", flush=True)

    # resources and cubin of each variant, as stored
    from aotc.cache import Cache
    from aotc.runtime.lookup import CacheSource, find

    info = {}
    for n, cs in caches.items():
        found = find("fmha_decode_paged", decode, dev, sources=[CacheSource(Cache(c)) for c in cs])
        r = found.manifest.get("resources", {})
        info[n] = {"arch": found.arch, "registers": r.get("registers"), "spills_bytes": r.get("spills_bytes"),
                   "cubin": found.manifest.get("blobs", {}).get("cubin", {}).get("sha256", "?"),
                   "source": found.manifest.get("blobs", {}).get("source", {}).get("sha256", "?")}
        print(f"{n}: {info[n]}", flush=True)

    checks = {}
    if not args.skip_check:
        for n, cs in caches.items():
            use_caches(cs)
            rows = correctness(paged_only)
            checks[n] = {"ok": sum(r["ok"] for r in rows), "cases": len(rows),
                         "worst_rel_err": max(r["rel_err"] for r in rows), "rows": rows}
            print(f"{n}: correctness {checks[n]['ok']}/{checks[n]['cases']}, worst {checks[n]['worst_rel_err']:.2e}",
                  flush=True)

    hq, hkv, d = 32, 8, 128
    gen = torch.Generator().manual_seed(0)
    names = list(variants)
    if args.sequential_pages:
        seq = f"{names[0]}@sequential"
        caches[seq], info[seq] = caches[names[0]], info[names[0]]
        names.append(seq)
    bench = []
    cell = 0
    for pass_ in range(args.passes):
        for batch, sk in ROWS:
            q = torch.randn(batch, 1, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(batch, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            o_c, o_p = torch.empty_like(q), torch.empty_like(q)
            lens = torch.full((batch,), sk, dtype=torch.int32, device="cuda")
            for page in PAGES:
                kp, table = scatter_pages(k, page, gen)
                vp = torch.empty_like(kp)
                vp[table.long().reshape(-1)] = v.reshape(-1, page, hkv, d)
                in_order = (k.reshape(-1, page, hkv, d), v.reshape(-1, page, hkv, d),
                            torch.arange(table.numel(), device="cuda", dtype=torch.int32).reshape(table.shape))
                order = names[cell % len(names):] + names[:cell % len(names)]
                cell += 1
                use_caches(caches[names[0]])
                def contiguous(q=q, k=k, v=v, o=o_c):
                    return rt.fmha_decode(q, k, v, o, params=twin)

                def paged(q=q, kp=kp, vp=vp, t=table, n=lens, o=o_p, sk=sk):
                    return rt.fmha_decode_paged(q, kp, vp, t, n, o, max_kv_len=sk, params=decode)

                def paged_in_order(q=q, pages=in_order, n=lens, o=o_p, sk=sk):
                    return rt.fmha_decode_paged(q, pages[0], pages[1], pages[2], n, o, max_kv_len=sk, params=decode)

                contig = [kernel_ms(contiguous)]
                times, diffs, cubins = {}, {}, {}
                for n in order:
                    use_caches(caches[n])
                    times[n] = kernel_ms(paged_in_order if n.endswith("@sequential") else paged)
                    diffs[n] = float((o_p.float() - o_c.float()).abs().max())
                    cubins[n] = loaded_cubin(f"{DECODE_PAGED}/dtype=bf16")
                    if cubins[n] != info[n]["cubin"]:
                        raise SystemExit(f"{n}: the runtime loaded cubin {cubins[n][:12]}, not {info[n]['cubin'][:12]}")
                contig.append(kernel_ms(contiguous))
                c_ms = sum(contig) / 2
                row = {"pass": pass_ + 1, "batch": batch, "kv_len": sk, "page_size": page, "order": order,
                       "contiguous_ms": contig, "paged_ms": times, "ratio": {n: c_ms / t for n, t in times.items()},
                       "max_abs_diff": diffs}
                bench.append(row)
                print(f"pass {pass_ + 1} b={batch} kv={sk} page={page}: contiguous {contig[0] * 1e3:.1f}/{contig[1] * 1e3:.1f} us; "
                      + "; ".join(f"{n} {times[n] * 1e3:.1f} us ({row['ratio'][n]:.3f}x)" for n in names), flush=True)

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (args.out / "paged_decode_ab.json").write_text(json.dumps(
        {"card": card, "date": date, "argv": sys.argv[1:], "variants": info, "correctness": checks, "bench": bench},
        indent=1))
    lines = [f"# paged decode A/B on {card}", "", f"- date: {date}", f"- variants: {', '.join(names)}", ""]
    for n in names:
        c = checks.get(n)
        lines.append(f"- {n}: {info[n]['arch']} {info[n]['registers']} registers, {info[n]['spills_bytes']} B spill"
                     + (f"; correctness {c['ok']}/{c['cases']} (worst rel. error {c['worst_rel_err']:.2e})" if c else ""))
    lines += ["", "## Median over passes: paged / contiguous speed", "",
              "| batch | kv len | page | contiguous µs | " + " | ".join(f"{n} µs | {n} ratio" for n in names) + " |",
              "|---|---|---|---|" + "---|---|" * len(names)]
    for batch, sk in ROWS:
        for page in PAGES:
            rs = [r for r in bench if r["batch"] == batch and r["page_size"] == page]
            c = statistics.median(x for r in rs for x in r["contiguous_ms"])
            cells = []
            for n in names:
                cells.append(f"{statistics.median(r['paged_ms'][n] for r in rs) * 1e3:.1f}")
                cells.append(f"{statistics.median(r['ratio'][n] for r in rs):.3f}x")
            lines.append(f"| {batch} | {sk} | {page} | {c * 1e3:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "## Every pass", "", "| pass | batch | kv len | page | contiguous µs (before/after) | "
              + " | ".join(f"{n} ratio" for n in names) + " | order |", "|---|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in bench:
        lines.append(f"| {r['pass']} | {r['batch']} | {r['kv_len']} | {r['page_size']} | "
                     f"{r['contiguous_ms'][0] * 1e3:.1f} / {r['contiguous_ms'][1] * 1e3:.1f} | "
                     + " | ".join(f"{r['ratio'][n]:.3f}x" for n in names) + f" | {' '.join(r['order'])} |")
    (args.out / "paged_decode_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

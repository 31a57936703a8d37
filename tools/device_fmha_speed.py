"""FMHA speed on a real GPU against torch SDPA's FlashAttention-2 backend, through aotc.runtime.

Builds the catalog's bf16 fmha_fwd/fmha_decode kernels (plus any extra spec files, e.g. tile
experiments) for this GPU's target, and for sm_120a when asked (spills and SMEM of the shipping
target), into a cache folder with aotc's own pipeline; checks each kernel once against a float32
reference; then times prefill at head_dim 128 (the benchmark shapes), 64 and 256, and decode, each
tile side by side with SDPA flash on the same tensors, and writes fmha_<card>.md/.json with the
registers and spills of every kernel per target.

    python3 tools/device_fmha_speed.py --cache-dir /tmp/aotc-cache --out <dir> [--archs sm120a] [--specs x.toml]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling device_fmha.py
from device_fmha import bench_ms as bench_ms_

REL_TOL = 1e-2
HQ, HKV = 32, 8
PREFILL_SHAPES = {  # head_dim -> (batch, seqlen); each causal and not
    128: [(1, 4096), (1, 16384), (4, 2048), (16, 512), (2, 8192)],
    64: [(1, 4096), (1, 16384), (4, 2048), (16, 512)],
    256: [(1, 4096), (4, 2048), (16, 512)],
}
DECODE_SHAPES = [(1, 32768), (8, 8192), (32, 4096), (64, 2048)]  # (batch, kv len), 1 query token


def distinct_kernels(specs: list) -> list:
    """The specs less those with the family and parameters of an earlier one. The runtime finds a
    stored kernel by (family, parameters, target), never by name, so such a spec (a sweep entry that
    differs from another only by name, e.g. to try a template change) would load and time the other
    spec's kernel, or whichever of the two was stored last, under its own name."""
    seen: dict[tuple, str] = {}
    kept = []
    for s in specs:
        key = (s.family, json.dumps(s.params, sort_keys=True, default=str))
        if key in seen:
            print(f"skipped {s.name}: same family and parameters as {seen[key]} (one stored kernel)",
                  file=sys.stderr)
            continue
        seen[key] = s.name
        kept.append(s)
    return kept


def build(cache_dir: Path, extra_specs: list[Path], archs: list[str], jobs: int) -> list:
    """Build the bf16 prefill/decode specs (catalog + extra files) for the device target and `archs`;
    the specs built for the device target."""
    from aotc.arch import get_arch
    from aotc.build.pipeline import build as run_build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache
    from aotc.runtime import query_device

    target = query_device(0).runnable_targets()[0]
    loaded = load_specs()
    specs = list(loaded.specs)
    if extra_specs:
        extra = load_specs(extra_specs)
        for d in extra.diagnostics:
            print(d.format(), file=sys.stderr)
        specs += extra.specs
    specs = distinct_kernels([s for s in specs
                              if s.family in ("fmha_fwd", "fmha_decode") and s.params["dtype"] == "bf16"])
    t0 = time.perf_counter()
    summary = run_build(specs, [get_arch(a) for a in dict.fromkeys([target, *archs])], Cache(cache_dir), jobs=jobs,
                        progress=False)
    for r in summary.results:
        if r.status == "failed":
            print(f"build failed: {r.spec.name} {r.arch.name}: {[d.format() for d in r.diagnostics]}", file=sys.stderr)
    print(f"built {len(specs)} specs x {len({target, *archs})} targets in {time.perf_counter() - t0:.0f} s "
          f"({summary.to_json()['built']} compiled)", flush=True)
    return [s for s in specs if any(r.spec is s and r.status != "failed" and r.arch.name == target
                                    for r in summary.results)]


def resources(cache_dir: Path, specs: list, archs: list[str]) -> list[dict]:
    """Registers / spills / SMEM of every built (spec, arch) from the cache manifests."""
    from aotc.cache import Cache
    from aotc.keys import spec_key

    cache = Cache(cache_dir)
    rows = []
    for s in specs:
        for arch in archs:
            ref = cache.resolve_ref(spec_key(s.family, s.params, arch))
            if not ref:
                continue
            res = ref.get("resources", {})
            rows.append({"name": s.name, "arch": arch, "registers": res.get("registers"),
                         "spills_bytes": res.get("spills_bytes"), "smem": res.get("smem_dynamic"),
                         "mma": ref.get("sass", {}).get("mma")})
    return rows


def fmha_args(q, k, v, o, *, causal, splits=0, sms=0):
    from aotc.families.fmha import FmhaArgs

    a = FmhaArgs()
    for name, t in (("q", q), ("k", k), ("v", v), ("o", o)):
        setattr(a, name, t.data_ptr())
        setattr(a, f"{name}_batch_stride", t.stride(0))
        setattr(a, f"{name}_row_stride", t.stride(1))
        setattr(a, f"{name}_head_stride", t.stride(2))
    a.batch, a.num_q_heads, a.num_kv_heads, a.head_dim = q.shape[0], q.shape[2], k.shape[2], q.shape[3]
    a.seqlen_q, a.seqlen_k = q.shape[1], k.shape[1]
    a.softmax_scale = 1.0 / math.sqrt(q.shape[3])
    a.causal, a.num_splits, a.num_sms = int(causal), splits, sms
    return a


def reference(q, k, v, causal: bool):
    """float32 attention, [B, S, H, D] in and out, bottom-right causal."""
    import torch

    g = q.shape[2] // k.shape[2]
    qf, kf, vf = q.float(), k.float().repeat_interleave(g, 2), v.float().repeat_interleave(g, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", qf, kf) / math.sqrt(q.shape[3])
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + sk - sq, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), vf)


bench_ms = functools.partial(bench_ms_, calls=10, rep=20)  # per call, 10 back to back


def check(kernels: dict) -> list[dict]:
    import torch

    rows = []
    for name, (spec, kern) in kernels.items():
        d = spec.params["head_dim"]
        decode = spec.family == "fmha_decode"
        for causal in (False, True):
            sq, sk = (3, 1000) if decode else (300, 300)
            q = torch.randn(2, sq, HQ, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(2, sk, HKV, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            o = torch.full_like(q, float("nan"))
            kern.launch(fmha_args(q, k, v, o, causal=causal), torch.cuda.current_stream().cuda_stream)
            torch.cuda.synchronize()
            ref = reference(q, k, v, causal)
            err = float((o.float() - ref).norm() / ref.norm())
            rows.append({"spec": name, "causal": causal, "rel_err": err, "ok": err < REL_TOL})
            print(f"{'ok  ' if err < REL_TOL else 'FAIL'} {name:<48} causal={int(causal)} rel_err={err:.2e}",
                  flush=True)
    return rows


def prefill_problem(batch: int, s: int, d: int, causal: bool) -> tuple:
    """Random bf16 prefill tensors (q/o [batch, s, HQ, d], k/v [batch, s, HKV, d]), the problem's
    FLOPs, and SDPA flash's time (ms) and output (float32) on them."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    q = torch.randn(batch, s, HQ, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, s, HKV, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    o = torch.empty_like(q)
    flops = 4 * batch * s * s * HQ * d / (2 if causal else 1)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ref_ms = bench_ms(lambda: sdpa(qt, kt, vt, is_causal=causal, enable_gqa=True))
        ref_out = sdpa(qt, kt, vt, is_causal=causal, enable_gqa=True).transpose(1, 2).float()
    return q, k, v, o, flops, ref_ms, ref_out


def benchmark(kernels: dict) -> list[dict]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    stream = torch.cuda.current_stream().cuda_stream
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for d, shapes in PREFILL_SHAPES.items():
        fwd = {n: kern for n, (s, kern) in kernels.items() if s.family == "fmha_fwd" and s.params["head_dim"] == d}
        for (batch, s), causal in [(sh, c) for sh in shapes for c in (False, True)]:
            q, k, v, o, flops, ref_ms, ref_out = prefill_problem(batch, s, d, causal)
            row = {"kind": "prefill", "head_dim": d, "batch": batch, "seqlen": s, "causal": causal,
                   "sdpa_flash_ms": ref_ms, "sdpa_flash_tflops": flops / ref_ms / 1e9, "aotc": {}}
            for name, kern in fwd.items():
                args = fmha_args(q, k, v, o, causal=causal)
                ms = bench_ms(lambda kern=kern, args=args: kern.launch(args, stream))
                agree = float((o.float() - ref_out).norm() / ref_out.norm())
                row["aotc"][name] = {"ms": ms, "tflops": flops / ms / 1e9, "vs_sdpa": ref_ms / ms,
                                     "rel_diff_vs_sdpa": agree}
            rows.append(row)
            best = max(row["aotc"].items(), key=lambda kv: kv[1]["tflops"]) if row["aotc"] else ("-", {"tflops": 0,
                                                                                                       "vs_sdpa": 0})
            print(f"prefill d={d} b={batch:<2} s={s:<5} causal={int(causal)} sdpa={row['sdpa_flash_tflops']:.0f} "
                  f"best {best[0]} {best[1]['tflops']:.0f} TFLOP/s ({best[1]['vs_sdpa']:.3f}x)", flush=True)
    dec = {n: kern for n, (s, kern) in kernels.items() if s.family == "fmha_decode"}
    for batch, sk in DECODE_SHAPES if dec else []:
        q = torch.randn(batch, 1, HQ, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, sk, HKV, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        o = torch.empty_like(q)
        kv_bytes = 2 * batch * sk * HKV * 128 * 2
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ref_ms = bench_ms(lambda qt=qt, kt=kt, vt=vt: sdpa(qt, kt, vt, is_causal=False, enable_gqa=True))
        row = {"kind": "decode", "head_dim": 128, "batch": batch, "seqlen": sk, "causal": False, "sdpa_flash_ms": ref_ms,
               "sdpa_flash_gbps": kv_bytes / ref_ms / 1e6, "aotc": {}}
        for name, kern in dec.items():
            args = fmha_args(q, k, v, o, causal=False, sms=sms)
            ms = bench_ms(lambda kern=kern, args=args: kern.launch(args, stream))
            row["aotc"][name] = {"ms": ms, "gbps": kv_bytes / ms / 1e6, "vs_sdpa": ref_ms / ms}
        rows.append(row)
        print(f"decode b={batch} kv={sk} sdpa {ref_ms * 1e3:.0f} us; " + ", ".join(
            f"{n} {r['ms'] * 1e3:.0f} us ({r['vs_sdpa']:.2f}x)" for n, r in row["aotc"].items()), flush=True)
    return rows


def write_report(out: Path, card: str, command: str, checks: list[dict], bench: list[dict], res: list[dict]) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (out / f"fmha_{slug}.json").write_text(json.dumps(
        {"card": card, "date": date, "command": command, "correctness": checks, "bench": bench, "resources": res},
        indent=1))
    lines = [f"# aotc FMHA on {card}", "", f"- date: {date}", f"- command: `{command}`",
             (f"- correctness: {sum(c['ok'] for c in checks)}/{len(checks)} kernel checks pass (rel. error < "
              f"{REL_TOL} against float32 attention; worst {max((c['rel_err'] for c in checks), default=0):.2e})"),
             ("- timing: median over 20 CUDA-event pairs of 10 back-to-back calls each, after a 30 ms warm-up; "
             "SDPA = torch `scaled_dot_product_attention` under `sdpa_kernel(SDPBackend.FLASH_ATTENTION)` with "
             "`enable_gqa=True` on the same tensors; ratio = SDPA time / aotc time"), ""]
    for d in PREFILL_SHAPES:
        rows = [r for r in bench if r["kind"] == "prefill" and r["head_dim"] == d]
        names = sorted({n for r in rows for n in r["aotc"]})
        if not rows:
            continue
        lines += [f"## Prefill, bf16, {HQ} q heads / {HKV} kv heads, head_dim {d} (TFLOP/s)", "",
                  "| batch | seqlen | causal | SDPA flash | best aotc | " + " | ".join(names) + " |",
                  "|---" * (5 + len(names)) + "|"]
        for r in rows:
            best = max(r["aotc"].values(), key=lambda x: x["tflops"]) if r["aotc"] else {"vs_sdpa": 0}
            cells = [f"{r['aotc'][n]['tflops']:.0f} ({r['aotc'][n]['vs_sdpa']:.2f}x)" if n in r["aotc"] else "-"
                     for n in names]
            lines.append(f"| {r['batch']} | {r['seqlen']} | {int(r['causal'])} | {r['sdpa_flash_tflops']:.0f} | "
                         f"**{best['vs_sdpa']:.2f}x** | " + " | ".join(cells) + " |")
        lines.append("")
    rows = [r for r in bench if r["kind"] == "decode"]
    names = sorted({n for r in rows for n in r["aotc"]})
    if rows:
        lines += [f"## Decode, bf16, 1 query token, {HQ} q heads / {HKV} kv heads, head_dim 128 (µs, K+V GB/s)", "",
                  "| batch | kv len | SDPA flash | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
        for r in rows:
            cells = [f"{r['aotc'][n]['ms'] * 1e3:.0f} µs, {r['aotc'][n]['gbps']:.0f} GB/s ({r['aotc'][n]['vs_sdpa']:.2f}x)"
                     for n in names]
            lines.append(f"| {r['batch']} | {r['seqlen']} | {r['sdpa_flash_ms'] * 1e3:.0f} µs, "
                         f"{r['sdpa_flash_gbps']:.0f} GB/s | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Kernels (registers / spill bytes per thread / dynamic SMEM, from the cache manifests)", "",
              "| spec | arch | regs | spill B | SMEM B | MMA in SASS |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['arch']} | {r['registers']} | {r['spills_bytes']} | {r['smem']} | {r['mma']} |"
              for r in res]
    path = out / f"fmha_{slug}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--specs", type=Path, nargs="*", default=[], help="extra spec files (tile experiments)")
    parser.add_argument("--archs", default="", help="also build these targets (comma-separated), for their spills")
    parser.add_argument("--only", default=None, help="regex on spec names to time")
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args(argv)
    import torch

    from aotc import runtime as rt
    from aotc.cache import Cache

    archs = [a for a in args.archs.split(",") if a]
    specs = build(args.cache_dir, args.specs, archs, args.jobs)
    rt.set_sources([rt.CacheSource(Cache(args.cache_dir))])
    target = rt.query_device(0).runnable_targets()[0]
    res = resources(args.cache_dir, specs, list(dict.fromkeys([target, *archs])))
    kernels = {s.name: (s, rt.get_kernel(s.family, s.params)) for s in specs
               if not args.only or re.search(args.only, s.name)}
    card = torch.cuda.get_device_name(0)
    checks = check(kernels)
    bench = benchmark(kernels)
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_report(args.out, card, " ".join(["python3", *sys.argv]), checks, bench, res)
    print(f"wrote {path}; correctness {sum(c['ok'] for c in checks)}/{len(checks)}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

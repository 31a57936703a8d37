"""FMHA proof on a real GPU, in two steps that run on different machines.

`build` (needs aotc[build]): render + compile every catalog fmha spec for one arch into a folder
(cubin, helper .so, build.json with registers/spills/compile seconds and HMMA counts).
`run` (needs aotc without the build extra, torch, numpy): load each cubin and helper through
aotc.runtime (the artifacts folder stands in for a cache), launch on torch tensors, check against a
float32 torch reference (fresh random inputs, NaN-poisoned outputs), then time prefill/decode shapes
side by side with torch SDPA (FLASH_ATTENTION backend) and write fmha_<card>.md/.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aotc.families.fmha import FmhaArgs  # pure Python: no Jinja2, no nvcc

REL_TOL = 1e-2
# e4m3 kernels, against float32 attention of the dequantized e4m3 inputs: the kernel also rounds P
# to e4m3 (3 mantissa bits) before P V. Round-to-nearest with 3 mantissa bits has an rms relative
# error of 2^-3 * sqrt(0.54 / 12) ~ 2.7e-2 for values spread over a binade, and O's relative error
# inherits about that (errors of independent keys add in quadrature, like O itself). 5e-2 leaves
# room for that and nothing else: a wrong key order, mask or V fragment gives errors near 1.
REL_TOL_FP8 = 5e-2
FP8_MAX = 448.0  # largest finite e4m3 value


# ----------------------------------------------------------------------------------------- build
def safe_name(spec_name: str, arch: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", spec_name) + "." + arch


def count_mma(cuobjdump: str | None, cubin: Path) -> dict[str, int]:
    """Opcode counts of the MMA families in the cubin's SASS (empty when cuobjdump is missing)."""
    import subprocess

    if not cuobjdump:
        return {}
    sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    for op in re.findall(r"\b(HMMA|OMMA|QMMA|IMMA|HGMMA|UTC\w+)\b", sass):
        counts[op] = counts.get(op, 0) + 1
    return counts


def build_one(spec, arch, toolchain, includes: list[str], out: Path) -> dict:
    """Render + compile one spec; the record of its artifacts (or `error`)."""
    from aotc.build.compile import compile_source
    from aotc.build.render import render
    from aotc.build.rules import check

    verdict = check(spec, arch)
    if not verdict.ok:
        return {"name": spec.name, "error": "\n".join(d.format() for d in verdict.diagnostics)}
    result = compile_source(render(spec, arch).text, arch, toolchain, include_dirs=includes)
    if not result.ok:
        return {"name": spec.name, "error": f"{result.error}\n{result.log[-4000:]}"}
    stem = safe_name(spec.name, arch.name)
    (out / f"{stem}.cubin").write_bytes(result.cubin or b"")
    (out / f"{stem}.so").write_bytes(result.helper or b"")
    lines = " ".join(result.resource_lines)
    regs = re.search(r"Used (\d+) registers", lines)
    spills = re.search(r"(\d+) bytes spill stores", lines)
    return {"name": spec.name, "family": spec.family, "params": spec.params, "arch": arch.name, "stem": stem,
            "smem": verdict.smem.total if verdict.smem else None,
            "registers": int(regs.group(1)) if regs else None,
            "spill_bytes": int(spills.group(1)) if spills else None,
            "compile_seconds": result.seconds, "mma": count_mma(toolchain.cuobjdump, out / f"{stem}.cubin"),
            "nvcc": toolchain.release}


def build(out: Path, arch_name: str, spec_files: list[Path], only: str | None, jobs: int,
          cutlass_include: Path | None) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from aotc.arch import get_arch
    from aotc.build.spec import load_specs
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.resources import templates_dir

    arch = get_arch(arch_name)
    toolchain = find_toolchain()
    cutlass = [str(cutlass_include)] if cutlass_include else cutlass_include_dirs()
    includes = [str(templates_dir()), *cutlass]
    loaded = load_specs(spec_files)
    for d in loaded.diagnostics:
        print(d.format(), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    # contiguous families only: the paged ones need a block table (tools/device_fmha_paged.py proves them)
    specs = [s for s in loaded.specs if s.family in ("fmha_fwd", "fmha_decode") and (not only or re.search(only, s.name))]
    index = out / "build.json"
    records = json.loads(index.read_text()) if index.exists() else []
    failed = 0
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for record in pool.map(lambda s: build_one(s, arch, toolchain, includes, out), specs):
            if "error" in record:
                failed += 1
                print(f"{record['name']}: {record['error']}", file=sys.stderr, flush=True)
                continue
            records = [r for r in records if r["stem"] != record["stem"]] + [record]
            index.write_text(json.dumps(records, indent=1))  # after each spec: partial builds stay usable
            print(json.dumps(record), flush=True)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------- run
class Kernel:
    """One built spec, loaded and launched by aotc.runtime (load_cubin, Helper, Kernel) from the
    artifacts folder instead of a cache."""

    def __init__(self, folder: Path, record: dict):
        from aotc.families import get_family
        from aotc.runtime import query_device
        from aotc.runtime.launch import Kernel as RuntimeKernel
        from aotc.runtime.loader import Helper, load_cubin
        from aotc.runtime.lookup import Found

        self.record = record
        self.decode = record["family"] == "fmha_decode"
        device = query_device(0)
        what = f"{record['name']} ({record['arch']})"
        library, function = load_cubin((folder / f"{record['stem']}.cubin").read_bytes(), device, what)
        found = Found(record["family"], record["params"], record["arch"], record["stem"], {"name": record["name"]},
                      source=None)
        self.kernel = RuntimeKernel(get_family(record["family"]), found, device, library, function,
                                    Helper(folder / f"{record['stem']}.so", what))

    def prepare(self, args: FmhaArgs):
        """The launch shape for `args` (grid, block, SMEM, workspace bytes), with the args to launch."""
        launch = self.kernel.query(args)
        launch.args = args  # a ctypes Structure takes attributes: launch() needs the args back
        return launch

    def launch(self, launch, stream: int) -> None:
        """aotc.runtime's launch: Params prepared once per args, a zeroed workspace kept per stream."""
        self.kernel.launch(launch.args, stream)


def make_args(q, k, v, o, *, batch, hq, hkv, sq, sk, causal, cu_q=None, cu_k=None, splits=0, sms=0,
              descales=(0.0, 0.0, 0.0)) -> FmhaArgs:
    """AotcArgs for [B, S, H, D] tensors (batched) or [T, H, D] tensors with cu_seqlens (varlen)."""
    a = FmhaArgs()
    for name, t in (("q", q), ("k", k), ("v", v), ("o", o)):
        setattr(a, name, t.data_ptr())
        if t.dim() == 4:
            setattr(a, f"{name}_batch_stride", t.stride(0))
        setattr(a, f"{name}_row_stride", t.stride(-3))
        setattr(a, f"{name}_head_stride", t.stride(-2))
    a.cu_seqlens_q = cu_q.data_ptr() if cu_q is not None else 0
    a.cu_seqlens_k = cu_k.data_ptr() if cu_k is not None else 0
    a.batch, a.num_q_heads, a.num_kv_heads, a.head_dim = batch, hq, hkv, q.shape[-1]
    a.seqlen_q, a.seqlen_k = sq, sk
    a.softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    a.causal, a.num_splits, a.num_sms = int(causal), splits, sms
    a.q_descale, a.k_descale, a.v_descale = descales
    return a


def quantize_e4m3(x):
    """Per-tensor e4m3 quantization: (stored e4m3 tensor, descale) with x ~ stored * descale."""
    import torch

    descale = float(x.abs().max().clamp_min(1e-12)) / FP8_MAX
    return (x.float() / descale).to(torch.float8_e4m3fn), descale


def reference(q, k, v, causal: bool):
    """float32 attention of one sequence: q [sq, Hq, D], k/v [sk, Hkv, D]; bottom-right causal;
    rows that see no key give 0."""
    import torch

    sq, hq, d = q.shape
    sk, hkv = k.shape[0], k.shape[1]
    g = hq // hkv
    qf, kf, vf = q.float(), k.float().repeat_interleave(g, 1), v.float().repeat_interleave(g, 1)
    s = torch.einsum("qhd,khd->hqk", qf, kf) / math.sqrt(d)
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + sk - sq, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    if sk == 0:
        return torch.zeros_like(qf)
    return torch.einsum("hqk,khd->qhd", p, vf)


def check_case(kern: Kernel, dtype, hq, hkv, lens_q, lens_k, causal, varlen, splits=0) -> dict:
    import torch

    d = kern.record["params"]["head_dim"]
    batch = len(lens_q)
    gen = torch.Generator(device="cuda").manual_seed(int(time.time_ns() % (2**31)))
    fp8 = dtype == torch.float8_e4m3fn
    descales: list[float] = []
    dequant: dict[int, object] = {}  # id(stored e4m3 tensor) -> its float32 value

    def rnd(*shape):
        x = torch.randn(*shape, device="cuda", dtype=torch.float32, generator=gen)
        if not fp8:
            return x.to(dtype)
        # distinct magnitudes per tensor so each descale matters (q, k, v in that order)
        xq, descale = quantize_e4m3(x * (3.0, 0.5, 2.0)[len(descales)])
        descales.append(descale)
        dequant[id(xq)] = xq.float() * descale
        return xq

    def real(t):
        return dequant[id(t)] if fp8 else t

    def empty_out(q):
        return torch.full(q.shape, float("nan"), device="cuda", dtype=torch.bfloat16 if fp8 else dtype)

    stream = torch.cuda.current_stream().cuda_stream
    if varlen:
        cq = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        ck = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        q, k, v = rnd(sum(lens_q), hq, d), rnd(sum(lens_k), hkv, d), rnd(sum(lens_k), hkv, d)
        o = empty_out(q)
        args = make_args(q, k, v, o, batch=batch, hq=hq, hkv=hkv, sq=max(lens_q), sk=max(lens_k), causal=causal,
                         cu_q=cq, cu_k=ck, splits=splits, descales=tuple(descales) or (0.0, 0.0, 0.0))
        seqs = [(int(cq[b]), int(cq[b + 1]), int(ck[b]), int(ck[b + 1])) for b in range(batch)]
        rq, rk, rv = real(q), real(k), real(v)
        ref = (torch.cat([reference(rq[a:b_], rk[c:e], rv[c:e], causal) for a, b_, c, e in seqs])
               if q.shape[0] else rq.float())
        out = o
    else:
        sq, sk = lens_q[0], lens_k[0]
        q, k, v = rnd(batch, sq, hq, d), rnd(batch, sk, hkv, d), rnd(batch, sk, hkv, d)
        o = empty_out(q)
        args = make_args(q, k, v, o, batch=batch, hq=hq, hkv=hkv, sq=sq, sk=sk, causal=causal, splits=splits,
                         descales=tuple(descales) or (0.0, 0.0, 0.0))
        rq, rk, rv = real(q), real(k), real(v)
        ref = torch.stack([reference(rq[b], rk[b], rv[b], causal) for b in range(batch)])
        out = o
    launch = kern.prepare(args)
    kern.launch(launch, stream)
    torch.cuda.synchronize()
    nan = int(torch.isnan(out.float()).sum())
    err = float((out.float() - ref).norm() / ref.norm().clamp_min(1e-30))
    tol = REL_TOL_FP8 if fp8 else REL_TOL
    ok = nan == 0 and err < tol
    row = {"spec": kern.record["name"], "hq": hq, "hkv": hkv, "lens_q": lens_q, "lens_k": lens_k,
           "causal": causal, "varlen": varlen, "grid": list(launch.grid), "splits_arg": splits,
           "nan": nan, "rel_err": err, "tol": tol, "descales": descales, "ok": ok}
    if not ok and out.numel():  # where it goes wrong: mean |error| per head_dim column and per row (first 256)
        diff = (out.float() - ref).abs().nan_to_num(1e9)
        row["col_err"] = [round(x, 4) for x in diff.reshape(-1, d).mean(0).tolist()]
        row["row_err"] = [round(x, 4) for x in diff.reshape(-1, diff.shape[-2], d).mean((1, 2))[:256].tolist()]
    return row


def correctness(kernels: list[Kernel]) -> list[dict]:
    import torch

    rows = []
    for kern in kernels:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16,
                 "e4m3": torch.float8_e4m3fn}[kern.record["params"]["dtype"]]
        if kern.decode:
            cases = [
                (32, 8, [1] * 3, [1000] * 3, False, False, 0),
                (32, 8, [1] * 3, [1000] * 3, True, False, 1),
                (32, 8, [1, 2, 4], [1000, 0, 77], True, True, 0),
                (16, 1, [3, 1], [5000, 1], True, True, 7),
                (8, 8, [1] * 2, [333] * 2, False, False, 3),
            ]
        else:
            cases = [
                (8, 2, [300] * 2, [300] * 2, False, False, 0),
                (8, 2, [300] * 2, [300] * 2, True, False, 0),
                (4, 1, [1, 0, 129, 257, 64], [1, 0, 129, 257, 64], True, True, 0),
                (4, 1, [1, 3, 129, 200, 64], [5, 0, 129, 300, 64], True, True, 0),
                (6, 3, [77, 1, 190], [1, 250, 190], False, True, 0),
            ]
        for hq, hkv, lq, lk, causal, varlen, splits in cases:
            row = check_case(kern, dtype, hq, hkv, lq, lk, causal, varlen, splits)
            rows.append(row)
            flag = "ok  " if row["ok"] else "FAIL"
            print(f"{flag} {row['spec']:<42} hq={hq:<2} hkv={hkv} q={lq} k={lk} causal={int(causal)} "
                  f"varlen={int(varlen)} grid={row['grid']} nan={row['nan']} rel_err={row['rel_err']:.2e}",
                  flush=True)
    return rows


def build_for_this_gpu(cache_dir: Path, keep, jobs: int) -> dict:
    """Build the catalog specs `keep(spec)` selects for this GPU's first runnable target into the aotc
    cache at `cache_dir` (aotc's own pipeline; stored kernels are cache hits); {name: params}. Exits
    with status 1 when one fails, after naming it."""
    from aotc.arch import get_arch
    from aotc.build.pipeline import build as run_build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache
    from aotc.runtime import query_device

    target = query_device(0).runnable_targets()[0]
    specs = [s for s in load_specs().specs if keep(s)]
    t0 = time.perf_counter()
    summary = run_build(specs, [get_arch(target)], Cache(cache_dir), jobs=jobs, progress=False)
    failed = [r for r in summary.results if r.status == "failed"]
    for r in failed:
        print(f"build failed: {r.spec.name}: {[d.format() for d in r.diagnostics]}", file=sys.stderr)
    print(f"built {len(specs)} specs for {target} in {time.perf_counter() - t0:.0f} s", flush=True)
    if failed:
        raise SystemExit(1)
    return {s.name: dict(s.params) for s in specs}


def bench_ms(fn, warmup_ms: float = 30, rep: int = 30, calls: int = 1) -> float:
    """do_bench style: aotc.tune.time_ms (warm-up, then the median over `rep` CUDA-event pairs of the
    time per call of `calls` back-to-back calls) with this script's defaults."""
    from aotc.tune import time_ms

    return time_ms(fn, warmup_ms, rep, calls)


def benchmark(kernels: list[Kernel]) -> list[dict]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    hq, hkv, d = 32, 8, 128
    stream = torch.cuda.current_stream().cuda_stream
    fwd = [k for k in kernels if not k.decode and k.record["params"]["head_dim"] == d
           and k.record["params"]["dtype"] == "bf16"]
    dec = [k for k in kernels if k.decode and k.record["params"]["dtype"] == "bf16"]
    fwd8 = [k for k in kernels if not k.decode and k.record["params"]["head_dim"] == d
            and k.record["params"]["dtype"] == "e4m3"]
    rows = []
    shapes = [(1, 4096), (1, 16384), (4, 2048), (16, 512), (2, 8192)]
    for (batch, s), causal in [(sh, c) for sh in shapes for c in (False, True)]:
        q = torch.randn(batch, s, hq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, s, hkv, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(batch, s, hkv, d, device="cuda", dtype=torch.bfloat16)
        o = torch.empty_like(q)
        flops = 4 * batch * s * s * hq * d / (2 if causal else 1)
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ref_ms = bench_ms(lambda qt=qt, kt=kt, vt=vt, c=causal: sdpa(qt, kt, vt, is_causal=c, enable_gqa=True))
            ref_out = sdpa(qt, kt, vt, is_causal=causal, enable_gqa=True).transpose(1, 2)
        row = {"kind": "prefill", "batch": batch, "seqlen": s, "causal": causal, "sdpa_flash_ms": ref_ms,
               "sdpa_flash_tflops": flops / ref_ms / 1e9, "aotc": {}}
        for kern in fwd:
            launch = kern.prepare(make_args(q, k, v, o, batch=batch, hq=hq, hkv=hkv, sq=s, sk=s, causal=causal))
            ms = bench_ms(lambda kern=kern, launch=launch: kern.launch(launch, stream))
            agree = float((o.float() - ref_out.float()).norm() / ref_out.float().norm())
            row["aotc"][kern.record["name"]] = {"ms": ms, "tflops": flops / ms / 1e9, "vs_sdpa": ref_ms / ms,
                                                "rel_diff_vs_sdpa": agree}
        if fwd8:  # the same data, quantized per tensor to e4m3; bf16 O
            (q8, qd), (k8, kd), (v8, vd) = quantize_e4m3(q), quantize_e4m3(k), quantize_e4m3(v)
            for kern in fwd8:
                launch = kern.prepare(make_args(q8, k8, v8, o, batch=batch, hq=hq, hkv=hkv, sq=s, sk=s,
                                                causal=causal, descales=(qd, kd, vd)))
                ms = bench_ms(lambda kern=kern, launch=launch: kern.launch(launch, stream))
                agree = float((o.float() - ref_out.float()).norm() / ref_out.float().norm())
                row["aotc"][kern.record["name"]] = {"ms": ms, "tflops": flops / ms / 1e9, "vs_sdpa": ref_ms / ms,
                                                    "rel_diff_vs_sdpa": agree}
        rows.append(row)
        best = max(row["aotc"].values(), key=lambda r: r["tflops"]) if row["aotc"] else {"tflops": 0, "vs_sdpa": 0}
        print(f"prefill b={batch:<2} s={s:<5} causal={int(causal)} sdpa={row['sdpa_flash_tflops']:.0f} "
              f"aotc best={best['tflops']:.0f} TFLOP/s ({best['vs_sdpa']:.2f}x)", flush=True)
    for batch, sk in [(1, 32768), (8, 8192), (32, 4096), (64, 2048)] if dec else []:
        q = torch.randn(batch, 1, hq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(batch, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
        o = torch.empty_like(q)
        kv_bytes = 2 * batch * sk * hkv * d * 2
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ref_ms = bench_ms(lambda qt=qt, kt=kt, vt=vt: sdpa(qt, kt, vt, is_causal=False, enable_gqa=True))
            ref_out = sdpa(qt, kt, vt, is_causal=False, enable_gqa=True).transpose(1, 2)
        row = {"kind": "decode", "batch": batch, "seqlen": sk, "causal": False, "sdpa_flash_ms": ref_ms,
               "sdpa_flash_gbps": kv_bytes / ref_ms / 1e6, "aotc": {}}
        for kern in dec:
            launch = kern.prepare(make_args(q, k, v, o, batch=batch, hq=hq, hkv=hkv, sq=1, sk=sk, causal=False,
                                            sms=torch.cuda.get_device_properties(0).multi_processor_count))
            ms = bench_ms(lambda kern=kern, launch=launch: kern.launch(launch, stream))
            agree = float((o.float() - ref_out.float()).norm() / ref_out.float().norm())
            row["aotc"][kern.record["name"]] = {"ms": ms, "gbps": kv_bytes / ms / 1e6, "vs_sdpa": ref_ms / ms,
                                                "splits_grid": list(launch.grid), "rel_diff_vs_sdpa": agree}
        rows.append(row)
        best = min(row["aotc"].values(), key=lambda r: r["ms"]) if row["aotc"] else {"gbps": 0, "vs_sdpa": 0}
        print(f"decode b={batch:<2} sk={sk:<5} sdpa={row['sdpa_flash_gbps']:.0f} GB/s aotc best="
              f"{best['gbps']:.0f} GB/s ({best['vs_sdpa']:.2f}x)", flush=True)
    return rows


def write_report(out: Path, card: str, command: str, build_records: list[dict], checks: list[dict],
                 bench: list[dict], tag: str = "") -> None:
    slug = ("h100" if "H100" in card else re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_")) + tag
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = {"card": card, "date": date, "command": command, "build": build_records, "correctness": checks,
            "bench": bench}
    (out / f"fmha_{slug}.json").write_text(json.dumps(data, indent=1))
    lines = [f"# aotc FMHA on {card}", "", f"- date: {date}", f"- command: `{command}`",
             (f"- correctness: {sum(c['ok'] for c in checks)}/{len(checks)} cases pass "
              f"(rel. error < {REL_TOL} for bf16/fp16, < {REL_TOL_FP8} for e4m3 against the dequantized "
              f"inputs, no NaN left in a NaN-poisoned output; worst "
              f"{max((c['rel_err'] for c in checks), default=0):.2e})"), "",
             ("## Prefill, 32 q heads / 8 kv heads, head_dim 128 (TFLOP/s; ratio = SDPA time / aotc time; "
              "SDPA flash and bf16 kernels on bf16 data, e4m3 kernels on the same data quantized per tensor)"), ""]
    fwd_names = sorted({n for r in bench if r["kind"] == "prefill" for n in r["aotc"]})
    lines.append("| batch | seqlen | causal | SDPA flash | " + " | ".join(fwd_names) + " |")
    lines.append("|---" * (4 + len(fwd_names)) + "|")
    for r in (r for r in bench if r["kind"] == "prefill"):
        cells = [f"{r['aotc'][n]['tflops']:.0f} ({r['aotc'][n]['vs_sdpa']:.2f}x)" for n in fwd_names]
        lines.append(f"| {r['batch']} | {r['seqlen']} | {int(r['causal'])} | {r['sdpa_flash_tflops']:.0f} | "
                     + " | ".join(cells) + " |")
    dec_names = sorted({n for r in bench if r["kind"] == "decode" for n in r["aotc"]})
    lines += ["", ("## Decode, bf16, 1 query token, 32 q heads / 8 kv heads, head_dim 128 "
                   "(µs and K+V GB/s; ratio = SDPA time / aotc time)"), "",
              "| batch | kv len | SDPA flash | " + " | ".join(dec_names) + " |", "|---" * (3 + len(dec_names)) + "|"]
    for r in (r for r in bench if r["kind"] == "decode"):
        cells = [f"{r['aotc'][n]['ms'] * 1e3:.0f} µs, {r['aotc'][n]['gbps']:.0f} GB/s "
                 f"({r['aotc'][n]['vs_sdpa']:.2f}x)" for n in dec_names]
        lines.append(f"| {r['batch']} | {r['seqlen']} | {r['sdpa_flash_ms'] * 1e3:.0f} µs, "
                     f"{r['sdpa_flash_gbps']:.0f} GB/s | " + " | ".join(cells) + " |")
    lines += ["", "## Kernels", "", "| spec | arch | regs | spills | SMEM B |", "|---|---|---|---|---|"]
    lines += [f"| {b['name']} | {b['arch']} | {b['registers']} | {b['spill_bytes']} | {b['smem']} |"
              for b in build_records]
    (out / f"fmha_{slug}.md").write_text("\n".join(lines) + "\n")


def run(folder: Path, out: Path, skip_bench: bool, only: str | None = None, tag: str = "") -> int:
    import torch

    torch.zeros(1, device="cuda")  # create torch's primary context; aotc.runtime uses the same one
    card = torch.cuda.get_device_name(0)
    cc = torch.cuda.get_device_capability(0)
    records = json.loads((folder / "build.json").read_text())
    target = f"sm{cc[0]}{cc[1]}"
    runnable = [r for r in records if r["arch"].rstrip("af") == target and (not only or re.search(only, r["name"]))]
    if not runnable:
        print(f"no cubin in {folder} for this {card} (compute capability {cc[0]}.{cc[1]}); built archs: "
              f"{sorted({r['arch'] for r in records})}. Build with: tools/device_fmha.py build --arch {target}a",
              file=sys.stderr)
        return 2
    kernels = [Kernel(folder, r) for r in runnable]
    print(f"{card}: {len(kernels)} kernels", flush=True)
    checks = correctness(kernels)
    bench = [] if skip_bench else benchmark(kernels)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, card, " ".join(["python3", *sys.argv]), runnable, checks, bench, tag)
    failed = [c for c in checks if not c["ok"]]
    print(f"correctness: {len(checks) - len(failed)}/{len(checks)} ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render + compile the catalog's fmha specs for one arch")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--arch", default="sm90a")
    b.add_argument("--specs", type=Path, nargs="*", default=None, help="spec files (default: the catalog)")
    b.add_argument("--only", default=None, help="regex on spec names")
    b.add_argument("--jobs", type=int, default=1, help="parallel nvcc processes (each CuTe TU ~2 GiB)")
    b.add_argument("--cutlass-include", type=Path, default=None,
                   help="CUTLASS include/ dir (default: the pip nvidia-cutlass package)")
    r = sub.add_parser("run", help="check + benchmark the built kernels on this machine's GPU")
    r.add_argument("--artifacts", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--skip-bench", action="store_true")
    r.add_argument("--only", default=None, help="regex on spec names")
    r.add_argument("--tag", default="", help="suffix of the report files (fmha_<card><tag>.md/.json)")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        return build(args.out, args.arch, args.specs or [], args.only, args.jobs, args.cutlass_include)
    return run(args.artifacts, args.out, args.skip_bench, args.only, args.tag)


if __name__ == "__main__":
    sys.exit(main())

"""Paged-KV-cache attention on a real GPU, through aotc.runtime (fmha_decode_paged, fmha_fwd_paged).

Builds (aotc's own pipeline) the paged catalog kernels and their contiguous twins for this GPU's
target into a cache folder, then (1) checks every paged kernel against a float32 torch reference:
ragged KV lengths, lengths not a multiple of the page size, shuffled page ids, block-table slots
past a request's pages poisoned, empty requests, GQA/MQA/MHA, K/V separate or stacked, page sizes
16 and 64 (decode also 1, 4 and 32), decode with chosen/forced/single splits, split by the table's
capacity or by a max_kv_len below the longest length, chunked prefill (causal and not); and (2) times
paged against the contiguous kernel of the same tile on the same K/V (scattered into pages), and
writes fmha_<card>_paged.md/.json (--decode-only: the decode kernel and its twin alone, into
fmha_<card>_paged_decode.md/.json; --prefill-only: the two chunked-prefill kernels and their twins, into
fmha_<card>_paged_prefill.md/.json). With --flashinfer, FlashInfer's own paged FA2 kernels
(BatchDecodeWithPagedKVCacheWrapper, BatchPrefillWithPagedKVCacheWrapper with backend "fa2"; JIT-built
on this host on first use) run on the same pages and block tables, timed the same way, and their
outputs are compared with aotc's. With --baseline TREE_OR_REV (an older aotc checkout, or a git revision
of this one, exported with git archive), that tree's aotc builds the same chunked-prefill kernels into
<cache-dir>-baseline, and every prefill row also times them on the same inputs, in the same process, the
order of the two paged kernels alternating from row to row (--passes N: every prefill shape N times):
an A/B of the paged template against its previous version next to the contiguous twin.

    python3 tools/device_fmha_paged.py --cache-dir /tmp/aotc-cache --out <dir> [--jobs 16] [--flashinfer]
        [--decode-only | --prefill-only] [--baseline TREE_OR_REV [--passes N]]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling device_fmha.py
from device_fmha import bench_ms, build_for_this_gpu, reference

REL_TOL = 1e-2
DECODE_PAGED = "fmha_paged_decode_m64n64"
FWD_PAGED = ("fmha_paged_fwd_m128n64", "fmha_paged_fwd_m128n64_qsmem")
# the contiguous kernel of the same tile for each paged one (timing baseline)
TWINS = {DECODE_PAGED: "fmha_decode_m64n64", FWD_PAGED[0]: "fmha_fwd_m128n64",
         FWD_PAGED[1]: "fmha_fwd_m128n64_qsmem"}
FAMILY_OF = {DECODE_PAGED: "fmha_decode_paged", **dict.fromkeys(FWD_PAGED, "fmha_fwd_paged")}
POISON_PAGE = 1 << 30  # block-table slots past a request's pages: a read there faults
GRAPH_CALLS = 10  # calls per captured CUDA graph (kernel_ms)
TIMING_FALLBACKS: list[str] = []  # capture errors, when kernel_ms fell back to back-to-back calls


def kernel_ms(fn) -> float:
    """GPU time per call without the host's: GRAPH_CALLS calls of `fn` captured in one CUDA graph,
    the graph replayed (bench_ms: median over CUDA-event pairs), divided by GRAPH_CALLS. Both
    aotc.runtime entry points launch on torch's current stream, so they capture."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm (kernel load, workspace) outside the capture
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(GRAPH_CALLS):
                fn()
    except RuntimeError as e:  # not capturable here: back-to-back calls (host time partly overlapped)
        print(f"CUDA graph capture failed ({e}); timing {GRAPH_CALLS} back-to-back calls", flush=True)
        TIMING_FALLBACKS.append(str(e))
        return bench_ms(fn, calls=GRAPH_CALLS)
    return bench_ms(graph.replay) / GRAPH_CALLS


def build(cache_dir: Path, jobs: int, decode_only: bool = False, prefill_only: bool = False) -> dict:
    """Build the paged specs and their twins for this GPU's target (decode_only: the decode kernel and
    its twin; prefill_only: the chunked-prefill kernels and their twins); {name: params} of what was
    built."""
    names = (DECODE_PAGED, TWINS[DECODE_PAGED]) if decode_only else \
        (*FWD_PAGED, *(TWINS[n] for n in FWD_PAGED)) if prefill_only else (DECODE_PAGED, *FWD_PAGED, *TWINS.values())
    return build_for_this_gpu(cache_dir, lambda s: s.name.split("/")[0] in names and
                              s.params["dtype"] in ("bf16", "fp16"), jobs)


def build_baseline(tree_or_rev: str, cache_dir: Path, jobs: int, names: list[str]) -> dict:
    """Build the specs `names` with the aotc of an older tree (a directory, or a git revision of this
    checkout exported by git archive next to cache_dir) into cache_dir, for this GPU's first runnable
    target, in a subprocess that imports that tree's aotc; {"tree": ..., "revision": ...}."""
    from aotc.runtime import query_device

    root = Path(__file__).resolve().parent.parent
    tree, rev = Path(tree_or_rev), None
    if not tree.is_dir():
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", f"{tree_or_rev}^{{commit}}"],
                             check=True, capture_output=True, text=True).stdout.strip()
        tree = cache_dir.parent / f"{cache_dir.name}-tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    tree = tree.resolve()
    # that tree's aotc first; other entries (e.g. where nvidia-cutlass was installed) stay, this checkout goes
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != root]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *rest])}
    where = subprocess.run([sys.executable, "-c", "import aotc.resources as r; print(r.templates_dir())"],
                           cwd=tree, env=env, check=True, capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree):
        raise SystemExit(f"the baseline build would render templates from {where}, not from {tree}")
    target = query_device(0).runnable_targets()[0]
    cmd = [sys.executable, "-m", "aotc", "build", "--arch", target, "--cache-dir", str(cache_dir.resolve()), "-q",
           "-j", str(jobs), *(a for n in names for a in ("--filter", n))]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    print(f"baseline: built {', '.join(names)} for {target} from {tree} ({rev or 'a directory'}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"tree": str(tree), "revision": rev}


def use_caches(caches: list[Path]) -> None:
    """Point aotc.runtime at these caches (first match wins) and forget every loaded kernel: the
    baseline and the new build of a spec share its spec key, so the memos would return either."""
    from aotc import runtime as rt
    from aotc.cache import Cache
    from aotc.runtime import registry

    rt.set_sources([rt.CacheSource(Cache(c)) for c in caches])
    registry.clear()


def resources(caches: list[Path], built: dict, names) -> dict:
    """{name: {"registers", "spills_bytes"}} of the stored kernel the runtime loads for this GPU."""
    from aotc.cache import Cache
    from aotc.runtime import query_device
    from aotc.runtime.lookup import CacheSource, find

    dev, out = query_device(0), {}
    for name in names:
        spec = built[name]
        found = find(FAMILY_OF[name.split("/")[0]], spec, dev, sources=[CacheSource(Cache(c)) for c in caches])
        r = found.manifest.get("resources", {}) if isinstance(found.manifest, dict) else {}
        out[name] = {"arch": found.arch, "registers": r.get("registers"), "spills_bytes": r.get("spills_bytes")}
    return out


def paged_cache(kv_lens, page_size, hkv, d, dtype, stacked: bool, gen):
    """Random K/V per request scattered over shuffled pages: (k_cache, v_cache, block_table,
    [(k, v) per request])."""
    import torch

    pages_per = [-(-n // page_size) for n in kv_lens]
    max_pages = max(1, max(pages_per))
    total = sum(pages_per) + 3  # a few pages no request owns
    perm = torch.randperm(total, generator=gen.cpu).tolist()
    shape = (total, 2, page_size, hkv, d) if stacked else (total, page_size, hkv, d)
    kv = torch.randn(*shape, device="cuda", dtype=dtype, generator=gen.cuda_gen)
    k_cache, v_cache = (kv[:, 0], kv[:, 1]) if stacked else (kv, torch.randn_like(kv))
    table = torch.full((len(kv_lens), max_pages), POISON_PAGE, dtype=torch.int32)
    per_request, at = [], 0
    for b, n in enumerate(kv_lens):
        ids = perm[at:at + pages_per[b]]
        at += pages_per[b]
        table[b, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
        idx = torch.tensor(ids, dtype=torch.long, device="cuda")
        k = k_cache[idx].reshape(-1, hkv, d)[:n] if ids else k_cache[:0].reshape(0, hkv, d)
        v = v_cache[idx].reshape(-1, hkv, d)[:n] if ids else v_cache[:0].reshape(0, hkv, d)
        per_request.append((k, v))
    return k_cache, v_cache, table.cuda(), per_request


class Gen:
    """A CPU generator for page permutations and a CUDA one for values, seeded per case."""

    def __init__(self, seed: int):
        import torch

        self.cpu = torch.Generator().manual_seed(seed)
        self.cuda_gen = torch.Generator(device="cuda").manual_seed(seed)


def check_case(family: str, params: dict, *, hq, hkv, lens_q, kv_lens, page_size, causal, stacked, splits=0,
               varlen_q=False, max_kv="longest") -> dict:
    """max_kv: the max_kv_len passed ("longest": max(kv_lens); None: omitted, the table's capacity sizes
    the split; a number below the longest length checks that every KV tile is still visited)."""
    import torch

    from aotc import runtime as rt

    d, dtype = params["head_dim"], {"bf16": torch.bfloat16, "fp16": torch.float16}[params["dtype"]]
    gen = Gen(int(time.time_ns() % (2**31)))
    k_cache, v_cache, table, per_request = paged_cache(kv_lens, page_size, hkv, d, dtype, stacked, gen)
    lens = torch.tensor(kv_lens, dtype=torch.int32, device="cuda")
    batch = len(kv_lens)
    if varlen_q:
        cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        q = torch.randn(sum(lens_q), hq, d, device="cuda", dtype=dtype, generator=gen.cuda_gen)
        qs = [q[int(cu_q[b]):int(cu_q[b + 1])] for b in range(batch)]
        extra = {"cu_seqlens_q": cu_q, "max_seqlen_q": max(lens_q)}
    else:
        q = torch.randn(batch, lens_q[0], hq, d, device="cuda", dtype=dtype, generator=gen.cuda_gen)
        qs = list(q)
        extra = {}
    out = torch.full_like(q, float("nan"))
    fn = rt.fmha_decode_paged if family == "fmha_decode_paged" else rt.fmha_fwd_paged
    if family == "fmha_decode_paged":
        extra["num_splits"] = splits
    max_kv_len = max(kv_lens) if max_kv == "longest" else max_kv
    fn(q, k_cache, v_cache, table, lens, out, causal=causal, max_kv_len=max_kv_len, params=params, **extra)
    torch.cuda.synchronize()
    ref = torch.cat([reference(qb, k, v, causal) for qb, (k, v) in zip(qs, per_request, strict=True)]) \
        if varlen_q else torch.stack([reference(qb, k, v, causal) for qb, (k, v) in zip(qs, per_request, strict=True)])
    got = out.float().reshape(ref.shape)
    nan = int(torch.isnan(got).sum())
    err = float((got - ref).norm() / ref.norm().clamp_min(1e-30)) if ref.numel() else 0.0
    ok = nan == 0 and err < REL_TOL
    return {"family": family, "dtype": params["dtype"], "hq": hq, "hkv": hkv, "lens_q": lens_q, "kv_lens": kv_lens,
            "page_size": page_size, "causal": causal, "stacked": stacked, "splits_arg": splits, "varlen_q": varlen_q,
            "max_kv_len": max_kv_len, "nan": nan, "rel_err": err, "ok": ok}


def correctness(built: dict) -> list[dict]:
    rows = []
    for name, params in sorted(built.items()):
        family = {DECODE_PAGED: "fmha_decode_paged", **dict.fromkeys(FWD_PAGED, "fmha_fwd_paged")}.get(
            name.split("/")[0])
        if family is None:
            continue
        if family == "fmha_decode_paged":
            cases = [
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [1, 0, 77, 1000, 4099], "page_size": 16, "causal": False, "stacked": False},
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [1, 0, 77, 1000, 4099], "page_size": 64, "causal": False, "stacked": True},
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [3000, 17, 64], "page_size": 16, "causal": False, "stacked": True, "splits": 1},
                {"hq": 16, "hkv": 1, "lens_q": [1], "kv_lens": [5000, 1], "page_size": 64, "causal": False, "stacked": False, "splits": 7},
                {"hq": 8, "hkv": 8, "lens_q": [1], "kv_lens": [333, 0], "page_size": 16, "causal": False, "stacked": False, "splits": 3},
                # speculative decode: 4 query tokens per request, bottom-right causal
                {"hq": 32, "hkv": 8, "lens_q": [4], "kv_lens": [4, 130, 2049], "page_size": 16, "causal": True, "stacked": True},
                {"hq": 32, "hkv": 8, "lens_q": [1, 4, 0], "kv_lens": [100, 260, 0], "page_size": 64, "causal": True, "stacked": False,
                     "varlen_q": True},
                # one-token and small pages; split by the table's capacity; max_kv_len below the longest length
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [1, 0, 77, 700], "page_size": 1, "causal": False, "stacked": False},
                {"hq": 16, "hkv": 4, "lens_q": [1], "kv_lens": [70, 2100, 129], "page_size": 4, "causal": False, "stacked": True,
                     "splits": 5},
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [1000, 37], "page_size": 16, "causal": False, "stacked": False,
                     "max_kv": None},
                {"hq": 32, "hkv": 8, "lens_q": [1], "kv_lens": [1000, 37, 3000], "page_size": 32, "causal": False, "stacked": True,
                     "max_kv": 100},
            ]
        else:
            cases = [  # chunked prefill: lens_q new tokens at the end of kv_lens
                {"hq": 8, "hkv": 2, "lens_q": [5, 0, 128, 300, 1], "kv_lens": [105, 17, 128, 1000, 4001], "page_size": 16,
                     "causal": True, "stacked": False, "varlen_q": True},
                {"hq": 8, "hkv": 2, "lens_q": [5, 0, 128, 300, 1], "kv_lens": [105, 17, 128, 1000, 4001], "page_size": 64,
                     "causal": True, "stacked": True, "varlen_q": True},
                {"hq": 6, "hkv": 3, "lens_q": [77, 1, 190], "kv_lens": [77, 250, 1190], "page_size": 16, "causal": False,
                     "stacked": True, "varlen_q": True},
                {"hq": 4, "hkv": 1, "lens_q": [256], "kv_lens": [256, 1000, 0], "page_size": 64, "causal": True, "stacked": False},
                # one-token and 4-token pages
                {"hq": 8, "hkv": 2, "lens_q": [5, 0, 200], "kv_lens": [105, 17, 333], "page_size": 1, "causal": True,
                     "stacked": False, "varlen_q": True},
                {"hq": 8, "hkv": 2, "lens_q": [70], "kv_lens": [70, 1000, 129], "page_size": 4, "causal": True, "stacked": True},
            ]
        for case in cases:
            row = check_case(family, params, **case)
            row["spec"] = name
            rows.append(row)
            print(f"{'ok  ' if row['ok'] else 'FAIL'} {name:<36} hq={case['hq']} hkv={case['hkv']} q={case['lens_q']} "
                  f"kv={case['kv_lens']} max_kv_len={row['max_kv_len']} page={case['page_size']} causal={int(case['causal'])} "
                  f"stacked={int(case['stacked'])} nan={row['nan']} rel_err={row['rel_err']:.2e}", flush=True)
    return rows


def scatter_pages(k, page_size, gen):
    """[batch, s, h, d] -> (pages [n, page_size, h, d] in shuffled order, block table [batch, s/page_size])."""
    import torch

    b, s, h, d = k.shape
    per = s // page_size
    perm = torch.randperm(b * per, generator=gen).cuda()
    pages = torch.empty(b * per, page_size, h, d, device="cuda", dtype=k.dtype)
    pages[perm] = k.reshape(b * per, page_size, h, d)
    return pages, perm.reshape(b, per).to(torch.int32)


class FlashInferPaged:
    """FlashInfer's paged FA2 decode/prefill on the block table aotc reads: every request owns whole
    pages (table row b = its page ids), NHD layout, K and V separate."""

    def __init__(self):
        import flashinfer
        import torch

        self.fi = flashinfer
        self.workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        self.version = flashinfer.__version__

    def _pages(self, table, page):
        import torch

        batch, per = table.shape
        indptr = torch.arange(batch + 1, dtype=torch.int32, device="cuda") * per
        last = torch.full((batch,), page, dtype=torch.int32, device="cuda")
        return indptr, table.reshape(-1).contiguous(), last

    def decode(self, q, kp, vp, table, page, hq, hkv, d):
        indptr, indices, last = self._pages(table, page)
        w = self.fi.BatchDecodeWithPagedKVCacheWrapper(self.workspace, "NHD", backend="fa2")
        w.plan(indptr, indices, last, hq, hkv, d, page, q_data_type=q.dtype, kv_data_type=kp.dtype)
        q3 = q.reshape(q.shape[0], hq, d)
        out = q3.new_empty(q3.shape)
        return (lambda: w.run(q3, (kp, vp), out=out)), out

    def prefill(self, q, kp, vp, table, page, hq, hkv, d):
        import torch

        indptr, indices, last = self._pages(table, page)
        batch, sq = q.shape[:2]
        qo = torch.arange(batch + 1, dtype=torch.int32, device="cuda") * sq
        w = self.fi.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD", backend="fa2")
        w.plan(qo, indptr, indices, last, hq, hkv, d, page, causal=True, q_data_type=q.dtype,
               kv_data_type=kp.dtype)
        q3 = q.reshape(batch * sq, hq, d)
        out = q3.new_empty(q3.shape)
        return (lambda: w.run(q3, (kp, vp), out=out)), out


def flashinfer_columns(row: dict, fi, make, q, kp, vp, table, page, hq, hkv, d, o_p) -> None:
    """FlashInfer's time and its output's distance from aotc's paged output, into the row."""
    fn, out = getattr(fi, make)(q, kp, vp, table, page, hq, hkv, d)
    ms = kernel_ms(fn)
    row |= {"flashinfer_ms": ms, "paged_vs_flashinfer": ms / row["paged_ms"],
            "flashinfer_max_abs_diff": float((out.reshape(o_p.shape).float() - o_p.float()).abs().max())}
    print(f"  flashinfer {make}: {ms * 1e3:.0f} us; aotc paged / flashinfer speed {ms / row['paged_ms']:.3f}x "
          f"max|diff| {row['flashinfer_max_abs_diff']:.1e}", flush=True)


def benchmark(built: dict, fi: FlashInferPaged | None = None, decode_only: bool = False,
              ab: tuple[list[Path], list[Path]] | None = None, passes: int = 1) -> list[dict]:
    """ab: (the caches of the new kernels, the caches with the baseline's paged kernels first): each
    prefill row then also times the baseline's paged kernel on the same inputs."""
    import torch

    from aotc import runtime as rt

    hq, hkv, d = 32, 8, 128
    gen = torch.Generator().manual_seed(0)
    rows = []
    decode = built.get(f"{DECODE_PAGED}/dtype=bf16")
    twin = built.get(f"{TWINS[DECODE_PAGED]}/dtype=bf16")
    for batch, sk in [(1, 32768), (8, 8192), (32, 4096), (64, 2048)] if decode and twin else []:
        q = torch.randn(batch, 1, hq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        o_c, o_p = torch.empty_like(q), torch.empty_like(q)
        lens = torch.full((batch,), sk, dtype=torch.int32, device="cuda")
        ms_c = kernel_ms(lambda q=q, k=k, v=v, o=o_c: rt.fmha_decode(q, k, v, o, params=twin))
        kv_bytes = 2 * batch * sk * hkv * d * 2
        for page in (16, 64):
            kp, table = scatter_pages(k, page, gen)
            vp = torch.empty_like(kp)
            vp[table.long().reshape(-1)] = v.reshape(-1, page, hkv, d)
            ms_p = kernel_ms(lambda q=q, kp=kp, vp=vp, t=table, n=lens, o=o_p, sk=sk:
                            rt.fmha_decode_paged(q, kp, vp, t, n, o, max_kv_len=sk, params=decode))
            diff = float((o_p.float() - o_c.float()).abs().max())
            rows.append({"kind": "decode", "spec": DECODE_PAGED, "batch": batch, "q_len": 1, "kv_len": sk, "causal": False, "page_size": page,
                         "contiguous_ms": ms_c, "paged_ms": ms_p, "paged_vs_contiguous": ms_c / ms_p,
                         "paged_gbps": kv_bytes / ms_p / 1e6, "contiguous_gbps": kv_bytes / ms_c / 1e6,
                         "max_abs_diff": diff})
            if fi:
                flashinfer_columns(rows[-1], fi, "decode", q, kp, vp, table, page, hq, hkv, d, o_p)
            print(f"decode b={batch} kv={sk} page={page}: contiguous {ms_c * 1e3:.0f} us, paged {ms_p * 1e3:.0f} us "
                  f"({ms_c / ms_p:.3f}x) max|diff|={diff:.1e}", flush=True)
    fwd_pairs = [] if decode_only else \
        [(built.get(f"{name}/dtype=bf16") or built.get(name), built.get(TWINS[name]), name) for name in FWD_PAGED]
    prefill_rows = 0
    for (fwd, twin, name), pass_ in [(pair, p) for p in range(passes) for pair in fwd_pairs]:
        if not (fwd and twin):
            continue
        # (batch, new tokens, prefix already in the cache)
        for batch, sq, prefix in [(1, 4096, 0), (4, 2048, 0), (1, 4096, 12288), (8, 512, 3584)]:
            sk = sq + prefix
            q = torch.randn(batch, sq, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(batch, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            o_c, o_p = torch.empty_like(q), torch.empty_like(q)
            lens = torch.full((batch,), sk, dtype=torch.int32, device="cuda")
            flops = 4 * batch * hq * d * (sq * sk - sq * sq / 2)  # causal, bottom-right: the prefix is whole
            ms_c = kernel_ms(lambda q=q, k=k, v=v, o=o_c, twin=twin: rt.fmha_fwd(q, k, v, o, causal=True, params=twin))
            for page in (16, 64):
                kp, table = scatter_pages(k, page, gen)
                vp = torch.empty_like(kp)
                vp[table.long().reshape(-1)] = v.reshape(-1, page, hkv, d)
                def call(q=q, kp=kp, vp=vp, t=table, n=lens, o=o_p, sk=sk, fwd=fwd):
                    return rt.fmha_fwd_paged(q, kp, vp, t, n, o, causal=True, max_kv_len=sk, params=fwd)

                ab_cols = {}
                if ab is None:
                    ms_p = kernel_ms(call)
                    diff = float((o_p.float() - o_c.float()).abs().max())
                else:  # the two paged kernels in alternating order, each output compared with the twin's
                    order = ("new", "baseline") if prefill_rows % 2 == 0 else ("baseline", "new")
                    times, diffs = {}, {}
                    for which in order:
                        use_caches(ab[0] if which == "new" else ab[1])
                        times[which] = kernel_ms(call)
                        diffs[which] = float((o_p.float() - o_c.float()).abs().max())
                    use_caches(ab[0])
                    ms_p, diff = times["new"], diffs["new"]
                    ab_cols = {"pass": pass_ + 1, "order": list(order), "baseline_ms": times["baseline"],
                               "baseline_tflops": flops / times["baseline"] / 1e9,
                               "baseline_vs_contiguous": ms_c / times["baseline"],
                               "paged_vs_baseline": times["baseline"] / ms_p, "baseline_max_abs_diff": diffs["baseline"]}
                prefill_rows += 1
                rows.append({"kind": "prefill", "spec": name, "batch": batch, "q_len": sq, "kv_len": sk, "causal": True,
                             "page_size": page, "contiguous_ms": ms_c, "paged_ms": ms_p,
                             "paged_vs_contiguous": ms_c / ms_p, "paged_tflops": flops / ms_p / 1e9,
                             "contiguous_tflops": flops / ms_c / 1e9, "max_abs_diff": diff, **ab_cols})
                if fi:
                    flashinfer_columns(rows[-1], fi, "prefill", q, kp, vp, table, page, hq, hkv, d, o_p)
                print(f"prefill {name} b={batch} q={sq} kv={sk} page={page}: contiguous {flops / ms_c / 1e9:.0f} TFLOP/s, paged "
                      f"{flops / ms_p / 1e9:.0f} ({ms_c / ms_p:.3f}x) max|diff|={diff:.1e}", flush=True)
                if ab_cols:
                    print(f"  baseline paged {ab_cols['baseline_tflops']:.0f} TFLOP/s "
                          f"({ab_cols['baseline_vs_contiguous']:.3f}x of contiguous); new / baseline "
                          f"{ab_cols['paged_vs_baseline']:.3f}x max|diff|={ab_cols['baseline_max_abs_diff']:.1e}",
                          flush=True)
    return rows


def write_report(out: Path, card: str, command: str, built: dict, checks: list[dict], bench: list[dict],
                 flashinfer: str | None = None, suffix: str = "", baseline: dict | None = None) -> None:
    slug = re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_") + suffix
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (out / f"fmha_{slug}.json").write_text(json.dumps(
        {"card": card, "date": date, "command": command, "built": built, "correctness": checks, "bench": bench,
         "flashinfer": flashinfer, "baseline": baseline,
         "timing": {"graph_calls": GRAPH_CALLS, "fallbacks": TIMING_FALLBACKS}},
        indent=1))
    lines = [f"# aotc paged-KV attention on {card}", "", f"- date: {date}", f"- command: `{command}`",
             (f"- correctness: {sum(c['ok'] for c in checks)}/{len(checks)} cases pass (rel. error < {REL_TOL} "
             f"against float32 attention of the gathered pages; NaN-poisoned outputs fully written; worst "
             f"{max((c['rel_err'] for c in checks), default=0):.2e})"), "",
             "| spec | q/kv heads | q lens | kv lens | max_kv_len | page | causal | K/V | splits | rel. error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['spec']} | {c['hq']}/{c['hkv']} | {c['lens_q']} | {c['kv_lens']} | "
                     f"{'table capacity' if c['max_kv_len'] is None else c['max_kv_len']} | {c['page_size']} | "
                     f"{int(c['causal'])} | {'stacked' if c['stacked'] else 'separate'} | {c['splits_arg'] or 'auto'} | "
                     f"{c['rel_err']:.2e} |")
    lines += ["", "## Paged vs contiguous, same tile, same K/V (bf16, 32 q / 8 kv heads, head_dim 128)", "",
              f"Kernel time per call: {GRAPH_CALLS} calls of the aotc.runtime entry point captured in one CUDA graph, "
              "the graph replayed (median over 30 CUDA-event pairs after a 30 ms warm-up), divided by "
              f"{GRAPH_CALLS}: no host time in either figure."
              + (f" **{len(TIMING_FALLBACKS)} timings fell back to {GRAPH_CALLS} back-to-back calls** (capture "
                 f"failed: {TIMING_FALLBACKS[0][:200]})" if TIMING_FALLBACKS else ""), "",
              ("| kind | paged spec | batch | q len | kv len | page | contiguous | paged | paged / contiguous speed | "
               "max abs diff |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench:
        unit = (f"{r['contiguous_ms'] * 1e3:.0f} µs", f"{r['paged_ms'] * 1e3:.0f} µs") if r["kind"] == "decode" else \
            (f"{r['contiguous_tflops']:.0f} TFLOP/s", f"{r['paged_tflops']:.0f} TFLOP/s")
        lines.append(f"| {r['kind']} | {r['spec']} | {r['batch']} | {r['q_len']} | {r['kv_len']} | {r['page_size']} | {unit[0]} | "
                     f"{unit[1]} | {r['paged_vs_contiguous']:.3f}x | {r['max_abs_diff']:.1e} |")
    fi_rows = [r for r in bench if "flashinfer_ms" in r]
    if fi_rows:
        lines += ["", f"## aotc paged vs FlashInfer {flashinfer} paged FA2, same pages and block tables", "",
                  ("FlashInfer: `BatchDecodeWithPagedKVCacheWrapper` / `BatchPrefillWithPagedKVCacheWrapper` "
                   "(backend \"fa2\", NHD, causal prefill), planned once per case, `run` timed as above "
                   "(plan outside the timing). Speed ratio = FlashInfer time / aotc paged time (> 1: aotc faster)."), "",
                  ("| kind | paged spec | batch | q len | kv len | page | aotc paged µs | FlashInfer µs | "
                   "aotc / FlashInfer speed | max abs diff |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for r in fi_rows:
            lines.append(f"| {r['kind']} | {r['spec']} | {r['batch']} | {r['q_len']} | {r['kv_len']} | {r['page_size']} | "
                         f"{r['paged_ms'] * 1e3:.0f} | {r['flashinfer_ms'] * 1e3:.0f} | {r['paged_vs_flashinfer']:.3f}x "
                         f"| {r['flashinfer_max_abs_diff']:.1e} |")
    ab_rows = [r for r in bench if "baseline_ms" in r]
    if ab_rows and baseline:
        res = baseline.get("resources", {})
        lines += ["", f"## Paged vs the baseline tree's paged kernel ({baseline.get('revision') or baseline.get('tree')})", "",
                  ("Same inputs, same process; each row times the contiguous twin, then the two paged kernels in "
                   "alternating order (kernels reloaded from their caches between them). Resources as stored for "
                   "the target run here: " + "; ".join(
                       f"{n}: new {r['new']['registers']} regs / {r['new']['spills_bytes']} B spill, baseline "
                       f"{r['baseline']['registers']} / {r['baseline']['spills_bytes']} ({r['new']['arch']})"
                       for n, r in res.items())), "",
                  ("| pass | paged spec | batch | q len | kv len | page | contiguous | baseline paged | paged | "
                   "baseline / contiguous | paged / contiguous | paged / baseline |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ab_rows:
            lines.append(f"| {r['pass']} | {r['spec']} | {r['batch']} | {r['q_len']} | {r['kv_len']} | {r['page_size']} | "
                         f"{r['contiguous_tflops']:.0f} | {r['baseline_tflops']:.0f} | {r['paged_tflops']:.0f} | "
                         f"{r['baseline_vs_contiguous']:.3f}x | {r['paged_vs_contiguous']:.3f}x | "
                         f"{r['paged_vs_baseline']:.3f}x |")
    (out / f"fmha_{slug}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--flashinfer", action="store_true",
                        help="also time FlashInfer's paged FA2 kernels on the same inputs (JIT-built here)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--decode-only", action="store_true",
                      help="build, check and time only the paged decode kernel and its contiguous twin; "
                           "writes fmha_<card>_paged_decode.md/.json")
    only.add_argument("--prefill-only", action="store_true",
                      help="build, check and time only the paged chunked-prefill kernels and their contiguous "
                           "twins; writes fmha_<card>_paged_prefill.md/.json")
    parser.add_argument("--baseline", metavar="TREE_OR_REV",
                        help="also time the chunked-prefill kernels of an older aotc tree (a directory or a git "
                             "revision of this checkout), built into <cache-dir>-baseline, on every prefill row")
    parser.add_argument("--passes", type=int, default=1, help="time every prefill shape this many times")
    args = parser.parse_args(argv)
    if args.baseline and args.decode_only:
        parser.error("--baseline times the chunked-prefill kernels; drop --decode-only")
    import torch

    built = build(args.cache_dir, args.jobs, args.decode_only, args.prefill_only)
    new_caches = [args.cache_dir]
    baseline, ab = None, None
    if args.baseline:
        base_cache = args.cache_dir.parent / f"{args.cache_dir.name}-baseline"
        names = [n for n in built if n.split("/")[0] in FWD_PAGED and built[n]["dtype"] == "bf16"]
        baseline = build_baseline(args.baseline, base_cache, args.jobs, names)
        ab = (new_caches, [base_cache, *new_caches])  # the baseline cache holds only the paged kernels
        baseline["resources"] = {n: {"new": resources(new_caches, built, [n])[n],
                                     "baseline": resources([base_cache], built, [n])[n]} for n in names}
        print(f"resources: {baseline['resources']}", flush=True)
    use_caches(new_caches)
    card = torch.cuda.get_device_name(0)
    checks = correctness(built)
    fi = FlashInferPaged() if args.flashinfer else None
    bench = [] if args.skip_bench else benchmark(built, fi, args.decode_only, ab, args.passes)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, card, " ".join(["python3", *sys.argv]), built, checks, bench, fi and fi.version,
                 "_paged_decode" if args.decode_only else "_paged_prefill" if args.prefill_only else "_paged",
                 baseline)
    failed = [c for c in checks if not c["ok"]]
    print(f"correctness: {len(checks) - len(failed)}/{len(checks)} ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving-path proof and benchmark on a GPU (docs/runtime.md, "Serving engines"):

  build (any machine with nvcc and the build extras):  python tools/device_serving.py build CACHE_DIR [JOBS]
      the kernels below for sm90a (what an H100/H200 runs; the same templates build for sm_120a);
  run (GPU machine):  AOTC_CACHE_DIR=CACHE_DIR python3 tools/device_serving.py run OUT_DIR [--only=graphs,moe_cases,contexts,per_call,cold] [--cold-runs=N]
      one process: every op captured in a CUDA graph (torch.cuda.graph, global capture mode: an
      allocation, host copy or synchronization on the launch path invalidates the capture) and
      replayed with new input values against eager (fmha_fwd/fmha_decode batched and varlen,
      fmha_decode_paged, grouped_gemm, grouped_gemm_moe); the device-routed MoE GEMM against torch
      (empty experts, one expert with every token, E = 8/64/128, bf16 and fp16), each also captured
      and replayed with a new routing; launches with a second context current, from threads and on
      two GPUs when present; per-call host time of each op beside a raw cuLaunchKernel and torch
      SDPA's call on the same problem, and of the context check beside its alternatives. Then fresh processes for the cold
      start, aotc's steps beside a raw read + cuLibraryLoadData of the same cubin, in one process.
  report (here):  python tools/device_serving.py report RUN.json OUT.md
  all (GPU machine, one command):  python3 tools/device_serving.py all OUT_DIR [JOBS]
      build into a temporary cache (JOBS parallel compiles, default: every core), run, and write
      OUT_DIR/serving_<card>.json and .md (the card's name from torch.cuda.get_device_name).
Exit status 1 when a proof fails.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

T_PROCESS = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

FMHA_FWD = {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "bf16",
            "q_in_regs": False}
BUILD = [("fmha_fwd_m64n128/head_dim=128,dtype=bf16", "sm90a"), ("fmha_decode_m64n64/dtype=bf16", "sm90a"),
         ("moe_bf16_128x128/dtype=bf16", "sm90a"), ("moe_bf16_128x128/dtype=fp16", "sm90a"),
         ("fmha_paged_decode_m64n64/dtype=bf16", "sm90a"),
         ("fmha_fwd_m64n128/head_dim=128,dtype=bf16", "sm120a")]  # sm120a: device_runtime's wrong-target proof


# ---- build ----------------------------------------------------------------------------------------
def build(cache_dir: str, jobs: int) -> int:
    from aotc.arch import get_arch
    from aotc.build.pipeline import build as build_specs
    from aotc.build.spec import filter_specs, load_specs
    from aotc.cache import Cache

    specs = load_specs().specs
    cache, ok = Cache(cache_dir), True
    for arch in sorted({a for _, a in BUILD}):
        chosen = [s for pattern, a in BUILD if a == arch for s in filter_specs(specs, [pattern])]
        summary = build_specs(chosen, [get_arch(arch)], cache, jobs=jobs, progress=False)
        for r in summary.results:
            print(f"{r.status:7} {r.spec.name} {arch} {r.seconds:.1f}s", *(d.format() for d in r.diagnostics))
        ok &= summary.ok
    return 0 if ok else 1


# ---- helpers ----------------------------------------------------------------------------------------
def rel_err(out, ref) -> float:
    if not out.isfinite().all():
        return float("inf")
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def attention_ref(q, k, v, causal: bool):
    """float32 attention, [b, s, h, d] layouts, GQA by repeating k/v heads; causal aligned bottom-right."""
    import torch

    group = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
    s = qf @ kf.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
        s = s.masked_fill(~mask, float("-inf"))
    return (s.softmax(-1) @ vf).transpose(1, 2)


def moe_ref(a, b, offsets):
    import torch

    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float32, device=a.device)
    off = offsets.tolist()
    for e in range(b.shape[0]):
        if off[e + 1] > off[e]:
            out[off[e]:off[e + 1]] = a[off[e]:off[e + 1]].float() @ b[e].float().T
    return out


def route(logits, experts: int):
    """The routing an MoE layer does on the GPU: top-1 expert per token, tokens sorted by expert,
    int32 offsets [E+1]. Every step is a torch op: no host synchronization."""
    import torch

    expert = logits.argmax(-1)
    order = expert.argsort(stable=True)
    # scatter_add, not bincount: bincount reads its output size on the host (a sync, not capturable)
    counts = torch.zeros(experts, dtype=torch.int64, device=logits.device).scatter_add_(
        0, expert, torch.ones_like(expert))
    offsets = torch.zeros(experts + 1, dtype=torch.int32, device=logits.device)
    offsets[1:] = counts.cumsum(0).to(torch.int32)
    return order, offsets


# ---- CUDA graphs ------------------------------------------------------------------------------------
def graph_case(name: str, inputs: list, out, op, ref_fn) -> dict:
    """Eager once (warm-up), capture, then new input values: replay vs eager on the same values, both
    vs a float32 reference."""
    import torch

    op()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    entry: dict = {"case": name}
    try:
        with torch.cuda.graph(g):  # its own capture stream, capture_error_mode="global"
            op()
    except Exception as exc:  # noqa: BLE001 - recorded as a failed proof
        entry.update(ok=False, error=repr(exc)[:400])
        return entry
    for t in inputs:  # new values in the captured buffers
        t.copy_(torch.randn_like(t.float()).to(t.dtype) if t.is_floating_point() else t)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    replayed = out.clone()
    out.fill_(float("nan"))
    op()
    torch.cuda.synchronize()
    eager = out.clone()
    ref = ref_fn()
    entry.update(replay_equals_eager=bool(torch.equal(replayed, eager)),
                 max_abs_diff=float((replayed.float() - eager.float()).abs().max()),
                 rel_err_vs_ref=rel_err(replayed, ref))
    entry["ok"] = entry["replay_equals_eager"] and entry["rel_err_vs_ref"] < 2e-2
    return entry


def graphs(results: dict) -> None:
    import torch

    import aotc.runtime as rt
    from aotc.runtime import gemm

    torch.manual_seed(0)
    bf = {"device": "cuda", "dtype": torch.bfloat16}
    rows = []
    # fmha_fwd batched, causal
    q, k, v = (torch.randn(2, 512, h, 128, **bf) for h in (32, 8, 8))
    o = torch.empty_like(q)
    rows.append(graph_case("fmha_fwd batched b2 s512 h32/8 causal", [q, k, v], o,
                           lambda: rt.fmha_fwd(q, k, v, o, causal=True), lambda: attention_ref(q, k, v, True)))
    # fmha_fwd varlen
    lens = [300, 700]
    cu = torch.tensor([0, 300, 1000], dtype=torch.int32, device="cuda")
    qv, kv_, vv = (torch.randn(1000, h, 128, **bf) for h in (16, 4, 4))
    ov = torch.empty_like(qv)

    def varlen_ref(q_, k_, v_):
        parts, at = [], 0
        for n in lens:
            parts.append(attention_ref(q_[None, at:at + n], k_[None, at:at + n], v_[None, at:at + n], True)[0])
            at += n
        return torch.cat(parts)

    rows.append(graph_case("fmha_fwd varlen 2 seqs causal", [qv, kv_, vv], ov,
                           lambda: rt.fmha_fwd(qv, kv_, vv, ov, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=700,
                                               max_seqlen_k=700, causal=True),
                           lambda: varlen_ref(qv, kv_, vv)))
    # fmha_decode batched (split-KV: the workspace path)
    qd, kd, vd = torch.randn(4, 1, 32, 128, **bf), torch.randn(4, 4096, 8, 128, **bf), torch.randn(4, 4096, 8, 128, **bf)
    od = torch.empty_like(qd)
    rows.append(graph_case("fmha_decode batched b4 sq1 sk4096 h32/8 (split-KV)", [qd, kd, vd], od,
                           lambda: rt.fmha_decode(qd, kd, vd, od), lambda: attention_ref(qd, kd, vd, False)))
    # fmha_decode varlen, with a caller-provided workspace
    cuq = torch.tensor([0, 1, 2], dtype=torch.int32, device="cuda")
    cuk = torch.tensor([0, 1500, 4000], dtype=torch.int32, device="cuda")
    qdv, kdv, vdv = torch.randn(2, 32, 128, **bf), torch.randn(4000, 8, 128, **bf), torch.randn(4000, 8, 128, **bf)
    odv = torch.empty_like(qdv)
    ws = torch.zeros(64 << 20, dtype=torch.uint8, device="cuda")

    def decode_varlen_ref():
        return torch.cat([attention_ref(qdv[None, i:i + 1], kdv[None, a:b], vdv[None, a:b], False)[0]
                          for i, (a, b) in enumerate(((0, 1500), (1500, 4000)))])

    rows.append(graph_case("fmha_decode varlen 2 seqs (caller workspace)", [qdv, kdv, vdv], odv,
                           lambda: rt.fmha_decode(qdv, kdv, vdv, odv, cu_seqlens_q=cuq, cu_seqlens_k=cuk,
                                                  max_seqlen_q=1, max_seqlen_k=2500, workspace=ws),
                           decode_varlen_ref))
    # fmha_decode_paged: split-KV over a paged cache, workspace from torch's allocator, then the caller's
    rows += paged_graph_cases(bf)
    # grouped_gemm (lists): one packed output so one tensor can be compared
    shapes = [(128, 256, 512), (77, 256, 512), (300, 256, 512)]
    a_l = [torch.randn(m, kk, **bf) for m, _, kk in shapes]
    b_l = [torch.randn(n, kk, **bf) for _, n, kk in shapes]
    packed = torch.empty(sum(m for m, _, _ in shapes), 256, **bf)
    outs, at = [], 0
    for m, _, _ in shapes:
        outs.append(packed[at:at + m])
        at += m
    rows.append(graph_case("grouped_gemm 3 groups (lists)", a_l + b_l, packed,
                           lambda: rt.grouped_gemm(a_l, b_l, outs),
                           lambda: torch.cat([x.float() @ w.float().T for x, w in zip(a_l, b_l, strict=True)])))
    # grouped_gemm_moe: routing on the GPU inside the graph, the offsets never leave the device
    experts, tokens, hidden, n = 8, 1024, 512, 256
    logits = torch.randn(tokens, experts, device="cuda")
    x = torch.randn(tokens, hidden, **bf)
    w = torch.randn(experts, n, hidden, **bf) * 0.05
    xs, om = torch.empty_like(x), torch.empty(tokens, n, **bf)
    state = {}

    def moe_step():
        order, offsets = route(logits, experts)
        xs.copy_(x[order])
        state["offsets"] = offsets
        gemm.grouped_gemm_moe(xs, w, om, offsets)

    rows.append(graph_case("grouped_gemm_moe E8 T1024 (routing on the GPU in the graph)", [x, logits], om, moe_step,
                           lambda: moe_ref(xs, w, state["offsets"])))
    results["graphs"] = rows


def paged_graph_cases(bf: dict) -> list[dict]:
    """fmha_decode_paged captured and replayed: 3 requests (one empty) over pages in shuffled order."""
    import torch

    import aotc.runtime as rt

    page, hq, hkv, d, lens = 64, 32, 8, 128, [1000, 0, 2500]
    pages_per = [-(-n // page) for n in lens]
    width = max(pages_per)
    perm = torch.randperm(sum(pages_per) + 4, device="cuda").to(torch.int32)
    table = torch.zeros(len(lens), width, dtype=torch.int32, device="cuda")
    at = 0
    for i, p in enumerate(pages_per):
        table[i, :p] = perm[at:at + p]
        at += p
    kv_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    kc, vc = (torch.randn(perm.numel(), page, hkv, d, **bf) for _ in range(2))
    q, o = torch.randn(len(lens), 1, hq, d, **bf), torch.empty(len(lens), 1, hq, d, **bf)

    def ref():
        parts = []
        for i, n in enumerate(lens):
            if n == 0:
                parts.append(torch.zeros(1, 1, hq, d, device="cuda"))
                continue
            rows = table[i, :pages_per[i]].long()
            k_, v_ = (c[rows].reshape(-1, hkv, d)[:n][None] for c in (kc, vc))
            parts.append(attention_ref(q[i:i + 1], k_, v_, False))
        return torch.cat(parts)

    ws = torch.zeros(64 << 20, dtype=torch.uint8, device="cuda")
    return [graph_case("fmha_decode_paged 3 requests (one empty), pages shuffled", [q, kc, vc], o,
                       lambda: rt.fmha_decode_paged(q, kc, vc, table, kv_lens, o, max_kv_len=max(lens)), ref),
            graph_case("fmha_decode_paged, caller workspace", [q, kc, vc], o,
                       lambda: rt.fmha_decode_paged(q, kc, vc, table, kv_lens, o, max_kv_len=max(lens),
                                                    workspace=ws), ref)]


# ---- device-routed MoE vs torch -------------------------------------------------------------------------
def moe_cases(results: dict) -> None:
    import torch

    from aotc.runtime import gemm, ops

    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for experts in (8, 64, 128, 257):  # 257: the kernel's tile cursor walks 9 windows of 32 experts
            for case in ("random, some experts empty", "one expert takes every token",
                         "random, rows strided (lda = K + 64, ldd = N + 64)"):
                torch.manual_seed(experts)
                tokens, hidden, n = 16 * experts + 7, 256, 128
                if case.startswith("one"):
                    expert = torch.full((tokens,), experts // 2, device="cuda")
                else:  # only every third expert receives tokens
                    expert = torch.randint(0, experts, (tokens,), device="cuda") // 3 * 3
                counts = torch.bincount(expert, minlength=experts)
                offsets = torch.zeros(experts + 1, dtype=torch.int32, device="cuda")
                offsets[1:] = counts.cumsum(0).to(torch.int32)
                pad = 64 if "strided" in case else 0
                a = torch.randn(tokens, hidden + pad, device="cuda", dtype=dtype)[:, :hidden]
                b = torch.randn(experts, n, hidden, device="cuda", dtype=dtype) * 0.05
                out = torch.full((tokens, n + pad), float("nan"), device="cuda", dtype=dtype)[:, :n]
                kernel = gemm.grouped_gemm_moe(a, b, out, offsets)
                torch.cuda.synchronize()
                err = rel_err(out, moe_ref(a, b, offsets))
                # one launch per call: the GEMM derives the experts' problems itself
                launches = next(len(hit[2]) for key, hit in ops._fast.items()
                                if key[0] == "moe" and key[1] == a.data_ptr())
                # captured once, replayed with a new routing (new offsets and activations in the same
                # buffers): the GEMM kernel derives the per-expert problems inside the graph
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    gemm.grouped_gemm_moe(a, b, out, offsets)
                counts = torch.bincount(torch.randint(0, experts, (tokens,), device="cuda") // 2 * 2,
                                        minlength=experts)
                offsets[1:] = counts.cumsum(0).to(torch.int32)
                a.copy_(torch.randn_like(a))
                out.fill_(float("nan"))
                g.replay()
                torch.cuda.synchronize()
                replayed = out.clone()
                gemm.grouped_gemm_moe(a, b, out, offsets)
                torch.cuda.synchronize()
                equal = bool(torch.equal(replayed, out))
                err_replay = rel_err(replayed, moe_ref(a, b, offsets))
                rows.append({"dtype": str(dtype).split(".")[-1], "experts": experts, "tokens": tokens, "case": case,
                             "empty_experts": int((counts == 0).sum()), "kernel": kernel.name, "rel_err": err,
                             "launches_per_call": launches,
                             "graph_replay_new_routing_equals_eager": equal, "graph_rel_err": err_replay,
                             "ok": err < 1e-2 and equal and err_replay < 1e-2 and launches == 1})
    results["moe"] = rows


# ---- contexts ---------------------------------------------------------------------------------------
def contexts(results: dict) -> None:
    import threading

    import torch
    from cuda.bindings import driver as cu

    import aotc.runtime as rt

    bf = {"device": "cuda", "dtype": torch.bfloat16}
    q, k, v = (torch.randn(1, 256, h, 128, **bf) for h in (8, 8, 8))
    ref = attention_ref(q, k, v, True)
    err, other = _create_context(cu)
    assert int(err) == 0
    outs = []
    for _ in range(3):  # the other context is current on this thread between every call
        o = torch.empty_like(q)
        rt.fmha_fwd(q, k, v, o, causal=True)
        outs.append(o)
    still_other = int(cu.cuCtxGetCurrent()[1]) == int(other)
    cu.cuCtxPopCurrent()
    torch.cuda.synchronize()
    single = {"calls_with_other_context_current": 3, "caller_context_kept": still_other,
              "rel_err": max(rel_err(o, ref) for o in outs)}
    single["ok"] = still_other and single["rel_err"] < 2e-2
    workers, errors = 8, []
    outs_t = [torch.empty_like(q) for _ in range(workers)]
    torch.cuda.synchronize()
    barrier = threading.Barrier(workers)

    def worker(i: int) -> None:
        try:
            if i % 2:
                cu.cuCtxSetCurrent(other)  # odd threads: another context; even: none at all
            barrier.wait()
            for _ in range(10):
                rt.fmha_fwd(q, k, v, outs_t[i], causal=True)
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.cuda.synchronize()
    cu.cuCtxDestroy(other)
    threaded = {"threads": workers, "errors": errors, "rel_err": max(rel_err(o, ref) for o in outs_t)}
    threaded["ok"] = not errors and threaded["rel_err"] < 2e-2
    results["contexts"] = {"second_context_current": single, "threads": threaded}
    if torch.cuda.device_count() >= 2:
        results["contexts"]["two_gpus"] = two_gpus(q, k, v, ref)


def _create_context(cu):
    """A second context on device 0, made current on this thread (cuCtxCreate pushes it)."""
    dev = cu.cuDeviceGet(0)[1]
    try:
        return cu.cuCtxCreate(None, 0, dev)
    except TypeError:
        return cu.cuCtxCreate(0, dev)


def two_gpus(q, k, v, ref) -> dict:
    """Tensors on GPU 1 while GPU 0's context is current, alternating with calls on GPU 0, from one
    thread and from threads."""
    import threading

    import torch
    from cuda.bindings import driver as cu

    import aotc.runtime as rt

    q1, k1, v1 = (t.to("cuda:1") for t in (q, k, v))
    torch.cuda.set_device(0)
    before = int(cu.cuCtxGetCurrent()[1])
    o0, o1 = torch.empty_like(q), torch.empty_like(q1)
    for _ in range(3):
        rt.fmha_fwd(q, k, v, o0, causal=True)
        rt.fmha_fwd(q1, k1, v1, o1, causal=True)
    kept = int(cu.cuCtxGetCurrent()[1]) == before
    errors, outs = [], [torch.empty_like(q1 if i % 2 else q) for i in range(8)]

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                if i % 2:
                    rt.fmha_fwd(q1, k1, v1, outs[i], causal=True)
                else:
                    rt.fmha_fwd(q, k, v, outs[i], causal=True)
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in (0, 1):
        torch.cuda.synchronize(d)
    err = max(rel_err(o.to("cuda:0"), ref) for o in [o0, o1, *outs])
    return {"devices": 2, "caller_context_kept": kept, "errors": errors, "rel_err": err,
            "ok": kept and not errors and err < 2e-2}


# ---- per-call host time -------------------------------------------------------------------------------
def per_call(results: dict) -> None:
    import torch
    import torch.nn.functional as F
    from cuda.bindings import driver as cu
    from device_runtime import per_call_us

    import aotc.runtime as rt
    from aotc.runtime import gemm, ops

    bf = {"device": "cuda", "dtype": torch.bfloat16}
    q = torch.randn(1, 16, 1, 128, **bf)  # one CTA: GPU time << launch cost
    k, v, o = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    qd, kd, vd = torch.randn(1, 1, 8, 128, **bf), torch.randn(1, 256, 1, 128, **bf), torch.randn(1, 256, 1, 128, **bf)
    od = torch.empty_like(qd)
    a, w = torch.randn(64, 128, **bf), torch.randn(8, 128, 128, **bf)
    offsets = torch.arange(0, 72, 8, dtype=torch.int32, device="cuda")
    om = torch.empty(64, 128, **bf)
    kernel = rt.get_kernel("fmha_fwd", FMHA_FWD)
    kernel._prepared.clear()  # keep only this problem's Params: earlier problems' tensors are gone
    kernel._ready.clear()
    kernel._need.clear()
    ops._fast.clear()
    rt.fmha_fwd(q, k, v, o, params=FMHA_FWD)
    rt.fmha_decode(qd, kd, vd, od)
    gemm.grouped_gemm_moe(a, w, om, offsets)
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream().cuda_stream
    call = kernel.prepare_call(kernel.args_type.from_buffer_copy(next(iter(kernel._prepared))[1]), stream)
    fn, cs = kernel._function, cu.CUstream(stream)
    raw = lambda: cu.cuLaunchKernel(fn, *call[1:8], cs, call[9], 0)
    from aotc.runtime.device import _contexts, native

    primary = _contexts[0]
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        rt.fmha_fwd(q, k, v, o)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        sdpa = per_call_us(lambda: F.scaled_dot_product_attention(qt, kt, vt))
    rows = {
        "raw_cuLaunchKernel_cuda_bindings_us": per_call_us(raw),
        "torch_sdpa_flash_call_us": sdpa,
        "rt_fmha_fwd_us": per_call_us(lambda: rt.fmha_fwd(q, k, v, o)),
        "rt_fmha_fwd_explicit_params_us": per_call_us(lambda: rt.fmha_fwd(q, k, v, o, params=FMHA_FWD)),
        "rt_fmha_decode_us": per_call_us(lambda: rt.fmha_decode(qd, kd, vd, od)),
        "rt_grouped_gemm_moe_E8_us": per_call_us(lambda: gemm.grouped_gemm_moe(a, w, om, offsets)),
        "kernel_fire_prepared_call_us": per_call_us(lambda: kernel.fire(call)),
        "cuda_graph_replay_one_fmha_fwd_us": per_call_us(g.replay),
        # the launch path's context check and what it replaced or could be replaced by
        "context_check_ctypes_cuCtxGetCurrent_us": per_call_us(native().current_context),
        "cuCtxGetCurrent_cuda_bindings_us": per_call_us(cu.cuCtxGetCurrent),
        "cuCtxPushCurrent_plus_Pop_us": per_call_us(lambda: (cu.cuCtxPushCurrent(primary), cu.cuCtxPopCurrent())),
    }
    _, other = _create_context(cu)
    rows["kernel_fire_another_context_current_us"] = per_call_us(lambda: kernel.fire(call))  # push, launch, pop
    cu.cuCtxPopCurrent()
    cu.cuCtxDestroy(other)
    raw_us = rows["raw_cuLaunchKernel_cuda_bindings_us"]
    for key in ("rt_fmha_fwd_us", "rt_fmha_decode_us", "rt_grouped_gemm_moe_E8_us", "torch_sdpa_flash_call_us"):
        rows[key.replace("_us", "_vs_raw")] = round(rows[key] / raw_us, 3)
    results["per_call"] = rows


# ---- cold start ---------------------------------------------------------------------------------------
def cold_one(out_json: str, cubin_path: str, kind: str) -> None:
    """One fresh process: torch + context first (not aotc's), then either aotc's steps to a finished
    first launch (kind "aotc") or a raw read + cuLibraryLoadData + cuLibraryGetKernel +
    cuKernelGetFunction of the same cubin (kind "raw"), each as the first CUDA-driver work of the
    process through cuda.bindings: whichever goes first in a process pays the bindings' first-call
    set-up, so each side is timed in processes of its own (cold() alternates them)."""
    t0 = time.perf_counter()
    import torch

    q = torch.randn(1, 128, 8, 128, device="cuda", dtype=torch.bfloat16)
    k, v, o = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    torch.cuda.synchronize()
    t_ctx = time.perf_counter()
    from cuda.bindings import driver as cu

    t_bindings = time.perf_counter()
    row: dict = {"kind": kind, "torch_and_context_ms": (t_ctx - t0) * 1e3,
                 "import_cuda_bindings_ms": (t_bindings - t_ctx) * 1e3, "python_start_to_main_ms": (t0 - T_PROCESS) * 1e3}
    if kind == "raw":
        t = time.perf_counter()
        data = Path(cubin_path).read_bytes()
        err, lib = cu.cuLibraryLoadData(data, None, None, 0, None, None, 0)
        t_first = time.perf_counter()
        err2, kern = cu.cuLibraryGetKernel(lib, b"aotc_kernel")
        err3, _fn = cu.cuKernelGetFunction(kern)
        assert int(err) == int(err2) == int(err3) == 0
        row["raw_read_and_load_ms"] = (time.perf_counter() - t) * 1e3
        row["raw_read_and_cuLibraryLoadData_ms"] = (t_first - t) * 1e3
        # the same again with a second copy: what a load costs once the bindings and the driver's
        # library loader have done their first-call work
        t = time.perf_counter()
        data = Path(cubin_path).read_bytes()
        err, lib2 = cu.cuLibraryLoadData(data, None, None, 0, None, None, 0)
        err2, kern = cu.cuLibraryGetKernel(lib2, b"aotc_kernel")
        err3, _fn = cu.cuKernelGetFunction(kern)
        assert int(err) == int(err2) == int(err3) == 0
        row["raw_second_load_ms"] = (time.perf_counter() - t) * 1e3
        Path(out_json).write_text(json.dumps(row))
        return
    if kind == "aotc_default":  # the call most code makes: no params, the op chooses among stored kernels
        t = time.perf_counter()
        import aotc.runtime as rt

        row["import_aotc_runtime_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        rt.fmha_fwd(q, k, v, o)
        torch.cuda.synchronize()
        row["first_call_without_params_ms"] = (time.perf_counter() - t) * 1e3
        row["default_total_ms"] = row["import_aotc_runtime_ms"] + row["first_call_without_params_ms"]
        row["aotc_modules"] = sum(m.startswith("aotc") for m in sys.modules)
        Path(out_json).write_text(json.dumps(row))
        return
    from device_runtime import GcClock, RegionProfile

    gc_clock = GcClock()  # after torch's import, GC passes walk its objects: part of what aotc's steps pay
    gc.callbacks.append(gc_clock)
    steps: dict[str, float] = {}
    # where torch left the collector's counters, and how many collections of each generation aotc's
    # steps then started: whether a middle-generation pass (over torch's young objects) falls in them
    row["gc_count_before"] = list(gc.get_count())
    collections = [g["collections"] for g in gc.get_stats()]
    profile = RegionProfile()
    t = time.perf_counter()
    import aotc.runtime as rt
    from aotc.runtime import launch, registry

    row["import_aotc_runtime_ms"] = (time.perf_counter() - t) * 1e3
    def timer(name: str):
        real = getattr(registry, name)

        def timed(*a, **kw):
            s = time.perf_counter()
            try:
                return real(*a, **kw)
            finally:
                steps[name] = steps.get(name, 0.0) + (time.perf_counter() - s) * 1e3
        return timed

    for name in ("locate", "find", "read_cubin", "read_blob", "load_helper", "check_cubin_target", "load_cubin"):
        if hasattr(registry, name):  # the module-level names get_kernel's path calls
            setattr(registry, name, timer(name))
    init = launch.Kernel.__init__

    def timed_init(self, *a, **kw):
        s = time.perf_counter()
        init(self, *a, **kw)
        steps["Kernel()"] = (time.perf_counter() - s) * 1e3

    launch.Kernel.__init__ = timed_init
    t = time.perf_counter()
    kernel = rt.get_kernel("fmha_fwd", FMHA_FWD)
    row["get_kernel_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    rt.fmha_fwd(q, k, v, o, params=FMHA_FWD)
    torch.cuda.synchronize()
    row["first_launch_ms"] = (time.perf_counter() - t) * 1e3
    profile.stop()
    row["gc_collections_during_aotc"] = [g["collections"] - c for g, c in zip(gc.get_stats(), collections, strict=True)]
    gc.callbacks.remove(gc_clock)
    row["aotc_total_ms"] = row["import_aotc_runtime_ms"] + row["get_kernel_ms"] + row["first_launch_ms"]
    row["gc_during_aotc_ms"] = gc_clock.total * 1e3
    row["get_kernel_steps_ms"] = steps
    row["kernel"] = kernel.name
    Path(out_json).write_text(json.dumps(row))


def cold(results: dict, out: Path, runs: int = 8) -> None:
    """`runs` fresh aotc processes and `runs` fresh raw-load processes, alternating, after a discarded
    aotc one (it writes the runtime folder's files and the lookup record); the goal's ratio is the
    median get_kernel over the median raw read + load, each the first driver work of its process.
    Then runs/2 processes whose first fmha_fwd passes no params, so the op chooses among the stored
    kernels (after a discarded one that searches and records the choice)."""
    import aotc.runtime as rt

    found = rt.find("fmha_fwd", FMHA_FWD, rt.query_device(0))
    cubin = out / "fmha_fwd.cubin"
    cubin.write_bytes(rt.host_kernel(found).cubin)
    # pip byte-compiles an installed package; this machine sets PYTHONDONTWRITEBYTECODE for sources.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "aotc")], check=True)
    rows: dict[str, list] = {"aotc": [], "raw": [], "aotc_default": []}
    # (kind, kept): each kind's first process is discarded (it searches and writes the records)
    plan = [("aotc", False)] + [("aotc", True), ("raw", True)] * runs
    plan += [("aotc_default", False)] + [("aotc_default", True)] * (runs // 2)  # fewer: a size, not a ratio
    for i, (kind, kept) in enumerate(plan):
        path = out / f"cold_{i}.json"
        subprocess.run([sys.executable, __file__, "cold-one", str(path), str(cubin), kind], check=True)
        if kept:
            rows[kind].append(json.loads(path.read_text()))
        path.unlink()
    with open(out / "importtime.txt", "w") as err:  # where the import part of a cold process goes
        subprocess.run([sys.executable, "-X", "importtime", __file__, "cold-one", str(out / "it.json"), str(cubin), "aotc"],
                       check=True, stderr=err)
    (out / "it.json").unlink()
    from device_runtime import profiled_run

    profiled_run(__file__, "cold-one", [str(cubin), "aotc"], out, "cold_profile.txt")
    cubin.unlink()

    def medians(group: list) -> dict:
        keys = [k for k in group[0] if k.endswith("_ms") and isinstance(group[0][k], float)]
        return {k: round(statistics.median(r[k] for r in group), 3) for k in keys}

    aotc_m, raw_m = medians(rows["aotc"]), medians(rows["raw"])
    merged = {**aotc_m, **{k: v for k, v in raw_m.items() if k.startswith("raw_")},
              "get_kernel_vs_raw": round(aotc_m["get_kernel_ms"] / raw_m["raw_read_and_load_ms"], 3)}
    if rows["aotc_default"]:
        default_m = medians(rows["aotc_default"])
        merged.update({f"default_{k}" if k == "import_aotc_runtime_ms" else k: v for k, v in default_m.items()
                       if k not in aotc_m or k == "import_aotc_runtime_ms"})
    results["cold"] = {"runs": rows["aotc"] + rows["raw"] + rows["aotc_default"], "medians": merged,
                       "step_medians_ms": {s: round(statistics.median(r["get_kernel_steps_ms"].get(s, 0)
                                                                      for r in rows["aotc"]), 3)
                                           for s in rows["aotc"][0]["get_kernel_steps_ms"]}}


# ---- run / report -----------------------------------------------------------------------------------
def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA GeForce RTX 5090' -> 'rtx5090': result files are named for the card."""
    words = [w.lower() for w in name.replace("NVIDIA", "").split() if w.lower() not in ("geforce", "80gb", "hbm3")]
    return "".join(words[:2]) or "gpu"


def run(out_dir: str, command: str = "AOTC_CACHE_DIR=<cache> python3 tools/device_serving.py run $OUT",
        build_s: float | None = None) -> int:
    import torch
    from cuda.bindings import driver as cu

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cu.cuInit(0)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "card": torch.cuda.get_device_name(0), "cc": list(torch.cuda.get_device_capability(0)),
                     "driver": int(cu.cuDriverGetVersion()[1]), "torch": torch.__version__,
                     "python": sys.version.split()[0],
                     "command": command, "build_s": build_s}
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    for step in (graphs, moe_cases, contexts, per_call):
        if only and step.__name__ not in only:
            continue
        try:
            step(results)
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others' numbers
            import traceback

            results.setdefault("errors", []).append(f"{step.__name__}: {exc!r}\n{traceback.format_exc()}")
    try:
        if not only or "cold" in only:
            cold(results, out, runs=int(next((a.split("=")[1] for a in sys.argv if a.startswith("--cold-runs=")), 8)))
    except Exception as exc:  # noqa: BLE001
        import traceback

        results.setdefault("errors", []).append(f"cold: {exc!r}\n{traceback.format_exc()}")
    path = out / f"serving_{card_slug(results['card'])}.json"
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "cold"}, indent=1))
    print("cold medians:", json.dumps(results.get("cold", {}).get("medians")),
          json.dumps(results.get("cold", {}).get("step_medians_ms")))
    oks = [r["ok"] for r in results.get("graphs", []) + results.get("moe", [])]
    oks += [c["ok"] for c in results.get("contexts", {}).values()]
    return 0 if all(oks) and "errors" not in results else 1


def run_all(out_dir: str, jobs: int) -> int:
    """Build, run and report in one command; the results are named for the card the device reports."""
    import os
    import tempfile

    out = Path(out_dir)
    cache = Path(tempfile.mkdtemp(prefix="aotc-serving-cache-"))  # not under OUT_DIR: only results go back
    t0 = time.perf_counter()
    if build(str(cache), jobs or os.cpu_count() or 1):
        return 1
    os.environ["AOTC_CACHE_DIR"] = str(cache)
    build_s = time.perf_counter() - t0
    rc = run(out_dir, f"python3 tools/device_serving.py all $OUT {jobs or ''}".strip(), build_s)
    for path in out.glob("serving_*.json"):
        report(str(path), str(path.with_suffix(".md")))
    return rc


def report(json_path: str, md_path: str) -> int:
    r = json.loads(Path(json_path).read_text())
    lines = [f"# aotc serving path on {r['card']}", "",
             (f"- date: {r['date']}; compute capability {r['cc'][0]}.{r['cc'][1]}, driver {r['driver']}, "
              f"torch {r['torch']}, Python {r['python']}"),
             (f"- command: `{r['command']}`" + (f" (build {r['build_s']:.0f} s of it)" if r.get("build_s") else
                                                 " (kernels built on that machine with "
                                                 "`python3 tools/device_serving.py build <cache> 16`)")), "",
             "## CUDA graphs: capture (torch.cuda.graph, global mode), replay with new inputs, vs eager", "",
             "| case | replay == eager (bitwise) | rel. error vs fp32 reference | ok |", "|---|---|---|---|"]
    for g in r.get("graphs", []):
        if "error" in g:
            lines.append(f"| {g['case']} | capture failed: {g['error'][:120]} | | False |")
        else:
            lines.append(f"| {g['case']} | {g['replay_equals_eager']} | {g['rel_err_vs_ref']:.2e} | {g['ok']} |")
    lines += ["", "## grouped_gemm_moe (int32 expert offsets on the device) vs torch", "",
              ("Eager on the case's routing; then captured in a CUDA graph and replayed after the offsets and "
               "activations were overwritten with a new routing (even experts only), against eager on it."), "",
              ("| dtype | E | tokens | case | launches per call | rel. error | replay, new routing: == eager / empty "
               "experts / rel. error | ok |"), "|---|---|---|---|---|---|---|---|"]
    for m in r.get("moe", []):
        lines.append(f"| {m['dtype']} | {m['experts']} | {m['tokens']} | {m['case']} | {m.get('launches_per_call', 2)} | "
                     f"{m['rel_err']:.2e} | {m.get('graph_replay_new_routing_equals_eager')} / {m['empty_experts']} / "
                     f"{m.get('graph_rel_err', float('nan')):.2e} | {m['ok']} |")
    c = r.get("contexts", {})
    if c:
        s, t = c["second_context_current"], c["threads"]
        lines += ["", "## Contexts", "",
                  (f"- a second context (cuCtxCreate) current on the calling thread during 3 `rt.fmha_fwd` calls: "
                   f"results rel. error {s['rel_err']:.2e}, caller's context still current after: "
                   f"{s['caller_context_kept']}; ok {s['ok']}"),
                  (f"- {t['threads']} threads x 10 calls, odd threads with the second context current, even ones "
                   f"with none: errors {t['errors'] or 'none'}, rel. error {t['rel_err']:.2e}; ok {t['ok']}")]
        if "two_gpus" in c:
            t2 = c["two_gpus"]
            lines.append(f"- two GPUs: tensors on GPU 1 with GPU 0's context current, alternating with GPU 0 calls, "
                         f"then 8 threads on both: errors {t2['errors'] or 'none'}, rel. error {t2['rel_err']:.2e}, "
                         f"caller's context kept {t2['caller_context_kept']}; ok {t2['ok']}")
    p = r.get("per_call", {})
    if p:
        lines += ["", "## Per-call host time, tiny problems (µs, median of 60 bursts of 200 calls), one process", "",
                  "| path | µs |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in p.items()]
    cold = r.get("cold", {})
    if cold:
        lines += ["", f"## Cold start, {len(cold['runs'])} fresh processes (ms, medians)", "",
                  "| step | median |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in cold["medians"].items()]
        lines += ["", "get_kernel's steps (ms, medians): " + ", ".join(f"{k} {v}" for k, v in
                                                                      cold["step_medians_ms"].items())]
    if r.get("errors"):
        lines += ["", "## Errors", "", *("```\n" + e + "\n```" for e in r["errors"])]
    Path(md_path).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "build":
        sys.exit(build(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
    if mode == "run":
        sys.exit(run(sys.argv[2]))
    if mode == "cold-one":
        cold_one(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    if mode == "report":
        sys.exit(report(sys.argv[2], sys.argv[3]))
    if mode == "all":
        sys.exit(run_all(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
    sys.exit(f"unknown mode {mode}")

"""The runtime's speed on a GPU, side by side with what it stands on, in one command:

  all (GPU machine, one command):  python3 tools/device_runtime.py all OUT_DIR [JOBS]
      builds the kernels below (and FlashInfer's cascade module where flashinfer is importable) into
      a temporary cache with JOBS parallel compiles (default: every core), then runs, in one go:
      correctness of fmha_fwd/fmha_decode/grouped_gemm vs torch and the clear error for an sm_120a
      kernel on another device; per-call host time of fmha_fwd, fmha_decode and grouped_gemm_moe (one
      launch) for an unchanged problem beside a raw cuLaunchKernel of the same prepared launch, torch SDPA's call and CUDA-graph replay (tools/device_serving.per_call); the cold start in
      fresh processes: import / get_kernel / first launch, and in processes of their own a raw read +
      cuLibraryLoadData of the same cubin (tools/device_serving.cold); the FlashInfer hook's install()
      and a served module's load beside a raw tvm_ffi.load_module of the same .so, in fresh processes.
      Writes OUT_DIR/runtime_<card>.json and .md (card from torch.cuda.get_device_name).
  build (any machine with nvcc):  python tools/device_runtime.py build CACHE_DIR [JOBS]
  run (GPU machine):  AOTC_CACHE_DIR=CACHE_DIR python3 tools/device_runtime.py run OUT_DIR [--only=PART,...]
      (`all` takes --only too) parts: check_fmha, check_grouped_gemm, check_wrong_target, per_call,
      moe_launch, cold, hook; e.g. --only=per_call,moe_launch repeats the per-call figures alone
  report (here):  python tools/device_runtime.py report RUN.json OUT.md
  cpu-cold (any machine, no GPU):  AOTC_CACHE_DIR=CACHE_DIR python tools/device_runtime.py cpu-cold OUT_DIR [RUNS]
      the driver-free part of the cold start in fresh processes (after torch's import if installed)
  hook (any machine with flashinfer):  AOTC_CACHE_DIR=CACHE_DIR python tools/device_runtime.py hook OUT_DIR [RUNS]
      the FlashInfer hook's part alone (no GPU needed: loading a module runs no kernel)
Exit status 1 when a check fails.
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
            "q_in_regs": False}  # as the catalog builds it (tile_specs/fmha_default.toml)
FMHA_DECODE = {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16"}
BUILD = [("fmha_fwd_m64n128/head_dim=128,dtype=bf16", ("sm90a", "sm120a")),
         ("fmha_decode_m64n64/dtype=bf16", ("sm90a",)),
         ("moe_bf16_128x128/dtype=bf16", ("sm90a",))]


# ---- build ----------------------------------------------------------------------------------------
FI_MODULE, FI_PRESET, FI_ARCH = "cascade", "ci", "sm90a"  # FlashInfer's cheapest real module (2 TUs)


def build(cache_dir: str, jobs: int = 1) -> int:
    """The kernels above, then FlashInfer's cascade module where flashinfer is importable."""
    from aotc.arch import get_arch
    from aotc.build.pipeline import build as build_specs
    from aotc.build.spec import filter_specs, load_specs
    from aotc.cache import Cache

    specs, cache, ok = load_specs().specs, Cache(cache_dir), True
    for arch in sorted({a for _, archs in BUILD for a in archs}):
        chosen = [sp for pattern, archs in BUILD if arch in archs for sp in filter_specs(specs, [pattern])]
        summary = build_specs(chosen, [get_arch(arch)], cache, jobs=jobs, progress=False)
        for r in summary.results:
            print(f"{r.status:7} {r.spec.name} {arch} {r.seconds:.1f}s", *(d.format() for d in r.diagnostics))
        ok &= summary.ok
    try:
        import flashinfer  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - absent or broken: the hook part is skipped with this note
        print(f"flashinfer not importable ({exc!r}): FlashInfer module not built, the hook part will be skipped")
        return 0 if ok else 1
    from aotc.build.flashinfer.module_build import build_modules

    fi = build_modules([FI_PRESET], [FI_ARCH], cache, jobs=jobs, progress=False)
    print(f"FlashInfer {FI_PRESET} for {FI_ARCH}: ok={fi.ok}")
    return 0 if ok and fi.ok else 1


# ---- helpers (device) -----------------------------------------------------------------------------
def rel_err(out, ref) -> float:
    import torch

    if not torch.isfinite(out).all():
        return float("inf")
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def attention_ref(q, k, v, causal: bool, scale: float):
    """float32 reference on [b, s, h, d] tensors (GQA by repeating kv heads; causal bottom-right)."""
    import torch

    group = q.shape[2] // k.shape[2]
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
    s = torch.einsum("bhqd,bhkd->bhqk", qf, kf) * scale
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", s.softmax(-1), vf).transpose(1, 2)


def check_fmha(results: dict) -> None:
    import torch

    import aotc.runtime as rt

    torch.manual_seed(0)
    cases = [("fmha_fwd", 2, 1024, 1024, 32, 8, True), ("fmha_fwd", 1, 777, 1500, 16, 16, False),
             ("fmha_decode", 4, 1, 4096, 32, 8, False), ("fmha_decode", 2, 4, 3000, 32, 8, True)]
    for family, b, sq, sk, hq, hkv, causal in cases:
        q = torch.randn(b, sq, hq, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, sk, hkv, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, sk, hkv, 128, device="cuda", dtype=torch.bfloat16)
        out = torch.full_like(q, float("nan"))
        fn = rt.fmha_fwd if family == "fmha_fwd" else rt.fmha_decode
        kernel = fn(q, k, v, out, causal=causal)
        torch.cuda.synchronize()
        err = rel_err(out, attention_ref(q, k, v, causal, 128 ** -0.5))
        name = f"{family} b{b} sq{sq} sk{sk} h{hq}/{hkv}{' causal' if causal else ''}"
        results["correctness"].append({"case": name, "kernel": kernel.name, "arch": kernel.arch, "rel_err": err,
                                       "ok": err < 1e-2})
    # whether any choice above searched the stored kernels (imports the lookup) or came from the choice
    # and lookup records of an earlier process (a second `run --only=check_fmha` with one runtime folder)
    results["fmha_choices_searched"] = "aotc.runtime.lookup" in sys.modules
    # varlen prefill: two sequences packed
    lens_q, lens_k = [300, 700], [500, 700]
    cu_q = torch.tensor([0, 300, 1000], device="cuda", dtype=torch.int32)
    cu_k = torch.tensor([0, 500, 1200], device="cuda", dtype=torch.int32)
    q = torch.randn(1000, 16, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1200, 4, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1200, 4, 128, device="cuda", dtype=torch.bfloat16)
    out = torch.full_like(q, float("nan"))
    kernel = rt.fmha_fwd(q, k, v, out, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=700, max_seqlen_k=700,
                         causal=True)
    torch.cuda.synchronize()
    refs, oq, ok_ = [], 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        refs.append(attention_ref(q[None, oq:oq + lq], k[None, ok_:ok_ + lk], v[None, ok_:ok_ + lk], True,
                                  128 ** -0.5)[0])
        oq, ok_ = oq + lq, ok_ + lk
    err = rel_err(out, torch.cat(refs))
    results["correctness"].append({"case": "fmha_fwd varlen 2 seqs causal", "kernel": kernel.name,
                                   "arch": kernel.arch, "rel_err": err, "ok": err < 1e-2})


def check_grouped_gemm(results: dict) -> None:
    import aotc.runtime as rt

    if not hasattr(rt, "grouped_gemm"):
        results["correctness"].append({"case": "grouped_gemm_sm80", "ok": None,
                                       "note": "no grouped_gemm entry point in this tree"})
        return
    import torch

    torch.manual_seed(1)
    shapes = [(128, 256, 512), (77, 512, 256), (1000, 128, 384), (16, 64, 64)]
    a = [torch.randn(m, kk, device="cuda", dtype=torch.bfloat16) for m, _, kk in shapes]
    b = [torch.randn(n, kk, device="cuda", dtype=torch.bfloat16) for _, n, kk in shapes]  # [N, K] weights
    out = [torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16) for m, n, _ in shapes]
    kernel = rt.grouped_gemm(a, b, out)
    torch.cuda.synchronize()
    for i, (x, y, o) in enumerate(zip(a, b, out, strict=True)):
        err = rel_err(o, x.float() @ y.float().T)
        results["correctness"].append({"case": f"grouped_gemm group {i} {shapes[i]}", "kernel": kernel.name,
                                       "arch": kernel.arch, "rel_err": err, "ok": err < 1e-2})


def check_wrong_target(results: dict) -> None:
    import aotc.runtime as rt
    from aotc.diagnostics import AotcError

    dev = rt.query_device(0)
    entry: dict = {"device_cc": list(dev.cc)}
    try:
        rt.get_kernel("fmha_fwd", FMHA_FWD, arch="sm120a")
        entry.update(ok=dev.cc == (12, 0), message="loaded")
    except AotcError as exc:
        d = exc.diagnostics[0]
        entry.update(ok=d.code == "AOTC-RT-003", code=d.code, message=d.message, fix=d.fix)
    # What the driver alone does with that cubin: lazy loading accepts it, the kernel lookup fails.
    from cuda.bindings import driver as cu

    found = rt.find("fmha_fwd", FMHA_FWD, rt.device_from_capability((12, 0)), arch="sm120a")
    cubin = rt.host_kernel(found).cubin
    err_load, lib = cu.cuLibraryLoadData(cubin, None, None, 0, None, None, 0)
    err_get, kern = cu.cuLibraryGetKernel(lib, b"aotc_kernel")
    err_fn = cu.cuKernelGetFunction(kern)[0] if int(err_get) == 0 else err_get
    entry["raw_driver"] = {"cuLibraryLoadData": int(err_load), "cuLibraryGetKernel": int(err_get),
                           "cuKernelGetFunction": int(err_fn)}
    results["wrong_target"] = entry


# ---- cold start (fresh process) -------------------------------------------------------------------
class RegionProfile:
    """cProfile of the timed steps of a fresh process when $AOTC_PROFILE_OUT names a file (the
    sorted statistics are written there): where a cold step's time goes on a host we can only send
    commands to. A profiled process's own figures are inflated and are never among the timed runs."""

    def __init__(self) -> None:
        import os

        self.path = os.environ.get("AOTC_PROFILE_OUT")
        self.profile = None
        if self.path:
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()

    def stop(self) -> None:
        if self.profile is None:
            return
        self.profile.disable()
        import pstats

        rows = pstats.Stats(self.profile).stats  # (file, line, name) -> (prim calls, calls, own s, cum s, callers)
        lines = [f"{'own ms':>8} {'cum ms':>8} {'calls':>6}  function"]
        for by, title in ((2, "by own time"), (3, "by cumulative time")):
            lines.append(f"-- {title}")
            for (file, line, name), (_, calls, own, cum, _callers) in sorted(
                    rows.items(), key=lambda kv: -kv[1][by])[:45]:
                lines.append(f"{own * 1e3:8.3f} {cum * 1e3:8.3f} {calls:6d}  {file}:{line}({name})")
        Path(self.path).write_text("\n".join(lines) + "\n")


def profiled_run(script: str, mode: str, args: list[str], out: Path, name: str, env: dict | None = None) -> None:
    """One more fresh `script mode OUT_JSON *args` process with RegionProfile on, its statistics in
    out/<name> (its own timings are discarded)."""
    import os

    env = {**(env or os.environ), "AOTC_PROFILE_OUT": str(out / name)}
    scratch = out / f"{name}.json"
    subprocess.run([sys.executable, script, mode, str(scratch), *args], check=True, env=env)
    scratch.unlink()


class GcClock:
    """Seconds spent in the cyclic garbage collector while installed in gc.callbacks."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


def cpu_cold(out_json: str) -> None:
    """One fresh process on a machine without a GPU: torch's import first (if installed), then the
    driver-free part of get_kernel's cold path for the first fmha_fwd stored in $AOTC_CACHE_DIR
    (checked against sm_90): import, find, the verified host half (cubin bytes + helper .so loaded)
    and the ELF target check, then loading the typed entry points. Wall and CPU time of each step
    (CPU time is what a loaded build machine still measures fairly), and the garbage collector's."""
    try:
        import torch  # noqa: F401 - what a serving process has imported before aotc
    except ImportError:
        pass
    import cuda.bindings.driver  # noqa: F401

    params = next(p for p in _stored_fmha_params())  # before the clock: not part of the serving path
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    marks = [(time.perf_counter(), time.process_time())]
    import aotc.runtime as rt
    from aotc.runtime import registry

    marks.append((time.perf_counter(), time.process_time()))
    dev = rt.device_from_capability((9, 0))
    found, checked = registry.locate("fmha_fwd", params, dev)  # an earlier process's record, else find()
    marks.append((time.perf_counter(), time.process_time()))
    host = registry.host_kernel(found, checked)
    marks.append((time.perf_counter(), time.process_time()))
    if checked is None or host.target != checked:  # as load_kernel
        from aotc.runtime.loader import check_cubin_target

        check_cubin_target(host.cubin, dev, found, host.target)
        registry.remember("fmha_fwd", params, None, dev, found, host.target)
    marks.append((time.perf_counter(), time.process_time()))
    rt.fmha_fwd, rt.tensor_info  # noqa: B018 - what the first launch through an entry point loads
    marks.append((time.perf_counter(), time.process_time()))
    gc.callbacks.remove(gc_clock)
    row = {}
    for i, name in enumerate(("import", "locate", "host_kernel", "check_target", "entry_points")):
        row[f"{name}_ms"] = round((marks[i + 1][0] - marks[i][0]) * 1e3, 3)
        row[f"{name}_cpu_ms"] = round((marks[i + 1][1] - marks[i][1]) * 1e3, 3)
    row["total_ms"] = round((marks[-1][0] - marks[0][0]) * 1e3, 3)
    row["total_cpu_ms"] = round((marks[-1][1] - marks[0][1]) * 1e3, 3)
    row["gc_ms"] = round(gc_clock.total * 1e3, 3)
    Path(out_json).write_text(json.dumps(row))


def _stored_fmha_params() -> list[dict]:
    import os

    root = Path(os.environ["AOTC_CACHE_DIR"]) / "v1" / "refs"  # read directly: no aotc import before the clock
    refs = [json.loads(p.read_text()) for p in sorted(root.glob("*/*.json"))]
    return [r["params"] for r in refs if r.get("family") == "fmha_fwd" and r.get("arch") == "sm90a"]


def cpu_cold_runs(out_dir: str, runs: int = 8) -> int:
    """`runs` fresh cpu_cold processes after a discarded one (it writes the helper and cubin files);
    prints and writes the medians."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(runs + 1):
        path = out / f"cpu_cold_{i}.json"
        subprocess.run([sys.executable, __file__, "cpu-cold-one", str(path)], check=True)
        if i:
            rows.append(json.loads(path.read_text()))
        path.unlink()
    medians = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    (out / "cpu_cold.json").write_text(json.dumps({"runs": rows, "medians": medians}, indent=1))
    print(json.dumps(medians))
    return 0


# ---- warm path --------------------------------------------------------------------------------------
def per_call_us(fn, calls: int = 200, bursts: int = 60) -> float:
    """Median host time per call over bursts short enough that the launch queue never fills."""
    import torch

    samples = []
    for _ in range(bursts):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls * 1e6)
    torch.cuda.synchronize()
    return round(statistics.median(samples), 3)


def moe_launch(results: dict) -> None:
    """grouped_gemm_moe is one launch (the GEMM derives the experts' problems from the offsets): its
    floor is one raw cuLaunchKernel of the same prepared launch; beside it, that launch replayed as a
    CUDA graph."""
    import torch
    from cuda.bindings import driver as cu

    from aotc.runtime import gemm, ops

    bf = {"device": "cuda", "dtype": torch.bfloat16}
    a, w, om = torch.randn(64, 128, **bf), torch.randn(8, 128, 128, **bf), torch.empty(64, 128, **bf)
    offsets = torch.arange(0, 72, 8, dtype=torch.int32, device="cuda")
    gemm.grouped_gemm_moe(a, w, om, offsets)
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream().cuda_stream
    kernel, calls = next(hit[1:3] for key, hit in ops._fast.items() if key[0] == "moe" and key[1] == a.data_ptr())
    assert len(calls) == 1, f"grouped_gemm_moe fired {len(calls)} launches per call; one is the design"
    (c,) = calls
    call = (c[0], *c[1:8], cu.CUstream(stream), c[9], 0)
    launch = cu.cuLaunchKernel
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        gemm.grouped_gemm_moe(a, w, om, offsets)
    rows = {"rt_grouped_gemm_moe_E8_us": per_call_us(lambda: gemm.grouped_gemm_moe(a, w, om, offsets)),
            "raw_cuLaunchKernel_moe_us": per_call_us(lambda: launch(*call)),
            "cuda_graph_replay_moe_us": per_call_us(g.replay)}
    rows["rt_grouped_gemm_moe_E8_vs_raw"] = round(rows["rt_grouped_gemm_moe_E8_us"] / rows["raw_cuLaunchKernel_moe_us"],
                                                  3)
    # where the rest goes: the signature key (the op's flat one; the per-tensor tuples it replaced), the
    # memo lookup, Kernel.fire of the prepared call
    key = gemm._moe_key(a, w, om, offsets, 1.0, None)

    def per_tensor_key():
        return ("moe", ops._tensor_key(a), ops._tensor_key(w), ops._tensor_key(om), ops._tensor_key(offsets), 1.0,
                ops._torch_stream(a.get_device()))

    rows.update(signature_key_flat_us=per_call_us(lambda: gemm._moe_key(a, w, om, offsets, 1.0, None)),
                signature_key_per_tensor_tuples_us=per_call_us(per_tensor_key),
                memo_lookup_us=per_call_us(lambda: ops._fast.get(key)),
                kernel_fire_us=per_call_us(lambda: kernel.fire(c)))
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(1000):
        launch(*call)
    stop.record()
    torch.cuda.synchronize()
    rows["gpu_us_per_launch_1000_back_to_back"] = round(start.elapsed_time(stop), 3)  # ms for 1000 = us each
    results["moe_launch"] = rows


# ---- FlashInfer hook (fresh processes; no kernel runs, so no GPU is needed) ---------------------------
def hook_one(out_json: str, raw_so: str, raw_first: bool) -> None:
    """One fresh process after `import flashinfer`: aotc.flashinfer.install(), then FlashInfer's own
    getter of the cascade module served from the aotc cache (aotc's part: the first
    get_aot_artifacts call, which resolves, verifies and links the module; then FlashInfer loads it),
    beside a raw tvm_ffi.load_module of a copy of the same .so (order alternated between processes)."""
    import flashinfer.cascade
    import tvm_ffi
    from flashinfer.jit import env as jit_env

    row: dict = {"raw_first": raw_first}

    def raw() -> None:
        t, c = time.perf_counter(), time.process_time()
        tvm_ffi.load_module(raw_so)
        row["raw_tvm_ffi_load_module_ms"] = (time.perf_counter() - t) * 1e3
        row["raw_tvm_ffi_load_module_cpu_ms"] = (time.process_time() - c) * 1e3

    if raw_first:
        raw()
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    marks = [(time.perf_counter(), time.process_time())]
    profile = RegionProfile()
    import aotc.flashinfer as afi

    afi.install()
    marks.append((time.perf_counter(), time.process_time()))
    served = jit_env.get_aot_artifacts(FI_MODULE)
    marks.append((time.perf_counter(), time.process_time()))
    module = flashinfer.cascade.get_cascade_module()
    marks.append((time.perf_counter(), time.process_time()))
    profile.stop()
    gc.callbacks.remove(gc_clock)
    if not raw_first:
        raw()
    for i, name in enumerate(("install", "aotc_serve", "flashinfer_load")):
        row[f"{name}_ms"] = (marks[i + 1][0] - marks[i][0]) * 1e3
        row[f"{name}_cpu_ms"] = (marks[i + 1][1] - marks[i][1]) * 1e3  # fair on a loaded machine too
    row.update(served_load_ms=(marks[3][0] - marks[1][0]) * 1e3, gc_during_aotc_ms=gc_clock.total * 1e3,
               served=bool(served), has_merge_state=hasattr(module, "merge_state"), status=afi.status()["served"])
    row["served_minus_raw_ms"] = row["served_load_ms"] - row["raw_tvm_ffi_load_module_ms"]
    Path(out_json).write_text(json.dumps(row))


def hook(results: dict, out: Path, runs: int = 7) -> None:
    """hook_one in `runs` fresh processes after two discarded ones: the first keeps the module's .so in
    the runtime folder, the second (seconds later: its ctime has settled) hashes it and writes the
    served record that every later process of an engine serves from."""
    import os

    try:
        import flashinfer
        import tvm_ffi  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the GPU machine may lack them: say so, measure the rest
        results["hook"] = {"skipped": f"flashinfer/tvm_ffi not importable: {exc!r}"}
        return
    from aotc.cache import Cache, default_cache_dir
    from aotc.flashinfer.index import SO_BLOB, flashinfer_arch_list, module_key

    cache = Cache(default_cache_dir())
    manifest = cache.resolve_ref(module_key(FI_MODULE, flashinfer.__version__, FI_ARCH))
    if manifest is None:
        results["hook"] = {"skipped": f"no {FI_MODULE} module for FlashInfer {flashinfer.__version__} {FI_ARCH} in "
                                      f"{cache.root} (`build` makes one where flashinfer is importable)"}
        return
    raw_so = out / f"raw_{FI_MODULE}.so"
    raw_so.write_bytes(cache.read_blob(manifest["blobs"][SO_BLOB]["sha256"]))
    import tempfile

    env = {**os.environ, "FLASHINFER_CUDA_ARCH_LIST": flashinfer_arch_list(FI_ARCH), "FLASHINFER_DISABLE_JIT": "1",
           "FLASHINFER_WORKSPACE_BASE": tempfile.mkdtemp(prefix="aotc-fi-home-")}  # the module's arch; no JIT cache
    rows = []
    for i in range(runs + 2):
        path = out / f"hook_{i}.json"
        subprocess.run([sys.executable, __file__, "hook-one", str(path), str(raw_so), str(i % 2)], check=True, env=env)
        if i >= 2:
            rows.append(json.loads(path.read_text()))
        path.unlink()
    profiled_run(__file__, "hook-one", [str(raw_so), "1"], out, "hook_profile.txt", env)
    raw_so.unlink()
    keys = [k for k in rows[0] if k.endswith("_ms")]
    results["hook"] = {"flashinfer": flashinfer.__version__, "runs": rows,
                       "medians": {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}}


# ---- one run ------------------------------------------------------------------------------------------
def compile_bytecode() -> dict:
    """Compile aotc's (and, where importable, FlashInfer's and tvm_ffi's) Python files to .pyc first, as
    `pip install` does: a host that sets PYTHONDONTWRITEBYTECODE, or a tree copied without __pycache__,
    would otherwise make every cold process compile those sources, and the figures would be those of
    no installed package. Python reads existing .pyc files whatever that variable says."""
    import importlib.util
    import os

    roots = [str(Path(__file__).resolve().parents[1] / "aotc")]
    for name in ("flashinfer", "tvm_ffi"):
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            roots.append(next(iter(spec.submodule_search_locations)))
    t = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *roots], check=False,
                        capture_output=True).returncode
    return {"dont_write_bytecode_env": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
            "compiled": [Path(r).name for r in roots], "compileall_exit": rc,
            "seconds": round(time.perf_counter() - t, 1)}


PARTS = ("check_fmha", "check_grouped_gemm", "check_wrong_target", "per_call", "moe_launch", "cold", "hook")


def only_parts() -> list[str] | None:
    """The parts named by --only=A,B (None: every part); exits naming the known parts on a typo."""
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    if only and set(only) - set(PARTS):
        sys.exit(f"--only: unknown part(s) {', '.join(sorted(set(only) - set(PARTS)))}; parts: {', '.join(PARTS)}")
    return only


def run(out_dir: str, command: str = "AOTC_CACHE_DIR=<cache> python3 tools/device_runtime.py run $OUT",
        build_s: float | None = None) -> int:
    only = only_parts()
    import torch
    from cuda.bindings import driver as cu
    from device_serving import card_slug, cold, per_call

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cu.cuInit(0)
    import cuda.bindings

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "card": torch.cuda.get_device_name(0), "cc": list(torch.cuda.get_device_capability(0)),
                     "driver": int(cu.cuDriverGetVersion()[1]), "torch": torch.__version__,
                     "cuda_bindings": cuda.bindings.__version__, "python": sys.version.split()[0],
                     "cpus": __import__("os").cpu_count(), "command": command, "build_s": build_s, "correctness": []}
    results["bytecode"] = compile_bytecode()
    steps = [check_fmha, check_grouped_gemm, check_wrong_target, per_call, moe_launch,
             lambda r: cold(r, out, runs=COLD_RUNS), lambda r: hook(r, out, runs=5)]
    for name, step in zip(PARTS, steps, strict=True):
        if only and name not in only:  # e.g. a repeat of the per-call part alone on a quieter host
            continue
        try:
            step(results)
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others' numbers
            import traceback

            results.setdefault("errors", []).append(f"{name}: {exc!r}\n{traceback.format_exc()}")
    path = out / f"runtime_{card_slug(results['card'])}.json"
    path.write_text(json.dumps(results, indent=1))
    report(str(path), str(path.with_suffix(".md")))
    print(path.with_suffix(".md").read_text())
    ok = all(c["ok"] is not False for c in results["correctness"]) and (
        results.get("wrong_target", {}).get("ok") or bool(only and "check_wrong_target" not in only))
    return 0 if ok and "errors" not in results else 1


COLD_RUNS = 12  # fresh processes of each kind (aotc, raw load)


def run_all(out_dir: str, jobs: int) -> int:
    """Build into a temporary cache, then run; the results are named for the card the device reports."""
    import os
    import tempfile

    only_parts()  # a typo in --only stops here, before the build

    cache = Path(tempfile.mkdtemp(prefix="aotc-runtime-cache-"))  # not under OUT_DIR: only results go back
    t0 = time.perf_counter()
    if build(str(cache), jobs or os.cpu_count() or 1):
        return 1
    os.environ["AOTC_CACHE_DIR"] = str(cache)
    return run(out_dir, f"python3 tools/device_runtime.py all $OUT {jobs or ''}".strip(), time.perf_counter() - t0)


# ---- report -------------------------------------------------------------------------------------------
GOALS = {  # docs/serving.md: what the serving path must reach (ms, µs, ratios)
    "cold_ms": 5.0, "get_kernel_vs_raw": 2.0, "per_call_us": 10.0, "install_ms": 2.0, "served_minus_raw_ms": 2.0}


def _met(value: float | None, goal: float) -> str:
    return "-" if value is None else ("yes" if value <= goal else "no")


def report(json_path: str, md_path: str) -> int:
    """The run's JSON as the markdown results file (card, date, command, goals met or not)."""
    r = json.loads(Path(json_path).read_text())
    pc = r.get("per_call", {})
    mp = r.get("moe_launch", r.get("moe_pair", {}))  # moe_pair: runs from before the single launch
    moe_goal = f"grouped_gemm_moe (device offsets, {'one launch' if 'moe_launch' in r else 'two launches'}) per call"
    moe_goal += " <= 10 µs"
    cold = r.get("cold", {}).get("medians", {})
    hk = r.get("hook", {})
    hm = hk.get("medians", {})
    build = f" (build {r['build_s']:.0f} s of it)" if r.get("build_s") else ""
    lines = [f"# aotc runtime speed on {r['card']}", "",
             (f"- date: {r['date']}; compute capability {r['cc'][0]}.{r['cc'][1]}, driver {r['driver']}, "
              f"torch {r['torch']}, cuda-bindings {r['cuda_bindings']}, Python {r['python']}, {r['cpus']} CPUs"),
             f"- command: `{r['command']}`{build}",
             *([(f"- bytecode: {', '.join(r['bytecode']['compiled'])} compiled to .pyc first, as pip install does "
                f"(PYTHONDONTWRITEBYTECODE {'set' if r['bytecode']['dont_write_bytecode_env'] else 'unset'} "
                f"on this host; compileall exit {r['bytecode']['compileall_exit']})")] if r.get("bytecode") else []),
             "", "## Against the goals", "",
             "| goal | measured | met |", "|---|---|---|"]
    rows = [("aotc's cold phases (import + get_kernel + first launch) <= 5 ms, median",
             cold.get("aotc_total_ms"), GOALS["cold_ms"], "ms"),
            ("get_kernel <= 2x a raw read + cuLibraryLoadData of the same cubin (medians, each in fresh processes of its own)",
             cold.get("get_kernel_vs_raw"), GOALS["get_kernel_vs_raw"], "x"),
            ("fmha_fwd per call <= 10 µs", pc.get("rt_fmha_fwd_us"), GOALS["per_call_us"], "µs"),
            ("fmha_decode per call <= 10 µs", pc.get("rt_fmha_decode_us"), GOALS["per_call_us"], "µs"),
            (moe_goal,
             mp.get("rt_grouped_gemm_moe_E8_us", pc.get("rt_grouped_gemm_moe_E8_us")), GOALS["per_call_us"], "µs"),
            ("FlashInfer hook install() <= 2 ms", hm.get("install_ms"), GOALS["install_ms"], "ms"),
            ("served module load within 2 ms of raw tvm_ffi.load_module", hm.get("served_minus_raw_ms"),
             GOALS["served_minus_raw_ms"], "ms")]
    for what, value, goal, unit in rows:
        shown = "not measured" if value is None else f"{value:.3f} {unit}"
        lines.append(f"| {what} | {shown} | {_met(value, goal)} |")
    lines += ["", "## Per-call host time, unchanged problem (µs, median of 60 bursts of 200 calls), one process", "",
              "| path | µs (or ratio) |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in {**pc, **mp}.items()]
    if r.get("cold"):
        c = r["cold"]
        lines += ["", f"## Cold start, {len(c['runs'])} fresh processes (ms, medians)", "",
                  ("Per process: torch's import and CUDA context first (not aotc's), then either aotc's steps "
                  "(`import aotc.runtime`, `get_kernel`, the first `fmha_fwd` to completion) or a raw read of the "
                  "same cubin + `cuLibraryLoadData` + `cuLibraryGetKernel` + `cuKernelGetFunction`, the two kinds "
                  "alternating, so that each is the process's first driver work through cuda.bindings (the first "
                  "call pays the bindings' and the driver's one-time set-up; `raw_second_load` is a second load "
                  "of the same cubin in the raw processes, without it). `*_without_params` / `default_*`: processes "
                  "whose first `fmha_fwd` passes no params, so the op chooses among the stored kernels (from the "
                  "record of an earlier process's search; a discarded first process searches). `gc_during_aotc` "
                  "is the garbage "
                  "collector's time inside aotc's steps (after torch's import every GC pass walks its objects)."), "",
                  "| step | median |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in c["medians"].items()]
        lines += ["", "get_kernel's steps (ms, medians): " + ", ".join(f"{k} {v}" for k, v in
                                                                      c["step_medians_ms"].items())]
    lines += ["", "## FlashInfer hook, fresh processes after `import flashinfer` (ms, medians)", ""]
    if "skipped" in hk:
        lines.append(f"Skipped: {hk['skipped']}")
    elif hk:
        lines += [(f"FlashInfer {hk['flashinfer']}, module `{FI_MODULE}` built for {FI_ARCH}, {len(hk['runs'])} runs; "
                  "`aotc_serve` is aotc's part of the served load (resolve, verify, link; from the served "
                  "record of an earlier process where one holds), `flashinfer_load` FlashInfer's own getter "
                  "after it; the raw load is of a copy of the same .so. Two discarded processes first: one "
                  "keeps the .so, one writes the served record."), "",
                  "| step | median |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in hm.items()]
    lines += ["", "## Correctness (bf16 vs float32 torch, outputs poisoned with NaN first)", "",
              "| case | kernel | arch | rel. error | ok |", "|---|---|---|---|---|"]
    for c in r.get("correctness", []):
        err = f"{c['rel_err']:.2e}" if "rel_err" in c else "-"
        lines.append(f"| {c['case']} | {c.get('kernel', '-')} | {c.get('arch', '-')} | {err} | {c.get('ok', '-')} |")
    wt = r.get("wrong_target", {})
    lines += ["", (f"sm_120a kernel requested here: `{wt.get('code')}` {wt.get('message')}; the driver alone on "
              f"the same cubin (CUresult codes): {wt.get('raw_driver')}")]
    if r.get("errors"):
        lines += ["", "## Errors", "", *[f"```\n{e}\n```" for e in r["errors"]]]
    Path(md_path).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "all":
        jobs = [a for a in sys.argv[3:] if not a.startswith("--")]  # --only=... may follow OUT_DIR
        sys.exit(run_all(arg, int(jobs[0]) if jobs else 0))
    if mode == "build":
        sys.exit(build(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 1))
    if mode == "run":
        sys.exit(run(arg))
    if mode == "report":
        sys.exit(report(arg, sys.argv[3]))
    if mode == "cpu-cold-one":
        cpu_cold(arg)
        sys.exit(0)
    if mode == "cpu-cold":
        sys.exit(cpu_cold_runs(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 8))
    if mode == "hook-one":
        hook_one(arg, sys.argv[3], sys.argv[4] == "1")
        sys.exit(0)
    if mode == "hook":
        out, results = Path(arg), {}
        out.mkdir(parents=True, exist_ok=True)
        hook(results, out, int(sys.argv[3]) if len(sys.argv) > 3 else 7)
        (out / "hook.json").write_text(json.dumps(results["hook"], indent=1))
        print(json.dumps(results["hook"].get("medians", results["hook"]), indent=1))
        sys.exit(0)
    sys.exit(f"unknown mode {mode}")

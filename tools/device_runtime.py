"""Runtime proof and benchmark. Two halves:

  build (CPU machine, needs the build extras):  python tools/device_runtime.py build CACHE_DIR
      builds the kernels the proof uses into CACHE_DIR through aotc.build, one compile at a time;
  run (GPU machine, runtime only):  AOTC_CACHE_DIR=CACHE_DIR python3 tools/device_runtime.py run OUT_DIR [--pyc]
      in fresh processes: correctness of every runnable family vs torch, the clear error for an
      sm_120a kernel on a non-SM120 device, cold start split into import / lookup / load / first
      launch, and warm per-call overhead against a raw cuLaunchKernel of the same cubin;
      --pyc byte-compiles aotc first (what pip does at install);
  report (here):  python tools/device_runtime.py report RUN.json OUT.md [PREVIOUS_RUN.json]
  cpu-cold (any machine, no GPU):  AOTC_CACHE_DIR=CACHE_DIR python tools/device_runtime.py cpu-cold OUT_DIR [RUNS]
      the driver-free part of the cold start in fresh processes (after torch's import if installed)
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

FMHA_FWD = {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "bf16",
            "q_in_regs": False}  # as the catalog builds it (tile_specs/fmha_default.toml)
FMHA_DECODE = {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16"}
BUILD = [("fmha_fwd_m64n128/head_dim=128,dtype=bf16", ("sm90a", "sm120a")),
         ("fmha_decode_m64n64/dtype=bf16", ("sm90a",)),
         ("moe_bf16_128x128/dtype=bf16", ("sm90a",))]


# ---- build (here) ---------------------------------------------------------------------------------
def build(cache_dir: str) -> int:
    from aotc.arch import get_arch
    from aotc.build.pipeline import Builder
    from aotc.build.spec import filter_specs, load_specs
    from aotc.cache import Cache

    builder = Builder(Cache(cache_dir))
    specs = load_specs().specs
    failed = 0
    for pattern, archs in BUILD:
        for spec in filter_specs(specs, [pattern]):
            for arch in archs:
                r = builder.safe_build_one(spec, get_arch(arch))  # one nvcc at a time on a shared machine
                print(f"{r.status:7} {spec.name} {arch} {r.seconds:.1f}s", *(d.format() for d in r.diagnostics))
                failed += r.status == "failed"
    return 1 if failed else 0


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


def cold(out_json: str) -> None:
    """One fresh process: torch import and CUDA context (not aotc's) then aotc's own steps."""
    t0 = time.perf_counter()
    import torch

    t_torch = time.perf_counter()
    q = torch.randn(1, 128, 8, 128, device="cuda", dtype=torch.bfloat16)
    k, v, o = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    torch.cuda.synchronize()
    t_ctx = time.perf_counter()
    import cuda.bindings.driver  # noqa: F401 - cuda-python itself: the floor under any runtime using it

    t_bindings = time.perf_counter()
    gc_clock = GcClock()  # after torch's import, a GC pass walks its objects: part of what aotc's steps pay
    gc.callbacks.append(gc_clock)
    import aotc.runtime as rt

    t_import = time.perf_counter()
    dev = rt.query_device(0)
    found = rt.find("fmha_fwd", FMHA_FWD, dev)
    t_lookup = time.perf_counter()
    kernel = rt.get_kernel("fmha_fwd", FMHA_FWD)  # memoized: the launch below reuses it
    t_load = time.perf_counter()
    rt.fmha_fwd(q, k, v, o, params=FMHA_FWD)
    torch.cuda.synchronize()
    t_first = time.perf_counter()
    gc.callbacks.remove(gc_clock)
    ms = lambda a, b: round((b - a) * 1e3, 3)
    Path(out_json).write_text(json.dumps({
        "python_start_to_main_ms": ms(T_PROCESS, t0), "import_torch_ms": ms(t0, t_torch),
        "cuda_context_and_inputs_ms": ms(t_torch, t_ctx), "import_cuda_bindings_ms": ms(t_ctx, t_bindings),
        "import_aotc_runtime_ms": ms(t_bindings, t_import),
        "lookup_ms": ms(t_import, t_lookup), "load_ms": ms(t_lookup, t_load),
        "first_launch_ms": ms(t_load, t_first), "aotc_total_ms": ms(t_bindings, t_first),
        "gc_during_aotc_ms": round(gc_clock.total * 1e3, 3), "arch": found.arch, "kernel": kernel.name,
        "dont_write_bytecode": sys.flags.dont_write_bytecode}))


def cpu_cold(out_json: str) -> None:
    """One fresh process on a machine without a GPU: torch's import first (if installed), then the
    driver-free part of aotc's cold path: find + verified host half + ELF target check + loading the
    typed entry points, for the first fmha_fwd stored in $AOTC_CACHE_DIR (checked against sm_90)."""
    try:
        import torch  # noqa: F401 - what a serving process has imported before aotc
    except ImportError:
        pass
    import cuda.bindings.driver  # noqa: F401

    t0 = time.perf_counter()
    import aotc.runtime as rt

    t_import = time.perf_counter()
    dev = rt.device_from_capability((9, 0))
    params = next(p for p in _stored_fmha_params())
    found = rt.find("fmha_fwd", params, dev)
    t_lookup = time.perf_counter()
    from aotc.runtime.loader import check_cubin_target

    check_cubin_target(rt.host_kernel(found).cubin, dev, found)
    t_load = time.perf_counter()
    rt.fmha_fwd, rt.tensor_info  # noqa: B018 - what the first launch through an entry point loads
    t_ops = time.perf_counter()
    ms = lambda a, b: round((b - a) * 1e3, 3)
    Path(out_json).write_text(json.dumps({"import_ms": ms(t0, t_import), "lookup_ms": ms(t_import, t_lookup),
                                          "load_ms": ms(t_lookup, t_load), "entry_points_ms": ms(t_load, t_ops),
                                          "total_ms": ms(t0, t_ops)}))


def _stored_fmha_params() -> list[dict]:
    from aotc.cache import Cache, default_cache_dir

    return [r["params"] for r in Cache(default_cache_dir()).refs()
            if r.get("family") == "fmha_fwd" and r.get("arch") == "sm90a"]


def cpu_cold_runs(out_dir: str, runs: int = 8) -> int:
    """`runs` fresh cpu_cold processes after a discarded one; prints and writes the medians."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(runs + 1):
        path = out / f"cpu_cold_{i}.json"
        subprocess.run([sys.executable, __file__, "cpu-cold-one", str(path)], check=True)
        if i:
            rows.append(json.loads(path.read_text()))
        path.unlink()
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
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


def warm(results: dict) -> None:
    import torch
    from cuda.bindings import driver as cu

    import aotc.runtime as rt

    q = torch.randn(1, 16, 1, 128, device="cuda", dtype=torch.bfloat16)  # one CTA: GPU time << launch cost
    k, v, o = torch.randn_like(q), torch.randn_like(q), torch.empty_like(q)
    small = rt.get_kernel("fmha_fwd", FMHA_FWD)
    small._prepared.clear()  # keep only this problem's prepared Params
    small._ready.clear()
    small._need.clear()
    kernel = rt.fmha_fwd(q, k, v, o, params=FMHA_FWD)
    torch.cuda.synchronize()
    (_, args_key), prepared = next(iter(kernel._prepared.items()))
    args = kernel.args_type.from_buffer_copy(args_key)
    stream = cu.CUstream(0)
    fn, g, b = kernel._function, prepared.grid, prepared.block
    raw = lambda: cu.cuLaunchKernel(fn, g[0], g[1], g[2], b[0], b[1], b[2], prepared.smem, stream,
                                    prepared.kernel_params, 0)
    ts = torch.cuda.current_stream().cuda_stream
    key = rt.kernel_key("fmha_fwd", FMHA_FWD)  # the pre-frozen hot-path key: get_kernel(key) is one attribute read
    rows = {
        "raw_cuLaunchKernel_us": per_call_us(raw),
        "kernel_launch_us": per_call_us(lambda: kernel.launch(args, 0)),
        "get_kernel_plus_launch_us": per_call_us(lambda: rt.get_kernel("fmha_fwd", FMHA_FWD).launch(args, 0)),
        "get_kernel_key_plus_launch_us": per_call_us(lambda: rt.get_kernel(key).launch(args, 0)),
        "get_kernel_lookup_only_us": per_call_us(lambda: rt.get_kernel("fmha_fwd", FMHA_FWD), calls=2000),
        "get_kernel_key_lookup_only_us": per_call_us(lambda: rt.get_kernel(key), calls=2000),
        "fmha_fwd_op_explicit_params_us": per_call_us(lambda: rt.fmha_fwd(q, k, v, o, params=FMHA_FWD, stream=ts)),
        "fmha_fwd_op_auto_select_us": per_call_us(lambda: rt.fmha_fwd(q, k, v, o, stream=ts)),
    }
    rows["ratio_get_kernel_plus_launch_vs_raw"] = round(rows["get_kernel_plus_launch_us"]
                                                         / rows["raw_cuLaunchKernel_us"], 3)
    rows["ratio_get_kernel_key_plus_launch_vs_raw"] = round(rows["get_kernel_key_plus_launch_us"]
                                                             / rows["raw_cuLaunchKernel_us"], 3)
    rows["ratio_kernel_launch_vs_raw"] = round(rows["kernel_launch_us"] / rows["raw_cuLaunchKernel_us"], 3)
    results["warm"] = rows


def run(out_dir: str) -> int:
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "card": torch.cuda.get_device_name(0),
                     "torch": torch.__version__, "python": sys.version.split()[0], "correctness": [],
                     "command": "AOTC_CACHE_DIR=<cache> python3 tools/device_runtime.py run $OUT"}
    import cuda.bindings

    results["cuda_bindings"] = cuda.bindings.__version__
    # A pip install byte-compiles the package; a source tree under PYTHONDONTWRITEBYTECODE=1 (as on the
    # lent GPU machine) never gets .pyc files, so every cold process would compile aotc's sources.
    results["pyc_precompiled"] = "--pyc" in sys.argv
    if results["pyc_precompiled"]:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "aotc")], check=True)
    cold_runs = []
    for i in range(6):  # the first run writes .pyc files (pip does that at install) and the helper file
        path = out / f"cold_{i}.json"
        subprocess.run([sys.executable, __file__, "cold", str(path)], check=True)
        if i:
            cold_runs.append(json.loads(path.read_text()))
        path.unlink()
    results["cold"] = cold_runs
    for step in (check_fmha, check_grouped_gemm, check_wrong_target, warm):
        try:
            step(results)
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others' numbers
            import traceback

            results.setdefault("errors", []).append(f"{step.__name__}: {exc!r}\n{traceback.format_exc()}")
    from device_serving import card_slug

    (out / f"runtime_{card_slug(results['card'])}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "cold"}, indent=1))
    keys = [k for k in cold_runs[0] if k.endswith("_ms")]
    print("cold start medians (ms):", {k: statistics.median(r[k] for r in cold_runs) for k in keys})
    ok = all(c["ok"] is not False for c in results["correctness"]) and results.get("wrong_target", {}).get("ok")
    return 0 if ok and "errors" not in results else 1


def _median(runs: list[dict], key: str) -> float | None:
    vals = [run[key] for run in runs if key in run]
    return statistics.median(vals) if vals else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(json_path: str, md_path: str, previous_path: str | None = None) -> int:
    """Render a run's JSON as the markdown result file (card, date and command included); with a
    previous run's JSON, its medians stand beside the new ones."""
    r = json.loads(Path(json_path).read_text())
    prev = json.loads(Path(previous_path).read_text()) if previous_path else None
    cold_keys = [k for k in r["cold"][0] if k.endswith("_ms")]
    pyc = "compiled before the cold runs (as pip does at install)" if r.get("pyc_precompiled") else "not precompiled"
    no_pyc_writes = {1: "set", 0: "unset"}.get(r["cold"][0].get("dont_write_bytecode"), "not recorded")
    lines = [f"# aotc runtime on {r['card']}", "",
             f"- date: {r['date']}; torch {r['torch']}, cuda-bindings {r['cuda_bindings']}, Python {r['python']}",
             (f"- command: `{r['command']}` (cache built on the CPU machine with "
             "`python tools/device_runtime.py build <cache>`)"),
             f"- .pyc files: {pyc}; PYTHONDONTWRITEBYTECODE in the cold processes: {no_pyc_writes}"]
    if prev:
        lines.append(f"- previous run beside it: {prev['date']} on {prev['card']}, same command")
    lines += ["", "## Correctness (bf16, vs float32 torch reference, outputs poisoned with NaN first)", "",
              "| case | kernel | arch | rel. error | ok |", "|---|---|---|---|---|"]
    for c in r["correctness"]:
        err = f"{c['rel_err']:.2e}" if "rel_err" in c else "-"
        lines.append(f"| {c['case']} | {c.get('kernel', '-')} | {c.get('arch', '-')} | {err} | "
                     f"{c.get('ok', '-')} {c.get('note', '')} |")
    wt = r.get("wrong_target", {})
    lines += ["", "## sm_120a kernel requested on this device", "",
              f"- aotc: `{wt.get('code')}`: {wt.get('message')}", f"- fix given: {wt.get('fix')}",
              f"- the driver alone on the same cubin (CUresult codes): {wt.get('raw_driver')}", "",
              f"## Cold start, fresh process, {len(r['cold'])} runs (ms; medians, then each run of this one)", ""]
    if prev:
        lines += ["| step | previous median | this median | this run's runs |", "|---|---|---|---|"]
    else:
        lines += ["| step | median | runs |", "|---|---|---|"]
    for k in cold_keys:
        vals = [run[k] for run in r["cold"]]
        this = f"{statistics.median(vals):.2f} | {', '.join(f'{v:.2f}' for v in vals)}"
        lines.append(f"| {k[:-3]} | {_fmt(_median(prev['cold'], k))} | {this} |" if prev else f"| {k[:-3]} | {this} |")
    lines += ["", ("`aotc_total` = import aotc.runtime + lookup + load + first launch to completion, after torch "
              "has created the CUDA context and cuda-python is imported (driver start-up and the cuda-python "
              "import are the floor under any runtime built on them; listed separately). A first, discarded "
              "process runs first; it writes .pyc files only where PYTHONDONTWRITEBYTECODE is unset."), "",
              "## Warm path, per call (µs, median of 60 bursts of 200 calls, host time)", ""]
    warm, prev_warm = r.get("warm", {}), (prev or {}).get("warm", {})
    if prev:
        lines += ["| path | previous µs / ratio | this µs / ratio |", "|---|---|---|"]
        lines += [f"| {k} | {prev_warm.get(k, '-')} | {v} |" for k, v in warm.items()]
    else:
        lines += ["| path | µs / ratio |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in warm.items()]
    if r.get("errors"):
        lines += ["", "## Errors", "", *[f"```\n{e}\n```" for e in r["errors"]]]
    Path(md_path).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "report":
        sys.exit(report(arg, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
    if mode == "build":
        sys.exit(build(arg))
    if mode == "cold":
        cold(arg)
        sys.exit(0)
    if mode == "cpu-cold-one":
        cpu_cold(arg)
        sys.exit(0)
    if mode == "cpu-cold":
        sys.exit(cpu_cold_runs(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 8))
    sys.exit(run(arg))

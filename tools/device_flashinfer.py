"""Device proof of the FlashInfer integration (run on a GPU machine, e.g. the lent H100): real
FlashInfer batch prefill and batch decode calls, first with their modules served by aotc from a
prebuilt cache (JIT disabled, every process start recorded), then with FlashInfer's own cold JIT,
each in a fresh process; outputs checked against a float32 reference; cold-start times compared.

    python tools/device_flashinfer.py --cache CACHE_DIR --out OUT_DIR [--runs 2]

Build the cache first (on any machine): aotc build --arch sm90a --flashinfer device_sm90
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Packages FlashInfer 0.7.2 imports when present but does not need for these calls; on a machine
# where they are absent or broken, make them look absent (FlashInfer then skips them).
OPTIONAL = ("cutlass", "cudnn", "cuda.tile", "nccl4py", "nccl_extensions")
# The problem: 32 query heads, 8 KV heads (GQA), head_dim 128, bf16, paged KV with 16-token pages.
HQ, HKV, D, PAGE = 32, 8, 128, 16
KV_LENS = (1024, 777, 2048, 300)


def hide_optional_packages() -> None:
    import importlib.abc
    import importlib.util

    def hidden(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in OPTIONAL)

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if hidden(name):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Hide())
    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: (None if hidden(name) else real_find_spec(name, package))


def spy_processes() -> list:
    """Record every process the child starts (ninja, nvcc, ...)."""
    started: list = []
    popen_init = subprocess.Popen.__init__

    def spy(self, args, *a, **k):
        started.append(args if isinstance(args, str) else [str(x) for x in args])
        return popen_init(self, args, *a, **k)

    subprocess.Popen.__init__ = spy
    for name in ("posix_spawn", "posix_spawnp", "fork", "system"):
        if hasattr(os, name):
            orig = getattr(os, name)
            setattr(os, name, lambda *a, _o=orig, _n=name, **k: (started.append([_n]), _o(*a, **k))[1])
    return started


def paged_problem(torch, device: str, seed: int = 0) -> dict:
    g = torch.Generator(device=device).manual_seed(seed)
    pages = [(n + PAGE - 1) // PAGE for n in KV_LENS]
    kv_indptr = torch.tensor([0, *torch.tensor(pages).cumsum(0).tolist()], dtype=torch.int32, device=device)
    total = int(kv_indptr[-1])
    kv_indices = torch.randperm(total, generator=g, device=device).to(torch.int32)
    last = torch.tensor([n - (p - 1) * PAGE for n, p in zip(KV_LENS, pages)], dtype=torch.int32, device=device)
    kv = torch.randn(total, 2, PAGE, HKV, D, generator=g, device=device, dtype=torch.bfloat16)
    q_lens = [min(n, 512) for n in KV_LENS]  # prefill: the last q_len tokens of each request
    qo_indptr = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    q = torch.randn(int(qo_indptr[-1]), HQ, D, generator=g, device=device, dtype=torch.bfloat16)
    qd = torch.randn(len(KV_LENS), HQ, D, generator=g, device=device, dtype=torch.bfloat16)
    return {"kv_indptr": kv_indptr, "kv_indices": kv_indices, "last": last, "kv": kv, "qo_indptr": qo_indptr,
            "q": q, "q_lens": q_lens, "qd": qd}


def reference(torch, p: dict) -> tuple:
    """float32 attention per request: causal prefill (bottom-right aligned) and single-token decode."""
    outs_p, outs_d = [], []
    for i, n in enumerate(KV_LENS):
        idx = p["kv_indices"][p["kv_indptr"][i]:p["kv_indptr"][i + 1]].long()
        k = p["kv"][idx, 0].reshape(-1, HKV, D)[:n].float().repeat_interleave(HQ // HKV, dim=1)
        v = p["kv"][idx, 1].reshape(-1, HKV, D)[:n].float().repeat_interleave(HQ // HKV, dim=1)
        q = p["q"][p["qo_indptr"][i]:p["qo_indptr"][i + 1]].float()
        s = torch.einsum("qhd,khd->hqk", q, k) / D**0.5
        ql = q.shape[0]
        mask = torch.arange(n, device=q.device)[None, :] > (torch.arange(ql, device=q.device)[:, None] + n - ql)
        s = s.masked_fill(mask[None], float("-inf"))
        outs_p.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), v))
        sd = torch.einsum("hd,khd->hk", p["qd"][i].float(), k) / D**0.5
        outs_d.append(torch.einsum("hk,khd->hd", sd.softmax(-1), v))
    return torch.cat(outs_p), torch.stack(outs_d)


def rel_err(torch, got, ref) -> float:
    return float((got.float() - ref).norm() / ref.norm())


def child(mode: str, cache: str) -> dict:
    t0 = time.perf_counter()
    started = spy_processes()
    hide_optional_packages()
    import torch

    torch.cuda.init()
    t_torch = time.perf_counter()
    import flashinfer

    t_import = time.perf_counter()
    out: dict = {"mode": mode, "flashinfer": flashinfer.__version__, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(), "cc": list(torch.cuda.get_device_capability())}
    if mode == "served":
        import aotc.flashinfer as afi

        afi.install(cache, on_miss="error")
    t_hook = time.perf_counter()
    p = paged_problem(torch, "cuda")
    ws = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    t_ready = time.perf_counter()
    prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD", backend="fa2")
    prefill.plan(p["qo_indptr"], p["kv_indptr"], p["kv_indices"], p["last"], HQ, HKV, D, PAGE, causal=True,
                 q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    o_p = prefill.run(p["q"], p["kv"])
    torch.cuda.synchronize()
    t_prefill = time.perf_counter()
    decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
    decode.plan(p["kv_indptr"], p["kv_indices"], p["last"], HQ, HKV, D, PAGE, q_data_type=torch.bfloat16,
                kv_data_type=torch.bfloat16)
    o_d = decode.run(p["qd"], p["kv"])
    torch.cuda.synchronize()
    t_decode = time.perf_counter()
    ref_p, ref_d = reference(torch, p)
    out |= {
        "seconds": {"torch_import_and_cuda_init": t_torch - t0, "import_flashinfer": t_import - t_torch,
                    "install_hook": t_hook - t_import, "first_prefill_result": t_prefill - t_ready,
                    "first_decode_result": t_decode - t_prefill,
                    "modules_to_first_results": t_decode - t_ready, "process_to_first_results": t_decode - t0},
        "rel_err": {"prefill": rel_err(torch, o_p, ref_p), "decode": rel_err(torch, o_d, ref_d)},
        "processes_started": started,
    }
    if mode == "served":
        import aotc.flashinfer as afi

        out["served"] = afi.status()["served"]
    return out


def run_child(mode: str, cache: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--cache", cache], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"mode": mode, "error": f"exit {proc.returncode}", "stderr": proc.stderr[-4000:]}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--child", choices=("served", "jit"))
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.cache), default=str))
        return 0
    results = []
    jit_home = Path(tempfile.mkdtemp(prefix="fi-jit-home-"))  # FlashInfer's JIT cache starts empty
    for i in range(args.runs):
        served_env = {**os.environ, "FLASHINFER_DISABLE_JIT": "1",
                      "FLASHINFER_WORKSPACE_BASE": tempfile.mkdtemp(prefix="fi-served-home-")}
        results.append({"run": i + 1, **run_child("served", str(Path(args.cache).resolve()), served_env)})
        results.append({"run": i + 1, **run_child("jit", "", {**os.environ, "FLASHINFER_WORKSPACE_BASE": str(jit_home)})})
        print(json.dumps(results[-2:], indent=1, default=str), flush=True)
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "cpu_count": os.cpu_count(), "command": " ".join(sys.argv), "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "flashinfer_h100.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

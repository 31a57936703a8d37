"""FlashInfer's SM120 FP4 GEMM module (sm_120a, 17 translation units) made ready two ways on the
same many-core host, side by side: FlashInfer's own JIT from a cold workspace, and aotc serving the
module it built (`aotc build --arch sm120a --flashinfer sm120`, cache in AOTC_CACHE_DIR) with JIT
disabled. Only `build_and_load()` is timed; no kernel runs (the host has no SM120 GPU).

    python3 tools/device_flashinfer_sm120_start.py OUT.json   (FlashInfer on PYTHONPATH)
"""

import json
import os
import subprocess
import sys
import time

CHILD = """
import json, subprocess, sys, time
from tools.device_flashinfer import hide_optional_packages
hide_optional_packages()
started = []
init = subprocess.Popen.__init__
def spy(self, args, *a, **k):
    started.append(str(args)[:100])
    return init(self, args, *a, **k)
subprocess.Popen.__init__ = spy
import flashinfer
if sys.argv[1] == "aotc":
    import aotc.flashinfer
    aotc.flashinfer.install(on_miss="error")
from flashinfer.jit.gemm import gen_gemm_sm120_module_cutlass_fp4
t = time.perf_counter()
module = gen_gemm_sm120_module_cutlass_fp4().build_and_load()
seconds = time.perf_counter() - t
print("RESULT " + json.dumps({"seconds": seconds, "module": type(module).__name__,
                              "processes": len(started), "ninja_or_nvcc_compiles": sum("ninja" in s for s in started)}))
"""


def run(mode: str, workspace: str) -> dict:
    env = {**os.environ, "FLASHINFER_CUDA_ARCH_LIST": "12.0a", "FLASHINFER_WORKSPACE_BASE": workspace}
    if mode == "aotc":
        env["FLASHINFER_DISABLE_JIT"] = "1"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"mode": mode, "error": proc.stderr[-2000:]}
    return {"mode": mode, "process_wall_s": round(wall, 2), **json.loads(lines[-1][len("RESULT "):])}


def main() -> None:
    results = [run("flashinfer_jit", "/tmp/fi-jit-cold"), run("aotc", "/tmp/fi-aotc-served")]
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=False).stdout
    record = {"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(), "nvcc": nvcc.splitlines()[-1],
              "results": results}
    with open(sys.argv[1], "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

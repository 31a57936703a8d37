"""The FlashInfer hook's cost, this tree against another (A/B), on any machine with flashinfer (no GPU:
loading a module runs no kernel), in interleaved fresh processes:

  AOTC_CACHE_DIR=CACHE python tools/hook_ab.py BASE_TREE OUT.json [PAIRS]

CACHE holds FlashInfer's `cascade` module for sm90a (`aotc build --arch sm90a --flashinfer ci
--cache-dir CACHE`). BASE_TREE is another copy of the repository with tools/device_runtime.py, e.g.
`git archive COMMIT aotc tools | tar -x -C BASE_TREE`. Each pair runs `device_runtime.py hook-one`
(install(), then FlashInfer's own getter of the served module beside a raw tvm_ffi.load_module of a
copy of the same .so) once from each tree, the side that goes first and whether the raw load goes
first alternating; a discarded first pair writes the .pyc files and the runtime folder. Bytecode is
written to PYTHONPYCACHEPREFIX (default: a folder under the temp dir) whatever
PYTHONDONTWRITEBYTECODE says, as after a pip install. Prints and writes the medians of each side (wall
and CPU time: CPU time is what a loaded machine still measures fairly) and of the per-pair differences.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE))
sys.path.insert(0, str(TREE / "tools"))

from device_runtime import FI_ARCH, FI_MODULE  # after the path setup

KEYS = ("install_ms", "install_cpu_ms", "aotc_serve_ms", "aotc_serve_cpu_ms", "flashinfer_load_ms",
        "flashinfer_load_cpu_ms", "raw_tvm_ffi_load_module_ms", "served_load_ms", "served_minus_raw_ms",
        "gc_during_aotc_ms")


def main(base: str, out_json: str, pairs: int = 15) -> int:
    import flashinfer

    from aotc.cache import Cache, default_cache_dir
    from aotc.flashinfer.index import SO_BLOB, flashinfer_arch_list, module_key

    cache = Cache(default_cache_dir())
    manifest = cache.resolve_ref(module_key(FI_MODULE, flashinfer.__version__, FI_ARCH))
    if manifest is None:
        sys.exit(f"no {FI_MODULE} module for FlashInfer {flashinfer.__version__} {FI_ARCH} in {cache.root}: "
                 f"aotc build --arch {FI_ARCH} --flashinfer ci --cache-dir {cache.root}")
    work = Path(tempfile.mkdtemp(prefix="aotc-hook-ab-"))
    raw_so = work / f"raw_{FI_MODULE}.so"
    raw_so.write_bytes(cache.read_blob(manifest["blobs"][SO_BLOB]["sha256"]))
    env = {**os.environ, "FLASHINFER_CUDA_ARCH_LIST": flashinfer_arch_list(FI_ARCH), "FLASHINFER_DISABLE_JIT": "1",
           "FLASHINFER_WORKSPACE_BASE": str(work / "fi-home"), "PYTHONDONTWRITEBYTECODE": "",
           "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX") or str(Path(tempfile.gettempdir()) /
                                                                                "aotc-hook-ab-pyc")}
    sides = {"base": Path(base).resolve() / "tools" / "device_runtime.py", "this": TREE / "tools" / "device_runtime.py"}
    rows: dict[str, list[dict]] = {"base": [], "this": []}
    for i in range(pairs + 1):
        order = ("base", "this") if i % 2 else ("this", "base")
        raw_first = "1" if (i // 2) % 2 else "0"
        for side in order:
            path = work / f"{side}_{i}.json"
            subprocess.run([sys.executable, str(sides[side]), "hook-one", str(path), str(raw_so), raw_first],
                           check=True, env=env)
            if i:
                rows[side].append(json.loads(path.read_text()))
            path.unlink()
    medians = {side: {k: round(statistics.median(r[k] for r in rs), 3) for k in KEYS} for side, rs in rows.items()}
    diffs = {k: round(statistics.median(t[k] - b[k] for b, t in zip(rows["base"], rows["this"])), 3) for k in KEYS}
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "pairs": pairs, "cpus": os.cpu_count(),
              "python": sys.version.split()[0], "flashinfer": flashinfer.__version__, "base": str(base),
              "medians": medians, "median_this_minus_base": diffs, "runs": rows}
    Path(out_json).write_text(json.dumps(result, indent=1))
    print(f"| step (ms, median of {pairs}) | base | this | this - base (median of pairs) |")
    print("|---|---|---|---|")
    for k in KEYS:
        print(f"| {k} | {medians['base'][k]} | {medians['this'][k]} | {diffs[k]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 15))

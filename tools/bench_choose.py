"""Tile choice cost without a GPU: in a fresh process, import aotc.runtime, then choose a
gemm_blockscaled_sm120 nvfp4 tile for N new problem sizes the way ops.choose does on a memo miss (a
device known by capability 12.0; no kernel load). Usage: bench_choose.py CACHE_DIR N; prints JSON.
Runs against older trees too (their select/stored_params API), for before/after figures."""
import json
import sys
import time

t0 = time.perf_counter()
import aotc.runtime as rt
from aotc.cache import Cache
from aotc.runtime.device import device_from_capability

t_import = time.perf_counter() - t0
rt.set_sources([rt.CacheSource(Cache(sys.argv[1]))])
dev = device_from_capability((12, 0))
family, n = "gemm_blockscaled_sm120", int(sys.argv[2])
match = {"a_dtype": "nvfp4", "b_dtype": "nvfp4"}
t1 = time.perf_counter()
chosen = []
try:
    from aotc.runtime.lookup import stored_candidates
    from aotc.runtime.tile_select import best
    for m in range(1, n + 1):
        cands = [f for f in stored_candidates(family, dev) if all(f.params.get(k) == v for k, v in match.items())]
        chosen.append(best(cands, {"m": m * 64, "n": 4096, "k": 4096}, 170).params["tile"])
    api = "new"
except ImportError:
    from aotc.runtime.select import select

    from aotc.runtime.lookup import find, stored_params
    for m in range(1, n + 1):
        cands = [p for p in stored_params(family, dev) if all(p.get(k) == v for k, v in match.items())]
        params = select(family, cands, {"m": m * 64, "n": 4096, "k": 4096}, dev, sm_count=170)
        find(family, params, dev)  # get_kernel's second lookup
        chosen.append(params["tile"])
    api = "old"
t_choose = time.perf_counter() - t1
print(json.dumps({"api": api, "import_ms": round(t_import * 1e3, 1), "choose_ms": round(t_choose * 1e3, 1),
                  "problems": n, "candidates": len(cands), "tiles": sorted({tuple(c) for c in chosen})}))

"""What the runtime's check of installed kernel wheels costs (aotc.runtime.wheel_verdicts): the wheel is
unpacked as pip would into a temporary site folder; one fresh process discovers it with no verdict kept
(the full check, SASS scan included), then --runs fresh processes each time importing the verdict module
and its first refusal() call (a kept verdict: a stat and a small read), and a further call. JSON on stdout.

    python tools/bench_wheel_verdicts.py --wheel dist/aotc_kernels_sm120a-*.whl --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROBE = """
import json, time
from importlib.metadata import entry_points
from aotc.runtime import installed_wheels as iw
ep = next(iter(entry_points(group=iw.ENTRY_POINT_GROUP)))
pkg, record = iw._package_dir(ep.value), iw._record(ep.dist)
a = time.perf_counter()
from aotc.runtime.wheel_verdicts import refusal
b = time.perf_counter()
why = refusal(pkg, record)
c = time.perf_counter()
refusal(pkg, record)
d = time.perf_counter()
print(json.dumps({"import_ms": (b - a) * 1e3, "first_ms": (c - b) * 1e3, "again_ms": (d - c) * 1e3, "why": why}))
"""
COLD = ("import json, time; from aotc.runtime.installed_wheels import discover; a = time.perf_counter(); "
        "f, r = discover(); print(json.dumps({'discover_s': time.perf_counter() - a, "
        "'found': [k.distribution for k in f], 'refused': {x.distribution: x.reason[:200] for x in r}}))")


def run(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aotc-bench-verdicts-") as tmp:
        site = Path(tmp) / "site"
        with zipfile.ZipFile(args.wheel) as zf:
            zf.extractall(site)
        env = {**os.environ, "AOTC_RUNTIME_DIR": str(Path(tmp) / "runtime"),
               "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        cold = run(COLD, env)
        warm = [run(PROBE, env) for _ in range(args.runs)]
    summary = {k: {"median": round(statistics.median(r[k] for r in warm), 3),
                   "min": round(min(r[k] for r in warm), 3), "max": round(max(r[k] for r in warm), 3)}
               for k in ("import_ms", "first_ms", "again_ms")}
    print(json.dumps({"wheel": args.wheel.name, "bytes": args.wheel.stat().st_size, "machine": platform.node(),
                      "cpus": os.cpu_count(), "python": platform.python_version(), "runs": args.runs,
                      "first_discovery": cold, "kept_verdict": summary,
                      "verdicts": sorted({r["why"] for r in warm})}, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Build FlashInfer's SM120 FP4 modules with `aotc build --flashinfer` on a many-core machine that has
# a CUDA toolkit but no package index (e.g. the lent GPU host; no GPU is used):
#   carried: .carry/fi_whl/*.whl (zstandard, apache-tvm-ffi, ...), .carry/flashinfer.tar.xz
#   bash tools/device_flashinfer_build.sh OUT_DIR [PRESET]
set -euo pipefail
out=${1:?OUT_DIR}; preset=${2:-sm120_fp4}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fi-site .carry/fi_whl/*.whl
tar -xJf .carry/flashinfer.tar.xz -C /tmp/fi-site
# FlashInfer imports optional heavy packages when present; make them look absent in every process
# (the build's worker process too), as tools/device_flashinfer.py does for the serving proof.
cat > /tmp/fi-site/sitecustomize.py <<PYEOF
import sys
sys.path.insert(0, "$PWD")
from tools.device_flashinfer import hide_optional_packages
hide_optional_packages()
PYEOF
export PYTHONPATH=/tmp/fi-site:$PWD
nvcc --version | tail -1
start=$(date +%s)
python3 -m aotc.cli build --arch sm120a --flashinfer "$preset" --cache-dir /tmp/fi-cache -j 16 --json > "$out/flashinfer_build_sm120.json" || true
echo "wall $(( $(date +%s) - start )) s"
python3 - "$out/flashinfer_build_sm120.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("ok", d["ok"], "built", d["built"], "hit", d["hit"], "failed", d["failed"], "seconds", d["seconds"], "jobs", d["jobs"])
for r in d["results"]:
    print(r["status"], r.get("module") or r.get("call"), r["arch"], r.get("seconds"), "cubins", r.get("cubins"),
          "so", r.get("so_bytes"), [x["code"] + " " + x["message"][:200] for x in r["diagnostics"]])
PY

#!/usr/bin/env bash
# Build FlashInfer modules with `aotc build --flashinfer` on a many-core machine that has a CUDA
# toolkit but no package index (e.g. the lent GPU host; no GPU is used):
#   carried: .carry/fi_whl/*.whl (zstandard, apache-tvm-ffi, ...), .carry/flashinfer.tar.xz
#   bash tools/device_flashinfer_build.sh OUT_DIR [PRESET] [LIMIT_S]
# The build stops itself (SIGTERM, as Ctrl-C) after LIMIT_S seconds, keeping its workspace under
# /tmp/fi-cache; running the same command again on the same machine resumes from the objects
# already compiled. OUT_DIR gets the build's JSON, progress, peak memory and the module report.
set -euo pipefail
out=${1:?OUT_DIR}; preset=${2:-sm120_fp4}; limit=${3:-540}
source tools/device_flashinfer_site.sh
nvcc --version | tail -1
# Peak memory in use while compiling (the job count is chosen from it).
( peak=0; while sleep 2; do used=$(free -b | awk '/^Mem:/{print $3}'); [ "$used" -gt "$peak" ] && peak=$used \
  && echo "$peak" > "$out/peak_mem_used_bytes.txt"; done ) &
sampler=$!
start=$(date +%s)
rc=0
timeout -s TERM "$limit" python3 -m aotc.cli build --arch sm120a --flashinfer "$preset" --cache-dir /tmp/fi-cache \
  -j 16 --json > "$out/flashinfer_build_$preset.json" 2> "$out/progress_$preset.txt" || rc=$?
kill "$sampler" || true
echo "exit $rc, wall $(( $(date +%s) - start )) s, peak memory used $(( $(cat "$out/peak_mem_used_bytes.txt" 2>/dev/null || echo 0) / 1024**3 )) GiB"
tail -n 3 "$out/progress_$preset.txt"
if [ -s "$out/flashinfer_build_$preset.json" ]; then
  python3 - "$out/flashinfer_build_$preset.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("ok", d["ok"], "built", d["built"], "hit", d["hit"], "failed", d["failed"], "seconds", d["seconds"], "jobs", d["jobs"])
for r in d["results"]:
    print(r["status"], r.get("module") or r.get("call"), r["arch"], "compile", r.get("compile_seconds"), "cubins",
          r.get("cubins"), "so", r.get("so_bytes"), [x["code"] + " " + x["message"][-300:] for x in r["diagnostics"]])
PY
  python3 tools/flashinfer_module_report.py /tmp/fi-cache --json "$out/modules_$preset.json" > "$out/modules_$preset.md" || true
  cat "$out/modules_$preset.md"
fi

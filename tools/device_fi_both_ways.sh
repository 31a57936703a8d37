#!/usr/bin/env bash
# One FlashInfer preset module built both ways at once on a many-core host (no GPU used): aotc's build
# and FlashInfer's own JIT, each with JOBS compile jobs, each stopped (SIGINT, stopping its compilers)
# after LIMIT_S. Resumable: WORK keeps both workspaces, so the same command run again goes on where
# the last run stopped. Once both libraries exist, every cubin is compared (tools/sass_equal_flashinfer.py)
# and the record merged into OUT/sass_equal_flashinfer.{json,md} (from the committed file); aotc's
# per-step time and measured peak memory of the module go to OUT/steps_<module>.json.
# Where a run ends before both libraries are linked, the objects both builds completed are compared one
# by one instead (tools/sass_equal_flashinfer.py --side objects) and that partial record merged.
# SIDES (default "aotc flashinfer") builds one way only, e.g. SIDES=aotc for the per-step memory alone;
# an unfinished aotc build still leaves its measured steps (step-memory.json, .ninja_log) in OUT.
#   [SIDES=...] bash tools/device_fi_both_ways.sh OUT LIMIT_S JOBS PRESET TEXT WORK
set -uo pipefail
out=${1:?OUT}; limit=${2:?LIMIT_S}; jobs=${3:?JOBS}; preset=${4:?PRESET}; only=${5:?TEXT}; work=${6:?WORK}
sides=${SIDES:-aotc flashinfer}
python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("flashinfer") is None)' \
  || source tools/device_flashinfer_site.sh  # a host without FlashInfer installed: the carried one
mkdir -p "$out" "$work"
start=$(date +%s)
nvcc --version | tail -1
for side in $sides; do
  timeout -s INT "$limit" python3 tools/sass_equal_flashinfer.py --preset "$preset" --only "$only" --side "$side" \
    -j "$jobs" --work "$work" --out "$work/side-only" > "$out/$side.log" 2>&1 &
done
wait
echo "both sides stopped after $(( $(date +%s) - start )) s"
for side in $sides; do tail -n 3 "$out/$side.log" | cut -c1-600; done
find "$work" -name step-memory.json | while read -r f; do
  cp "$f" "$out/step-memory.json"; cp "$(dirname "$f")/.ninja_log" "$out/ninja_log.txt"
done
python3 - "$work" "$out" <<'PY'
import json, sys
from pathlib import Path
from aotc.cache import Cache
work, out = Path(sys.argv[1]), Path(sys.argv[2])
for cache_dir in work.glob("*/cache"):
    for m in Cache(cache_dir).entries():
        if m.get("steps"):
            keep = {k: m.get(k) for k in ("name", "arch", "compile_seconds", "peak_rss_bytes", "steps", "toolchain")}
            (out / f"steps_{m['name']}.json").write_text(json.dumps(keep, indent=1) + "\n")
            print(f"steps of {m['name']}: {len(m['steps'])}, peak {m.get('peak_rss_bytes')} B")
PY
if grep -q '"library"' "$out/aotc.log" && grep -q '"library"' "$out/flashinfer.log"; then
  cp bench/results/sass_equal_flashinfer.json "$out/sass_equal_flashinfer.json"
  python3 tools/sass_equal_flashinfer.py --preset "$preset" --only "$only" -j "$jobs" --work "$work" \
    --out "$out/sass_equal_flashinfer" > "$out/compare.log" 2>&1
  echo "compare: exit $? after $(( $(date +%s) - start )) s"; tail -n 3 "$out/compare.log"
else
  # not linked yet: compare, object by object, what both builds completed, so a run that ends here
  # still leaves a record (merged with the committed one); the same command run again resumes
  # (kept in WORK between runs, so a resumed run compares only the objects finished since)
  record="$work/sass_equal_flashinfer"
  [ -f "$record.json" ] || cp bench/results/sass_equal_flashinfer.json "$record.json"
  python3 tools/sass_equal_flashinfer.py --preset "$preset" --only "$only" --side objects -j "$jobs" \
    --work "$work" --out "$record" > "$out/compare_objects.log" 2>&1
  cp "$record.json" "$record.md" "$out/"
  echo "not linked yet; objects compared: $(tail -n 1 "$out/compare_objects.log")"
fi

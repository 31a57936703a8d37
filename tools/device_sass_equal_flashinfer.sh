#!/usr/bin/env bash
# aotc's builds of FlashInfer modules vs FlashInfer's own JIT builds (tools/sass_equal_flashinfer.py)
# on a many-core host with a CUDA toolkit and no package index (no GPU is used):
#   bash tools/device_sass_equal_flashinfer.sh OUT_DIR LIMIT_S JOBS GROUP...
# GROUP is PRESET:TEXT (the preset's calls whose description contains TEXT); one process per group,
# all at once, each with JOBS compile jobs. Each process stops itself (SIGINT) after LIMIT_S.
# The groups' records are merged into OUT_DIR/sass_equal_flashinfer.{json,md}, starting from the
# committed bench/results/sass_equal_flashinfer.json (records of other modules are kept).
set -euo pipefail
out=${1:?OUT_DIR}; limit=${2:?LIMIT_S}; jobs=${3:?JOBS}; shift 3
source tools/device_flashinfer_site.sh
nvcc --version | tail -1
parts=()
mkdir -p /tmp/fi-equal
i=0
for group in "$@"; do
  i=$((i + 1))
  preset=${group%%:*}; only=${group#*:}
  parts+=("/tmp/fi-equal/part$i")
  timeout -s INT "$limit" python3 tools/sass_equal_flashinfer.py --preset "$preset" --only "$only" -j "$jobs" \
    --work "/tmp/fi-equal/part$i" --out "/tmp/fi-equal/part$i" > "/tmp/fi-equal/part$i.log" 2>&1 &
done
wait || true
tail -n 5 /tmp/fi-equal/part*.log
python3 - "$out" "${parts[@]}" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tools")
import sass_equal_flashinfer as tool
out, parts = Path(sys.argv[1]), [Path(p).with_suffix(".json") for p in sys.argv[2:]]
base = json.loads(Path("bench/results/sass_equal_flashinfer.json").read_text())
records, meta = base["records"], base["meta"]
for part in parts:
    if part.exists():
        d = json.loads(part.read_text())
        records.update(d["records"])
        meta = {**d["meta"], "commands": [*meta["commands"], *d["meta"]["commands"][-1:]]}
tool.write(records, out / "sass_equal_flashinfer", meta)
print((out / "sass_equal_flashinfer.md").read_text())
PY

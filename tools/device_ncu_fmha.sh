#!/usr/bin/env bash
# Nsight Compute of a catalog FMHA tile against torch SDPA's FlashAttention-2 kernel on one problem
# (tools/device_ncu_fmha.py): the full section set of both launches, then the per-instruction SASS
# view (executed instructions and warp stall samples) of both. Writes OUT/ncu_<spec>_*.txt.
#   bash tools/device_ncu_fmha.sh OUT [SPEC] [extra device_ncu_fmha.py flags]
set -u
out=$1; spec=${2:-fmha_fwd_d256}; shift; shift || true
cache=${NCU_CACHE:-/tmp/aotc-ncu-cache}
mkdir -p "$out"
python3 tools/device_ncu_fmha.py --cache-dir "$cache" --spec "$spec" --build-only "$@"
run=(python3 tools/device_ncu_fmha.py --cache-dir "$cache" --spec "$spec" "$@")
kernels='regex:aotc_kernel|flash_fwd'
{ echo "# command: ncu -k '$kernels' --launch-count 2 --set full --clock-control none ${run[*]}"
  ncu -k "$kernels" --launch-count 2 --set full --clock-control none "${run[@]}"; } \
  > "$out/ncu_${spec}_full.txt" 2>&1
{ echo "# command: ncu -k '$kernels' --launch-count 2 --section SourceCounters --section WarpStateStats --clock-control none --page source --print-source sass --csv ${run[*]}"
  ncu -k "$kernels" --launch-count 2 --section SourceCounters --section WarpStateStats --clock-control none \
      --page source --print-source sass --csv "${run[@]}"; } > "$out/ncu_${spec}_sass.csv" 2>&1
tail -n 3 "$out/ncu_${spec}_full.txt"

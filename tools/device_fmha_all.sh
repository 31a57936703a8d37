#!/bin/sh
# The FMHA proof run on one GPU host, in one command (builds with JOBS parallel nvcc):
#  1. correctness of every contiguous catalog kernel (bf16/fp16, varlen, empty and length-1
#     sequences, GQA/MQA, decode splits, e4m3): tools/device_fmha.py -> fmha_<card>_correctness.md/.json
#  2. prefill (head_dim 64, 128, 256; causal and not; the catalog's tiles and the candidates of
#     tools/fmha_tile_sweep.toml) and decode against SDPA flash, with the registers and ptxas
#     spills of every kernel: tools/device_fmha_speed.py -> fmha_<card>.md/.json
#  3. the paged kernels: correctness, and paged vs contiguous kernel time (CUDA-graph timing, no
#     host time): tools/device_fmha_paged.py -> fmha_<card>_paged.md/.json
#
#     tools/device_fmha_all.sh OUT [JOBS]     (reports in OUT, builds under OUT/work; JOBS default 16)
set -u
out=$1
jobs=${2:-16}
work=$out/work
target=$(python3 -c "from aotc.runtime import query_device; print(query_device(0).runnable_targets()[0])") || exit 2
status=0
python3 tools/device_fmha.py build --out "$work/artifacts" --arch "$target" --jobs "$jobs" || status=1
python3 tools/device_fmha.py run --artifacts "$work/artifacts" --out "$out" --skip-bench --tag _correctness || status=1
python3 tools/device_fmha_speed.py --cache-dir "$work/cache" --out "$out" --specs tools/fmha_tile_sweep.toml --jobs "$jobs" || status=1
python3 tools/device_fmha_paged.py --cache-dir "$work/cache" --out "$out" --jobs "$jobs" || status=1
exit $status

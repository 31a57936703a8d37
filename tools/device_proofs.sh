#!/usr/bin/env bash
# The GPU proofs of the FMHA templates and the serving path in one command on one GPU host, within a
# time budget, most important first (a step that would start with under 20 s left is skipped and
# says so):
#   1. builds, all at once: the contiguous FMHA catalog (tools/device_fmha.py build), the tune
#      candidates, the runtime and the serving kernels (each script's own build step);
#   2. FMHA correctness of every contiguous catalog kernel  -> fmha_<card>_correctness.{md,json}
#   3. paged FMHA: correctness, paged vs contiguous          -> fmha_<card>_paged.{md,json}
#   4. serving: CUDA graphs, device-routed MoE, contexts     -> serving_<card>.json
#   5. runtime: cold start, get_kernel vs raw, per-call cost, FlashInfer hook -> runtime_<card>.json
#   6. measured tile choice (aotc tune vs fastest)           -> tune_<card>.{md,json}
#     [SKIP="fmha_correctness tune"] bash tools/device_proofs.sh OUT [BUDGET_S]
# SKIP names steps not to run (and their builds). With FlashInfer carried, step 3 also times
# FlashInfer's own paged FA2 kernels on the same inputs (--flashinfer).
# Results and logs are packed into OUT/results.tgz (one file back). Needs torch and nvcc; FlashInfer
# for the hook figures when carried as tools/device_flashinfer_site.sh expects, else .whl/*.whl
# (zstandard, nvidia-cutlass) are installed.
set -u
out=$1; budget=${2:-560}; start=$(date +%s)
results=$out/results; work=/tmp/aotc-proofs
mkdir -p "$results" "$work"
skip=" ${SKIP:-} "
wanted() { case "$skip" in *" $1 "*) return 1;; esac; return 0; }
paged_flags=""
if [ -d .carry/fi_whl ] && [ -f .carry/flashinfer.tar.xz ]; then
  source tools/device_flashinfer_site.sh
  paged_flags="--flashinfer"
  export MAX_JOBS=${MAX_JOBS:-16}
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/nvidia_cutlass*.whl
else
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/aotc-site .whl/*.whl
  export PYTHONPATH=/tmp/aotc-site:$PWD
fi
elapsed() { echo $(( $(date +%s) - start )); }
wanted fmha_correctness && python3 tools/device_fmha.py build --out "$work/fmha" --arch sm90a --jobs 6 > "$results/build_fmha.log" 2>&1 &
wanted tune && python3 tools/device_tune.py --out "$results" --cache "$work/tune" --build-only sm90a --jobs 4 > "$results/build_tune.log" 2>&1 &
wanted runtime && python3 tools/device_runtime.py build "$work/runtime" 3 > "$results/build_runtime.log" 2>&1 &
wanted serving && python3 tools/device_serving.py build "$work/serving" 3 > "$results/build_serving.log" 2>&1 &
wait
echo "builds done at $(elapsed) s"
step() {
  local name=$1; shift
  if ! wanted "$name"; then echo "$name: skipped (SKIP)"; return; fi
  local left=$(( budget - $(elapsed) ))
  if [ "$left" -lt 20 ]; then echo "$name: skipped, $left s left"; return; fi
  timeout -s INT "$left" "$@" > "$results/$name.log" 2>&1
  echo "$name: exit $? at $(elapsed) s"; tail -n 4 "$results/$name.log"
}
step fmha_correctness python3 tools/device_fmha.py run --artifacts "$work/fmha" --out "$results" --skip-bench --tag _correctness
step fmha_paged python3 tools/device_fmha_paged.py --cache-dir "$work/paged" --out "$results" --jobs 16 $paged_flags
AOTC_CACHE_DIR="$work/serving" step serving python3 tools/device_serving.py run "$results"
AOTC_CACHE_DIR="$work/runtime" step runtime python3 tools/device_runtime.py run "$results"
step tune python3 tools/device_tune.py --out "$results" --cache "$work/tune" --skip-build
tar -czf "$out/results.tgz" -C "$out" results && rm -rf "$results"
echo "done at $(elapsed) s"

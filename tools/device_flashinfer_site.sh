# Sourced by the many-core FlashInfer scripts: makes FlashInfer importable on a host with a CUDA
# toolkit and torch but no package index (the lent GPU host; no GPU is used to build).
#   carried: .carry/fi_whl/*.whl (zstandard, apache-tvm-ffi), .carry/flashinfer.tar.xz (the installed
#   `flashinfer` package folder)
# The package folder is 544 MB with its JIT sources (data/): for serving prebuilt modules (the hook's
# figures) its Python files and small data suffice (7.5 MB as xz), made where flashinfer is installed:
#   cd <site-packages> && find flashinfer -type f -not -path '*/__pycache__/*' -not -path 'flashinfer/data/csrc/*' \
#     -not -path 'flashinfer/data/cutlass/*' -not -path 'flashinfer/data/cccl/*' -not -path 'flashinfer/data/spdlog/*' \
#     -not -name '*.cu' -not -name '*.cuh' -not -name '*.so' -not -name '*.cubin' | tar -cf - -T - | xz -6 > flashinfer.tar.xz
# JIT builds there need more of data/: for FlashInfer's paged FA2 decode/prefill (tools/device_fmha_paged.py
# --flashinfer) and the cascade module, add data/include, data/cccl (its headers use a newer CCCL than a
# CUDA 13.0 toolkit's) and the matching data/csrc sources (11 MB as xz):
#   ... -T <(that list; find flashinfer/data/include flashinfer/data/cccl -type f; find flashinfer/data/csrc \
#     -maxdepth 1 -type f \( -name 'batch_prefill*' -o -name 'batch_decode*' -o -name '*.h' -o -name '*cascade*' \))
site=/tmp/fi-site
if [ ! -d "$site/flashinfer" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .carry/fi_whl/*.whl
  tar -xJf .carry/flashinfer.tar.xz -C "$site"
fi
# FlashInfer imports optional heavy packages when present; make them look absent in every process
# (the builds' worker processes too), as tools/device_flashinfer.py does for the serving proof.
cat > "$site/sitecustomize.py" <<PYEOF
import sys
sys.path.insert(0, "$PWD")
from tools.device_flashinfer import hide_optional_packages
hide_optional_packages()
PYEOF
export PYTHONPATH=$site:$PWD

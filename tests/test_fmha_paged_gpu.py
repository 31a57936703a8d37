"""Paged-KV attention on a real GPU through aotc.runtime: the catalog's paged decode and chunked-prefill
kernels, built for this device's target by the pipeline into a temporary cache, against a float32
torch reference (shuffled pages, poisoned unused block-table slots, ragged and empty requests,
stacked and separate K/V). Skipped where no GPU is present (runs on the lent GPU machine)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import device_fmha_paged as paged


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from aotc import runtime as rt
    from aotc.cache import Cache

    # AOTC_PAGED_TEST_CACHE: reuse a cache the device script already filled (the build is then all hits)
    cache_dir = Path(os.environ.get("AOTC_PAGED_TEST_CACHE") or tmp_path_factory.mktemp("paged-cache"))
    kernels = paged.build(cache_dir, jobs=4)
    before = rt.default_sources()
    rt.set_sources([rt.CacheSource(Cache(cache_dir))])
    yield kernels
    rt.set_sources(before)


@pytest.mark.parametrize("page_size,stacked", [(16, False), (64, True)])
def test_paged_decode_matches_reference(built, page_size, stacked):
    params = built["fmha_paged_decode_m64n64/dtype=bf16"]
    row = paged.check_case("fmha_decode_paged", params, hq=32, hkv=8, lens_q=[1], kv_lens=[1, 0, 77, 1000, 4099],
                           page_size=page_size, causal=False, stacked=stacked)
    assert row["nan"] == 0 and row["rel_err"] < paged.REL_TOL, row


def test_paged_chunked_prefill_matches_reference(built):
    params = built["fmha_paged_fwd_m128n64/dtype=bf16"]
    row = paged.check_case("fmha_fwd_paged", params, hq=8, hkv=2, lens_q=[5, 0, 128, 300, 1],
                           kv_lens=[105, 17, 128, 1000, 4001], page_size=16, causal=True, stacked=True, varlen_q=True)
    assert row["nan"] == 0 and row["rel_err"] < paged.REL_TOL, row

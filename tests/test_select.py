"""Runtime tile choice without a GPU: the family says what its tile is (tile_of), the stored
candidates of a (family, device) are listed once and memoized until the sources change or the
registry is cleared, and select()/best() only score them."""

from __future__ import annotations

import pytest

from aotc import runtime as rt
from aotc.arch import get_arch
from aotc.build.spec import load_specs
from aotc.cache import Cache
from aotc.families import get_family
from aotc.keys import spec_key
from aotc.runtime import lookup, registry
from aotc.runtime.device import device_from_capability
from aotc.runtime.tile_select import best

GEMM = "grouped_gemm_sm80"
ARCH = "sm120a"


def catalog(family: str) -> list:
    return [s for s in load_specs().specs if s.family == family]


def test_each_catalog_family_names_its_tile():
    fmha = catalog("fmha_fwd")
    assert fmha and all(get_family("fmha_fwd").tile_of(s.params) == (s.params["block_m"],) for s in fmha)
    gemms = catalog(GEMM)
    assert gemms and all(get_family(GEMM).tile_of(s.params) == tuple(s.params["tile"]) for s in gemms)


class CountingSource(rt.CacheSource):
    """A real cache directory as a source, counting how often its refs are listed."""

    def __init__(self, cache: Cache):
        super().__init__(cache)
        self.listings = 0

    def refs(self) -> list[dict]:
        self.listings += 1
        return super().refs()


@pytest.fixture
def gemm_source(tmp_path):
    """Every catalog grouped GEMM stored for sm120a (manifests and refs as the build writes them;
    the blobs are placeholders: choosing reads no blob)."""
    cache = Cache(tmp_path)
    arch = get_arch(ARCH)
    for i, s in enumerate(catalog(GEMM)):
        key = f"{i:064x}"
        cache.put_entry(key, {"cubin": s.name.encode()}, {
            "name": s.name, "family": GEMM, "params": s.params, "arch": ARCH,
            "target": {"sm": arch.sm, "variant": arch.variant}, "entry": "aotc_kernel"})
        cache.set_ref(spec_key(GEMM, s.params, ARCH), key,
                      {"name": s.name, "family": GEMM, "params": s.params, "arch": ARCH})
    source = CountingSource(cache)
    rt.set_sources([source])
    yield source
    lookup._sources = None
    lookup.forget()


def test_candidates_are_listed_once_per_family_and_device(gemm_source):
    dev = device_from_capability((12, 0))
    first = lookup.stored_candidates(GEMM, dev)
    assert sorted(f.params["tile"] for f in first) == sorted(s.params["tile"] for s in catalog(GEMM))
    assert all(f.arch == ARCH for f in first)
    for m in (1, 64, 4096, 100_000):  # new problem sizes: scoring only, no listing
        best(lookup.stored_candidates(GEMM, dev), {"m": m, "n": 4096, "k": 4096}, 170)
    assert gemm_source.listings == 1
    assert lookup.stored_candidates(GEMM, device_from_capability((9, 0))) == []  # nothing runs on sm_90
    assert gemm_source.listings == 2  # another device capability is another list
    registry.clear()  # e.g. after new kernels were built: listed again
    lookup.stored_candidates(GEMM, dev)
    assert gemm_source.listings == 3
    rt.set_sources([gemm_source])  # new sources: listed again
    lookup.stored_candidates(GEMM, dev)
    assert gemm_source.listings == 4


def test_select_scores_the_family_tile(gemm_source):
    dev = device_from_capability((12, 0))
    tiles = {tuple(s.params["tile"][:2]): s.params for s in catalog(GEMM)}
    assert {(128, 128), (128, 256), (64, 128)} <= tiles.keys()
    cands = [tiles[(128, 128)], tiles[(128, 256)], tiles[(64, 128)]]
    # 64 rows: a 128-row tile pads them 2x; the 64x128 tile fits exactly
    assert rt.select(GEMM, cands, {"m": 64, "n": 4096, "k": 4096}, dev) == tiles[(64, 128)]
    # no padding for any: the largest tile wins
    assert rt.select(GEMM, cands, {"m": 4096, "n": 4096, "k": 4096}, dev) == tiles[(128, 256)]
    assert gemm_source.listings == 1

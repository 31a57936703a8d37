"""Shared fixtures: GPU detection for `gpu` tests, and one real build of a few small catalog
kernels into a temporary cache that CLI, runtime and wheel tests reuse (compiled once per run)."""

from __future__ import annotations

import functools

import pytest


@functools.cache
def gpu_count() -> int:
    try:
        from cuda.bindings import driver
    except ImportError:
        return 0
    try:
        (err,) = driver.cuInit(0)
        if err != driver.CUresult.CUDA_SUCCESS:
            return 0
        err, n = driver.cuDeviceGetCount()
        return n if err == driver.CUresult.CUDA_SUCCESS else 0
    except Exception:  # noqa: BLE001 - no driver library at all
        return 0


@pytest.fixture(autouse=True, scope="session")
def shared_cuda_runtime():
    """Host helpers link against the shared libcudart.so.13; tests that dlopen a helper directly need
    it loaded first, as the runtime does (from the pip nvidia-cuda-runtime wheel where no toolkit is)."""
    from aotc.runtime.loader import load_shared_cudart

    load_shared_cudart()


def pytest_collection_modifyitems(config, items):
    if gpu_count():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The cheapest real kernel of the catalog, built for a target the test GPU runs (sm90a) and for
# one it cannot (sm120a): about a minute of nvcc each on one core.
BUILT_SPEC = "fmha_fwd_m64n64/head_dim=64,dtype=bf16"
BUILT_ARCHS = "sm90a,sm120a"


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory):
    """A real cache produced by the build pipeline: (Cache, BuildSummary)."""
    from aotc.arch import parse_arch_list
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache

    specs = [s for s in load_specs().specs if s.name == BUILT_SPEC]
    assert specs, f"catalog lost {BUILT_SPEC}"
    cache = Cache(tmp_path_factory.mktemp("built-cache"))
    summary = build(specs, parse_arch_list(BUILT_ARCHS), cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return cache, summary

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


def pytest_collection_modifyitems(config, items):
    if gpu_count():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

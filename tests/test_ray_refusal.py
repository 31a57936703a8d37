"""A Ray worker whose toolchain differs from the build's (another host compiler version) is refused:
the TU fails with AOTC-RAY-001 naming the worker and both identities, and nothing is stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.executor_ray import RayExecutor
from aotc.build.pipeline import FAILED, build
from aotc.build.spec import load_specs
from aotc.build.toolchain import find_toolchain
from aotc.cache import Cache
from tests.ray_cluster import GIB, LocalCluster

pytest.importorskip("ray", reason="ray is part of the build extra")


def other_host_compiler(tmp: Path) -> str:
    """gcc under another version line: a toolchain whose identity differs (nvcc honours NVCC_CCBIN)."""
    gcc = shutil.which("gcc")
    script = tmp / "gcc"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "gcc (another build) 99.1"; exit 0; fi\n'
                      f'exec "{gcc}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_worker_with_another_toolchain_is_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start_node(cpus=0, memory=1 * GIB)  # the head runs no tasks
        cluster.start_node(cpus=1, memory=2 * GIB, env={"NVCC_CCBIN": other_host_compiler(tmp_path)})
        cluster.wait_for(2)
        cache = Cache(tmp_path / "cache")
        chosen = [s for s in load_specs().specs if s.name == "moe_bf16_64x128"]
        ex = RayExecutor(cluster.address, cache, find_toolchain().identity, {s.name: s.family for s in chosen})
        summary = build(chosen, [get_arch("sm80")], cache, executor=ex, progress=False)
    finally:
        cluster.stop()
    (r,) = summary.results
    assert r.status == FAILED
    (diag,) = r.diagnostics
    assert diag.code == "AOTC-RAY-001" and "refused" in diag.message
    assert diag.details["build_identity"] == find_toolchain().identity
    assert diag.details["worker_identity"] != diag.details["build_identity"]
    assert list(cache.entries()) == [] and list(cache.refs()) == []

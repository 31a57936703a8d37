"""Builds on Ray clusters that cannot serve them: a cluster whose nodes have no CPU fails the TUs with
AOTC-RAY-006 instead of waiting forever, and a worker whose toolchain differs from the build's
(another host compiler version) is refused with AOTC-RAY-001 naming both identities; nothing is
stored either way; a FlashInfer module's compile steps are refused the same way. One cluster: the
head (0 CPUs) first alone, then joined by the mismatched worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def head_only(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start_node(cpus=0, memory=1 * GIB)  # schedules, runs no tasks
        cluster.wait_for(1)
        yield cluster
    finally:
        cluster.stop()


def one_kernel():
    return [s for s in load_specs().specs if s.name == "moe_bf16_64x128"]


def test_no_node_with_a_cpu_fails_the_build_instead_of_hanging(head_only, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ex = RayExecutor(head_only.address, cache, find_toolchain().identity, give_up_s=5)
    (r,) = build(one_kernel(), [get_arch("sm80")], cache, executor=ex, progress=False).results
    assert r.status == FAILED and [d.code for d in r.diagnostics] == ["AOTC-RAY-006"]
    assert list(cache.entries()) == []


def other_host_compiler(tmp: Path) -> str:
    """gcc under another version line: a toolchain whose identity differs (nvcc honours NVCC_CCBIN)."""
    gcc = shutil.which("gcc")
    script = tmp / "gcc"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "gcc (another build) 99.1"; exit 0; fi\n'
                      f'exec "{gcc}" "$@"\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="module")
def other_worker(head_only, tmp_path_factory):
    """The head joined by a worker whose host compiler reports another version."""
    head_only.start_node(cpus=1, memory=2 * GIB, env={"NVCC_CCBIN": other_host_compiler(tmp_path_factory.mktemp("cc"))})
    head_only.wait_for(2)
    return head_only


def test_worker_with_another_toolchain_is_refused(other_worker, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ex = RayExecutor(other_worker.address, cache, find_toolchain().identity)
    (r,) = build(one_kernel(), [get_arch("sm80")], cache, executor=ex, progress=False).results
    assert r.status == FAILED
    (diag,) = r.diagnostics
    assert diag.code == "AOTC-RAY-001" and "refused" in diag.message
    assert diag.details["build_identity"] == find_toolchain().identity
    assert diag.details["worker_identity"] != diag.details["build_identity"]
    assert list(cache.entries()) == [] and list(cache.refs()) == []


def test_flashinfer_module_on_a_worker_with_another_toolchain_is_refused(other_worker, tmp_path: Path) -> None:
    """Through the CLI: `aotc build --flashinfer ci --executor ray:ADDRESS`."""
    pytest.importorskip("flashinfer", reason="flashinfer-python is not installed: pip install -e '.[flashinfer]'")
    cache = Cache(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "aotc", "build", "--arch", "sm120a", "--flashinfer", "ci", "--json",
                           "--cache-dir", str(cache.root), "--executor", f"ray:{other_worker.address}"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (r,) = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert r["status"] == FAILED and r["module"] == "cascade"
    (diag,) = r["diagnostics"]  # both compile steps refused, said once
    assert diag["code"] == "AOTC-RAY-001" and "refused" in diag["message"]
    assert diag["details"]["worker_identity"] != find_toolchain().identity
    assert list(cache.entries()) == [] and list(cache.refs()) == []

"""`--executor ray` on a real local Ray cluster (a head and a worker node, loopback, 1 CPU and 3 GiB
each) building real SM80-class catalog kernels: tasks spread over both nodes, stored exactly as a
local build stores them, memory declared from recorded peaks, and a Ray worker SIGKILLed mid-compile
retried without leaving a corrupt entry (through the CLI)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.executor_ray import MIN_DECLARED_BYTES, RayExecutor, parse_executor
from aotc.build.pipeline import BUILT, HIT, build
from aotc.build.spec import load_specs
from aotc.build.toolchain import CUTLASS_TU_PEAK_RSS_BYTES, find_toolchain
from aotc.cache import Cache
from aotc.cache.maintenance import verify
from aotc.diagnostics import AotcError
from tests.ray_cluster import GIB, LocalCluster, task_process, two_nodes

pytest.importorskip("ray", reason="ray is part of the build extra")
NODE_MEMORY = 3 * GIB
SPECS = ("moe_bf16_128x256", "moe_bf16_64x128")  # SM80-class grouped GEMMs: ~15 s of nvcc each


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with two_nodes(tmp_path_factory.mktemp("ray"), NODE_MEMORY) as c:
        yield c


def specs(*names: str):
    found = [s for s in load_specs().specs if s.name in names]
    assert sorted(s.name for s in found) == sorted(names), "the catalog lost a test kernel"
    return found


def executor(cluster: LocalCluster, cache: Cache, chosen) -> RayExecutor:
    return RayExecutor(cluster.address, cache, find_toolchain().identity, {s.name: s.family for s in chosen})


def worker_of(cache: Cache, key: str) -> tuple[str, str]:
    """(pid, Ray node) of the worker that compiled an entry, from its compile log."""
    m = re.search(r"\[ray worker \S+ pid (\d+) \(Ray node (\w+)\)\]", cache.log_path(key).read_text())
    assert m, "the log does not say which Ray worker compiled it"
    return m[1], m[2]


def test_executor_addresses() -> None:
    assert parse_executor("ray://head:10001") == "ray://head:10001"
    assert parse_executor("ray:10.0.0.5:6379") == "10.0.0.5:6379"
    with pytest.raises(AotcError) as err:
        parse_executor("dask://x")
    assert err.value.diagnostics[0].code == "AOTC-RAY-004"


def test_build_on_two_nodes_is_stored_as_a_local_build(cluster, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    chosen = specs(*SPECS)
    ex = executor(cluster, cache, chosen)
    assert ex.jobs == 2
    summary = build(chosen, [get_arch("sm80")], cache, executor=ex, progress=False)
    assert [r.status for r in summary.results] == [BUILT, BUILT], [d.format() for r in summary.results
                                                                  for d in r.diagnostics]
    # nothing recorded yet: the 5.1 GiB default, capped at what the largest node offers
    assert set(ex.declared.values()) == {min(CUTLASS_TU_PEAK_RSS_BYTES, NODE_MEMORY)}
    # each task took a whole node's memory, so the two ran on the two nodes
    assert len({worker_of(cache, r.key)[1] for r in summary.results}) == 2
    manifests = {r.key: cache.get_manifest(r.key) for r in summary.results}
    for m in manifests.values():
        assert 50 << 20 < m["peak_rss_bytes"] < NODE_MEMORY  # measured on the worker, stored by the parent
    # stored exactly as a local build stores it: the local pipeline finds every entry
    again = build(chosen, [get_arch("sm80")], cache, progress=False)
    assert [r.status for r in again.results] == [HIT, HIT]
    assert {r.key for r in again.results} == set(manifests)
    assert verify(cache).ok
    # the next build on the cluster declares what was recorded
    later = executor(cluster, cache, chosen)
    for r in summary.results:
        from aotc.build.tu_task import TuJob

        job = TuJob(r.spec.name, "sm80", "", 0, None)
        assert later.declared_bytes(job) == max(MIN_DECLARED_BYTES, manifests[r.key]["peak_rss_bytes"])


def test_cli_build_survives_a_ray_worker_killed_mid_compile(cluster, tmp_path: Path) -> None:
    """`aotc build --executor ray:ADDRESS` while the Ray worker compiling its TU is SIGKILLed (with its
    nvcc): Ray retries the task, the build completes, and the cache holds one whole, verified entry."""
    cmd = [sys.executable, "-m", "aotc", "build", "--arch", "sm80", "--filter", SPECS[0], "--json",
           "--cache-dir", str(tmp_path / "cache"), "--executor", f"ray:{cluster.address}"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 300
        while (found := task_process(f"aotc:{SPECS[0]}", "nvcc")) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the task never started compiling"
            time.sleep(0.2)
        worker, nvccs = found
        os.kill(worker, signal.SIGKILL)  # the Ray worker dies mid-compile ...
        for pid in nvccs:  # ... and its compiler with it (nvcc runs in its own process group)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "Ray cluster: 2 node(s), 2 CPUs" in err
    summary = json.loads(out[out.index("{"):]) if "{" in out else pytest.fail(f"no JSON on stdout: {out!r}")
    assert summary["built"] == 1 and summary["failed"] == 0
    cache = Cache(tmp_path / "cache")
    assert worker_of(cache, summary["results"][0]["key"])[0] != str(worker)  # a retry built it
    report = verify(cache)
    assert report.ok and report.manifests_checked == 1
    bad = subprocess.run([*cmd[:-1], "spark://x"], check=False, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "AOTC-RAY-004" in bad.stderr

"""FlashInfer module builds on a real local Ray cluster (a head and a worker node, loopback, 1 CPU
and 3 GiB each): the `ci` preset's cascade module built through Ray is the locally built one (same
key, byte-identical cubins), stored and verified as a local build stores it, its compile steps spread
over both nodes, its peak memory recorded for the next build to declare. Also, with `cc` steps that
take seconds: a failing step fails its own module only, the generated sources travel to the worker,
a step whose Ray worker is SIGKILLed is retried, and an object compiled from headers that differ
from this machine's is refused."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from aotc.build.executor_ray import MIN_DECLARED_BYTES, RayExecutor
from aotc.build.flashinfer import ninja
from aotc.build.flashinfer.remote import RayWorkspace, Step, StepResult
from aotc.build.path_roles import PathRoles
from aotc.build.pipeline import BUILT, HIT
from aotc.build.toolchain import find_toolchain
from aotc.cache import Cache
from aotc.cache.maintenance import verify
from tests.ninja_modules import ninja_module
from tests.ray_cluster import GIB, LocalCluster, task_process, two_nodes

pytest.importorskip("ray", reason="ray is part of the build extra")
NODE_MEMORY = 3 * GIB
ARCH = "sm120a"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with two_nodes(tmp_path_factory.mktemp("ray"), NODE_MEMORY) as c:
        yield c


def executor(cluster: LocalCluster, cache: Cache) -> RayExecutor:
    return RayExecutor(cluster.address, cache, find_toolchain().identity)


@pytest.mark.compile
def test_module_built_on_ray_is_the_local_build(cluster, tmp_path: Path) -> None:
    pytest.importorskip("flashinfer", reason="flashinfer-python is not installed: pip install -e '.[flashinfer]'")
    from aotc.build.flashinfer.module_build import build_modules

    local_cache, ray_cache = Cache(tmp_path / "local"), Cache(tmp_path / "ray")
    (local,) = build_modules(["ci"], [ARCH], local_cache, jobs=1, progress=False).results
    ex = executor(cluster, ray_cache)
    summary = build_modules(["ci"], [ARCH], ray_cache, progress=False, executor=ex)
    (remote,) = summary.results
    assert (local.status, remote.status) == (BUILT, BUILT), [d.format() for d in remote.diagnostics]
    assert summary.jobs == 2
    # the same action key (sources, flags, toolchain, every header read) and the same cubins
    assert remote.key == local.key
    theirs, ours = local_cache.get_manifest(local.key), ray_cache.get_manifest(remote.key)
    assert [c["sha256"] for c in ours["cubins"]] == [c["sha256"] for c in theirs["cubins"]]
    assert ours["cubins"] and all(c["ok"] for c in ours["cubins"])
    # each step declared a whole node (nothing recorded yet: the default, capped), so both nodes compiled
    nodes = set(re.findall(r"\[ray worker \S+ pid \d+ \(Ray node (\w+)\)\] \S+\.o", ray_cache.log_path(remote.key)
                           .read_text()))
    assert len(nodes) == 2
    assert 50 << 20 < ours["peak_rss_bytes"] < NODE_MEMORY  # measured on the workers, recorded here
    # stored as a local build stores it: the local build finds it, verify is clean
    (again,) = build_modules(["ci"], [ARCH], ray_cache, jobs=1, progress=False).results
    assert (again.status, again.key) == (HIT, remote.key)
    assert verify(ray_cache).ok
    # the next build on the cluster declares what was recorded
    later = executor(cluster, ray_cache)
    assert later.declare("cascade", ARCH, "flashinfer") == max(MIN_DECLARED_BYTES, ours["peak_rss_bytes"])
    # per step: each object's own measured peak, on the workers and in the local ninja build alike
    for manifest in (ours, theirs):
        assert manifest["steps"] and all(50 << 20 < s["peak_rss_bytes"] < NODE_MEMORY and s["seconds"] > 0
                                         for s in manifest["steps"].values()), manifest["steps"]
    assert max(s["peak_rss_bytes"] for s in ours["steps"].values()) == ours["peak_rss_bytes"]
    for obj, step in ours["steps"].items():
        assert later.declare("cascade", ARCH, "flashinfer", obj) == max(MIN_DECLARED_BYTES, step["peak_rss_bytes"])


_module = ninja_module


def test_failing_step_fails_its_module_only(cluster, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    files = {_module(ws, "good", "int good(void) { return VALUE_good; }"): "good",
             _module(ws, "bad", "int bad(void) { return VALUE_good; }"): "bad"}  # not its header's macro
    roles = PathRoles([("<ws>", str(ws))])
    workspace = RayWorkspace(ws / "ninja", executor(cluster, Cache(tmp_path / "cache")), roles, ARCH, files)
    workspace.write(list(files))
    steps: list[str] = []
    objects = [f"{ws}/cached_ops/{m}/{m}.o" for m in ("good", "bad")]
    compiled = workspace.run(objects, 1, dict(os.environ), lambda n, total, out: steps.append(f"{n}/{total} {Path(out).name}"))
    assert sorted(steps) == ["1/2 bad.o", "2/2 good.o"] or sorted(steps) == ["1/2 good.o", "2/2 bad.o"]
    assert list(compiled.failures) == [objects[1]] and "VALUE_good" in compiled.failures[objects[1]]
    assert not Path(objects[1]).exists()
    # the good object came back, compiled from the generated files shipped to the worker
    assert Path(objects[0]).read_bytes()[:4] == b"\x7fELF"
    assert f"{ws}/generated/good/config.h" in workspace.deps([objects[0]])
    assert workspace.seconds([objects[0]]) > 0 and workspace.peak_rss([objects[0]]) > 0
    libraries = [f"{ws}/cached_ops/{m}/{m}.so" for m in ("good", "bad")]
    linked = workspace.run(libraries, 1, dict(os.environ))
    assert list(linked.failures) == [libraries[1]]  # not linked: its object failed
    assert Path(libraries[0]).read_bytes()[:4] == b"\x7fELF"


def test_step_whose_worker_dies_is_retried(cluster, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    files = {_module(ws, "slow", "int slow(void) { return VALUE_slow; }", prefix="sleep 5 && "): "slow"}
    workspace = RayWorkspace(ws / "ninja", executor(cluster, Cache(tmp_path / "cache")), PathRoles([("<ws>", str(ws))]),
                             ARCH, files)
    workspace.write(list(files))
    killed: list[int] = []

    def kill_the_worker_mid_step() -> None:
        deadline = time.monotonic() + 120
        while (found := task_process("aotc:slow:", "sleep 5")) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if found:
            worker, shells = found
            os.kill(worker, signal.SIGKILL)  # the Ray worker dies mid-step, and its compile with it
            for pid in shells:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            killed.append(worker)

    killer = threading.Thread(target=kill_the_worker_mid_step)
    killer.start()
    output = f"{ws}/cached_ops/slow/slow.o"
    compiled = workspace.run([output], 1, dict(os.environ))
    killer.join()
    assert killed, "the step never started"
    assert compiled.failures == {} and Path(output).read_bytes()[:4] == b"\x7fELF"
    assert f" pid {killed[0]} " not in compiled.log  # another worker process built it


def test_object_compiled_from_other_headers_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "include").mkdir(parents=True)
    (ws / "include" / "a.h").write_text("int a;\n")
    workspace = RayWorkspace(ws / "ninja", None, PathRoles([("<ws>", str(ws))]), ARCH, {})  # type: ignore[arg-type]
    output = ws / "m.o"
    step = Step("m", "<ws>/m.o", "cc -c <ws>/m.c -o <ws>/m.o", "<ws>/ninja")
    from aotc.keys import sha256_file

    same = StepResult(step, True, b"\x7fELF", {"<ws>/include/a.h": sha256_file(ws / "include" / "a.h")}, 1.0, 1, "")
    assert workspace._accept(str(output), same)[0] and output.read_bytes() == b"\x7fELF"
    output.unlink()
    other = StepResult(step, True, b"\x7fELF", {"<ws>/include/a.h": "0" * 64}, 1.0, 1, "")
    ok, _, diags = workspace._accept(str(output), other)
    assert not ok and not output.exists()
    assert [d.code for d in diags] == ["AOTC-RAY-001"] and "<ws>/include/a.h" in diags[0].details["differing"]


def test_ninja_edges_name_every_step() -> None:
    text = "build a.o: cc a.c | h.h\nbuild b.o: cc b.c\nbuild m.so: link a.o b.o\n"
    assert ninja.edges(text) == [(["a.o"], ["a.c", "h.h"]), (["b.o"], ["b.c"]), (["m.so"], ["a.o", "b.o"])]
    assert ninja.inputs(text) == ["a.c", "h.h", "b.c"]
    assert ninja.objects(text, "m.so") == ["a.o", "b.o"]
    assert shutil.which("cc"), "the cc steps above need a C compiler"

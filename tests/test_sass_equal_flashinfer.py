"""aotc's build of a FlashInfer module is FlashInfer's build: the `ci` preset's module (cascade, 2
translation units) built for sm_120a by `aotc build --flashinfer` and by FlashInfer's own JIT
(JitSpec.build, same toolchain, FLASHINFER_CUDA_ARCH_LIST=12.0a, no GPU); every embedded cubin
compared. Real nvcc, real FlashInfer. tools/sass_equal_flashinfer.py runs the same over presets.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flashinfer", reason="flashinfer-python is not installed: pip install -e '.[flashinfer]'")

from aotc.arch import ARCHES
from aotc.build import sass_compare as sc
from aotc.build.flashinfer import own_jit
from aotc.build.flashinfer.equality import (
    _slug,
    compare_call,
    compare_objects,
    completed_objects,
    object_targets,
)
from aotc.build.toolchain import find_toolchain
from aotc.diagnostics import AotcError
from aotc.elf import cubin_target
from aotc.flashinfer.presets import load_preset


def _processes_naming(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline[:200])
    return found


@pytest.mark.compile
def test_aotc_and_flashinfer_jit_build_the_same_sm120a_cubins(tmp_path):
    tc = find_toolchain()
    (call,) = load_preset("ci").calls
    # FlashInfer's own build terminated mid-compile (SIGTERM, as a job scheduler stops it) leaves no
    # ninja or nvcc behind
    root = tmp_path / _slug(call.describe().split(":")[-1]) / "flashinfer"
    preset = own_jit.write_single_call_preset(call, tmp_path / "one.toml")
    compiling = threading.Event()

    def terminate_once_compiling() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if any("nvcc" in c or "cicc" in c for c in _processes_naming(str(root))):
                compiling.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=terminate_once_compiling)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        own_jit.build([str(preset)], ARCHES["sm120a"], root, tc, 2)
    watcher.join()
    assert compiling.is_set()
    assert _processes_naming(str(root)) == []
    # then both builds, FlashInfer's resuming in the same workspace
    record = compare_call(call, ARCHES["sm120a"], tmp_path, tc, jobs=2)
    assert record["aotc"]["status"] == "built", record["aotc"]
    assert "library" in record["flashinfer"], record["flashinfer"]
    assert record["module"] == record["flashinfer"]["name"] == "cascade"
    comparison = record["comparison"]
    # every cubin of both libraries paired, none different; each is byte-identical or SASS-equal
    assert comparison["unmatched"] == {"a": [], "b": []}
    assert comparison["equal"], comparison
    cubins = sc.extract_cubins(record["aotc"]["library"], tc)
    assert len(comparison["cubins"]) == len(cubins) >= 1
    assert {cubin_target(c.data) for c in cubins} == {(120, "a")}
    assert sum(c["kernels"] for c in comparison["cubins"]) > 0
    assert all(c["verdict"] in (sc.BYTE_IDENTICAL, sc.NORMALISED_EQUAL) for c in comparison["cubins"])
    # Object by object (what a build stopped before linking leaves): a module's library embeds exactly
    # the cubins of its objects, so comparing objects compares the same machine code
    fi_root = tmp_path / _slug(call.describe().split(":")[-1]) / "flashinfer"
    objects = completed_objects(fi_root)
    assert set(objects) == object_targets(fi_root) and len(objects) >= 2
    from_objects = sorted(c.data for path in objects.values() for c in sc.extract_cubins(path, tc))
    assert from_objects == sorted(c.data for c in sc.extract_cubins(record["flashinfer"]["library"], tc))
    # aotc removed its workspace once its build succeeded: nothing to pair, every object left to compare
    alone = compare_objects(call, tmp_path, tc)
    assert alone["objects"] == {} and alone["not_compared"] == sorted(objects) and alone["targets"] == len(objects)
    # a stopped aotc build's workspace holding the same objects (ninja's log naming them): each paired
    # by name and compared cubin by cubin; objects of host code only are counted, not compared
    stopped = tmp_path / _slug(call.describe().split(":")[-1]) / "cache" / "v1" / "tmp" / "ninja"
    stopped.mkdir(parents=True)
    log = ["# ninja log v7"]
    for i, (name, path) in enumerate(sorted(objects.items())):
        (stopped / name).write_bytes(path.read_bytes())
        log.append(f"{i}\t{i + 1}\t0\t{stopped / name}\t0")
    (stopped / ".ninja_log").write_text("\n".join(log) + "\n")
    paired = compare_objects(call, tmp_path, tc)
    assert sorted(paired["objects"]) == sorted(objects) and paired["not_compared"] == []
    with_cubins = {n: o for n, o in paired["objects"].items() if not o.get("host_only")}
    assert with_cubins and all(o["equal"] and o["counts"]["byte-identical"] >= 1 for o in with_cubins.values())
    assert sum(o["counts"]["byte-identical"] for o in with_cubins.values()) == len(from_objects)
    # earlier results are kept as they are, not compared again
    known = {name: {"equal": True, "counts": {"byte-identical": 0}, "kernels": 0, "from": "earlier run"}
             for name in with_cubins}
    again = compare_objects(call, tmp_path, tc, known)
    assert all(again["objects"][n] == known[n] for n in with_cubins)


def test_completed_objects_are_those_ninja_finished(tmp_path):
    """Only outputs ninja logged as done and still on disk count; host code links (.so) and comments do not."""
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "a.cuda.o").write_bytes(b"a")
    (ws / "sub" / "b.o").write_bytes(b"b")
    (ws / ".ninja_log").write_text("# ninja log v7\n1\t2\t0\ta.cuda.o\tx\n1\t2\t0\t" + str(ws / "sub" / "b.o")
                                   + "\tx\n1\t2\t0\tgone.o\tx\n1\t2\t0\tlib.so\tx\nnot a record\n")
    assert completed_objects(tmp_path) == {"a.cuda.o": ws / "a.cuda.o", "b.o": ws / "sub" / "b.o"}
    (ws / "build.ninja").write_text("rule cc\nbuild a.cuda.o: cc a.cu\nbuild $\nbuild gone.o: cc g.cu\n"
                                    "build lib.so: link a.cuda.o\n")
    assert object_targets(tmp_path) == {"a.cuda.o", "gone.o"}
    # relocatable device code is device-linked: its objects are not what the library holds
    (ws / "build.ninja").write_text("cuda_cflags = -O3 -rdc=true\nbuild a.cuda.o: cc a.cu\n")
    with pytest.raises(AotcError) as err:
        object_targets(tmp_path)
    assert err.value.diagnostics[0].code == "AOTC-SASS-002"

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
from aotc.build.flashinfer.equality import _slug, compare_call
from aotc.build.toolchain import find_toolchain
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

"""What a kernel wheel's platform tag rests on: the symbol versions its host objects need, read from
ELF by aotc.elf and checked against binutils' readelf; auditwheel's rule for glibc and libstdc++;
and host helpers that share the process's CUDA runtime instead of each carrying a static one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.compile import SHARED_CUDART, compile_source, helper_flags
from aotc.build.toolchain import find_toolchain
from aotc.build.wheel_pack import glibc_needed
from aotc.elf import version_needs

ABI_DIR = str(Path(__file__).resolve().parents[1] / "templates" / "common")
SOURCE = """
#include "aotc_abi.h"
#include <cuda_runtime.h>
#ifndef AOTC_HOST_HELPER
extern "C" __global__ void aotc_kernel(float* out) { out[threadIdx.x] = 1.0f; }
#else
AOTC_EXPORT int probe_device() { int d = -1; return cudaGetDevice(&d) == cudaSuccess ? d : -1; }
#endif
"""


def readelf(flag: str, path: Path) -> str:
    return subprocess.run(["readelf", flag, "--wide", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("helper")
    result = compile_source(SOURCE, get_arch("sm120a"), find_toolchain(), include_dirs=[ABI_DIR], workdir=tmp)
    assert result.ok, result.error
    path = tmp / "helper.so"
    path.write_bytes(result.helper)
    return path


def test_version_needs_match_readelf(helper):
    needs = version_needs(helper.read_bytes())
    listed = readelf("-V", helper)
    # readelf: "File: libc.so.6  Cnt: 2" then "Name: GLIBC_2.2.5  Flags: ..." lines per library
    expected: dict[str, set[str]] = {}
    current = None
    for line in listed.splitlines():
        if m := re.search(r"File: (\S+)", line):
            current = m.group(1)
            expected.setdefault(current, set())
        elif (m := re.search(r"Name: (\S+)", line)) and current:
            expected[current].add(m.group(1))
    assert expected and {k: set(v) for k, v in needs.items()} == expected


def test_helper_shares_the_cuda_runtime(helper, tmp_path):
    assert f"Shared library: [{SHARED_CUDART}]" in readelf("-d", helper)
    # the same helper with the static runtime it used to carry: most of a kernel wheel's bytes
    (tmp_path / "h.cu").write_text(SOURCE)
    flags = [f for f in helper_flags(["-gencode", get_arch("sm120a").gencode, f"-I{ABI_DIR}"])]
    static = [*flags[: flags.index("-cudart")], "-cudart", "static",
              *[f for f in flags[flags.index("-cudart") + 2:] if f not in ("-Xlinker", f"-l:{SHARED_CUDART}")]]
    subprocess.run([find_toolchain().nvcc, *static, "-o", str(tmp_path / "static.so"), "h.cu"], cwd=tmp_path,
                   check=True, capture_output=True)
    shared_size, static_size = helper.stat().st_size, (tmp_path / "static.so").stat().st_size
    assert shared_size * 10 < static_size, (shared_size, static_size)
    # and it loads and calls into the process's one runtime (the conftest loaded it as the runtime does)
    import ctypes

    lib = ctypes.CDLL(str(helper))
    assert lib.probe_device() in (-1, 0)  # -1 without a GPU: the call itself worked


def test_glibc_rule_follows_auditwheel():
    assert glibc_needed({"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.14"]}) == ((2, 17), [])
    assert glibc_needed({"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.34"]}) == ((2, 34), ["GLIBC_2.34"])
    # libstdc++ from GCC 11 (GLIBCXX_3.4.29) first shipped in a manylinux_2_34 image
    assert glibc_needed({"libstdc++.so.6": ["GLIBCXX_3.4.29"], "libc.so.6": ["GLIBC_2.17"]}) == \
        ((2, 34), ["GLIBCXX_3.4.29"])
    assert glibc_needed({"libstdc++.so.6": ["GLIBCXX_3.4.99"]}) == (None, ["GLIBCXX_3.4.99"])
    assert glibc_needed({"libcudart.so.13": ["libcudart.so.13"]}) == ((2, 17), [])

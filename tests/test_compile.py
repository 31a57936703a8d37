"""compile_source with real nvcc: cubin + loadable helper .so, the headers actually read (a header in a
directory with a space), the exact flags, ptxas errors and timeouts as results, temp dirs cleaned;
and, marked `compile`, a real CUTLASS SM120 NVFP4 GEMM (example 79a) built and verified."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.compile import compile_source, flags, parse_deps
from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
from aotc.build.verify import verify_cubin
from aotc.elf import cubin_target

ABI_DIR = str(Path(__file__).resolve().parents[1] / "templates" / "common")

SOURCE = """
#include "probe header.h"
#include "aotc_abi.h"
#ifndef AOTC_HOST_HELPER
extern "C" __global__ void aotc_kernel(float* out) { out[threadIdx.x] = PROBE_VALUE; }
#else
#include "helper_only.h"
AOTC_EXPORT int probe_value() { return PROBE_VALUE + HELPER_EXTRA; }
#endif
"""


@pytest.fixture
def headers(tmp_path) -> Path:
    inc = tmp_path / "inc dir"
    inc.mkdir()
    (inc / "probe header.h").write_text("#pragma once\n#define PROBE_VALUE 7\n")
    (inc / "helper_only.h").write_text("#pragma once\n#define HELPER_EXTRA 100\n")
    return inc


def test_parse_deps_continuations_escapes_and_relative_paths():
    text = (
        "out/kernel.cubin : aotc_kernel.cu \\\n"
        "    /usr/include/stdio.h \\\n"
        "    /opt/my\\ dir/a\\ b.h /opt/x/../y/c.h \\\n"
        "  rel/d.h /usr/include/stdio.h\n"
        "\n"
        "/opt/my\\ dir/a\\ b.h:\n"
    )
    assert parse_deps(text, "/build/tmp", "aotc_kernel.cu") == [
        "/build/tmp/rel/d.h",
        "/opt/my dir/a b.h",
        "/opt/y/c.h",
        "/usr/include/stdio.h",
    ]


def test_compile_gives_cubin_helper_and_headers(tmp_path, headers):
    work = tmp_path / "work"
    work.mkdir()
    tc = find_toolchain()
    arch = get_arch("sm120a")
    result = compile_source(SOURCE, arch, tc, include_dirs=[str(headers), ABI_DIR], workdir=work)
    assert result.ok, result.log
    assert cubin_target(result.cubin) == (120, "a")
    assert str(headers / "probe header.h") in result.headers
    assert str(headers / "helper_only.h") in result.headers  # read only by the helper compile
    assert str(Path(ABI_DIR) / "aotc_abi.h") in result.headers
    assert not any(h.endswith("aotc_kernel.cu") for h in result.headers)
    assert set(result.seconds) == {"device", "helper"}
    assert any("registers" in line for line in result.resource_lines)
    so = tmp_path / "helper.so"
    so.write_bytes(result.helper)
    lib = ctypes.CDLL(str(so))
    assert lib.aotc_abi_version() == 1 and lib.probe_value() == 107
    assert list(work.iterdir()) == []  # temp dir removed


def test_flags_are_exact_and_free_of_temp_paths(tmp_path, headers):
    tc = find_toolchain()
    arch = get_arch("sm120f")
    device_flags = flags(arch, tc, include_dirs=[str(headers)], defines=["X=1"], extra_flags=["-lineinfo"])
    assert device_flags[:3] == ["-cubin", "-gencode", "arch=compute_120f,code=sm_120f"]
    assert "-DX=1" in device_flags and f"-I{headers}" in device_flags and device_flags[-1] == "-lineinfo"
    result = compile_source(SOURCE, arch, tc, include_dirs=[str(headers), ABI_DIR], workdir=tmp_path,
                            with_helper=False)
    assert result.ok and result.helper is None
    used = flags(arch, tc, include_dirs=[str(headers), ABI_DIR])
    assert all("aotc-nvcc-" not in f for f in used)
    first_cmd = result.log.splitlines()[0]
    assert " ".join(used[:6]) in first_cmd  # the log shows the very flags the key is made of


def test_compile_error_is_a_result_with_the_log(tmp_path):
    result = compile_source("this is not C++;", get_arch("sm120a"), find_toolchain(), include_dirs=[],
                            workdir=tmp_path)
    assert not result.ok and result.cubin is None
    assert "device compile failed" in result.error and "error" in result.log
    assert list(tmp_path.iterdir()) == []


def test_tcgen05_for_sm120a_fails_cleanly_with_the_ptxas_message(tmp_path):
    source = """
extern "C" __global__ void aotc_kernel(unsigned* out) {
  __shared__ unsigned dst;
  asm volatile("tcgen05.alloc.cta_group::1.sync.aligned.shared::cta.b32 [%0], 32;"
               :: "r"((unsigned)__cvta_generic_to_shared(&dst)));
  out[threadIdx.x] = dst;
}
"""
    result = compile_source(source, get_arch("sm120a"), find_toolchain(), include_dirs=[], workdir=tmp_path)
    assert not result.ok
    assert "Instruction 'tcgen05.alloc' not supported on .target 'sm_120a'" in result.log
    assert "tcgen05.alloc" in result.error
    assert list(tmp_path.iterdir()) == []


def test_timeout_kills_nvcc_and_cleans_up(tmp_path, headers):
    work = tmp_path / "work"
    work.mkdir()
    result = compile_source(SOURCE, get_arch("sm120a"), find_toolchain(), include_dirs=[str(headers), ABI_DIR],
                            workdir=work, timeout=0.05)
    assert not result.ok
    assert "timed out" in result.error and "0.05" in result.error
    assert "timeout" in result.log
    assert list(work.iterdir()) == []


@pytest.mark.compile
def test_cutlass_sm120_nvfp4_gemm_compiles_and_verifies(tmp_path):
    """Example 79a (CUTLASS 4.2, NVFP4 GEMM for GeForce Blackwell): OMMA present, nothing banned."""
    spec = importlib.util.find_spec("cutlass_library")
    root = Path(next(iter(spec.submodule_search_locations))) / "source" / "examples"
    source = (root / "79_blackwell_geforce_gemm" / "79a_blackwell_geforce_nvfp4_bf16_gemm.cu").read_text()
    tc = find_toolchain()
    arch = get_arch("sm120a")
    result = compile_source(source, arch, tc, include_dirs=[*cutlass_include_dirs(), str(root / "common")],
                            workdir=tmp_path, with_helper=False)
    assert result.ok, result.log[-4000:]
    assert any(h.endswith("cutlass/gemm/collective/sm120_blockscaled_mma_tma.hpp") for h in result.headers)
    report = verify_cubin(result.cubin, arch, "OMMA", tc, arch.smem_optin_bytes, 0)
    assert report.ok, [d.format() for d in report.diagnostics]
    assert report.mma_counts.get("OMMA", 0) > 0 and report.banned_found == {}


def test_killed_nvcc_is_reported_as_probable_oom():
    # The exit shapes nvcc shows when the OOM killer strikes: nvcc itself killed, or a stage killed.
    from aotc.build.compile import _failure_reason, _Run

    for run in (_Run(-9, "", 42.0), _Run(1, "nvcc error   : 'cicc' died due to signal 9 (Kill signal)", 42.0)):
        reason = _failure_reason("device", run, None)
        assert "out-of-memory" in reason and "fewer parallel jobs" in reason and "42 s" in reason


SPILLING = """
#include "common/aotc_abi.h"
#ifndef AOTC_HOST_HELPER
extern "C" __global__ void __launch_bounds__(1024, 2) aotc_kernel(float* out, const float* in, int n) {
  float acc[48];  // 48 values live across the loop: more than the registers 2 blocks of 1024 leave
#pragma unroll
  for (int i = 0; i < 48; ++i) acc[i] = in[threadIdx.x + i * n];
  for (int k = 0; k < n; ++k) {
#pragma unroll
    for (int i = 0; i < 48; ++i) acc[i] = acc[i] * acc[(i + 7) % 48] + in[k + i];
  }
#pragma unroll
  for (int i = 0; i < 48; ++i) out[threadIdx.x + i * n] = acc[i];
}
#endif
"""


def test_spills_come_from_ptxas_where_the_cubins_local_size_reads_zero():
    from aotc.build.tu_task import TuCompiler, TuJob

    spilling = TuCompiler()(TuJob("spill", "sm120a", SPILLING, 0, None))
    assert spilling.ok, spilling.log
    res = spilling.resources  # what the store step writes into the manifest
    assert res["spills_bytes"] > 0 and res["spill_loads_bytes"] > 0 and res["stack_frame_bytes"] > 0
    assert res["local_bytes"] == 0  # cuobjdump -res-usage's LOCAL: the figure spills used to be read from
    line = next(ln for ln in spilling.log.splitlines() if "bytes spill stores" in ln)
    assert f"{res['spills_bytes']} bytes spill stores" in line
    plain = TuCompiler()(TuJob("plain", "sm120a", SPILLING.replace("__launch_bounds__(1024, 2) ", "")
                               .replace("48", "4"), 0, None))
    assert plain.ok and plain.resources["spills_bytes"] == 0

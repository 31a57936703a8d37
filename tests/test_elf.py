"""aotc.elf on real cubins from nvcc: target (SM + a/f variant) for every arch aotc builds for, kernel
symbols, static SMEM, and clear AOTC-ELF-001 refusals for bytes that are not a whole cubin."""

from __future__ import annotations

import pytest

from aotc.arch import get_arch
from aotc.build.compile import compile_source
from aotc.build.toolchain import find_toolchain
from aotc.diagnostics import AotcError
from aotc.elf import cubin_target, kernel_smem_static, kernel_symbols

# 256 floats of static SMEM = 1024 B, known from the source alone.
KERNEL = """
extern "C" __global__ void aotc_kernel(float* out) {
  __shared__ float buf[256];
  buf[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = buf[255 - threadIdx.x];
}
extern "C" __global__ void second_kernel(float* out) { out[threadIdx.x] = 1.0f; }
"""

TARGETS = {"sm120a": (120, "a"), "sm120f": (120, "f"), "sm121a": (121, "a"), "sm90a": (90, "a"), "sm80": (80, "")}


@pytest.fixture(scope="module")
def cubins(tmp_path_factory) -> dict[str, bytes]:
    tc = find_toolchain()
    out = {}
    for name in TARGETS:
        result = compile_source(
            KERNEL, get_arch(name), tc, include_dirs=[], workdir=tmp_path_factory.mktemp(name), with_helper=False
        )
        assert result.ok, result.log
        out[name] = result.cubin
    return out


@pytest.mark.parametrize("arch", list(TARGETS))
def test_target_matches_the_gencode(cubins, arch):
    assert cubin_target(cubins[arch]) == TARGETS[arch]


def test_a_and_f_builds_are_told_apart_even_though_e_flags_agree(cubins):
    a, f = cubins["sm120a"], cubins["sm120f"]
    assert a[0x30:0x34] == f[0x30:0x34]  # same e_flags: the variant lives elsewhere
    assert cubin_target(a) != cubin_target(f)


def test_without_the_ptxas_note_the_compat_section_still_says_arch_specific(cubins):
    # Blank out the ptxas command line; the `.nv.compat` attribute alone must carry "a".
    a = cubins["sm120a"].replace(b"-arch sm_120a", b"-xxxx sm_120a")
    f = cubins["sm120f"].replace(b"-arch sm_120f", b"-xxxx sm_120f")
    assert cubin_target(a) == (120, "a")
    assert cubin_target(f) == (120, "")  # f and plain read alike; both run on every SM12x


def test_contradicting_target_records_are_refused(cubins):
    forged = cubins["sm120f"].replace(b"-arch sm_120f", b"-arch sm_120a")
    with pytest.raises(AotcError) as err:
        cubin_target(forged)
    assert err.value.diagnostics[0].code == "AOTC-ELF-001"
    assert "ambiguous" in str(err.value)


def test_kernel_symbols_and_static_smem(cubins):
    for name in TARGETS:
        assert sorted(kernel_symbols(cubins[name])) == ["aotc_kernel", "second_kernel"]
        # the driver's count: 1024 B on every arch, though sm_90+ sections include a 1 KiB reservation
        assert kernel_smem_static(cubins[name], "aotc_kernel") == 1024
        assert kernel_smem_static(cubins[name], "second_kernel") == 0


def test_unknown_kernel_name_is_a_clear_error(cubins):
    with pytest.raises(AotcError) as err:
        kernel_smem_static(cubins["sm120a"], "nope")
    assert "aotc_kernel" in str(err.value)


@pytest.mark.parametrize("cut", [0, 3, 40, 64, 200, 1000])
def test_truncated_cubin_is_refused(cubins, cut):
    with pytest.raises(AotcError) as err:
        cubin_target(cubins["sm120a"][:cut])
    diag = err.value.diagnostics[0]
    assert diag.code == "AOTC-ELF-001"
    assert str(cut) in diag.message and diag.fix


def test_non_elf_bytes_are_refused():
    with pytest.raises(AotcError) as err:
        kernel_symbols(b"PK\x03\x04 this is a zip file, not a cubin" * 4)
    assert err.value.diagnostics[0].code == "AOTC-ELF-001"
    assert "not an ELF" in err.value.diagnostics[0].message


def test_host_elf_is_not_a_cubin():
    with open("/bin/sh", "rb") as f:
        data = f.read(1 << 16)
    with pytest.raises(AotcError) as err:
        cubin_target(data)
    assert "not a CUDA cubin" in str(err.value)

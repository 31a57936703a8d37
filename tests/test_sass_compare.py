"""aotc.build.sass_compare on real nvcc output (tiny kernels, seconds): cubins found inside a host
shared library, the same build twice is byte-identical, a renamed kernel is equal once symbol
names are normalised, a changed kernel is different and the first differing instruction is named.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aotc.build import sass_compare as sc
from aotc.build.toolchain import find_toolchain

GENCODE = "arch=compute_120a,code=sm_120a"
KERNEL = """
extern "C" __global__ void NAME(float* out, const float* in, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * SCALE + 1.0f;
}
"""


@pytest.fixture(scope="module")
def tc():
    t = find_toolchain()
    if not t.cuobjdump:
        pytest.skip("cuobjdump not installed")
    return t


def _build(tc, tmp: Path, stem: str, name: str, scale: str, shared: bool = False) -> Path:
    src = tmp / f"{stem}.cu"
    src.write_text(KERNEL.replace("NAME", name).replace("SCALE", scale))
    out = tmp / (f"lib{stem}.so" if shared else f"{stem}.cubin")
    kind = ["-shared", "-Xcompiler", "-fPIC"] if shared else ["-cubin"]
    subprocess.run([tc.nvcc, *kind, "-gencode", GENCODE, "-O3", "-o", str(out), str(src)], check=True,
                   capture_output=True)
    return out


def test_cubins_inside_a_shared_library_are_found_and_compared(tc, tmp_path):
    a = _build(tc, tmp_path, "a", "scale_kernel", "2.0f", shared=True)
    b = _build(tc, tmp_path, "b", "scale_kernel", "2.0f", shared=True)
    cubins = sc.extract_cubins(a, tc)
    # nvcc -shared also embeds a kernel-less cubin (its device-link object)
    assert {c.target for c in cubins} == {"sm_120a"}
    assert [c.kernels for c in cubins if c.kernels] == [("scale_kernel",)]
    report = sc.compare_libraries(a, b, tc, jobs=2)
    n = len(cubins)
    assert report.equal and report.counts() == {sc.BYTE_IDENTICAL: n, sc.NORMALISED_EQUAL: 0, sc.DIFFERENT: 0}


def test_renamed_kernel_is_equal_after_normalising_names(tc, tmp_path):
    a = _build(tc, tmp_path, "a", "first_name", "2.0f")
    b = _build(tc, tmp_path, "b", "second_name", "2.0f")
    assert a.read_bytes() != b.read_bytes()
    k = sc.compare_kernel(a.read_bytes(), "first_name", b.read_bytes(), "second_name", tc)
    assert k.equal and k.equal_modulo_registers and not k.opcode_delta
    assert k.instructions[0] == k.instructions[1] > 5
    assert k.resources[0] == k.resources[1] and k.resources[0]["registers"] > 0
    # the same two cubins as whole files: not the same kernel set, so different, and it says why
    c = sc.compare_cubins(sc.Cubin("a", a.read_bytes()), sc.Cubin("b", b.read_bytes()), tc)
    assert c.verdict == sc.DIFFERENT
    assert {d["kernel"] for d in c.different_kernels} == {"first_name", "second_name"}


def test_changed_kernel_is_different_and_the_difference_is_named(tc, tmp_path):
    a = _build(tc, tmp_path, "a", "k", "2.0f")
    b = _build(tc, tmp_path, "b", "k", "3.0f")  # another immediate in the FFMA
    c = sc.compare_cubins(sc.Cubin("a", a.read_bytes()), sc.Cubin("b", b.read_bytes()), tc)
    assert c.verdict == sc.DIFFERENT
    first = c.different_kernels[0]["first_difference"]
    assert first["a"] != first["b"] and sc.opcode(first["a"]) == sc.opcode(first["b"])
    assert ".text.k" in c.differing_sections


def test_normalise_makes_branch_targets_relative_and_drops_names():
    # the same code at two base addresses, one calling another symbol name
    a = ["0|ISETP.GE.AND P0, PT, R0, 0x10, PT", "16|@P0 BRA 0x30", "32|CALL.ABS.NOINC `(_Z3foov)",
         "48|EXIT"]
    b = ["0|ISETP.GE.AND P0, PT, R0, 0x10, PT", "16|@P0 BRA 0x30", "32|CALL.ABS.NOINC `(_Z3barv)",
         "48|EXIT"]
    assert sc.normalise(a) == sc.normalise(b)
    assert sc.normalise(a)[1] == "@P0 BRA @+2"  # 0x30 is two instructions ahead of the branch at 0x10
    assert "0x10" in sc.normalise(a)[0]  # an immediate is not a branch target
    assert sc.normalise(["0|MOV R12, R3"], registers=True) == ["MOV R, R"]
    assert sc.opcode("@!P0 OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X R4, R8, R12, R4") == "OMMA"

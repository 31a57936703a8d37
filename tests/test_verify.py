"""verify_cubin on real cubins: an mma.sync kernel shows HMMA and passes for sm_120a; a tcgen05 kernel
(sm_100a) and a wgmma kernel (sm_90a) are caught as banned for sm_120a; wrong targets, a missing
expected MMA, SMEM over budget and missing disassemblers each give their own diagnostic."""

from __future__ import annotations

import dataclasses

import pytest

from aotc.arch import SM120_SMEM_OPTIN, get_arch
from aotc.build.compile import compile_source
from aotc.build.toolchain import find_toolchain
from aotc.build.verify import verify_cubin

# One m16n8k16 bf16 mma.sync = one HMMA.16816 on sm_80+; 256 floats = 1024 B static SMEM.
MMA_KERNEL = """
extern "C" __global__ void aotc_kernel(float* out, const unsigned* a, const unsigned* b) {
  __shared__ float buf[256];
  float c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  buf[threadIdx.x] = c0 + c1 + c2 + c3;
  __syncthreads();
  out[threadIdx.x] = buf[255 - threadIdx.x];
}
"""

TCGEN05_KERNEL = """
extern "C" __global__ void aotc_kernel(unsigned* out) {
  __shared__ unsigned dst;
  if (threadIdx.x < 32) {
    asm volatile("tcgen05.alloc.cta_group::1.sync.aligned.shared::cta.b32 [%0], 32;"
                 :: "r"((unsigned)__cvta_generic_to_shared(&dst)));
    asm volatile("tcgen05.relinquish_alloc_permit.cta_group::1.sync.aligned;");
  }
  __syncthreads();
  out[threadIdx.x] = dst;
}
"""

WGMMA_KERNEL = """
extern "C" __global__ void aotc_kernel(float* out, unsigned long long da, unsigned long long db) {
  float c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  asm volatile("wgmma.fence.sync.aligned;");
  asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %6, 0;\\n"
               "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, 0, 0;\\n}"
               : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3) : "l"(da), "l"(db), "r"(1));
  asm volatile("wgmma.commit_group.sync.aligned;");
  asm volatile("wgmma.wait_group.sync.aligned 0;");
  out[threadIdx.x] = c0 + c1 + c2 + c3;
}
"""

# A TMA load multicast to the CTAs of a cluster: SM12x clusters are 1x1x1.
MULTICAST_KERNEL = """
extern "C" __global__ void aotc_kernel(const __grid_constant__ unsigned long long desc, int* out) {
  __shared__ alignas(128) int buf[1024];
  __shared__ unsigned long long bar;
  unsigned sb = (unsigned)__cvta_generic_to_shared(buf), bb = (unsigned)__cvta_generic_to_shared(&bar);
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
               " [%0], [%1, {%2, %3}], [%4], %5;"
               :: "r"(sb), "l"(&desc), "r"(0), "r"(0), "r"(bb), "h"((unsigned short)1) : "memory");
  out[threadIdx.x] = buf[threadIdx.x];
}
"""


def build(source: str, arch: str, tmp_path) -> bytes:
    result = compile_source(source, get_arch(arch), find_toolchain(), include_dirs=[], workdir=tmp_path,
                            with_helper=False)
    assert result.ok, result.log
    return result.cubin


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    return {
        "mma120a": build(MMA_KERNEL, "sm120a", tmp),
        "mma90a": build(MMA_KERNEL, "sm90a", tmp),
        "tcgen05_100a": build(TCGEN05_KERNEL, "sm100a", tmp),
        "wgmma_90a": build(WGMMA_KERNEL, "sm90a", tmp),
        "multicast_90a": build(MULTICAST_KERNEL, "sm90a", tmp),
    }


def check(cubin: bytes, arch: str, mma: str | None, dynamic: int = 0, toolchain=None):
    a = get_arch(arch)
    return verify_cubin(cubin, a, mma, toolchain or find_toolchain(), a.smem_optin_bytes, dynamic)


def codes(report) -> list[str]:
    return [d.code for d in report.diagnostics]


def test_mma_sync_kernel_passes_for_sm120a(built):
    report = check(built["mma120a"], "sm120a", "HMMA")
    assert report.ok, [d.format() for d in report.diagnostics]
    assert report.target == {"sm": 120, "variant": "a"}
    assert report.mma_counts == {"HMMA": 1}
    assert report.banned_found == {}
    res = report.resources["aotc_kernel"]
    assert res["smem_static"] == 1024 and res["registers"] > 0
    assert report.to_json()["sass"] == {"mma": {"HMMA": 1}, "banned": []}


def test_tcgen05_kernel_is_legal_on_sm100a(built):
    report = check(built["tcgen05_100a"], "sm100a", None)
    assert report.ok, [d.format() for d in report.diagnostics]


def test_tcgen05_kernel_is_banned_for_sm120a(built):
    report = check(built["tcgen05_100a"], "sm120a", None)
    assert not report.ok
    assert codes(report) == ["AOTC-VERIFY-001", "AOTC-VERIFY-002"]
    assert any(op.startswith("UTCATOMSWS") for op in report.banned_found)
    assert "UTCATOMSWS" in report.diagnostics[1].message


def test_wgmma_kernel_is_banned_for_sm120a_and_legal_on_sm90a(built):
    assert check(built["wgmma_90a"], "sm90a", "HGMMA").ok
    report = check(built["wgmma_90a"], "sm120a", None)
    assert "AOTC-VERIFY-002" in codes(report)
    assert any(op.startswith("HGMMA") for op in report.banned_found)


def test_cluster_multicast_is_banned_for_sm120a(built):
    assert check(built["multicast_90a"], "sm90a", None).ok
    report = check(built["multicast_90a"], "sm120a", None)
    assert any(op.startswith("UTMALDG") and "MULTICAST" in op for op in report.banned_found)


def test_sm120a_ptxas_lowers_multicast_to_a_plain_tma_load_with_an_advisory(tmp_path):
    """ptxas accepts .multicast::cluster for sm_120a: the SASS shows no MULTICAST, only the compile
    warning does, so the arch rules (not the SASS scan) must keep multicast out of SM12x specs."""
    result = compile_source(MULTICAST_KERNEL, get_arch("sm120a"), find_toolchain(), include_dirs=[],
                            workdir=tmp_path, with_helper=False)
    if not result.ok:  # a stricter ptxas may refuse it outright; that keeps multicast out too
        assert ".multicast::cluster" in result.log
        return
    assert any(".multicast::cluster" in w and "sm_120a" in w for w in result.warnings)
    report = check(result.cubin, "sm120a", None)
    assert report.ok and report.banned_found == {}


def test_wrong_arch_cubin_is_refused(built):
    report = check(built["mma90a"], "sm120a", "HMMA")
    assert codes(report) == ["AOTC-VERIFY-001"]
    assert "sm_90a" in report.diagnostics[0].message and "sm_120a" in report.diagnostics[0].message
    assert report.diagnostics[0].details == {"got": "sm_90a", "expected": "sm_120a"}
    assert "arch=compute_120a,code=sm_120a" in report.diagnostics[0].fix  # the -gencode to use
    assert not check(built["mma120a"], "sm120f", "HMMA").ok  # a and f are different targets


def test_missing_expected_mma_is_reported(built):
    report = check(built["mma120a"], "sm120a", "OMMA")
    assert codes(report) == ["AOTC-VERIFY-003"]
    assert "OMMA" in report.diagnostics[0].message and "HMMA x1" in report.diagnostics[0].message


def test_smem_budget_counts_static_plus_dynamic(built):
    assert check(built["mma120a"], "sm120a", "HMMA", dynamic=SM120_SMEM_OPTIN - 1024).ok
    report = check(built["mma120a"], "sm120a", "HMMA", dynamic=SM120_SMEM_OPTIN - 1023)
    assert codes(report) == ["AOTC-VERIFY-004"]
    msg = report.diagnostics[0].message
    assert "1024 B static + 100353 B dynamic = 101377 B" in msg and "101376 B (1 B over)" in msg


def test_nvdisasm_is_used_when_cuobjdump_is_missing(built):
    tc = find_toolchain()
    if tc.nvdisasm is None:
        pytest.skip("no nvdisasm in this toolchain")
    report = check(built["tcgen05_100a"], "sm120a", None, toolchain=dataclasses.replace(tc, cuobjdump=None))
    assert any(op.startswith("UTCATOMSWS") for op in report.banned_found)


def test_missing_disassemblers_fail_closed(built):
    tc = dataclasses.replace(find_toolchain(), cuobjdump=None, nvdisasm=None)
    report = check(built["mma120a"], "sm120a", "HMMA", toolchain=tc)
    assert not report.ok
    assert codes(report) == ["AOTC-VERIFY-005"] and "cuobjdump" in report.diagnostics[0].message
    assert "pip install nvidia-cuda-cuobjdump" in report.diagnostics[0].fix


def test_garbage_bytes_give_the_elf_diagnostic():
    report = check(b"\x7fELF" + b"\0" * 20, "sm120a", None)
    assert codes(report) == ["AOTC-ELF-001"] and report.ok is False


def test_resources_come_from_the_elf_and_res_usage(built, tmp_path):
    import subprocess

    from aotc.build.verify import parse_res_usage

    tc = find_toolchain()
    path = tmp_path / "k.cubin"
    path.write_bytes(built["mma120a"])
    usage = parse_res_usage(subprocess.run([tc.cuobjdump, "-res-usage", str(path)], capture_output=True, text=True,
                                           check=True).stdout)["aotc_kernel"]
    report = check(built["mma120a"], "sm120a", "HMMA", dynamic=512)
    assert report.resources == {"aotc_kernel": {
        "smem_static": 1024, "smem_dynamic": 512, "registers": usage["REG"], "stack_bytes": usage["STACK"],
        "local_bytes": usage["LOCAL"], "shared_section_bytes": usage["SHARED"]}}
    over = check(built["mma120a"], "sm120a", "HMMA", dynamic=SM120_SMEM_OPTIN)
    assert over.diagnostics[0].details == {"kernel": "aotc_kernel", "static": 1024, "dynamic": SM120_SMEM_OPTIN,
                                           "budget": SM120_SMEM_OPTIN}
    assert over.diagnostics[0].fix  # what to change
    if tc.nvdisasm:  # nvdisasm gives no resource usage: only what the ELF says
        report = check(built["mma120a"], "sm120a", "HMMA", dynamic=512,
                       toolchain=dataclasses.replace(tc, cuobjdump=None))
        assert report.ok and report.resources == {"aotc_kernel": {"smem_static": 1024, "smem_dynamic": 512}}


# 512 floats indexed at run time cannot live in registers: a 2048 B stack frame, known from the source.
STACK_KERNEL = """
extern "C" __global__ void aotc_kernel(float* out, int n) {
  float local[512];
  for (int i = 0; i < 512; ++i) local[i] = out[i * n + threadIdx.x];
  out[threadIdx.x] = local[(threadIdx.x * 7 + n) & 511];
}
"""


def test_a_stack_frame_is_reported_in_bytes(tmp_path):
    report = check(build(STACK_KERNEL, "sm120a", tmp_path), "sm120a", None)
    assert report.ok and report.resources["aotc_kernel"]["stack_bytes"] == 2048
    assert report.resources["aotc_kernel"]["local_bytes"] == 0  # (the ABI keeps local arrays in the stack frame)

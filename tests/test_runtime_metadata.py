"""The runtime's metadata kernels (aotc.runtime.metadata): the PTX assembles for every target the
runtime serves, the ctypes parameter structs mirror the PTX parameter lists byte for byte (what
cuLaunchKernel copies from kernelParams), and the MoE block layout matches the grouped GEMM's
arrays. Numerical proof on the GPU: tools/device_serving.py (bench/results/serving_h200.md)."""

from __future__ import annotations

import ctypes
import itertools
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from aotc.runtime import metadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ptx_exec import Kernel, Memory  # a test-only module beside this file

# PTX parameter types -> (size, alignment) in bytes
PTX_TYPES = {"u64": 8, "s64": 8, "b64": 8, "u32": 4, "s32": 4, "b32": 4}


def ptx_params(entry: str) -> list[tuple[int, int]]:
    """(offset, size) of each parameter of `entry` as the PTX declares them (natural alignment, or
    the declared .align for byte arrays)."""
    body = re.search(rf"\.entry {entry}\((.*?)\)", metadata.PTX, re.DOTALL)
    assert body, entry
    out, offset = [], 0
    for decl in body.group(1).split(","):
        m = re.search(r"\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+\w+(?:\[(\d+)\])?", decl)
        assert m, decl
        align = int(m.group(1) or PTX_TYPES[m.group(2)])
        size = int(m.group(3)) if m.group(3) else PTX_TYPES[m.group(2)]
        offset = -(-offset // align) * align
        out.append((offset, size))
        offset += size
    return out


def struct_params(struct: type[ctypes.Structure]) -> list[tuple[int, int]]:
    return [(getattr(struct, name).offset, ctypes.sizeof(kind)) for name, kind in struct._fields_
            if not name.startswith("_")]


@pytest.mark.parametrize(("entry", "struct"), [("aotc_fill", metadata.FillParams),
                                               ("aotc_moe_groups", metadata.MoeParams),
                                               ("aotc_moe_blockscaled_groups", metadata.MoeBlockScaledParams)])
def test_parameter_structs_mirror_the_ptx_parameter_lists(entry, struct):
    assert struct_params(struct) == ptx_params(entry)


def test_fill_chunk_fits_the_ptx_70_parameter_limit():
    last_offset, last_size = ptx_params("aotc_fill")[-1]
    assert last_size == metadata.FILL_CHUNK and last_offset + last_size <= 4096


def test_kernel_params_point_at_each_declared_parameter():
    params = metadata.MoeParams(offsets=0x1000, experts=64, elem_bytes=2)
    pointers = metadata.param_pointers(params)
    base = ctypes.addressof(params)
    assert [p - base for p in pointers] == [o for o, _ in ptx_params("aotc_moe_groups")]
    assert ctypes.c_uint64.from_address(pointers[0]).value == 0x1000
    assert ctypes.c_int32.from_address(pointers[6]).value == 64


@pytest.mark.parametrize("experts", [1, 8, 64, 128, 257])
def test_moe_block_layout_matches_the_grouped_gemm_arrays(experts):
    size, at = metadata.moe_block_layout(experts)
    # problem sizes: int32 (M, N, K) per expert, then six 8-byte arrays, each 8-byte aligned
    assert at[0] == 0 and at[1] >= 12 * experts and at[1] % 16 == 0
    assert [b - a for a, b in itertools.pairwise(at[1:])] == [8 * experts] * 5
    assert size == at[-1] + 8 * experts


def test_the_ptx_executor_agrees_with_the_ptx_parameter_offsets():
    for entry, params in (("aotc_fill", metadata.FillParams), ("aotc_moe_groups", metadata.MoeParams),
                          ("aotc_moe_blockscaled_groups", metadata.MoeBlockScaledParams)):
        assert list(Kernel(metadata.PTX, entry).params.values()) == [o for o, _ in struct_params(params)]


def test_fill_ptx_executed_on_the_cpu_writes_its_blob():
    blob = bytes(range(256)) * 20  # 5,120 B: two launches
    memory = Memory()
    dst = memory.place(0x7F00_0000_0000, bytes(len(blob) + 64))
    for at in range(0, len(blob), metadata.FILL_CHUNK):
        part = blob[at:at + metadata.FILL_CHUNK]
        params = metadata.FillParams(dst + at, len(part))
        ctypes.memmove(params.data, part, len(part))
        Kernel(metadata.PTX, "aotc_fill").run(bytes(params), memory, 1, metadata.FILL_THREADS)
    assert memory.region(dst) == blob + bytes(64)  # every byte written, nothing past the end


def moe_offsets(case: str, experts: int, tokens: int) -> list[int]:
    """Expert offsets [E+1]: 'random' (every third expert gets tokens, the others none), 'one' (one
    expert takes every token), 'empty' (no tokens at all)."""
    import random

    rng = random.Random(experts * 31 + tokens)
    if case == "one":
        counts = [tokens if e == experts // 2 else 0 for e in range(experts)]
    elif case == "empty":
        counts = [0] * experts
    else:
        picks = [rng.randrange(0, experts) // 3 * 3 for _ in range(tokens)]
        counts = [picks.count(e) for e in range(experts)]
    return [0, *itertools.accumulate(counts)]


@pytest.mark.parametrize("experts", [8, 64, 128])
@pytest.mark.parametrize("case", ["random", "one", "empty"])
def test_moe_groups_ptx_executed_on_the_cpu_matches_the_grouped_gemm_arrays(experts, case):
    """aotc_moe_groups (grouped_gemm_moe's device routing), run as shipped, launched as the runtime
    launches it: per expert e with rows s..t, (t - s, N, K), A + s * lda, B + e * stride, D + s * ldd."""
    n, k, tokens = 256, 512, 16 * experts + 7
    offsets = moe_offsets(case, experts, tokens)
    size, at = metadata.moe_block_layout(experts)
    memory = Memory()
    off_ptr = memory.place(0x7E00_0000_0000, struct.pack(f"<{experts + 1}i", *offsets))
    block = memory.place(0x7E10_0000_0000, b"\xcd" * size)
    a, b, d = 0x7F00_0000_0000, 0x7F10_0000_0000, 0x7F20_0000_0000
    params = metadata.MoeParams(off_ptr, a, b, d, block, n * k * 2, experts, n, k, 0, k, k, n, 2)
    # the launch shape of moe_groups_call
    Kernel(metadata.PTX, "aotc_moe_groups").run(bytes(params), memory, metadata._moe_grid(experts),
                                                metadata.MOE_THREADS)
    out = memory.region(block)
    m = [offsets[e + 1] - offsets[e] for e in range(experts)]
    assert struct.unpack_from(f"<{3 * experts}i", out, 0) == tuple(v for e in range(experts) for v in (m[e], n, k))
    want = [[a + offsets[e] * k * 2 for e in range(experts)], [b + e * n * k * 2 for e in range(experts)],
            [d + offsets[e] * n * 2 for e in range(experts)], [k] * experts, [k] * experts, [n] * experts]
    for i, column in enumerate(want):
        assert list(struct.unpack_from(f"<{experts}q", out, at[1 + i])) == column


@pytest.mark.parametrize("target", ["sm_80", "sm_90a", "sm_120a"])
def test_ptx_assembles_for_the_served_targets(tmp_path: Path, target: str):
    try:
        from aotc.build.toolchain import find_toolchain

        nvcc = Path(find_toolchain().nvcc)
    except Exception as exc:  # noqa: BLE001 - no toolkit on this machine
        pytest.skip(f"no CUDA toolkit: {exc}")
    ptxas = nvcc.parent / "ptxas"
    if not ptxas.exists():
        pytest.skip(f"no ptxas beside {nvcc}")
    src = tmp_path / "metadata.ptx"
    src.write_text(metadata.PTX)
    out = subprocess.run([str(ptxas), f"-arch={target}", str(src), "-o", str(tmp_path / "m.cubin")],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

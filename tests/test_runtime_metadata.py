"""The runtime's metadata kernels (aotc.runtime.metadata): the PTX assembles for every target the
runtime serves, the ctypes parameter structs mirror the PTX parameter lists byte for byte (what
cuLaunchKernel copies from kernelParams), and the MoE block layout matches the grouped GEMM's
arrays. Numerical proof on the GPU: tools/device_serving.py (bench/results/runtime_h200.md)."""

from __future__ import annotations

import ctypes
import itertools
import re
import subprocess
from pathlib import Path

import pytest

from aotc.runtime import metadata

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
                                               ("aotc_moe_groups", metadata.MoeParams)])
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

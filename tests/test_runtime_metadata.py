"""The runtime's metadata kernels (aotc.runtime.metadata): the PTX assembles for every target the
runtime serves, the ctypes parameter structs mirror the PTX parameter lists byte for byte (what
cuLaunchKernel copies from kernelParams), and aotc_fill writes its blob. (BF16/FP16 grouped_gemm_moe
needs no metadata kernel: its GEMM derives the experts' problems, tests/test_grouped_routed.py.)
Numerical proof on the GPU: tools/device_serving.py (bench/results/serving_h200.md)."""

from __future__ import annotations

import ctypes
import itertools
import re
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
                                               ("aotc_moe_blockscaled_groups", metadata.MoeBlockScaledParams)])
def test_parameter_structs_mirror_the_ptx_parameter_lists(entry, struct):
    assert struct_params(struct) == ptx_params(entry)


def test_fill_chunk_fits_the_ptx_70_parameter_limit():
    last_offset, last_size = ptx_params("aotc_fill")[-1]
    assert last_size == metadata.FILL_CHUNK and last_offset + last_size <= 4096


def test_kernel_params_point_at_each_declared_parameter():
    params = metadata.MoeBlockScaledParams(offsets=0x1000, experts=64)
    pointers = metadata.param_pointers(params)
    base = ctypes.addressof(params)
    assert [p - base for p in pointers] == [o for o, _ in ptx_params("aotc_moe_blockscaled_groups")]
    assert ctypes.c_uint64.from_address(pointers[0]).value == 0x1000
    assert ctypes.c_int32.from_address(pointers[8]).value == 64


def test_bf16_moe_needs_no_metadata_kernel():
    """grouped_gemm_moe is one launch: the PTX module holds no routing kernel for it any more."""
    assert ".entry aotc_moe_groups" not in metadata.PTX
    assert not hasattr(metadata, "moe_groups_call") and not hasattr(metadata, "MoeParams")


def test_the_ptx_executor_agrees_with_the_ptx_parameter_offsets():
    for entry, params in (("aotc_fill", metadata.FillParams),
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

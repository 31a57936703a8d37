"""SMEM ground truth for the fmha families: compile the host-only probe of SharedStorage with real
nvcc + CUTLASS headers and compare sizeof/offsetof with the family's byte-exact model, including
a tile that the rules reject (the model must be right where it matters: at the budget), and e4m3
tiles (1-byte elements)."""

from __future__ import annotations

import ctypes
import json
import subprocess

import pytest

from aotc.arch import get_arch
from aotc.build.render import render_probe
from aotc.build.spec import KernelSpec
from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
from aotc.families import get_family
from aotc.families.fmha import FmhaArgs
from aotc.resources import templates_dir

# (family, params): catalog-like tiles, a decode tile (flag member + tail padding), an over-budget tile.
CASES = [
    ("fmha_fwd", {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "bf16"}),
    ("fmha_fwd", {"block_m": 128, "block_n": 64, "head_dim": 64, "warps": 8, "kv_stages": 2, "dtype": "fp16"}),
    ("fmha_decode", {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16"}),
    ("fmha_fwd", {"block_m": 128, "block_n": 128, "head_dim": 256, "warps": 8, "kv_stages": 2, "dtype": "bf16"}),
    # e4m3: 1-byte elements, the catalog's 64x128 tile and a head_dim 256 double-buffered one
    ("fmha_fwd", {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "e4m3"}),
    ("fmha_fwd", {"block_m": 64, "block_n": 64, "head_dim": 256, "warps": 4, "kv_stages": 2, "dtype": "e4m3"}),
    # paged twins: the same SharedStorage as the contiguous families (pages change addresses only)
    ("fmha_decode_paged", {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2,
                           "dtype": "bf16"}),
]


def run_probe(family: str, params: dict, tmp_path) -> dict:
    typed, errors = get_family(family).validate(params)
    assert not errors, errors
    spec = KernelSpec(f"probe_{family}", family, typed, ())
    source = render_probe(spec, get_arch("sm120a")).text
    src = tmp_path / f"{family}_probe.cu"
    exe = tmp_path / f"{family}_probe"
    src.write_text(source)
    includes = [f"-I{d}" for d in (templates_dir(), *cutlass_include_dirs())]
    subprocess.run([find_toolchain().nvcc, "-std=c++17", *includes, "-o", str(exe), str(src)], check=True,
                   capture_output=True, text=True, timeout=120)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


@pytest.mark.compile
@pytest.mark.parametrize("family,params", CASES, ids=lambda x: x if isinstance(x, str) else
                         "{block_m}x{block_n}_d{head_dim}_s{kv_stages}_{dtype}".format(**x))
def test_model_matches_sizeof(family, params, tmp_path):
    measured = run_probe(family, params, tmp_path)
    model = get_family(family).smem(get_family(family).validate(params)[0], get_arch("sm120a"))
    parts = dict(model.components)
    assert model.total == measured["total"]
    assert parts["q_tile_and_o_staging"] == measured["q"]
    assert parts["k_stages"] == measured["k"] and parts["v_stages"] == measured["v"]
    assert measured["offset_k"] == measured["q"] and measured["offset_v"] == measured["q"] + measured["k"]
    if family.startswith("fmha_decode"):
        flag_at = measured["q"] + measured["k"] + measured["v"]
        assert measured["offset_last_split"] == flag_at
        assert parts["last_split_flag"] + parts["pad_struct_tail"] == measured["total"] - flag_at
    # the ctypes mirror of AotcArgs has the C layout
    assert ctypes.sizeof(FmhaArgs) == measured["args_size"]
    assert FmhaArgs.seqlen_q.offset == measured["args_offset_seqlen_q"]
    assert FmhaArgs.num_sms.offset == measured["args_offset_num_sms"]
    assert FmhaArgs.v_descale.offset == measured["args_offset_v_descale"]
    assert FmhaArgs.block_table.offset == measured["args_offset_block_table"]
    assert FmhaArgs.page_size.offset == measured["args_offset_page_size"]
    # the element type the kernel stores is the one the model counts (1 byte for e4m3)
    assert measured["element_bytes"] == (1 if params["dtype"] == "e4m3" else 2)

"""fmha_fwd / fmha_decode family: catalog legality, SMEM model against probe-measured sizes,
over-budget rejection with its breakdown, parameter legality, the e4m3 variant's arch and shape
rules, and (compile-marked) the host helper's problem validation and the SASS of real sm_120a
(and, for e4m3, sm_90a) builds."""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import pytest

from aotc.arch import MMA_SYNC_FP8, get_arch
from aotc.build.rules import check
from aotc.build.spec import KernelSpec, load_specs
from aotc.families import get_family
from aotc.families.fmha import FmhaArgs

CATALOG = Path(__file__).resolve().parent.parent / "tile_specs" / "fmha_default.toml"
SM120_BUDGET = 101_376

# sizeof(SharedStorage) printed by the probe (templates/fmha/fmha_smem_probe.cu.j2), measured with
# `.venv/bin/pytest -m compile tests/test_smem_probe_fmha.py` on nvcc 13.5 + CUTLASS 4.2 (2026-11-25),
# plus the catalog decode/fwd tiles probed the same way.
PROBED_SIZEOF = [
    ("fmha_fwd", {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "bf16"}, 81_920),
    ("fmha_fwd", {"block_m": 128, "block_n": 64, "head_dim": 64, "warps": 8, "kv_stages": 2, "dtype": "fp16"}, 49_152),
    ("fmha_decode", {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16"}, 82_048),
    ("fmha_fwd", {"block_m": 128, "block_n": 128, "head_dim": 256, "warps": 8, "kv_stages": 2, "dtype": "bf16"}, 327_680),
    ("fmha_fwd", {"block_m": 64, "block_n": 128, "head_dim": 128, "warps": 4, "kv_stages": 1, "dtype": "e4m3"}, 40_960),
    ("fmha_fwd", {"block_m": 64, "block_n": 64, "head_dim": 256, "warps": 4, "kv_stages": 2, "dtype": "e4m3"}, 81_920),
]
FP8_ARCHES = ("sm89", "sm90a", "sm120a", "sm120f", "sm121a")


def spec(family: str, **params) -> KernelSpec:
    base = {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16"}
    base.update(params)
    typed, errors = get_family(family).validate(base)
    assert not errors, errors
    return KernelSpec(f"t_{family}", family, typed, ())


def test_catalog_fits_sm120_and_sm90():
    loaded = load_specs([CATALOG])
    assert not loaded.diagnostics, [d.format() for d in loaded.diagnostics]
    names = {s.family for s in loaded.specs}
    assert names == {"fmha_fwd", "fmha_decode", "fmha_fwd_paged", "fmha_decode_paged"}
    fp8 = [s for s in loaded.specs if s.params["dtype"] == "e4m3"]
    assert {s.name for s in fp8} == {"fmha_fwd_e4m3_m64n128", "fmha_fwd_e4m3_m64n64"}
    for s in loaded.specs:
        for arch in ("sm120a", "sm120f", "sm121a", "sm90a", "sm80", *(FP8_ARCHES if s in fp8 else ())):
            verdict = check(s, get_arch(arch))
            if s in fp8 and arch == "sm80":  # no e4m3 mma.sync before sm_89: skipped, not failed
                (d,) = verdict.diagnostics
                assert not verdict.applicable and d.details["missing"] == [MMA_SYNC_FP8]
                continue
            assert verdict.ok, [d.format() for d in verdict.diagnostics]
            assert verdict.smem.total <= SM120_BUDGET


@pytest.mark.parametrize("family,params,measured", PROBED_SIZEOF)
def test_smem_model_matches_probed_sizeof(family, params, measured):
    assert get_family(family).smem(params, get_arch("sm120a")).total == measured


def test_over_budget_tile_rejected_with_breakdown():
    verdict = check(spec("fmha_fwd", block_m=128, block_n=128, head_dim=256, warps=8, kv_stages=2),
                    get_arch("sm120a"))
    smem = [d for d in verdict.diagnostics if d.code == "AOTC-SMEM-001"]
    assert not verdict.ok and smem
    d = smem[0]
    assert d.details["total"] == 327_680 and d.details["budget"] == SM120_BUDGET
    assert d.details["components"] == {"q_tile_and_o_staging": 65_536, "k_stages": 131_072,
                                       "v_stages": 131_072}
    assert "226,304 B" in d.message and "k_stages" in d.message
    # also over the H100's 232,448 B: the breakdown names that budget
    verdict90 = check(spec("fmha_fwd", block_m=128, block_n=128, head_dim=256, warps=8, kv_stages=2),
                      get_arch("sm90a"))
    assert any(x.code == "AOTC-SMEM-001" and "232,448" in x.message for x in verdict90.diagnostics)


def test_two_stage_64x128_needs_one_stage_on_sm120_and_hint_says_so():
    # 64x128 at head_dim 128: 16 KiB Q + 2 x (32 KiB K + 32 KiB V) = 147,456 B > 101,376 B
    verdict = check(spec("fmha_fwd", block_n=128, kv_stages=2), get_arch("sm120a"))
    (d,) = verdict.diagnostics
    assert d.code == "AOTC-SMEM-001" and d.details["total"] == 147_456
    assert "kv_stages = 1 (81,920 B)" in d.fix
    assert check(spec("fmha_fwd", block_n=128, kv_stages=2), get_arch("sm90a")).ok  # 227 KiB on H100


def test_head_dim_and_dtype_are_validated():
    _, errors = get_family("fmha_fwd").validate({"block_m": 64, "block_n": 64, "head_dim": 96, "warps": 4, "dtype": "bf16"})
    assert any("head_dim = 96 is not one of 64, 128, 256" in e for e in errors)
    _, errors = get_family("fmha_fwd").validate({"block_m": 64, "block_n": 64, "head_dim": 64, "warps": 4, "dtype": "fp8"})
    assert any("dtype" in e for e in errors)


def test_rows_per_warp_rule():
    verdict = check(spec("fmha_fwd", block_m=32, warps=4), get_arch("sm120a"))
    assert [d.code for d in verdict.diagnostics] == ["AOTC-FMHA-001"]
    assert "16 x warps = 64" in verdict.diagnostics[0].message


def test_head_dim_256_register_rule():
    # 16 rows per warp at head_dim 256: 128 (O) + 32 (S) + 64 (Q) fp32/bf16x2 registers per thread
    verdict = check(spec("fmha_fwd", head_dim=256, kv_stages=1), get_arch("sm120a"))
    codes = [d.code for d in verdict.diagnostics]
    assert codes == ["AOTC-FMHA-003"]
    assert verdict.diagnostics[0].details["registers"] == 224
    # Q re-read from SMEM: 128 + 32 + two 16-wide Q slices (8) = 168 registers, and 96 KiB fits
    assert check(spec("fmha_fwd", head_dim=256, kv_stages=1, q_in_regs=False), get_arch("sm120a")).ok


def test_e4m3_rules():
    fam = get_family("fmha_fwd")
    p = spec("fmha_fwd", dtype="e4m3", block_n=128, kv_stages=1).params
    assert MMA_SYNC_FP8 in fam.requires(p)
    assert MMA_SYNC_FP8 not in fam.requires(spec("fmha_fwd").params)
    # 1-byte elements: Q 8 KiB + K 16 KiB + V 16 KiB; two 64x128 CTAs fit an SM120 SM (2 x 40,960 <= 101,376)
    assert fam.smem(p, get_arch("sm120a")).total == 40_960
    assert fam.render_context(p, get_arch("sm120a"))["out_element"] == "cutlass::bfloat16_t"
    # native QMMA where the arch has FP8 mma.sync; sm_90a emulates it with HMMA (see the SASS test)
    assert fam.expected_mma(p, get_arch("sm120a")) == "QMMA"
    assert fam.expected_mma(p, get_arch("sm90a")) == "HMMA"
    verdict = check(spec("fmha_fwd", dtype="e4m3", head_dim=64), get_arch("sm120a"))
    assert [d.code for d in verdict.diagnostics] == ["AOTC-FMHA-004"]
    assert "head_dim 64" in verdict.diagnostics[0].message and "128" in verdict.diagnostics[0].fix
    verdict = check(spec("fmha_decode", dtype="e4m3"), get_arch("sm120a"))
    assert [d.code for d in verdict.diagnostics] == ["AOTC-FMHA-005"]
    verdict = check(spec("fmha_fwd", dtype="e4m3"), get_arch("sm86"))
    assert not verdict.applicable and "mma_sync_fp8" in verdict.diagnostics[0].message
    # head_dim 256 with Q in registers: 128 (O) + 32 (S) + 32 (e4m3 Q, half the bf16 registers) = 192
    assert check(spec("fmha_fwd", dtype="e4m3", head_dim=256, kv_stages=1), get_arch("sm120a")).ok


def test_family_contract_bits():
    fam = get_family("fmha_decode")
    p = spec("fmha_decode").params
    ctx = fam.render_context(p, get_arch("sm120a"))
    assert ctx["decode"] is True and ctx["smem_budget"] == SM120_BUDGET
    assert ctx["smem_model_total"] == fam.smem(p, get_arch("sm120a")).total
    assert fam.expected_mma(p, get_arch("sm120a")) == "HMMA"
    assert get_family("fmha_fwd").args_struct is FmhaArgs


def test_fa2_main_loop_order_only_for_the_head_dim_256_tile():
    """The head_dim 256 64x64 Q-in-SMEM tile loads k-slice i+1 while slice i multiplies and issues the
    next K copy after the softmax (measured faster on the H200); every other tile keeps one slice live
    (two spilled the 128x64 head_dim 128 tile) and issues the K copy right after the V wait."""
    from aotc.build.render import render

    def main_loop_order(**params) -> tuple[bool, bool]:
        text = render(spec("fmha_fwd", **params), get_arch("sm120a")).text
        gemm_ss = text[text.index("CUTE_DEVICE void gemm_ss("):]
        gemm_ss = gemm_ss[:gemm_ss.index("\n}\n")]
        loop = text[text.index("V_j has landed"):]
        k_copy, rescale = loop.index("load_k(j + kStages)"), loop.index("*= corr_of[mi]")
        return "sa(_, _, i + 1)" in gemm_ss, k_copy > rescale

    d256 = {"block_m": 64, "block_n": 64, "head_dim": 256, "warps": 4, "kv_stages": 1, "q_in_regs": False}
    assert main_loop_order(**d256) == (True, True)
    assert main_loop_order(**{**d256, "block_n": 32, "kv_stages": 2}) == (False, False)  # fmha_fwd_d256_m64n32
    assert main_loop_order(block_m=128, block_n=64, warps=4, q_in_regs=False) == (False, False)  # the qsmem tile
    assert main_loop_order(**{**d256, "dtype": "e4m3"}) == (False, False)


def test_head_dim_256_tile_prologue_and_epilogue():
    """The head_dim 256 64x64 tile (fa2_schedule) loads Q as it loads K/V (one pointer, chunks a constant
    apart: the generic per-chunk predicated load was ~1000 SASS instructions in front of the first K
    copy), issues V0 in the prologue, skips the O rescale of its first KV tile (O is zero), stages O with
    32-bit stores from 8 swizzled slots and no barrier in front, and its host helper bounds the Q row
    stride as it does K/V's. Every other tile keeps the generic code."""
    from aotc.build.render import render

    def features(**params) -> tuple[bool, ...]:
        text = render(spec("fmha_fwd", **params), get_arch("sm120a")).text
        body = text[text.index("CUTE_DEVICE void run("):text.index("#else  // AOTC_HOST_HELPER")]
        helper = text[text.index("#else  // AOTC_HOST_HELPER"):]
        return ("load_strided_tile<kBlockM>(ss.q" in body, "load_v(0);" in body,
                "if (j > 0 && __any_sync(" in body, "slot[n % 8]" in body, "q row stride" in helper)

    d256 = {"block_m": 64, "block_n": 64, "head_dim": 256, "warps": 4, "kv_stages": 1, "q_in_regs": False}
    assert features(**d256) == (True,) * 5
    none = (False,) * 5
    assert features(**{**d256, "block_n": 32, "kv_stages": 2}) == none  # fmha_fwd_d256_m64n32
    qsmem = {"block_m": 128, "block_n": 64, "warps": 4, "q_in_regs": False}
    # the head_dim 128 qsmem tile takes the strided Q load and the direct epilogue; with two K/V stages
    # V0 is in its prologue anyway, and its first-tile rescale is skipped another way (below)
    assert features(**qsmem) == (True, False, False, True, True)
    assert features(**{**qsmem, "kv_stages": 1}) == none  # only the catalog tile's stage count
    assert features(**{**d256, "dtype": "e4m3"}) == none
    assert features() == none


def test_qsmem_tile_register_savings():
    """The qsmem tile makes room for the strided Q load and direct epilogue (each alone spilled 4-12 B on
    sm_90a) by rebuilding K's and V's ldmatrix addresses per KV tile from a re-read of %tid.x, and
    skips the O rescale of rows that saw no key yet (O is zero there) instead of testing the tile index.
    Other contiguous tiles keep the addresses live across the main loop and the plain rescale vote."""
    from aotc.build.render import render

    def pieces(**params) -> tuple[bool, bool, bool]:
        text = render(spec("fmha_fwd", **params), get_arch("sm120a")).text
        body = text[text.index("CUTE_DEVICE void run("):text.index("#else  // AOTC_HOST_HELPER")]
        return ("copy_k.get_thread_slice(opaque_tid())" in body, "copy_v.get_thread_slice(opaque_tid())" in body,
                "row_max[mi] != -INFINITY" in body)

    assert pieces(block_m=128, block_n=64, warps=4, q_in_regs=False) == (True, True, True)
    assert pieces(block_m=128, block_n=64, warps=4, q_in_regs=False, dtype="e4m3") == (False, False, False)
    assert pieces() == (False, False, False)
    assert pieces(block_m=64, block_n=64, head_dim=256, warps=4, kv_stages=1, q_in_regs=False) == (False, False, False)


def test_causal_longest_first_over_the_grid_only_on_d256_tile():
    """The head_dim 256 64x64 tile (fa2_schedule) orders causal row tiles longest first over the whole grid
    (m_block from the launch index / (heads * batch)); every other catalog tile keeps the per-(head, batch)
    reversal of blockIdx.x. Measured on the H200: +7.9% at b=1 s=4096 causal, the other shapes within noise
    (bench/results/fmha_nvidia_h200_d256_causal.md)."""
    from aotc.build.render import render

    def order(s: KernelSpec, arch: str = "sm120a") -> tuple[bool, bool]:
        text = render(s, get_arch(arch)).text
        body = text[text.index("CUTE_DEVICE void run("):text.index("#else  // AOTC_HOST_HELPER")]
        return "m_block = int(gridDim.x - 1 - lin / bh);" in body, "p.m_blocks - 1 - int(blockIdx.x)" in body

    assert order(spec("fmha_fwd", block_m=64, block_n=64, head_dim=256, warps=4, kv_stages=1,
                      q_in_regs=False)) == (True, False)
    assert order(spec("fmha_fwd", block_m=64, block_n=32, head_dim=256, warps=4, kv_stages=2,
                      q_in_regs=False)) == (False, True)
    assert order(spec("fmha_fwd", block_m=128, block_n=64, warps=4, q_in_regs=False)) == (False, True)
    assert order(spec("fmha_fwd")) == (False, True)
    lpt = sorted({s.name for s in load_specs().specs if s.family.startswith("fmha")
                  for arch in ("sm90a", "sm120a") if order(s, arch)[0]})
    assert lpt == ["fmha_fwd_d256"]

    # The remap is a bijection of the grid onto (row tile, head, batch), longest row tiles launched first.
    for gx, gy, gz in [(32, 32, 4), (8, 32, 16), (5, 7, 3), (1, 1, 1)]:
        seen = []
        for lin in range(gx * gy * gz):
            r = lin % (gy * gz)
            seen.append((gx - 1 - lin // (gy * gz), r % gy, r // gy))
        assert sorted(seen) == [(x, y, z) for x in range(gx) for y in range(gy) for z in range(gz)]
        assert [m for m, _, _ in seen] == sorted((m for m, _, _ in seen), reverse=True)


# ------------------------------------------------------------------------- compile-marked tests
class AotcLaunch(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint32 * 3), ("block", ctypes.c_uint32 * 3), ("smem_bytes", ctypes.c_uint32),
                ("params_bytes", ctypes.c_uint32), ("workspace_bytes", ctypes.c_uint64)]


def build_helper(s: KernelSpec, tmp_path: Path, name: str = "helper") -> ctypes.CDLL:
    from aotc.build.compile import flags, helper_flags
    from aotc.build.render import render
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.resources import templates_dir

    arch = get_arch("sm120a")
    tc = find_toolchain()
    src = tmp_path / "k.cu"
    src.write_text(render(s, arch).text)
    f = helper_flags(flags(arch, tc, include_dirs=[str(templates_dir()), *cutlass_include_dirs()]))
    subprocess.run([tc.nvcc, *f, "-o", str(tmp_path / f"{name}.so"), str(src)], check=True, capture_output=True,
                   timeout=300)
    return ctypes.CDLL(str(tmp_path / f"{name}.so"))


def problem(**kw) -> FmhaArgs:
    hq, hkv, d, s = kw.pop("hq", 32), kw.pop("hkv", 8), kw.pop("d", 128), kw.pop("s", 1000)
    a = FmhaArgs(q=1 << 20, k=2 << 20, v=3 << 20, o=4 << 20, batch=2, num_q_heads=hq, num_kv_heads=hkv,
                 head_dim=d, seqlen_q=s, seqlen_k=s, softmax_scale=d ** -0.5, causal=1)
    for t, h in (("q", hq), ("k", hkv), ("v", hkv), ("o", hq)):
        setattr(a, f"{t}_head_stride", d)
        setattr(a, f"{t}_row_stride", h * d)
        setattr(a, f"{t}_batch_stride", s * h * d)
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def query(lib: ctypes.CDLL, a: FmhaArgs) -> tuple[int, AotcLaunch, str]:
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    rc = lib.aotc_query(ctypes.byref(a), ctypes.byref(out), err, len(err))
    return rc, out, err.value.decode()


@pytest.mark.compile
def test_helper_validates_problems(tmp_path):
    lib = build_helper(spec("fmha_fwd"), tmp_path)
    rc, launch, _ = query(lib, problem())
    # 1000 rows / 64 per CTA -> 16 row tiles; one CTA per (tile, q head, batch); 4 warps
    assert rc == 0 and list(launch.grid) == [16, 32, 2] and list(launch.block) == [128, 1, 1]
    assert launch.smem_bytes == 81_920 and launch.workspace_bytes == 0
    rc, _, err = query(lib, problem(head_dim=64))
    assert rc and "head_dim 64 does not match this kernel's head_dim 128" in err
    rc, _, err = query(lib, problem(num_kv_heads=3))
    assert rc and "num_q_heads 32 is not a multiple of num_kv_heads 3" in err
    rc, _, err = query(lib, problem(k=(2 << 20) + 8))
    assert rc and "k address" in err and "not 16-byte aligned (offset 8)" in err
    rc, _, err = query(lib, problem(v_row_stride=1028))
    assert rc and "v strides" in err and "row 1028" in err
    rc, _, err = query(lib, problem(cu_seqlens_q=4096))
    assert rc and "cu_seqlens_q and cu_seqlens_k" in err
    rc, _, err = query(lib, problem(softmax_scale=float("nan")))
    assert rc and "softmax_scale" in err
    # A thread reaches its K/V rows r0, r0 + step, ... (step = 128 threads / 16 chunks per row = 8)
    # through one 32-bit element offset: row strides whose step-row span leaves int32 are refused.
    step = 128 // (128 // 8)
    fits = ((2**31 - 1 - 128) // step) // 8 * 8
    assert query(lib, problem(k_row_stride=fits))[0] == 0
    rc, _, err = query(lib, problem(v_row_stride=fits + 8))
    assert rc and f"{fits + 8} elements are too large" in err and f"x {step}" in err


@pytest.mark.compile
def test_head_dim_256_helper_bounds_the_q_row_stride(tmp_path):
    # this tile's threads reach their Q rows r0, r0 + 8, ... through one 32-bit offset, as K/V's
    lib = build_helper(spec("fmha_fwd", head_dim=256, kv_stages=1, q_in_regs=False), tmp_path)
    rc, launch, err = query(lib, problem(d=256))
    assert rc == 0 and list(launch.grid) == [16, 32, 2] and launch.smem_bytes == 98_304, err
    step = 8
    fits = ((2**31 - 1 - 256) // step) // 8 * 8
    assert query(lib, problem(d=256, q_row_stride=fits))[0] == 0
    rc, _, err = query(lib, problem(d=256, q_row_stride=fits + 8))
    assert rc and f"q row stride {fits + 8} elements is too large" in err and f"x {step}" in err


def prepare(lib: ctypes.CDLL, a: FmhaArgs) -> tuple[int, bytes, str]:
    params, out, err = (ctypes.c_char * 1024)(), AotcLaunch(), ctypes.create_string_buffer(512)
    rc = lib.aotc_prepare(ctypes.byref(a), None, params, 1024, ctypes.byref(out), err, len(err))
    return rc, bytes(params)[:out.params_bytes], err.value.decode()


@pytest.mark.compile
def test_e4m3_helper_descales_and_strides(tmp_path):
    import struct

    lib = build_helper(spec("fmha_fwd", dtype="e4m3", block_n=128, kv_stages=1), tmp_path, "e4m3")
    rc, launch, err = query(lib, problem())
    assert rc == 0, err
    assert list(launch.grid) == [16, 32, 2] and launch.smem_bytes == 40_960
    # e4m3 rows move in 16-element chunks: a row stride of 1032 elements is 16-byte aligned for bf16
    # but not for e4m3; O stays bf16, so its strides keep the 8-element rule
    rc, _, err = query(lib, problem(k_row_stride=1032))
    assert rc and "k strides" in err and "multiples of 16 elements" in err
    assert query(lib, problem(o_row_stride=4104))[0] == 0
    rc, _, err = query(lib, problem(v_descale=-2.0))
    assert rc and "v_descale = -2 must be a finite positive number" in err
    rc, _, err = query(lib, problem(q_descale=float("inf")))
    assert rc and "q_descale" in err
    # Params: scale_log2 = softmax_scale * log2(e) * q_descale * k_descale, o_scale = v_descale;
    # a descale of 0 means 1. Both floats follow the int64 strides and the 6 ints of Params.
    offset = 6 * 8 + 12 * 8 + 6 * 4
    base = struct.unpack_from("ff", prepare(lib, problem())[1], offset)
    scaled = struct.unpack_from("ff", prepare(lib, problem(q_descale=0.5, k_descale=0.25, v_descale=3.0))[1], offset)
    assert base[0] == pytest.approx(128 ** -0.5 * 1.4426950408889634, rel=1e-6) and base[1] == 1.0
    assert scaled[0] == pytest.approx(base[0] * 0.125, rel=1e-6) and scaled[1] == 3.0
    # a bf16 kernel refuses descales rather than ignoring them
    bf16 = build_helper(spec("fmha_fwd"), tmp_path, "bf16")
    assert query(bf16, problem(q_descale=1.0))[0] == 0
    rc, _, err = query(bf16, problem(k_descale=0.5))
    assert rc and "k_descale = 0.5" in err and "e4m3 kernel" in err


@pytest.mark.compile
def test_decode_helper_splits_and_workspace(tmp_path):
    lib = build_helper(spec("fmha_decode"), tmp_path)
    # 1 token x 4 q heads per kv head = 4 packed rows -> 1 row tile; 2 x 8 = 16 tiles over 132 SMs
    # -> floor(264 / 16) = 16 splits of the 512 KV blocks (32768 / 64): one wave of 2 CTAs per SM
    a = problem(s=1, seqlen_k=32768, num_sms=132)
    rc, launch, err = query(lib, a)
    assert rc == 0, err
    tiles, splits, bm, d = 16, 16, 64, 128
    assert list(launch.grid) == [splits, 8, 2]
    assert launch.workspace_bytes == splits * tiles * (bm * d + bm) * 4 + tiles * 4
    # explicit split count, clamped to the number of KV blocks
    rc, launch, _ = query(lib, problem(s=1, seqlen_k=100, num_splits=9))
    assert rc == 0 and launch.grid[0] == 2
    # one split: no workspace
    rc, launch, _ = query(lib, problem(s=1, seqlen_k=32768, num_splits=1))
    assert rc == 0 and launch.workspace_bytes == 0 and launch.grid[0] == 1
    # prepare without the workspace it needs says how many bytes
    params = (ctypes.c_char * 512)()
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    rc = lib.aotc_prepare(ctypes.byref(a), None, params, 512, ctypes.byref(out), err, len(err))
    assert rc and f"needs a {out.workspace_bytes}-byte device workspace" in err.value.decode()


@pytest.mark.compile
def test_sm120a_build_uses_hmma_and_does_not_spill(tmp_path):
    from aotc.build.compile import compile_source
    from aotc.build.render import render
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.resources import templates_dir

    tc = find_toolchain()
    if not tc.cuobjdump:
        pytest.skip("cuobjdump not found (install nvidia-cuda-cuobjdump)")
    s = spec("fmha_fwd", head_dim=64)
    arch = get_arch("sm120a")
    result = compile_source(render(s, arch).text, arch, tc, with_helper=False,
                            include_dirs=[str(templates_dir()), *cutlass_include_dirs()])
    assert result.ok, result.log[-3000:]
    lines = " ".join(result.resource_lines)
    assert re.search(r"0 bytes spill stores", lines), lines
    path = tmp_path / "fmha_sm120a.cubin"
    path.write_bytes(result.cubin)
    sass = subprocess.run([tc.cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    assert "sm_120a" in sass or "SM120" in sass.upper()
    # 64x64 tile, head_dim 64, 4 warps: per warp and KV tile, S = 16x64x64 (4 k16 x 8 n8 = 32 HMMA)
    # and O += 16x64x64 (another 32): 64 HMMA.16816 in the main loop body at least
    assert len(re.findall(r"\bHMMA\.16816\.F32", sass)) >= 64
    assert not re.search(r"\b(HGMMA|UTC\w+|OMMA)\b", sass)


def sass_of(s: KernelSpec, arch_name: str, tmp_path: Path) -> tuple[str, str]:
    """(ptxas resource lines, cuobjdump SASS) of a real build of `s`."""
    from aotc.build.compile import compile_source
    from aotc.build.render import render
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.resources import templates_dir

    tc = find_toolchain()
    if not tc.cuobjdump:
        pytest.skip("cuobjdump not found (install nvidia-cuda-cuobjdump)")
    arch = get_arch(arch_name)
    result = compile_source(render(s, arch).text, arch, tc, with_helper=False,
                            include_dirs=[str(templates_dir()), *cutlass_include_dirs()])
    assert result.ok, result.log[-3000:]
    path = tmp_path / f"{arch_name}.cubin"
    path.write_bytes(result.cubin)
    sass = subprocess.run([tc.cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    return " ".join(result.resource_lines), sass


def main_loop(sass: str) -> list[str]:
    """Opcodes of the SASS main loop: the instructions from the target of the backward branch that
    spans the most MMA instructions up to that branch."""
    lines = [(int(m.group(1), 16), m.group(2).strip()) for m in
             re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: list[str] = []
    for addr, text in lines:
        m = re.search(r"\bBRA(?:\.\w+)*\s+(?:!?U?P\w+,\s*)?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [x for a, x in lines if int(m.group(1), 16) <= a <= addr]
            if sum("MMA" in x for x in body) > sum("MMA" in x for x in best):
                best = body
    return best


def e4m3_loop_counts(p: dict) -> tuple[int, int]:
    """(m16n8k32 MMAs, f32 -> e4m3x2 conversions) per warp and KV tile of an e4m3 tile, from its shape.
    A warp owns block_m / warps rows (16-row MMA tiles); S = Q K^T is rows x block_n x head_dim and
    O += P V is rows x head_dim x block_n, each in 16 x 8 x 32 MMAs. P (rows x block_n, fp32 from the
    softmax) is spread over the 32 lanes and rounded two values per cvt.rn.satfinite.e4m3x2.f32."""
    rows = p["block_m"] // p["warps"]
    mmas = rows // 16 * (p["block_n"] // 8 * p["head_dim"] // 32 + p["head_dim"] // 8 * p["block_n"] // 32)
    packs = rows * p["block_n"] // 32 // 2
    return mmas, packs


@pytest.mark.compile
def test_e4m3_sass_native_qmma_on_sm120a_emulated_on_sm90a(tmp_path):
    s = spec("fmha_fwd", dtype="e4m3")  # 64x64, head_dim 128, 4 warps
    mmas, packs = e4m3_loop_counts(s.params)
    lines, sass = sass_of(s, "sm120a", tmp_path)
    assert re.search(r"\b0 bytes spill stores", lines), lines
    assert len(re.findall(r"\bQMMA\.16832\.F32\.E4M3\.E4M3\b", sass)) == mmas
    assert not re.search(r"\b(HMMA|HGMMA|QGMMA|UTC\w+|OMMA)\b", sass)
    # The main loop runs on native QMMA. Its only conversions are the f32 -> e4m3 packs of P (the
    # e4m3 MMA takes e4m3 A only, and P comes out of the softmax in fp32: inherent, docs/proven.md);
    # the loaded Q/K/V operands are never converted (no e4m3 -> f16 unpack, what an emulated FP8 MMA
    # needs, see sm_90a below; no F2F/I2F of any kind).
    loop = main_loop(sass)
    assert sum(bool(re.search(r"\bQMMA\.16832\.F32\.E4M3\.E4M3\b", x)) for x in loop) == mmas
    f2fp = [x for x in loop if "F2FP" in x]
    assert len(f2fp) == packs and all(re.search(r"\bF2FP\.SATFINITE\.E4M3\.F32\.PACK_AB", x) for x in f2fp), f2fp
    assert not re.search(r"F2FP[.\w]*UNPACK", sass)
    assert not [x for x in loop if re.match(r"(@!?U?P\w+\s+)?(F2F|I2F|F2I|HADD2\.F32)\b", x)]
    # sm_90a has no warp-level FP8 MMA: ptxas widens e4m3 to f16 and issues two HMMA.16816 per MMA
    _, sass90 = sass_of(s, "sm90a", tmp_path)
    assert not re.search(r"\bQMMA\b", sass90)
    assert len(re.findall(r"\bHMMA\.16816\.F32\b", sass90)) == 2 * mmas
    assert any("F2FP.F16.E4M3.UNPACK_B" in x for x in main_loop(sass90))


def test_e4m3_loop_counts_follow_the_tile():
    # the expected counts scale with the tile as the MMA shapes say, not with the 64x64 numbers
    base = {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4}
    m, c = e4m3_loop_counts(base)
    assert (m, c) == (64, 16)
    assert e4m3_loop_counts({**base, "block_n": 128}) == (2 * m, 2 * c)
    assert e4m3_loop_counts({**base, "block_m": 128}) == (2 * m, 2 * c)
    assert e4m3_loop_counts({**base, "head_dim": 256}) == (2 * m, c)

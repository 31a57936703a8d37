"""Device-routed NVFP4/MXFP8 MoE entry points (aotc.runtime.moe), host side without a GPU: the
activation scale-factor sizing holds for every routing, and bad arguments get AOTC-RT-006 with the
numbers before any lookup or driver call (no driver here: reaching one would raise AOTC-RT-001)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

import aotc.runtime as rt
from aotc.diagnostics import AotcError
from aotc.runtime import gemm, moe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_nvfp4 import DeviceBytes  # a DLPack producer for made-up device addresses


def test_sf_rows_cover_every_routing():
    rng = random.Random(3)
    for _ in range(2000):
        experts = rng.choice([1, 2, 8, 64, 128])
        tokens = rng.randrange(0, 3000)
        cuts = sorted(rng.randrange(0, tokens + 1) for _ in range(experts - 1))
        counts = [b - a for a, b in zip([0, *cuts], [*cuts, tokens], strict=True)]
        used = 128 * sum(-(-m // 128) for m in counts)  # each expert's rows in their own 128-row tiles
        assert used <= moe.moe_sf_rows(tokens, experts)
    # the bound is reached: every expert one row past a tile
    assert moe.moe_sf_rows(8 * 129, 8) == 8 * 256
    assert moe.moe_sf_bytes(300, 8, 256) == moe.moe_sf_rows(300, 8) * 16
    assert moe.moe_sf_bytes(300, 8, 256, "mxfp8") == moe.moe_sf_rows(300, 8) * 8


def operands(tokens=300, experts=8, n=256, k=256, kind="nvfp4", **override):
    at = iter(range(0x7F40_0000_0000, 1 << 48, 0x1_0000_0000))
    a_cols = k // 2 if kind == "nvfp4" else k
    sf_b = experts * -(-n // 128) * 128 * moe.sf_row_bytes(k, 16 if kind == "nvfp4" else 32)
    args = {"a": DeviceBytes(next(at), (tokens, a_cols), "u8"), "b": DeviceBytes(next(at), (experts, n, k // 2), "u8"),
            "sfa": DeviceBytes(next(at), (moe.moe_sf_bytes(tokens, experts, k, kind),), "u8"),
            "sfb": DeviceBytes(next(at), (sf_b,), "u8"), "out": DeviceBytes(next(at), (tokens, n), "bf16"),
            "expert_offsets": DeviceBytes(next(at), (experts + 1,), "i32")}
    args.update(override)
    return args


def refused(fn, args: dict, **kw) -> str:
    with pytest.raises(AotcError) as exc:
        fn(**args, **kw)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-006", diag.format()
    return diag.message + " | " + diag.fix


def test_k_off_the_granule_is_refused_with_the_padded_size():
    text = refused(rt.grouped_gemm_moe_nvfp4, operands(k=96))
    assert "K = 96" in text and "multiple of 64" in text and "pad K to 128" in text
    text = refused(rt.grouped_gemm_moe_mxfp8, operands(k=192, kind="mxfp8"))
    assert "multiple of 128" in text and "pad K to 256" in text


def test_short_scale_factors_name_the_size_to_allocate():
    small = DeviceBytes(0x7E00_0000_0000, (300 * 16,), "u8")  # one SF row per token: no per-expert tiles
    text = refused(rt.grouped_gemm_moe_nvfp4, operands(sfa=small))
    assert f"need {moe.moe_sf_bytes(300, 8, 256)}" in text and "moe_sf_bytes(300, 8, 256, 'nvfp4')" in text
    short_b = DeviceBytes(0x7E00_0000_0000, (gemm.nvfp4_sf_bytes(256, 256),), "u8")  # one expert's worth
    assert "'sfb'" in refused(rt.grouped_gemm_moe_nvfp4, operands(sfb=short_b))


def test_offsets_alpha_and_output_shapes_are_checked():
    bad_offsets = DeviceBytes(0x7E00_0000_0000, (8,), "i32")  # E entries, not E + 1
    assert "expert_offsets" in refused(rt.grouped_gemm_moe_nvfp4, operands(expert_offsets=bad_offsets))
    alpha = DeviceBytes(0x7E00_0000_0000, (8,), "bf16")
    assert "'alpha'" in refused(rt.grouped_gemm_moe_nvfp4, operands(), alpha=alpha)
    out = DeviceBytes(0x7E00_0000_0000, (300, 128), "bf16")
    assert "'out'" in refused(rt.grouped_gemm_moe_nvfp4, operands(out=out))


def test_host_tensors_are_refused():
    np = pytest.importorskip("numpy")
    args = operands()
    args["a"] = np.zeros((300, 128), dtype=np.uint8)
    assert "host memory" in refused(rt.grouped_gemm_moe_nvfp4, args)

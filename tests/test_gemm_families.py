"""GEMM families without nvcc: parameter validation, legality diagnostics, the byte-exact SMEM model
against sizeof values measured with the probes, the public SM12x failures, fit hints, the ctypes
mirrors of AotcArgs against the templates, and the default catalog."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.rules import check
from aotc.build.spec import KernelSpec, load_specs
from aotc.families import get_family
from aotc.resources import templates_dir

SM120 = get_arch("sm120a")
DENSE = "gemm_blockscaled_sm120"
GROUPED = "grouped_gemm_blockscaled_sm120"
SM80 = "grouped_gemm_sm80"


def params(family: str, **raw) -> dict:
    typed, errors = get_family(family).validate(raw)
    assert errors == []
    return typed


# sizeof(GemmKernel::SharedStorage) and the resolved stage count, printed by the probes
# (templates/gemm/*_probe.cu.j2) built with nvidia-cutlass 4.2.0.0 headers, nvcc 13.0,
# `nvcc -x cu -gencode arch=compute_120a,code=sm_120a -std=c++17 -O3 --expt-relaxed-constexpr -DNDEBUG`,
# on this project's CPU machine and on the H100 device host, 2026-11-25 (docs/families/gemm.md).
MEASURED_BLOCKSCALED = [
    (GROUPED, {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 84_992, 4),
    (GROUPED, {"tile": [128, 128, 256], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 84_992, 2),
    (GROUPED, {"tile": [256, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 94_208, 3),
    (GROUPED, {"tile": [128, 256, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 94_208, 3),
    (GROUPED, {"tile": [128, 256, 64], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 94_208, 6),
    (GROUPED, {"tile": [128, 128, 64], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 94_208, 9),
    (GROUPED, {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "stages": 2}, 48_128, 2),
    (GROUPED, {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "schedule": "pingpong"}, 84_992, 4),
    (GROUPED, {"tile": [128, 128, 128], "a_dtype": "mxfp8", "b_dtype": "mxfp4"}, 78_848, 2),
    (GROUPED, {"tile": [128, 256, 64], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "stages": 7}, 108_544, 7),
    (DENSE, {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 83_968, 4),
    (DENSE, {"tile": [128, 128, 256], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 83_968, 2),
    (DENSE, {"tile": [256, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 93_184, 3),
    (DENSE, {"tile": [128, 256, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 93_184, 3),
    (DENSE, {"tile": [128, 128, 64], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, 93_184, 9),
    (DENSE, {"tile": [256, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "stages": 3}, 93_184, 3),
    (DENSE, {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "schedule": "pingpong"}, 83_968, 4),
    (DENSE, {"tile": [128, 128, 128], "a_dtype": "mxfp8", "b_dtype": "mxfp4"}, 77_824, 2),
    (DENSE, {"tile": [256, 128, 256], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "stages": 3}, 176_128, 3),
    (DENSE, {"tile": [256, 128, 128], "a_dtype": "mxfp8", "b_dtype": "mxfp8", "stages": 2}, 111_616, 2),
    (DENSE, {"tile": [128, 256, 128], "a_dtype": "mxfp8", "b_dtype": "mxfp8", "stages": 2}, 111_616, 2),
]

MEASURED_SM80 = [
    ({"tile": [128, 128, 64], "warp": [64, 64, 64], "stages": 3, "dtype": "bf16"}, 98_320),
    ({"tile": [128, 128, 64], "warp": [64, 64, 64], "stages": 3, "dtype": "fp16"}, 98_320),
    ({"tile": [128, 256, 32], "warp": [64, 64, 32], "stages": 3, "dtype": "bf16"}, 73_744),
    ({"tile": [64, 128, 64], "warp": [32, 64, 64], "stages": 4, "dtype": "bf16"}, 98_320),
    ({"tile": [256, 128, 32], "warp": [64, 64, 32], "stages": 4, "dtype": "bf16"}, 98_320),
    ({"tile": [128, 256, 64], "warp": [64, 64, 64], "stages": 4, "dtype": "fp16"}, 196_624),
    ({"tile": [64, 64, 32], "warp": [32, 32, 32], "stages": 3, "dtype": "fp16"}, 24_592),
    ({"tile": [128, 64, 64], "warp": [64, 32, 64], "stages": 5, "dtype": "bf16"}, 122_896),
]


@pytest.mark.parametrize("family,raw,total,stages", MEASURED_BLOCKSCALED,
                         ids=lambda x: x if isinstance(x, (str, int)) else "-".join(map(str, x.values())))
def test_blockscaled_model_matches_measured_sizeof(family, raw, total, stages):
    model = get_family(family).smem(params(family, **raw), SM120)
    assert model.total == total
    assert dict(model.chosen)["stages"] == stages


@pytest.mark.parametrize("raw,total", MEASURED_SM80, ids=lambda x: x if isinstance(x, int) else
                         "{dtype}-{stages}".format(**x) + "x".join(map(str, x["tile"])))
def test_sm80_model_matches_measured_sizeof(raw, total):
    assert get_family(SM80).smem(params(SM80, **raw), SM120).total == total


def test_model_components_are_named_and_positive():
    model = get_family(GROUPED).smem(params(GROUPED, tile=[256, 128, 128], a_dtype="nvfp4", b_dtype="nvfp4"),
                                     SM120)
    parts = dict(model.components)
    # 3 stages of a 256x128 FP4 A tile = 3 x 16 KiB; of its 256x128/16 ue4m3 scale factors = 3 x 2 KiB
    assert parts["A_stages"] == 3 * 256 * 128 // 2 and parts["SFA_stages"] == 3 * 256 * 128 // 16
    assert parts["B_stages"] == 3 * 128 * 128 // 2 and parts["SFB_stages"] == 3 * 128 * 128 // 16
    assert {"epilogue_D", "pipeline_barriers", "scheduler", "tensormaps"} <= set(parts)
    assert all(b > 0 for _, b in model.components)
    assert len(parts) == len(model.components)  # unique names: to_json() loses nothing


def test_mixed_fp4_operand_is_unpacked_in_smem():
    # kind::mxf8f6f4 keeps FP4 B as one byte per element in SMEM: B stages as large as the FP8 A stages.
    parts = dict(get_family(GROUPED).smem(params(GROUPED, tile=[128, 128, 128], a_dtype="mxfp8",
                                                 b_dtype="mxfp4"), SM120).components)
    assert parts["A_stages"] == parts["B_stages"] == 2 * 128 * 128


def _smem_diag(family: str, **raw):
    spec = KernelSpec("case", family, params(family, **raw), ("sm120a",), file="case.toml")
    verdict = check(spec, SM120)
    assert not verdict.ok
    (diag,) = verdict.diagnostics
    assert diag.code == "AOTC-SMEM-001"
    return diag


@pytest.mark.parametrize("tile", [[256, 128, 128], [128, 256, 128]])
def test_public_failure_mxfp8_two_stages_needs_111616(tile):
    # Public SM12x failure: CUTLASS MXFP8 tiles 256x128 and 128x256 at 2 stages request 111,616 B and
    # fail at initialize() on every SM12x device. The model must reproduce the number and flag it.
    diag = _smem_diag(DENSE, tile=tile, a_dtype="mxfp8", b_dtype="mxfp8", stages=2)
    assert diag.details["total"] == 111_616
    assert diag.details["overshoot"] == 111_616 - 101_376 == 10_240
    assert "111,616" in diag.message and "10,240" in diag.message
    assert "use tile [128, 128, 128]" in diag.fix


def test_public_failure_trtllm_fp4_tiles_fit_only_with_few_stages():
    # TRT-LLM's FP4 tiles 128x128x256 and 256x128x128 did not fit SM12x there; here they fit with the
    # auto stage count (2 and 3) but one more stage is over budget, with the right overshoot.
    diag = _smem_diag(DENSE, tile=[128, 128, 256], a_dtype="nvfp4", b_dtype="nvfp4", stages=3)
    assert diag.details["total"] == 10_240 + 3 * 36_864 and diag.details["overshoot"] == 19_456
    assert "set stages = 2" in diag.fix
    diag = _smem_diag(GROUPED, tile=[256, 128, 128], a_dtype="nvfp4", b_dtype="nvfp4", stages=4)
    assert diag.details["overshoot"] == diag.details["total"] - 101_376 > 0
    assert "set stages = 3" in diag.fix


def test_explicit_stages_over_budget_hint_names_largest_fitting_count():
    # FP4 grouped 128x256x64 (the tile of the carve-out bug report) at 7 stages: 108,544 B (measured).
    diag = _smem_diag(GROUPED, tile=[128, 256, 64], a_dtype="nvfp4", b_dtype="nvfp4", stages=7)
    assert diag.details["overshoot"] == 108_544 - 101_376
    assert diag.fix.startswith("needs 108544 B, 7168 B over") and "set stages = 6 (94208 B" in diag.fix


def test_auto_stages_follow_cutlass_carveout_formula_not_the_layout():
    fam = get_family(GROUPED)
    p = params(GROUPED, tile=[128, 128, 128], a_dtype="nvfp4", b_dtype="nvfp4")
    # (101,376 - 9,216 epilogue carve-out) // (8 KiB A + 8 KiB B + 2 KiB SF + 16 B barriers) = 4
    assert dict(fam.smem(p, SM120).chosen) == {"stages": 4, "stages_auto": True, "epilogue_carveout": 9_216}


@pytest.mark.parametrize("raw,code", [
    ({"tile": [128, 128, 128], "a_dtype": "mxfp8", "b_dtype": "nvfp4"}, "AOTC-DTYPE-002"),
    ({"tile": [128, 128, 128], "a_dtype": "mxfp4", "b_dtype": "mxfp4"}, "AOTC-DTYPE-001"),
    ({"tile": [64, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, "AOTC-SHAPE-001"),
    ({"tile": [128, 128, 64], "a_dtype": "mxfp8", "b_dtype": "mxfp4"}, "AOTC-SHAPE-002"),
    ({"tile": [128, 128, 96], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, "AOTC-SHAPE-002"),
    ({"tile": [256, 256, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}, "AOTC-SHAPE-003"),
    ({"tile": [256, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "schedule": "pingpong"}, "AOTC-SHAPE-003"),
    ({"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4", "stages": 1}, "AOTC-SHAPE-004"),
])
def test_blockscaled_check_codes(raw, code):
    diags = get_family(GROUPED).check(params(GROUPED, **raw), SM120)
    assert [d.code for d in diags] == [code]
    assert diags[0].fix


def test_fp8_times_nvfp4_diagnostic_explains_scale_factors():
    (diag,) = get_family(GROUPED).check(params(GROUPED, tile=[128, 128, 128], a_dtype="mxfp8", b_dtype="nvfp4"),
                                        SM120)
    assert "ue8m0" in diag.message and "ue4m3" in diag.message and "mxfp4" in diag.fix


def test_blockscaled_rejects_non_sm12x_targets():
    p = params(DENSE, tile=[128, 128, 128], a_dtype="nvfp4", b_dtype="nvfp4")
    (diag,) = get_family(DENSE).check(p, get_arch("sm100a"))
    assert diag.code == "AOTC-ARCH-001" and "sm120a" in diag.fix
    assert get_family(DENSE).check(p, get_arch("sm121a")) == []


@pytest.mark.parametrize("raw,code", [
    ({"tile": [128, 128, 64], "warp": [48, 64, 64], "stages": 3, "dtype": "bf16"}, "AOTC-SHAPE-101"),
    ({"tile": [128, 128, 64], "warp": [64, 64, 32], "stages": 3, "dtype": "bf16"}, "AOTC-SHAPE-101"),
    ({"tile": [128, 128, 128], "warp": [64, 64, 128], "stages": 3, "dtype": "bf16"}, "AOTC-SHAPE-103"),
    ({"tile": [256, 256, 32], "warp": [64, 64, 32], "stages": 3, "dtype": "bf16"}, "AOTC-SHAPE-104"),
    ({"tile": [128, 128, 32], "warp": [128, 64, 32], "stages": 3, "dtype": "bf16"}, "AOTC-SHAPE-105"),
])
def test_sm80_check_codes(raw, code):
    assert [d.code for d in get_family(SM80).check(params(SM80, **raw), SM120)] == [code]


def test_sm80_tile_fits_h100_but_not_sm120():
    p = params(SM80, tile=[128, 256, 64], warp=[64, 64, 64], stages=4, dtype="fp16")
    spec = KernelSpec("big", SM80, p, ())
    assert check(spec, get_arch("sm90a")).ok  # 196,624 B <= 232,448 B
    assert not check(spec, get_arch("sm80")).ok  # > 166,912 B
    diag = check(spec, SM120).diagnostics[0]
    assert diag.details["overshoot"] == 196_624 - 101_376
    assert "use tile K = 32" in diag.fix and "98320 B" in diag.fix


def test_validation_errors_name_the_problem():
    fam = get_family(GROUPED)
    _, errors = fam.validate({"tile": [128, 128], "a_dtype": "e4m3", "b_dtype": "nvfp4", "stagez": 2})
    text = "\n".join(errors)
    assert "unknown parameter 'stagez'" in text
    assert "tile must have 3 entries, got 2" in text
    assert "a_dtype = 'e4m3' is not one of 'nvfp4', 'mxfp4', 'mxfp8'" in text
    _, errors = get_family(SM80).validate({"tile": [128, 128, 64], "warp": [64, 64, 64], "stages": 2,
                                           "dtype": "fp32"})
    assert any("stages = 2: every value must be >= 3" in e for e in errors)
    assert any("dtype = 'fp32'" in e for e in errors)


def _template_fields(template: str, grouped: bool | None) -> list[str]:
    text = (templates_dir() / template).read_text()
    body = text[text.index("struct AotcArgs {"):]
    body = body[:body.index("\n};")]
    if grouped is not None:
        grouped_part, dense_part = body.split("{% else %}")
        body = grouped_part if grouped else dense_part
    return re.findall(r"^\s+(?:u?int\d+_t|float)\s+(\w+);", body, re.MULTILINE)


@pytest.mark.parametrize("family,template,grouped", [
    (DENSE, "gemm/blockscaled_sm120_types.j2", False),
    (GROUPED, "gemm/blockscaled_sm120_types.j2", True),
    (SM80, "gemm/grouped_sm80_types.j2", None),
])
def test_args_struct_mirrors_template(family, template, grouped):
    struct = get_family(family).args_struct
    assert [name for name, _ in struct._fields_] == _template_fields(template, grouped)
    # natural alignment, no hidden padding: all 8-byte fields are 8-aligned
    assert all(getattr(struct, n).offset % ctypes.sizeof(t) == 0 for n, t in struct._fields_)


def test_expected_mma_opcodes():
    # SASS of sm_120a / sm_90a builds (docs/families/gemm.md): OMMA x64 (NVFP4), QMMA x128 (MXFP8 x MXFP4),
    # HMMA x128 (SM80 class, same count on sm_80, sm_90a and sm_120a).
    assert get_family(GROUPED).expected_mma(params(GROUPED, tile=[128, 128, 128], a_dtype="nvfp4",
                                                   b_dtype="nvfp4"), SM120) == "OMMA"
    assert get_family(GROUPED).expected_mma(params(GROUPED, tile=[128, 128, 128], a_dtype="mxfp8",
                                                   b_dtype="mxfp4"), SM120) == "QMMA"
    assert get_family(SM80).expected_mma(params(SM80, tile=[128, 128, 64], warp=[64, 64, 64], dtype="bf16"),
                                         get_arch("sm90a")) == "HMMA"


def test_default_gemm_catalog_is_all_green():
    root = Path(__file__).resolve().parents[1] / "tile_specs"
    result = load_specs(sorted(root.glob("gemm_*.toml")))
    assert result.diagnostics == []
    families = {s.family for s in result.specs}
    assert families == {DENSE, GROUPED, SM80}
    checked = 0
    for spec in result.specs:
        for arch in spec.archs:
            verdict = check(spec, get_arch(arch))
            assert verdict.ok, [d.format() for d in verdict.diagnostics]
            assert verdict.smem.total <= get_arch(arch).smem_optin_bytes
            checked += 1
    assert checked >= 30

"""SMEM ground truth for the GEMM families: render the host-only sizeof probe of a sample of catalog
specs, compile it with real nvcc + CUTLASS headers, and require the byte-exact model to equal
sizeof(SharedStorage) (parts included), the resolved stage count, and the ctypes AotcArgs mirror."""

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
from aotc.resources import templates_dir

SM120 = get_arch("sm120a")

# One spec per family and layout kind (grouped nvfp4, grouped mxf8f6f4, dense, SM80 class).
CASES = [
    ("grouped_gemm_blockscaled_sm120", {"tile": [128, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}),
    ("grouped_gemm_blockscaled_sm120", {"tile": [128, 128, 128], "a_dtype": "mxfp8", "b_dtype": "mxfp4"}),
    ("gemm_blockscaled_sm120", {"tile": [256, 128, 128], "a_dtype": "nvfp4", "b_dtype": "nvfp4"}),
    ("grouped_gemm_sm80", {"tile": [128, 256, 32], "warp": [64, 64, 32], "stages": 3, "dtype": "fp16"}),
]


def run_probe(family: str, params: dict, tmp_path) -> dict:
    spec = KernelSpec(f"probe_{family}", family, params, ("sm120a",))
    src = tmp_path / "probe.cu"
    exe = tmp_path / "probe"
    src.write_text(render_probe(spec, SM120).text)
    includes = [f"-I{d}" for d in (templates_dir(), *cutlass_include_dirs())]
    cmd = [find_toolchain().nvcc, "-x", "cu", "-std=c++17", "--expt-relaxed-constexpr", "-DNDEBUG",
           "-gencode", SM120.gencode, *includes, "-o", str(exe), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


def _check_blockscaled(family: str, params: dict, measured: dict) -> None:
    model = get_family(family).smem(params, SM120)
    parts = dict(model.components)
    assert model.total == measured["total"]
    assert dict(model.chosen)["stages"] == measured["stages"]
    assert dict(model.chosen)["epilogue_carveout"] == measured["epilogue_shared_storage"]
    assert parts["A_stages"] == measured["smem_A"] and parts["B_stages"] == measured["smem_B"]
    assert parts["SFA_stages"] == measured["smem_SFA"] and parts["SFB_stages"] == measured["smem_SFB"]
    mainloop = sum(parts[k] for k in ("A_stages", "B_stages", "SFA_stages", "SFB_stages", "mainloop_pad")
                   if k in parts)
    assert mainloop == measured["mainloop_tensors"]
    assert parts["epilogue_D"] + parts["epilogue_fusion_pad"] == measured["epilogue_tensors"]
    assert parts["pipeline_barriers"] == measured["pipelines"]


@pytest.mark.compile
@pytest.mark.parametrize("family,params", CASES, ids=lambda x: x if isinstance(x, str) else
                         "x".join(map(str, x["tile"])) + "-" + str(x.get("a_dtype", x.get("dtype"))))
def test_model_matches_sizeof(family, params, tmp_path):
    fam = get_family(family)
    typed, errors = fam.validate(params)
    assert errors == []
    measured = run_probe(family, typed, tmp_path)
    if family == "grouped_gemm_sm80":
        model = fam.smem(typed, SM120)
        parts = dict(model.components)
        assert model.total == measured["total"]
        assert parts["A_stages"] == measured["operand_A"] and parts["B_stages"] == measured["operand_B"]
        assert dict(model.chosen)["epilogue_bytes"] == measured["epilogue"]
    else:
        _check_blockscaled(family, typed, measured)
    struct = fam.args_struct
    last = "route_k" if family == "grouped_gemm_sm80" else "alpha"
    assert ctypes.sizeof(struct) == measured["args_size"]
    assert getattr(struct, last).offset == measured["args_offset_last"]

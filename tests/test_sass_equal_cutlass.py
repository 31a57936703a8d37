"""aotc's block-scaled GEMMs are NVIDIA's SM120 example kernels: CUTLASS 79a (dense) and 79d
(grouped), re-targeted to a catalog spec by text substitution at test time, compiled for sm_120a
with aotc's flags. aotc's shipped `aotc_kernel` has the same SASS (addresses and symbol names
normalised) as the example's kernel type under the same entry point; against the example's own
`cutlass::device_kernel` only the entry point's effect remains: same OMMA count, registers, SMEM,
a handful of instructions scheduled differently (docs/proven.md). Real nvcc, real CUTLASS.
tools/sass_equal_cutlass.py runs the whole catalog.
"""

from __future__ import annotations

import pytest

from aotc.arch import ARCHES
from aotc.build.cutlass_reference import aotc_entry, compare_with_example, example_path, reference_source
from aotc.build.render import render
from aotc.build.spec import load_specs
from aotc.diagnostics import AotcError

ARCH = ARCHES["sm120a"]
SCHEDULES = ("cutlass::gemm::KernelTmaWarpSpecializedCooperative", "cutlass::epilogue::TmaWarpSpecializedCooperative")


def _spec(name: str):
    return next(s for s in load_specs().specs if s.name == name)


def test_reference_source_carries_the_spec_and_nothing_after_the_kernel():
    spec = _spec("gemm_nvfp4/tile=128x256x128")
    entry = aotc_entry(render(spec, ARCH).text)
    assert entry.startswith('extern "C" __global__ void') and "aotc::" not in entry
    text = reference_source(spec.family, {**spec.params, "stages": 3}, SCHEDULES, 12345, entry)
    example = example_path(spec.family).read_text()
    assert "Shape<_128,_128,_128>" in example and "int main(" in example
    assert "using ThreadBlockShape = Shape<_128,_256,_128>;" in text
    assert "StageCount<3>" in text and "StageCountAutoCarveout" not in text
    assert "using ElementC = void;" in text and SCHEDULES[0] in text and SCHEDULES[1] in text
    assert "KernelScheduleAuto" not in text.split("using CollectiveMainloop")[1]
    assert "int main(" not in text and "== 12345" in text and text.rstrip().endswith(entry.rstrip() + "\n#endif")
    # everything before the configuration is the example's own text
    head = example.split("using         ElementA")[0]
    assert text.startswith(head)


def test_an_example_without_the_expected_text_is_refused_with_a_code(tmp_path, monkeypatch):
    from aotc.build import cutlass_reference

    fake = tmp_path / "examples" / "79_blackwell_geforce_gemm"
    fake.mkdir(parents=True)
    (fake / cutlass_reference.EXAMPLES["gemm_blockscaled_sm120"]).write_text("// not the example\n")
    monkeypatch.setattr(cutlass_reference, "_cutlass_source", lambda: tmp_path)
    spec = _spec("gemm_nvfp4/tile=128x128x128")
    with pytest.raises(AotcError) as err:
        reference_source(spec.family, spec.params, SCHEDULES, 1, "")
    (diag,) = err.value.diagnostics
    assert diag.code == "AOTC-REF-001" and "ThreadBlockShape" in diag.message


def _assert_same_kernel(record: dict, mma: str) -> None:
    assert "error" not in record, record.get("error")  # incl. the SharedStorage == aotc's model assert
    c = record["comparison"]  # the example's kernel type under aotc's entry point vs aotc's build
    assert c["instructions"][0] == c["instructions"][1] > 1000
    assert c["equal"] and c["equal_modulo_registers"], c["first_difference"]
    assert c["mma"][0] == c["mma"][1] and c["mma"][0].get(mma, 0) > 0
    assert c["resources"][0] == c["resources"][1] and c["resources"][0]["registers"] > 0
    # the example's own cutlass::device_kernel: what the entry point alone changes stays small
    e = record["entry_point_effect"]
    assert e["mma"] == c["mma"] and e["resources"][0] == c["resources"][0]
    assert abs(e["instructions"][0] - e["instructions"][1]) <= 0.02 * e["instructions"][0]


@pytest.mark.compile
def test_dense_nvfp4_gemm_is_example_79a():
    record = compare_with_example(_spec("gemm_nvfp4/tile=128x128x128"), ARCH, _toolchain())
    _assert_same_kernel(record, "OMMA")


@pytest.mark.compile
def test_grouped_nvfp4_moe_gemm_is_example_79d():
    record = compare_with_example(_spec("moe_w4a4/tile=128x128x128"), ARCH, _toolchain())
    _assert_same_kernel(record, "OMMA")


def _toolchain():
    from aotc.build.toolchain import find_toolchain

    tc = find_toolchain()
    if not tc.cuobjdump:
        pytest.skip("cuobjdump not installed")
    return tc

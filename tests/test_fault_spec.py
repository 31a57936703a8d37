"""Hostile spec files: nothing a spec says reaches generated source except validated, typed values,
and every malformed file (undecodable, nested too deep, a sweep of millions) is a coded diagnostic."""

import time
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.render import render
from aotc.build.spec import MAX_SWEEP_PRODUCT, KernelSpec, load_spec_file
from aotc.diagnostics import AotcError

GOOD = """
[[kernel]]
name = "attn"
family = "fmha_fwd"
doc = "a plain doc"
block_m = 64
block_n = 64
warps = 4
head_dim = 64
dtype = "bf16"
"""


def load_text(tmp_path: Path, text: str | bytes):
    p = tmp_path / "s.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_spec_file(p)


@pytest.mark.parametrize("name", [
    "x\\n#error injected\\nstatic int injected;", "x\\tb", "a b", "a/b", "x*/ int y; /*", "", "-lead",
    "a" * 65, "caf\\u00e9", "x\\u2028y", "a,b=c",
])
def test_names_outside_the_plain_alphabet_are_refused(tmp_path, name):
    result = load_text(tmp_path, GOOD.replace('"attn"', f'"{name}"'))
    assert result.specs == []
    assert [d.code for d in result.diagnostics] == ["AOTC-SPEC-002"]
    assert "[A-Za-z0-9_.-]" in result.diagnostics[0].message and result.diagnostics[0].fix


def test_a_name_that_is_no_string_is_refused(tmp_path):
    result = load_text(tmp_path, GOOD.replace('"attn"', "[1, 2]"))
    assert [d.code for d in result.diagnostics] == ["AOTC-SPEC-002"]


@pytest.mark.parametrize("doc", ['"line\\nbreak"', '"tab\\there"', "42", '"' + "d" * 501 + '"'])
def test_doc_must_be_one_plain_bounded_line(tmp_path, doc):
    result = load_text(tmp_path, GOOD.replace('"a plain doc"', doc))
    assert result.specs == [] and [d.code for d in result.diagnostics] == ["AOTC-SPEC-008"]


def test_render_refuses_an_unsafe_name_made_in_code():
    spec = load_text_specs_good()
    bad = KernelSpec("x\n#error injected\nstatic int injected;", spec.family, spec.params, ())
    with pytest.raises(AotcError) as e:
        render(bad, get_arch("sm120a"))
    assert e.value.diagnostics[0].code == "AOTC-SPEC-002"


def load_text_specs_good() -> KernelSpec:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return load_text(Path(d), GOOD).specs[0]


def test_no_spec_string_but_validated_values_reaches_the_source(tmp_path):
    marker = "zq9marker"
    result = load_text(tmp_path, GOOD.replace('"a plain doc"', f'"{marker} doc"').replace('"attn"', '"attn.v2-x"'))
    (spec,) = result.specs
    text = render(spec, get_arch("sm120a")).text
    assert marker not in text  # the doc never reaches the generated source
    assert text.splitlines()[0] == "// aotc: attn.v2-x (fmha_fwd) for sm_120a"


def test_free_string_fields_take_plain_characters_only():
    from aotc.families.base import Field

    field = Field(str, "a free string")
    assert field.coerce("s", "ok_name-1.2") == ("ok_name-1.2", None)
    for bad in ("a\nb", "x;y", "", "a" * 65, "q\""):
        value, err = field.coerce("s", bad)
        assert value is None and "[A-Za-z0-9_.-]" in err


def test_undecodable_bytes_are_a_coded_diagnostic(tmp_path):
    result = load_text(tmp_path, GOOD.encode() + b'\n# \xff\xfe bad bytes\n')
    assert [d.code for d in result.diagnostics] == ["AOTC-SPEC-001"]
    assert "0xff" in result.diagnostics[0].message and "UTF-8" in result.diagnostics[0].fix


@pytest.mark.parametrize("nested", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_a_coded_diagnostic(tmp_path, nested):
    result = load_text(tmp_path, nested + "\n")
    assert [d.code for d in result.diagnostics] == ["AOTC-SPEC-001"]


def test_deep_nesting_inside_a_kernel_is_a_coded_diagnostic(tmp_path):
    result = load_text(tmp_path, GOOD.replace("block_m = 64", "block_m = " + "[" * 40 + "64" + "]" * 40))
    assert result.specs == [] and {d.code for d in result.diagnostics} == {"AOTC-SPEC-004"}


def test_a_sweep_product_over_the_cap_is_refused_at_once(tmp_path):
    # a few KB of TOML asking for 1,000 x 1,000 x 3 = 3,000,000 kernels
    values = "[" + ", ".join(str(16 * i) for i in range(1, 1001)) + "]"
    text = (GOOD.replace("block_m = 64", f"block_m = {values}").replace("block_n = 64", f"block_n = {values}")
            .replace('dtype = "bf16"', 'dtype = ["bf16", "fp16", "e4m3"]'))
    t0 = time.monotonic()
    result = load_text(tmp_path, text)
    assert time.monotonic() - t0 < 2.0
    assert result.specs == [] and [d.code for d in result.diagnostics] == ["AOTC-SPEC-009"]
    assert result.diagnostics[0].details == {"product": 3_000_000, "max": MAX_SWEEP_PRODUCT}
    assert "3,000,000" in result.diagnostics[0].message


def test_one_over_the_cap_is_refused(tmp_path):
    # 16 x 3 x 3 x 4 x 2 x 3 x 2 = 6,912 kernels
    values = ", ".join(str(16 * i) for i in range(1, 17))
    text = (GOOD.replace("block_m = 64", f"block_m = [{values}]").replace("block_n = 64", "block_n = [32, 64, 128]")
            .replace("head_dim = 64", "head_dim = [64, 128, 256]").replace("warps = 4", "warps = [1, 2, 4, 8]")
            .replace('dtype = "bf16"', 'dtype = ["bf16", "fp16", "e4m3"]\nkv_stages = [1, 2]\n'
                     'q_in_regs = [true, false]'))
    result = load_text(tmp_path, text)
    assert result.specs == [] and result.diagnostics[0].details["product"] == 6912 > MAX_SWEEP_PRODUCT


def test_a_sweep_exactly_at_the_cap_expands(tmp_path):
    # 256 block_m values (16 of them legal) x 4 warps x 2 kv_stages x 2 q_in_regs = 4,096 = the cap
    values = ", ".join(str(16 * i) for i in range(1, 257))
    text = (GOOD.replace("block_m = 64", f"block_m = [{values}]").replace("warps = 4", "warps = [1, 2, 4, 8]")
            .replace('dtype = "bf16"', 'dtype = "bf16"\nkv_stages = [1, 2]\nq_in_regs = [true, false]'))
    result = load_text(tmp_path, text)
    assert MAX_SWEEP_PRODUCT == 4096
    assert {d.code for d in result.diagnostics} == {"AOTC-SPEC-004"}  # block_m > 256, no cap diagnostic
    assert len(result.specs) == 16 * 4 * 2 * 2 and len(result.diagnostics) == (256 - 16) * 4 * 2 * 2


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path):
    result = load_text(tmp_path, GOOD + "# " + "x" * (2 << 20) + "\n")
    assert [d.code for d in result.diagnostics] == ["AOTC-SPEC-001"] and "split" in result.diagnostics[0].fix

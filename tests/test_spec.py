"""Spec loading: TOML -> typed, sweep-expanded KernelSpecs; every bad input is a coded diagnostic."""

from pathlib import Path

from aotc.build.spec import filter_specs, load_spec_file, load_specs

FMHA = """
[[kernel]]
name = "attn"
family = "fmha_fwd"
archs = ["sm120a", "sm_90a"]
block_m = 64
block_n = [64, 128]
warps = 4
head_dim = [64, 128]
dtype = "bf16"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sweeps_expand_to_cartesian_product_with_stable_names(tmp_path):
    result = load_spec_file(write(tmp_path, FMHA))
    assert result.diagnostics == []
    names = [s.name for s in result.specs]
    assert names == ["attn/block_n=64,head_dim=64", "attn/block_n=64,head_dim=128",
                     "attn/block_n=128,head_dim=64", "attn/block_n=128,head_dim=128"]
    spec = result.specs[3]
    assert spec.params["block_n"] == 128 and spec.params["head_dim"] == 128
    assert spec.params["kv_stages"] == 1  # family default filled in
    assert spec.archs == ("sm120a", "sm90a")  # normalized spellings
    assert spec.file.endswith("s.toml")


def test_type_errors_name_file_spec_and_parameter(tmp_path):
    text = FMHA.replace('dtype = "bf16"', 'dtype = "fp64"').replace("warps = 4", 'warps = "four"')
    result = load_spec_file(write(tmp_path, text))
    assert result.specs == []
    codes = {d.code for d in result.diagnostics}
    assert codes == {"AOTC-SPEC-004"}
    messages = " | ".join(d.message for d in result.diagnostics)
    assert "dtype = 'fp64' is not one of 'bf16', 'fp16'" in messages
    assert "warps must be an integer, got 'four'" in messages
    assert all(d.file.endswith("s.toml") and d.spec.startswith("attn/") for d in result.diagnostics)


def test_unknown_parameter_family_arch_and_missing_required(tmp_path):
    bad = (FMHA.replace("warps = 4", "warps = 4\nwarpz = 4")
           + '\n[[kernel]]\nname = "x"\nfamily = "gemm_sm200"\n'
           + '\n[[kernel]]\nname = "y"\nfamily = "fmha_fwd"\narchs = ["sm75"]\n'
           + '\n[[kernel]]\nname = "z"\nfamily = "fmha_fwd"\nblock_m = 64\n')
    result = load_spec_file(write(tmp_path, bad))
    by_spec = {}
    for d in result.diagnostics:
        by_spec.setdefault(d.spec.split("/")[0], []).append(d)
    assert any("unknown parameter 'warpz'" in d.message for d in by_spec["attn"])
    assert by_spec["x"][0].code == "AOTC-SPEC-003" and "fmha_fwd" in by_spec["x"][0].fix
    assert by_spec["y"][0].code == "AOTC-SPEC-006" and "sm75" in by_spec["y"][0].message
    assert any("missing required parameter 'head_dim'" in d.message for d in by_spec["z"])
    assert result.specs == []


def test_bad_toml_and_missing_tables(tmp_path):
    broken = load_spec_file(write(tmp_path, "[[kernel]\nname = 1\n"))
    assert broken.diagnostics[0].code == "AOTC-SPEC-001"
    assert "line 1" in broken.diagnostics[0].message
    empty = load_spec_file(write(tmp_path, "title = 'no kernels'\n", "e.toml"))
    assert empty.diagnostics[0].code == "AOTC-SPEC-001" and "[[kernel]]" in empty.diagnostics[0].message
    missing = load_spec_file(tmp_path / "absent.toml")
    assert missing.diagnostics[0].code == "AOTC-SPEC-001"


def test_duplicate_names_across_files(tmp_path):
    write(tmp_path, FMHA, "a.toml")
    write(tmp_path, FMHA, "b.toml")
    result = load_specs([tmp_path])
    assert len(result.specs) == 4
    dups = [d for d in result.diagnostics if d.code == "AOTC-SPEC-005"]
    assert len(dups) == 4 and "a.toml" in dups[0].message


def test_default_catalog_is_clean_and_filterable():
    result = load_specs()
    assert result.diagnostics == []
    names = [s.name for s in result.specs]
    assert len(names) == len(set(names)) > 0
    families = {s.family for s in result.specs}
    assert {"fmha_fwd", "fmha_decode"} <= families
    only = filter_specs(result.specs, ["fmha_decode"])
    assert only and all(s.family == "fmha_decode" for s in only)
    wild = filter_specs(result.specs, ["fmha_fwd_m64n64/*bf16"])
    assert wild and all(s.name.startswith("fmha_fwd_m64n64/") and s.name.endswith("bf16") for s in wild)

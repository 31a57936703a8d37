"""Spec loading: TOML -> typed, sweep-expanded KernelSpecs; every bad input is a coded diagnostic."""

from pathlib import Path

from aotc.build.spec import KernelSpec, filter_specs, load_spec_file, load_specs

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


# ---- invariants a mutation pass asked for ------------------------------------------------------------
GEMM = """
[[kernel]]
name = "g"
family = "grouped_gemm_sm80"
tile = [[128, 128, 64], [64, 64, 64]]
warp = [64, 64, 64]
stages = 3
dtype = "bf16"
"""


def one(tmp_path: Path, text: str):
    result = load_spec_file(write(tmp_path, text))
    return result.specs, result.diagnostics


def test_shape_sweeps_bool_sweeps_and_single_shapes_name_their_values(tmp_path):
    specs, diags = one(tmp_path, GEMM)
    assert diags == [] and [s.name for s in specs] == ["g/tile=128x128x64", "g/tile=64x64x64"]
    assert list(specs[1].params["tile"]) == list(specs[1].params["warp"]) == [64, 64, 64]  # one shape, no sweep
    specs, diags = one(tmp_path, FMHA.replace("block_n = [64, 128]", "block_n = 64\nq_in_regs = [true, false]")
                       .replace("head_dim = [64, 128]", "head_dim = 64"))
    assert diags == [] and [s.name for s in specs] == ["attn/q_in_regs=true", "attn/q_in_regs=false"]
    assert [s.params["q_in_regs"] for s in specs] == [True, False]
    specs, diags = one(tmp_path, GEMM.replace("[[128, 128, 64], [64, 64, 64]]", "[]"))
    assert specs == [] and [d.code for d in diags] == ["AOTC-SPEC-004"]  # an empty shape is no sweep


def test_a_spec_carries_its_doc_file_and_archs_and_says_so_as_json(tmp_path):
    text = FMHA.replace('name = "attn"', 'name = "attn"\ndoc = "' + "d" * 500 + '"').replace(
        'archs = ["sm120a", "sm_90a"]', 'archs = "12.0a"')
    specs, diags = one(tmp_path, text)
    assert diags == [] and len(specs) == 4
    s = specs[0]
    assert s.doc == "d" * 500 and s.archs == ("sm120a",)
    assert s.to_json() == {"name": s.name, "family": "fmha_fwd", "params": s.params, "archs": ["sm120a"],
                           "file": str(tmp_path / "s.toml")}
    specs, _ = one(tmp_path, FMHA.replace('archs = ["sm120a", "sm_90a"]\n', ""))
    assert specs[0].archs == () and specs[0].doc == ""


def test_each_table_problem_is_its_own_coded_diagnostic(tmp_path):
    specs, diags = one(tmp_path, FMHA.replace('family = "fmha_fwd"', "family = 42"))
    (d,) = diags
    assert d.code == "AOTC-SPEC-003" and "42" in d.message and "did you mean" not in d.message
    assert all(f in d.fix for f in ("fmha_fwd", "grouped_gemm_sm80")) and (d.spec, d.file) == ("attn", str(
        tmp_path / "s.toml"))
    specs, diags = one(tmp_path, FMHA.replace('family = "fmha_fwd"', 'family = "fmha_fdw"'))
    assert "did you mean fmha_fwd" in diags[0].message
    specs, diags = one(tmp_path, FMHA.replace('["sm120a", "sm_90a"]', '["sm120a", 7, "sm_99"]'))
    assert specs == [] and [d.code for d in diags] == ["AOTC-SPEC-006", "AOTC-SPEC-006"]
    assert "strings" in diags[0].message and "7" in diags[0].message and "sm_99" in diags[1].message
    assert all(d.spec == "attn" and d.fix for d in diags)
    specs, diags = one(tmp_path, FMHA.replace("[64, 128]", "[]", 1))
    assert specs == [] and [d.code for d in diags] == ["AOTC-SPEC-007"] and diags[0].spec == "attn"
    specs, diags = one(tmp_path, FMHA.replace('"attn"', '"attn"\ndoc = "a\\u0007bell"'))
    assert [d.code for d in diags] == ["AOTC-SPEC-008"] and diags[0].fix
    specs, diags = one(tmp_path, FMHA.replace("warps = 4", 'warps = "four"'))
    assert {d.spec for d in diags} == {s for s in ("attn/block_n=64,head_dim=64", "attn/block_n=64,head_dim=128",
                                                   "attn/block_n=128,head_dim=64", "attn/block_n=128,head_dim=128")}
    assert all("aotc families fmha_fwd" in d.fix for d in diags)


def test_a_sweep_over_the_cap_names_its_sizes(tmp_path):
    from aotc.build.spec import MAX_SWEEP_PRODUCT

    text = FMHA.replace("block_m = 64", "block_m = [" + ", ".join(["64"] * 1025) + "]").replace(
        "warps = 4", "warps = [4, 4]")
    _, (d,) = one(tmp_path, text)
    assert d.code == "AOTC-SPEC-009" and d.details == {"product": 1025 * 2 * 2 * 2, "max": MAX_SWEEP_PRODUCT}
    assert "1025 block_m x 2 block_n x 2 warps x 2 head_dim" in d.message and "8,200" in d.message


def test_file_level_problems(tmp_path):
    from aotc.build.spec import MAX_SPEC_FILE_BYTES

    text = FMHA.replace("[64, 128]", "64")
    padded = text + "#" * (MAX_SPEC_FILE_BYTES - len(text) - 1) + "\n"
    assert len(padded) == MAX_SPEC_FILE_BYTES and len(one(tmp_path, padded)[0]) == 1  # exactly the cap loads
    _, (d,) = one(tmp_path, padded + "\n")
    assert d.code == "AOTC-SPEC-001" and f"{MAX_SPEC_FILE_BYTES:,} B" in d.message
    p = tmp_path / "bytes.toml"
    p.write_bytes(b'[[kernel]]\nname = "\xff"\n')
    (d,) = load_spec_file(p).diagnostics
    assert d.code == "AOTC-SPEC-001" and "byte 0xff at offset 19" in d.message and d.file == str(p)
    (d,) = load_spec_file(tmp_path).diagnostics  # a folder cannot be read as a file
    assert d.code == "AOTC-SPEC-001" and "cannot read" in d.message and d.fix
    for body in ("kernel = 3\n", "kernel = [1]\n", "[kernel]\nname = 'x'\n"):
        (d,) = one(tmp_path, body)[1]
        assert d.code == "AOTC-SPEC-001" and "[[kernel]]" in d.fix, body


def test_folders_are_searched_for_toml_in_name_order_and_duplicates_name_the_first(tmp_path):
    one_kernel = FMHA.replace("[64, 128]", "64")
    folder = tmp_path / "specs"
    folder.mkdir()
    write(folder, one_kernel.replace('"attn"', '"b"'), "b.toml")
    write(folder, one_kernel.replace('"attn"', '"a"'), "a.toml")
    write(folder, "not toml at all", "notes.txt")
    extra = write(tmp_path, one_kernel.replace('"attn"', '"a"'), "extra.toml")
    result = load_specs([folder, extra])
    assert [s.name for s in result.specs] == ["a", "b"]
    (d,) = result.diagnostics
    assert d.code == "AOTC-SPEC-005" and d.file == str(extra) and str(folder / "a.toml") in d.message
    assert d.spec == "a" and d.fix
    bad = write(tmp_path, "[[kernel]]\nname = 'z'\nfamily = 'nope'\n", "bad.toml")
    result = load_specs([bad, folder])
    assert [s.name for s in result.specs] == ["a", "b"] and [d.code for d in result.diagnostics] == ["AOTC-SPEC-003"]
    assert load_specs([]).specs == load_specs().specs  # no paths: the catalog


def test_filters_match_names_and_families():
    specs = load_specs().specs
    assert filter_specs(specs, []) == specs
    by_family = filter_specs(specs, ["fmha_*"])
    assert {s.family for s in by_family} >= {"fmha_fwd", "fmha_decode"}
    assert filter_specs(specs, ["fmha_decode_paged"]) == [s for s in specs if s.family == "fmha_decode_paged"]
    gemm = filter_specs(specs, ["grouped_gemm_sm8?"])  # a wildcard on the family alone
    assert gemm and {s.family for s in gemm} == {"grouped_gemm_sm80"}
    assert filter_specs(specs, ["no-such-kernel", "fmha_decode_paged"]) == filter_specs(specs, ["fmha_decode_paged"])
    assert filter_specs(specs, ["FMHA_FWD"]) == []


def test_a_bad_name_is_shown_short_and_where_it_was(tmp_path):
    for name, shown in (('"a b"', "'a b'"), ("[1, 2]", "[1, 2]"), ('"' + "a" * 100 + '"', None)):
        _, (d,) = one(tmp_path, FMHA.replace('"attn"', name))
        assert d.code == "AOTC-SPEC-002" and (d.spec, d.file) == ("?", str(tmp_path / "s.toml"))
        got = d.message.split("; got ", 1)[1]
        assert got == shown if shown else got == "'" + "a" * 79  # at most 80 characters of it
    _, (d,) = one(tmp_path, FMHA.replace('"attn"', '"attn"\ndoc = 42'))
    assert d.code == "AOTC-SPEC-008" and "500" in d.message and "42" in d.message


def test_swept_values_are_named_as_written_and_wildcards_only_make_patterns(tmp_path):
    _, diags = one(tmp_path, FMHA.replace('dtype = "bf16"', 'dtype = ["bf16", "BF16"]'))
    assert {d.spec for d in diags} == {f"attn/block_n={n},head_dim={h},dtype=BF16" for n in (64, 128)
                                       for h in (64, 128)}
    specs = [KernelSpec(n, "fam", {}, ()) for n in ("aXb", "a*b", "ab")]
    assert filter_specs(specs, ["X"]) == specs[:1]  # no wildcard: a substring
    assert filter_specs(specs, ["a?b"]) == specs[:2] and filter_specs(specs, ["a[*X]b"]) == specs[:2]



def test_every_file_level_refusal_names_the_file_loads_nothing_and_says_what_to_do(tmp_path):
    from aotc.build.spec import MAX_SPEC_FILE_BYTES

    (tmp_path / "b.toml").write_bytes(b"x = '\xff'\n")
    cases = {"folder": tmp_path, "bytes": tmp_path / "b.toml", "toml": write(tmp_path, "[[kernel]\n", "t.toml"),
             "big": write(tmp_path, "#" * (MAX_SPEC_FILE_BYTES + 1), "big.toml"),
             "deep": write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n", "deep.toml"),
             "no tables": write(tmp_path, "title = 'x'\n", "none.toml")}
    for what, path in cases.items():
        result = load_spec_file(path)
        (d,) = result.diagnostics
        assert result.specs == [] and d.code == "AOTC-SPEC-001" and d.file == str(path), what
        assert d.message and d.fix and d.details == {}, what
    assert f"over {MAX_SPEC_FILE_BYTES:,} B" in load_spec_file(cases["big"]).diagnostics[0].message


def test_table_refusals_say_what_to_do_and_show_at_most_80_characters(tmp_path):
    _, (d,) = one(tmp_path, FMHA.replace("[64, 128]", "[]", 1))
    assert "empty" in d.message and d.fix
    _, (d,) = one(tmp_path, FMHA.replace('"attn"', '"attn"\ndoc = "' + "d" * 600 + '"'))
    assert (d.spec, d.file) == ("attn", str(tmp_path / "s.toml")) and d.message.endswith("'" + "d" * 79)
    _, (d,) = one(tmp_path, FMHA.replace('"fmha_fwd"', '["fmha_fwd"]'))  # not a string, not even hashable
    assert d.code == "AOTC-SPEC-003" and d.message.endswith("['fmha_fwd']")
    _, (d,) = one(tmp_path, FMHA.replace('"fmha_fwd"', "42"))
    assert d.message.endswith(" 42")  # no near-miss hint for a number
    _, (d,) = one(tmp_path, FMHA.replace('"fmha_fwd"', '"' + "f" * 100 + '"'))
    assert d.code == "AOTC-SPEC-003" and ("'" + "f" * 79) in d.message and "f" * 80 not in d.message
    _, diags = one(tmp_path, FMHA.replace('["sm120a", "sm_90a"]', "[[" + "1, " * 60 + "1]]"))
    assert [d.code for d in diags] == ["AOTC-SPEC-006"] and len(diags[0].message.split("got ", 1)[1]) == 80
    text = FMHA.replace("block_m = 64", "block_m = [" + ", ".join(["64"] * 2049) + "]")
    _, (d,) = one(tmp_path, text)
    assert d.code == "AOTC-SPEC-009" and d.fix and (d.spec, d.file) == ("attn", str(tmp_path / "s.toml"))

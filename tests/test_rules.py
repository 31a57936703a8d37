"""Rules: arch features and the tcgen05 ban, family legality, and the SMEM budget with numbers."""

import json

from aotc.arch import ARCHES, CLUSTER_MULTICAST, MMA_BLOCKSCALED, MMA_SYNC, TCGEN05, TMA, WGMMA
from aotc.build.rules import check, feature_diagnostics, smem_diagnostic
from aotc.build.spec import KernelSpec, load_specs
from aotc.families import SmemModel, get_family


def fmha(**over) -> KernelSpec:
    params = {"block_m": 64, "block_n": 64, "head_dim": 128, "warps": 4, "kv_stages": 2, "dtype": "bf16",
              "q_in_regs": True}
    params.update(over)
    return KernelSpec("t", "fmha_fwd", params, (), "t.toml")


def test_tcgen05_wgmma_multicast_banned_on_every_sm12x_target():
    spec = fmha()
    for name in ("sm120a", "sm120f", "sm121a"):
        for feature in (TCGEN05, WGMMA, CLUSTER_MULTICAST):
            (d,) = feature_diagnostics(spec, ARCHES[name], frozenset({MMA_SYNC, feature}))
            assert d.code == "AOTC-ARCH-002" and feature in d.message
    assert feature_diagnostics(spec, ARCHES["sm100a"], frozenset({TCGEN05})) == []
    (d,) = feature_diagnostics(spec, ARCHES["sm90a"], frozenset({TCGEN05}))
    assert d.code == "AOTC-ARCH-001"  # not applicable there, not a ban


def test_smem_over_budget_reports_breakdown_overshoot_and_fix():
    spec = fmha(block_m=128, block_n=128, head_dim=128, warps=8, kv_stages=2)
    verdict = check(spec, ARCHES["sm120a"])
    assert not verdict.ok and verdict.applicable
    d = verdict.diagnostics[0]
    assert d.code == "AOTC-SMEM-001"
    assert [x.code for x in verdict.diagnostics].count("AOTC-SMEM-001") == 1
    total, budget = d.details["total"], d.details["budget"]
    assert budget == 101_376 and total > budget
    assert d.details["overshoot"] == total - budget
    assert sum(d.details["components"].values()) == total
    assert f"{total:,} B exceeds the sm120a budget of 101,376 B by {total - budget:,} B" in d.message
    assert d.fix  # a concrete suggestion
    # the same tile fits the H100's 232,448 B
    assert check(spec, ARCHES["sm90a"]).ok


def test_spec_archs_restrict_where_it_applies():
    spec = KernelSpec("t", "fmha_fwd", fmha().params, ("sm120a",), "t.toml")
    assert check(spec, ARCHES["sm120a"]).ok
    other = check(spec, ARCHES["sm90a"])
    assert not other.applicable and not other.ok


def test_every_catalog_spec_fits_sm120():
    specs = load_specs().specs
    for spec in specs:
        for name in ("sm120a", "sm120f", "sm121a"):
            verdict = check(spec, ARCHES[name])
            if verdict.applicable:
                assert verdict.ok, (spec.name, name, [d.format() for d in verdict.diagnostics])
                assert verdict.smem.total <= 101_376


def test_a_ban_names_only_the_banned_instructions_used_and_where_they_are():
    spec = fmha()
    for feature in (TCGEN05, WGMMA, CLUSTER_MULTICAST):
        (d,) = feature_diagnostics(spec, ARCHES["sm120a"], frozenset({MMA_SYNC, feature}))
        others = {TCGEN05, WGMMA, CLUSTER_MULTICAST} - {feature}
        assert not any(o in d.message.split(",")[0] for o in others), d.message  # only what the kernel uses
        assert "sm120a" in d.message and "TMEM" in d.message
        assert (d.spec, d.file) == ("t", "t.toml") and "mma.sync" in d.fix


def test_a_missing_instruction_family_is_listed_with_its_arch_and_a_fix():
    spec = fmha()
    (d,) = feature_diagnostics(spec, ARCHES["sm80"], frozenset({MMA_SYNC, MMA_BLOCKSCALED, TMA}))
    assert d.code == "AOTC-ARCH-001" and d.details == {"missing": sorted({MMA_BLOCKSCALED, TMA})}
    assert d.message.startswith("sm80 ") and MMA_BLOCKSCALED in d.message and TMA in d.message
    assert "sm80" in d.fix and (d.spec, d.file) == ("t", "t.toml")


def test_smem_diagnostic_lists_each_component_and_the_choices_made():
    budget = ARCHES["sm120a"].smem_optin_bytes
    model = SmemModel((("A_stages", 65_536), ("B_stages", budget - 65_536 + 512)), (("stages", 4), ("union", "a")))
    d = smem_diagnostic(fmha(), ARCHES["sm120a"], model, "use 3 stages")
    head, *rows = d.message.splitlines()
    assert "by 512 B" in head and "stages=4" in head and "union=a" in head
    assert [r.split()[0] for r in rows] == ["A_stages", "B_stages"]
    assert [int(r.split()[1].replace(",", "")) for r in rows] == [65_536, budget - 65_536 + 512]
    assert all(r.endswith(" B") for r in rows)
    assert d.details["chosen"] == {"stages": 4, "union": "a"} and d.details["components"] == dict(model.components)
    assert (d.spec, d.file, d.fix) == ("t", "t.toml", "use 3 stages")
    # with nothing chosen, the headline ends at the overshoot (no empty parentheses)
    plain = smem_diagnostic(fmha(), ARCHES["sm120a"], SmemModel((("all", budget + 1),)), "hint")
    assert plain.message.splitlines()[0].endswith("by 1 B")


def test_verdicts_name_their_spec_and_arch_on_every_path():
    def grouped(**over):
        params, errors = get_family("grouped_gemm_sm80").validate(
            {"tile": [128, 128, 64], "warp": [64, 64, 64], "stages": 3, "dtype": "bf16", **over})
        assert errors == []
        return KernelSpec("g", "grouped_gemm_sm80", params, (), "g.toml")

    archs_listed = KernelSpec("t", "fmha_fwd", fmha().params, ("sm120a", "sm121a"), "t.toml")
    catalog = next(s for s in load_specs().specs if s.family == "gemm_blockscaled_sm120")
    blockscaled = KernelSpec("b", catalog.family, catalog.params, (), "b.toml")  # every arch, not only SM12x
    bad_warp = grouped(warp=[48, 64, 64])
    cases = [(archs_listed, "sm90a"), (blockscaled, "sm90a"), (fmha(), "sm120a"), (bad_warp, "sm120a")]
    for spec, name in cases:
        v = check(spec, ARCHES[name])
        assert v.spec is spec and v.arch is ARCHES[name]
        assert all((d.spec, d.file) == (spec.name, spec.file) for d in v.diagnostics)
    restricted = check(archs_listed, ARCHES["sm90a"]).diagnostics[0]
    assert "sm120a" in restricted.message and "sm121a" in restricted.message
    # an arch without the kernel's instructions: not applicable, and no SMEM model is computed for it
    v = check(blockscaled, ARCHES["sm90a"])
    assert not v.applicable and v.smem is None and v.diagnostics[0].details["missing"] == [MMA_BLOCKSCALED]
    # family legality comes through whole, with the spec named
    family_says = get_family("grouped_gemm_sm80").check(bad_warp.params, ARCHES["sm120a"])
    v = check(bad_warp, ARCHES["sm120a"])
    assert family_says and v.smem is not None
    assert [(d.code, d.message, d.fix, d.details) for d in v.diagnostics] == \
        [(d.code, d.message, d.fix, d.details) for d in family_says]


def test_a_verdict_as_json_says_what_check_decided():
    over = check(fmha(block_m=128, block_n=128, warps=8, kv_stages=2), ARCHES["sm120a"])
    fits = check(fmha(), ARCHES["sm120a"])
    restricted = check(KernelSpec("r", "fmha_fwd", fmha().params, ("sm120a",), "r.toml"), ARCHES["sm90a"])
    for v in (over, fits, restricted):
        j = json.loads(json.dumps(v.to_json()))
        assert (j["spec"], j["family"], j["arch"]) == (v.spec.name, "fmha_fwd", v.arch.name)
        assert (j["ok"], j["applicable"]) == (v.ok, v.applicable)
        assert j["budget"] == v.arch.smem_optin_bytes
        assert [d["code"] for d in j["diagnostics"]] == [d.code for d in v.diagnostics]
        assert j["smem"] == (None if v.smem is None else
                             {"total": v.smem.total, "components": dict(v.smem.components),
                              "chosen": dict(v.smem.chosen)})
    assert over.to_json()["ok"] is False and over.to_json()["smem"]["total"] > 101_376 == over.to_json()["budget"]
    assert fits.to_json()["ok"] is True and restricted.to_json()["applicable"] is False

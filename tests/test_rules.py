"""Rules: arch features and the tcgen05 ban, family legality, and the SMEM budget with numbers."""

from aotc.arch import ARCHES, CLUSTER_MULTICAST, MMA_SYNC, TCGEN05, WGMMA
from aotc.build.rules import check, feature_diagnostics
from aotc.build.spec import KernelSpec, load_specs


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

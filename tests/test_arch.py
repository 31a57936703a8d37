"""Arch catalog: budgets, instruction families, and which devices run which targets."""

import pytest

from aotc.arch import (
    ARCHES,
    MMA_BLOCKSCALED,
    TCGEN05,
    WGMMA,
    UnknownArchError,
    get_arch,
    parse_arch_list,
    target_preference,
)


def test_sm12x_budget_and_missing_instructions():
    for name in ("sm120a", "sm120f", "sm121a"):
        arch = ARCHES[name]
        assert arch.smem_optin_bytes == 101_376
        assert MMA_BLOCKSCALED in arch.features
        assert not arch.features & {TCGEN05, WGMMA}
        assert arch.max_cluster_size == 1
    assert TCGEN05 in ARCHES["sm100a"].features
    assert WGMMA in ARCHES["sm90a"].features and MMA_BLOCKSCALED not in ARCHES["sm90a"].features


@pytest.mark.parametrize(
    "target, device, runs",
    [
        ("sm120a", (12, 0), True),
        ("sm120a", (12, 1), False),  # an `a` target runs on that exact SM only
        ("sm120f", (12, 0), True),
        ("sm120f", (12, 1), True),  # an `f` target runs on its whole family
        ("sm121a", (12, 0), False),
        ("sm100a", (12, 0), False),  # sm_100 binaries never run on SM120
        ("sm90a", (9, 0), True),
        ("sm90a", (12, 0), False),
        ("sm80", (8, 6), True),
        ("sm80", (9, 0), False),  # SASS is not forward compatible across majors
        ("sm86", (8, 0), False),
    ],
)
def test_runs_on(target, device, runs):
    assert ARCHES[target].runs_on(device) is runs


def test_target_preference_exact_then_family():
    stored = ["sm120f", "sm80", "sm120a", "sm121a", "sm100a"]
    assert target_preference((12, 0), stored) == ["sm120a", "sm120f"]
    assert target_preference((12, 1), stored) == ["sm121a", "sm120f"]
    assert target_preference((9, 0), stored) == []


def test_gencode_and_spellings():
    assert get_arch("sm_120a").gencode == "arch=compute_120a,code=sm_120a"
    assert get_arch("120f").nvcc_name == "sm_120f"
    assert [a.name for a in parse_arch_list("sm120a, sm_120f,sm120a")] == ["sm120a", "sm120f"]
    with pytest.raises(UnknownArchError, match="known: sm80"):
        get_arch("sm75")

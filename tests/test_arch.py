"""Arch catalog: budgets, instruction families, and which devices run which targets."""

import pickle
import re

import pytest

from aotc.arch import (
    ARCHES,
    MMA_BLOCKSCALED,
    TCGEN05,
    WGMMA,
    Arch,
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


@pytest.mark.parametrize("arch", ARCHES.values(), ids=lambda a: a.name)
def test_every_spelling_of_every_target(arch):
    major, minor, v = arch.sm // 10, arch.sm % 10, arch.variant
    spellings = [arch.name, f"sm_{arch.sm}{v}", f"{arch.sm}{v}", f"compute_{arch.sm}{v}", f"{major}.{minor}{v}",
                 f" SM_{arch.sm}{v.upper()} ", f"COMPUTE_{arch.sm}{v}", f"{major}.{minor}{v.upper()}"]
    assert [get_arch(s) for s in spellings] == [arch] * len(spellings)
    assert arch.nvcc_name == f"sm_{arch.sm}{v}" and arch.family_major == major


@pytest.mark.parametrize("arch", ARCHES.values(), ids=lambda a: a.name)
def test_an_arch_is_a_value_record(arch):
    fields = {k: getattr(arch, k) for k in Arch.__slots__}
    again = Arch(**fields)
    assert again == arch and hash(again) == hash(arch) and pickle.loads(pickle.dumps(again)) == arch
    assert {k: getattr(again, k) for k in Arch.__slots__} == fields


def test_unknown_and_empty_arch_lists_are_refused_with_the_known_names():
    with pytest.raises(UnknownArchError) as e:
        get_arch("sm_120")
    assert "did you mean" in str(e.value) and "sm120a" in str(e.value).split("(known")[0]
    assert re.search(r"known: (.*?);", str(e.value)).group(1).split(", ") == list(ARCHES)
    for empty in ("", " ,; "):
        with pytest.raises(UnknownArchError, match="empty"):
            parse_arch_list(empty)


@pytest.mark.parametrize("target, device", [("sm86", (8, 6)), ("sm86", (8, 9)), ("sm89", (8, 9)), ("sm80", (8, 9))])
def test_plain_targets_run_on_newer_minors_of_their_major(target, device):
    assert ARCHES[target].runs_on(device)


def test_the_newest_runnable_plain_target_comes_first():
    assert target_preference((8, 9), ["sm80", "sm89", "sm86", "sm90a"]) == ["sm89", "sm86", "sm80"]
    assert target_preference((8, 6), ["sm89", "sm80", "sm86"]) == ["sm86", "sm80"]

"""Tests aimed at the bugs a mutation pass let through: each one fails when one invariant is broken
on purpose (the SMEM rule's bound, every banned SASS opcode class, the spec-name check). No
compiler needed: SMEM models and SASS text are data."""

import pytest

from aotc.arch import ARCHES, SM120_SMEM_OPTIN
from aotc.build.rules import smem_diagnostic
from aotc.build.spec import KernelSpec
from aotc.build.verify import find_banned, scan_sass
from aotc.families import SmemModel

SPEC = KernelSpec("probe", "fmha_fwd", {}, ())
SM12X = [a for a in ARCHES.values() if a.sm // 10 == 12]


@pytest.mark.parametrize("arch", SM12X, ids=lambda a: a.name)
def test_a_kernel_of_exactly_the_budget_fits_and_one_byte_more_does_not(arch):
    assert arch.smem_optin_bytes == SM120_SMEM_OPTIN == 101_376
    exact = SmemModel((("mainloop", 90_112), ("epilogue", 11_264)))
    assert exact.total == 101_376
    assert smem_diagnostic(SPEC, arch, exact, "hint") is None
    over = SmemModel((("mainloop", 90_112), ("epilogue", 11_265)))
    d = smem_diagnostic(SPEC, arch, over, "hint")
    assert d is not None and d.code == "AOTC-SMEM-001"
    assert d.details["overshoot"] == 1 and d.details["total"] == 101_377 and d.details["budget"] == 101_376
    assert "by 1 B" in d.message


def sass(*instructions: str) -> str:
    """cuobjdump -sass text around the given instruction lines (address, optional predicate)."""
    lines = ["\tcode for sm_120a", "\t\tFunction : aotc_kernel", "\t.headerflags\t@\"EF_CUDA_SM120\""]
    for i, ins in enumerate(instructions):
        lines.append(f"        /*{i * 16:04x}*/                   {ins} ;"
                     f"                  /* 0x000fe20000000f00 */")
    return "\n".join(lines) + "\n"


# One line per banned class on SM12x, as cuobjdump prints it (tcgen05 MMAs, commit, alloc, copy,
# shift, TMEM ld/st; wgmma in every operand type; TMA multicast).
BANNED_ON_SM12X = [
    "UTCHMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT",
    "UTCQMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT",
    "UTCOMMA.4X gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT",
    "UTCIMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT",
    "UTCBAR [UR4], URZ",
    "UTCATOMSWS.FIND_AND_SET.ALIGN UP0, UR4, UR4",
    "UTCCP.T.S.4x32dp128bit tmem[UR4], gdesc[UR6]",
    "UTCSHIFT tmem[UR4]",
    "LDTM.x16 R4, tmem[UR4]",
    "STTM.x16 tmem[UR4], R4",
    "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0",
    "IGMMA.64x128x32.S32.S8.S8 R24, gdesc[UR8], R24, gsb0",
    "QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24, gsb0",
    "BGMMA.64x128x256.S32 R24, gdesc[UR8], R24, gsb0",
    "UTMALDG.2D.MULTICAST [UR8], [UR4], UR12, desc[UR14]",
    "@P0 UTCHMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT",
    "@!UP1 LDTM.x32 R4, tmem[UR4]",
]
ALLOWED_ON_SM12X = [
    "OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X R24, R4, R12, R24, R2, URZ, UR4",
    "QMMA.16832.F32.E4M3.E4M3 R24, R4, R12, R24",
    "HMMA.16816.F32.BF16 R24, R4, R12, R24",
    "UTMALDG.2D [UR8], [UR4], desc[UR14]",
    "UTMASTG.2D [UR4], [UR8]",
    "UTMACCTL.PF [UR4]",
    "UTMACMDFLUSH",
    "LDSM.16.M88.4 R4, [R2]",
    "LDS.128 R8, [R3]",
    "STS.128 [R3], R8",
    "LDG.E.128 R8, desc[UR4][R2.64]",
    "SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [UR4], RZ",
]


@pytest.mark.parametrize("arch", SM12X, ids=lambda a: a.name)
@pytest.mark.parametrize("line", BANNED_ON_SM12X)
def test_every_banned_opcode_class_is_found_on_sm12x(arch, line):
    found = find_banned(scan_sass(sass(*ALLOWED_ON_SM12X, line)), arch)
    opcode = line.split()[1] if line.startswith("@") else line.split()[0]
    assert found == {opcode: 1}


@pytest.mark.parametrize("arch", SM12X, ids=lambda a: a.name)
def test_sm120_instructions_are_not_banned(arch):
    assert find_banned(scan_sass(sass(*ALLOWED_ON_SM12X)), arch) == {}


def test_tcgen05_is_legal_on_sm100a_and_wgmma_on_sm90a_only():
    tcgen05 = [ln for ln in BANNED_ON_SM12X if "TM" in ln.split()[0][:4] or "UTC" in ln]
    wgmma = [ln for ln in BANNED_ON_SM12X if "GMMA" in ln]
    assert find_banned(scan_sass(sass(*tcgen05)), ARCHES["sm100a"]) == {}
    assert set(find_banned(scan_sass(sass(*wgmma)), ARCHES["sm100a"])) == {ln.split()[0] for ln in wgmma}
    assert find_banned(scan_sass(sass(*wgmma)), ARCHES["sm90a"]) == {}
    assert "UTMALDG.2D.MULTICAST" not in find_banned(scan_sass(sass(BANNED_ON_SM12X[14])), ARCHES["sm90a"])

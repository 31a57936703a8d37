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


# ---- kernel wheels: reproducible across processes, foreign ABI refused ------------------------------
WHEEL_SCRIPT = r"""
import sys
from pathlib import Path
from aotc.arch import ARCHES
from aotc.build.wheel_pack import build_wheel, select_entries
from aotc.cache import Cache
cache = Cache(sys.argv[1])
print(build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "kseed", Path(sys.argv[2])))
"""


def small_cache(root) -> None:
    from aotc.cache import Cache
    from aotc.keys import sha256_hex

    cache = Cache(root)
    for i in range(12):  # several blobs and records: set or dict order would show in the zip
        name = f"k{i}"
        key, sk = sha256_hex(name.encode()), sha256_hex(b"s" + name.encode())
        cache.put_entry(key, {"cubin": name.encode() * 40, "source": b"// " + name.encode()}, {
            "name": name, "family": "fmha_fwd", "params": {"i": i}, "arch": "sm120a", "spec_key": sk,
            "target": {"sm": 120, "variant": "a"}, "toolchain": {"nvcc_version": "13.0"}})
        cache.set_ref(sk, key, {"family": "fmha_fwd", "params": {"i": i}, "arch": "sm120a", "name": name})


def test_wheels_are_reproducible_across_processes_and_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    small_cache(tmp_path / "cache")
    wheels = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", WHEEL_SCRIPT, str(tmp_path / "cache"), str(tmp_path / seed)],
                             capture_output=True, text=True, env=env, check=True)
        wheels.append(Path(out.stdout.strip()).read_bytes())
        time.sleep(2.1)  # zip timestamps have a 2 s resolution: a wall-clock one would now differ
    assert wheels[0] == wheels[1]


def test_a_foreign_abi_wheel_is_refused_by_check(tmp_path):
    import json
    import zipfile

    from aotc import ABI_VERSION
    from aotc.build.wheel_check import check_wheel
    from aotc.build.wheel_pack import build_wheel, select_entries
    from aotc.cache import Cache

    small_cache(tmp_path / "cache")
    cache = Cache(tmp_path / "cache")
    whl = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "kabi", tmp_path / "dist")
    foreign = tmp_path / "foreign.whl"
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(foreign, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith("aotc_wheel.json"):
                data = json.dumps({**json.loads(data), "abi": ABI_VERSION + 1}).encode()
            dst.writestr(n, data)
    codes = {d.code for d in check_wheel(foreign).diagnostics}
    assert "AOTC-WHEEL-001" in codes  # (RECORD and the non-ELF cubins are flagged too)


# ---- GEMM templates assert the SMEM model, as the FMHA template does --------------------------------
def test_every_gemm_kernel_asserts_sizeof_shared_storage_equals_the_model():
    from aotc.build.render import render
    from aotc.build.rules import check
    from aotc.build.spec import load_specs
    from aotc.families import get_family

    rendered = 0
    for spec in load_specs().specs:
        if "gemm" not in spec.family:
            continue
        arch = ARCHES["sm120a"]
        if not check(spec, arch).ok:
            continue
        text = render(spec, arch).text
        total = get_family(spec.family).smem(spec.params, arch).total
        assert f"constexpr int kSmemModelTotal = {total};" in text, spec.name
        assert "sizeof(typename aotc::GemmKernel::SharedStorage) == aotc::kSmemModelTotal" in text, spec.name
        rendered += 1
    assert rendered >= 10


@pytest.mark.compile
def test_a_gemm_whose_model_drifts_from_cutlass_does_not_compile(tmp_path):
    import subprocess

    from aotc.build.render import render_probe
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.families import get_family
    from aotc.resources import templates_dir

    family = get_family("grouped_gemm_sm80")
    params, errors = family.validate({"tile": [128, 128, 64], "warp": [64, 64, 64], "stages": 3, "dtype": "bf16"})
    assert errors == []
    arch = ARCHES["sm120a"]
    total = family.smem(params, arch).total
    text = render_probe(KernelSpec("drift", "grouped_gemm_sm80", params, ()), arch).text
    assert f"kSmemModelTotal = {total};" in text
    src = tmp_path / "probe.cu"
    src.write_text(text.replace(f"kSmemModelTotal = {total};", f"kSmemModelTotal = {total + 16};"))
    cmd = [str(find_toolchain().nvcc), "-x", "cu", "-std=c++17", "--expt-relaxed-constexpr", "-DNDEBUG",
           "-gencode", arch.gencode, *[f"-I{d}" for d in (templates_dir(), *cutlass_include_dirs())],
           "-o", str(tmp_path / "probe"), str(src)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode != 0 and "SMEM model disagrees with sizeof(SharedStorage)" in out.stdout + out.stderr


# ---- the SASS scan's bookkeeping, on text and on what the real disassemblers say ---------------------
RES_USAGE = """Resource usage:
 Common:
  GLOBAL:0
 Function aotc_kernel:
  REG:40 STACK:16 SHARED:1024 LOCAL:8 CONSTANT[0]:380 TEXTURE:0 SURFACE:0 SAMPLER:0
  REG:99 STACK:99
 Function second_kernel:
  REG:8 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:360 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_res_usage_is_read_per_kernel():
    from aotc.build.verify import parse_res_usage

    res = parse_res_usage(RES_USAGE)
    assert res == {
        "aotc_kernel": {"REG": 40, "STACK": 16, "SHARED": 1024, "LOCAL": 8, "CONSTANT[0]": 380, "TEXTURE": 0,
                        "SURFACE": 0, "SAMPLER": 0},  # (the stray REG line after it belongs to no kernel)
        "second_kernel": {"REG": 8, "STACK": 0, "SHARED": 0, "LOCAL": 0, "CONSTANT[0]": 360, "TEXTURE": 0,
                          "SURFACE": 0, "SAMPLER": 0}}


def test_scan_counts_base_opcodes_and_keeps_operands_without_the_encoding():
    text = sass("@P0 HMMA.16816.F32.BF16 R24, R4, R12, R24", "@!UPT LDS.128 R8, [R3]", "HMMA.16816.F32 R4, R4, R8, R4",
                "@PT EXIT") + "        /*00a0*/ nonsense ;\n        /*0b0*/   BRA 0x0 ;\n"
    scan = scan_sass(text)
    assert scan.opcodes == {"HMMA": 2, "LDS": 1, "EXIT": 1}
    assert scan.instructions == ["HMMA.16816.F32.BF16 R24, R4, R12, R24 ;", "LDS.128 R8, [R3] ;",
                                 "HMMA.16816.F32 R4, R4, R8, R4 ;", "EXIT ;"]


def test_the_sass_verdicts_name_what_was_found():
    from aotc.build.verify import VerifyReport, _check_sass

    arch = ARCHES["sm120a"]
    text = sass("QMMA.16832.F32.E4M3.E4M3 R24, R4, R12, R24", "HMMA.16816.F32.BF16 R4, R4, R8, R4",
                BANNED_ON_SM12X[0], BANNED_ON_SM12X[0], "LDS.128 R8, [R3]")
    report = VerifyReport(ok=False)
    _check_sass(text, arch, "OMMA", report)
    assert report.mma_counts == {"HMMA": 1, "QMMA": 1, "UTCHMMA": 2}  # every *MMA class, in name order
    assert list(report.mma_counts) == ["HMMA", "QMMA", "UTCHMMA"]
    assert report.banned_found == {"UTCHMMA": 2}
    banned, missing = report.diagnostics
    assert banned.code == "AOTC-VERIFY-002" and banned.details == {"banned": {"UTCHMMA": 2}}
    assert "UTCHMMA x2" in banned.message and "sm120a" in banned.message and "mma.sync" in banned.fix
    assert missing.code == "AOTC-VERIFY-003" and missing.details == {"expected": "OMMA", "mma": report.mma_counts}
    assert "HMMA x1" in missing.message and "QMMA x1" in missing.message and missing.fix
    none = VerifyReport(ok=False)
    _check_sass(sass("LDS.128 R8, [R3]"), arch, "HMMA", none)
    assert [d.code for d in none.diagnostics] == ["AOTC-VERIFY-003"] and "no MMA at all" in none.diagnostics[0].message
    fine = VerifyReport(ok=False)
    _check_sass(text.replace("UTCHMMA", "NOP"), arch, "QMMA", fine)
    assert fine.diagnostics == [] and fine.banned_found == {}
    j = VerifyReport(True, [banned], {"sm": 120, "variant": "a"}, {"HMMA": 1}, {"UTCHMMA": 2, "HGMMA.64": 1},
                     {"k": {"registers": 4}}).to_json()
    assert j == {"ok": True, "diagnostics": [banned.to_json()], "target": {"sm": 120, "variant": "a"},
                 "sass": {"mma": {"HMMA": 1}, "banned": ["HGMMA.64", "UTCHMMA"]},
                 "banned_found": {"UTCHMMA": 2, "HGMMA.64": 1}, "resources": {"k": {"registers": 4}}}


def test_an_instruction_naming_tcgen05_is_banned_whatever_its_opcode():
    line = "CALL.REL.NOINC `(__internal_tcgen05_alloc)"
    assert find_banned(scan_sass(sass(line)), ARCHES["sm120a"]) == {"CALL.REL.NOINC": 1}
    assert find_banned(scan_sass(sass(line)), ARCHES["sm100a"]) == {}


def test_long_kernel_names_are_shortened_in_messages_only():
    from aotc.build.verify import _short

    assert _short("k" * 100) == "k" * 100
    assert _short("k" * 101) == "k" * 97 + "..." and len(_short("k" * 5000)) == 100


def test_a_disassembler_that_fails_or_is_missing_is_a_coded_diagnostic(tmp_path):
    import dataclasses

    from aotc.build.toolchain import find_toolchain
    from aotc.build.verify import _disassemble, _run_tool

    junk = tmp_path / "junk.cubin"
    junk.write_bytes(b"not a cubin")
    tc = find_toolchain()
    sass_text, res, diag = _disassemble(junk, tc)  # the real cuobjdump refuses it
    assert (sass_text, res) == (None, None) and diag.code == "AOTC-VERIFY-006"
    assert "cuobjdump" in diag.message and "exit 1/1" in diag.message and "aotc doctor" in diag.fix
    if tc.nvdisasm:
        sass_text, res, diag = _disassemble(junk, dataclasses.replace(tc, cuobjdump=None))
        assert (sass_text, res) == (None, None) and diag.code == "AOTC-VERIFY-006" and "nvdisasm" in diag.message
        assert "aotc doctor" in diag.fix
    rc, text = _run_tool([str(tmp_path / "no-such-tool")])
    assert rc == -1 and "no-such-tool" in text


def test_a_disassembler_that_hangs_is_stopped(monkeypatch):
    from aotc.build import verify

    monkeypatch.setattr(verify, "_TOOL_TIMEOUT_S", 0.2)
    rc, text = verify._run_tool(["sleep", "30"])
    assert rc == -1 and "timed out" in text

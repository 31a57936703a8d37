"""Prove a compiled cubin is what was asked for before it is stored: ELF target equals the arch,
the SASS holds no instruction the arch lacks (tcgen05/TMEM, wgmma, cluster multicast on SM12x),
the expected MMA opcode class is present, and static + dynamic SMEM fits the arch budget.
Build side: runs cuobjdump (or nvdisasm) from the toolchain; never loads the cubin on a GPU.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aotc.arch import CLUSTER_MULTICAST, TCGEN05, WGMMA, Arch
from aotc.build.toolchain import Toolchain
from aotc.diagnostics import AotcError, Diagnostic
from aotc.elf import cubin_target, kernel_smem_static, kernel_symbols

# Banned SASS per missing arch feature: (opcode regex on the base opcode, why). See docs/verify.md.
# UTC* is the tcgen05 family (UTCHMMA/UTCQMMA/UTCOMMA/UTCIMMA MMAs, UTCBAR commit, UTCATOMSWS alloc,
# UTCCP copy, UTCSHIFT); LDTM/STTM are tcgen05.ld/st to TMEM. TMA (UTMALDG, UTMASTG, UTMACCTL,
# UTMACMDFLUSH, UTMAPF) starts with UTMA and is legal on SM120. [A-Z]GMMA is wgmma (HGMMA, IGMMA,
# QGMMA, BGMMA); OMMA/QMMA/HMMA (no G) are SM120's warp-level mma.sync and stay allowed.
_BANNED_BY_FEATURE: dict[str, tuple[tuple[str, str], ...]] = {
    TCGEN05: ((r"UTC[A-Z0-9_]*", "tcgen05 (UMMA/TMEM) instruction"), (r"LDTM|STTM", "tcgen05.ld/st (TMEM)")),
    WGMMA: ((r"[A-Z]GMMA", "wgmma (warpgroup MMA)"),),
}
# Cluster multicast shows as a modifier on the TMA load, not as its own opcode.
_MULTICAST = re.compile(r"^UTMALDG\b.*\bMULTICAST\b")
_SASS_LINE = re.compile(
    r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-9T]+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Za-z0-9_]+)*)(.*)$"
)
_RES_FUNCTION = re.compile(r"^\s*Function (\S+):\s*$")
_RES_FIELDS = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")
_TOOL_TIMEOUT_S = 300


@dataclass
class VerifyReport:
    ok: bool
    diagnostics: list[Diagnostic] = field(default_factory=list)
    target: dict = field(default_factory=dict)  # {"sm": 120, "variant": "a"}
    mma_counts: dict[str, int] = field(default_factory=dict)  # every *MMA opcode class found
    banned_found: dict[str, int] = field(default_factory=dict)  # banned opcode (with modifiers) -> count
    resources: dict[str, dict] = field(default_factory=dict)  # kernel -> registers, stack, smem, ...

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "target": self.target,
            "sass": {"mma": self.mma_counts, "banned": sorted(self.banned_found)},
            "banned_found": self.banned_found,
            "resources": self.resources,
        }


def _short(name: str, limit: int = 100) -> str:
    """CUTLASS kernel names run to kilobytes; messages show the head (details keep the full name)."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _diag(number: int, message: str, fix: str, **details: object) -> Diagnostic:
    return Diagnostic(f"AOTC-VERIFY-{number:03d}", message, fix=fix, details=dict(details))


def banned_patterns(arch: Arch) -> list[tuple[re.Pattern[str], str]]:
    """(full-match opcode regex, reason) for every instruction family `arch` does not have."""
    return [
        (re.compile(rf"(?:{rx})"), why)
        for feature, rules in _BANNED_BY_FEATURE.items()
        if feature not in arch.features
        for rx, why in rules
    ]


@dataclass
class SassScan:
    opcodes: Counter  # base opcode -> count
    instructions: list[str]  # "OPCODE.MODS operands" of every instruction line


def scan_sass(text: str) -> SassScan:
    """Count base opcodes in cuobjdump -sass / nvdisasm output (predicates stripped)."""
    opcodes: Counter = Counter()
    instructions = []
    for line in text.splitlines():
        m = _SASS_LINE.match(line)
        if m:
            opcodes[m.group(1)] += 1
            instructions.append((m.group(1) + m.group(2) + m.group(3)).split("/*")[0].strip())
    return SassScan(opcodes, instructions)


def find_banned(scan: SassScan, arch: Arch) -> dict[str, int]:
    """Banned instructions in a scan, keyed by the opcode with its modifiers, with counts."""
    patterns = banned_patterns(arch)
    found: Counter = Counter()
    for ins in scan.instructions:
        opcode_full = ins.split()[0]
        if _is_banned(ins, opcode_full.split(".")[0], patterns, arch):
            found[opcode_full] += 1
    return dict(found)


def _is_banned(ins: str, base: str, patterns: list[tuple[re.Pattern[str], str]], arch: Arch) -> bool:
    if any(p.fullmatch(base) for p, _ in patterns):
        return True
    if TCGEN05 not in arch.features and "tcgen05" in ins.lower():
        return True
    return CLUSTER_MULTICAST not in arch.features and bool(_MULTICAST.match(ins))


def parse_res_usage(text: str) -> dict[str, dict[str, int]]:
    """`cuobjdump -res-usage` -> kernel -> {"REG": n, "STACK": n, "SHARED": n, "LOCAL": n, ...}."""
    result: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if m := _RES_FUNCTION.match(line):
            current = m.group(1)
        elif current and "REG:" in line:
            result[current] = {k: int(v) for k, v in _RES_FIELDS.findall(line)}
            current = None
    return result


def _run_tool(cmd: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


def _disassemble(path: Path, toolchain: Toolchain) -> tuple[str | None, str | None, Diagnostic | None]:
    """(sass text, res-usage text or None, diagnostic) using cuobjdump, else nvdisasm."""
    if toolchain.cuobjdump:
        # the two reads run side by side: verification is most of aotc's own time per kernel
        with ThreadPoolExecutor(max_workers=2) as pool:
            sass_run = pool.submit(_run_tool, [toolchain.cuobjdump, "-sass", str(path)])
            res_run = pool.submit(_run_tool, [toolchain.cuobjdump, "-res-usage", str(path)])
            (rc, sass), (rc2, res) = sass_run.result(), res_run.result()
        if rc == 0 and rc2 == 0:
            return sass, res, None
        return None, None, _diag(
            6, f"cuobjdump could not read the cubin (exit {rc}/{rc2}): {(sass + res).strip()[:300]}",
            "check that the toolchain's cuobjdump supports this target (aotc doctor)",
        )
    if toolchain.nvdisasm:
        rc, sass = _run_tool([toolchain.nvdisasm, str(path)])
        if rc == 0:
            return sass, None, None
        return None, None, _diag(
            6, f"nvdisasm could not read the cubin (exit {rc}): {sass.strip()[:300]}",
            "check that the toolchain's nvdisasm supports this target (aotc doctor)",
        )
    return None, None, _diag(
        5, "neither cuobjdump nor nvdisasm was found: the SASS scan (banned/expected opcodes) cannot run",
        "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])",
    )


def _check_target(cubin: bytes, arch: Arch, report: VerifyReport) -> bool:
    try:
        sm, variant = cubin_target(cubin)
    except AotcError as exc:
        report.diagnostics.extend(exc.diagnostics)
        return False
    report.target = {"sm": sm, "variant": variant}
    if (sm, variant) != (arch.sm, arch.variant):
        got = f"sm_{sm}{variant}"
        report.diagnostics.append(
            _diag(
                1, f"cubin is built for {got}, but {arch.nvcc_name} ({arch.name}) was requested",
                f"rebuild for {arch.name}: the -gencode must be {arch.gencode}",
                got=got, expected=arch.nvcc_name,
            )
        )
    return True


def _check_sass(sass: str, arch: Arch, expected_mma: str | None, report: VerifyReport) -> None:
    scan = scan_sass(sass)
    report.mma_counts = {op: n for op, n in sorted(scan.opcodes.items()) if op.endswith("MMA")}
    report.banned_found = find_banned(scan, arch)
    if report.banned_found:
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(report.banned_found.items()))
        report.diagnostics.append(
            _diag(
                2, f"SASS contains instructions {arch.name} does not have: {listed}",
                f"the kernel uses tcgen05/TMEM, wgmma or cluster multicast; use a template built on "
                f"{arch.name}'s own instructions (mma.sync, ldmatrix, cp.async, TMA without multicast)",
                banned=report.banned_found,
            )
        )
    if expected_mma and scan.opcodes.get(expected_mma, 0) == 0:
        found = ", ".join(f"{op} x{n}" for op, n in report.mma_counts.items()) or "no MMA at all"
        report.diagnostics.append(
            _diag(
                3, f"expected {expected_mma} instructions in the SASS, found none ({found})",
                "the template did not instantiate the intended MMA path for this arch; check its "
                "arch guards (e.g. CUTLASS_ARCH_MMA_SM120_SUPPORTED) and the -gencode",
                expected=expected_mma, mma=report.mma_counts,
            )
        )


def _check_resources(
    cubin: bytes, res_text: str | None, smem_budget: int, smem_dynamic: int, report: VerifyReport
) -> None:
    res = parse_res_usage(res_text) if res_text else {}
    for name in kernel_symbols(cubin):
        static = kernel_smem_static(cubin, name)
        entry = {"smem_static": static, "smem_dynamic": smem_dynamic}
        if name in res:
            r = res[name]
            entry |= {
                "registers": r.get("REG", 0), "stack_bytes": r.get("STACK", 0),
                # local arrays; spills go to the stack frame and are counted only by ptxas at
                # compile time (CompileResult.spills, the manifest's resources.spills_bytes)
                "local_bytes": r.get("LOCAL", 0),
                "shared_section_bytes": r.get("SHARED", 0),
            }
        report.resources[name] = entry
        if static + smem_dynamic > smem_budget:
            over = static + smem_dynamic - smem_budget
            report.diagnostics.append(
                _diag(
                    4, f"kernel {_short(name)} needs {static} B static + {smem_dynamic} B dynamic = "
                    f"{static + smem_dynamic} B of shared memory; the budget is {smem_budget} B "
                    f"({over} B over)",
                    "choose a smaller tile or fewer pipeline stages",
                    kernel=name, static=static, dynamic=smem_dynamic, budget=smem_budget,
                )
            )


def verify_cubin(
    cubin: bytes,
    arch: Arch,
    expected_mma: str | None,
    toolchain: Toolchain,
    smem_budget: int,
    smem_dynamic: int,
) -> VerifyReport:
    """Check `cubin` against `arch`; report.ok is True only if every check ran and passed."""
    report = VerifyReport(ok=False)
    if not _check_target(cubin, arch, report):
        return report
    with tempfile.TemporaryDirectory(prefix="aotc-verify-") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        sass, res_text, tool_diag = _disassemble(path, toolchain)
    if tool_diag is not None:
        report.diagnostics.append(tool_diag)
    else:
        _check_sass(sass or "", arch, expected_mma, report)
    _check_resources(cubin, res_text, smem_budget, smem_dynamic, report)
    report.ok = not report.diagnostics
    return report

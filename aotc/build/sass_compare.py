"""SASS equality of two builds. Extracts every cubin from a host library or fatbin (`cuobjdump
-xelf all`), disassembles each kernel (`cuobjdump -sass`), normalises what may legitimately differ
(addresses, branch targets, symbol names; optionally register numbers) and says per cubin and per
kernel: byte-identical, normalised-equal, or different (with the first differing instruction).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aotc.build.toolchain import Toolchain
from aotc.build.verify import parse_res_usage
from aotc.diagnostics import AotcError, Diagnostic
from aotc.elf import cubin_target, kernel_smem_static, kernel_symbols, sections

BYTE_IDENTICAL = "byte-identical"
NORMALISED_EQUAL = "normalised-equal"  # same SASS once addresses and symbol names are normalised
DIFFERENT = "different"

_FUNCTION = re.compile(r"^\s*Function : (\S+)")
# `        /*0a30*/                   BRA 0xb40 ;        /* 0x... */`
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*/\* 0x[0-9a-f]+ \*/\s*$")
_BRANCH = re.compile(r"^(@!?U?P\w+\s+)?(BRA|BRX|JMP|CALL|BSSY|BMOV|RET|SSY|PBK|BREAK|WARPSYNC|CALL\.REL)\b")
_TARGET = re.compile(r"\b0x([0-9a-f]+)\b")
_MANGLED = re.compile(r"`?\(?_Z\w+\)?`?|`\([^`]*\)`")
_REGISTER = re.compile(r"\b(U?R|U?P|B|SR_)(\d+|Z|T)\b")
_TOOL_TIMEOUT_S = 600


def _diag(message: str, fix: str, **details: Any) -> AotcError:
    return AotcError(Diagnostic(code="AOTC-SASS-001", message=message, fix=fix, details=details))


def _tool(tc: Toolchain) -> str:
    if not tc.cuobjdump:
        raise _diag("cuobjdump was not found: cubins cannot be extracted or disassembled",
                    "pip install nvidia-cuda-cuobjdump (part of aotc[build])")
    return tc.cuobjdump


def _run(cmd: list[str], cwd: str | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False)
    if proc.returncode != 0 and "does not contain" not in proc.stdout + proc.stderr:
        raise _diag(f"{Path(cmd[0]).name} {' '.join(cmd[1:-1])} {Path(cmd[-1]).name} failed "
                    f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[:400]}",
                    "check that the file is a host library, fatbin or cubin, and the toolchain with `aotc doctor`")
    return proc.stdout


@dataclass(frozen=True)
class Cubin:
    name: str  # the file name cuobjdump gave it (module, index, target)
    data: bytes

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(sorted(kernel_symbols(self.data)))

    @property
    def target(self) -> str:
        sm, variant = cubin_target(self.data)
        return f"sm_{sm}{variant}"


def extract_cubins(path: str | Path, tc: Toolchain) -> list[Cubin]:
    """Every cubin embedded in a host library/executable/fatbin; a cubin file is returned as itself."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == b"\x7fELF" and data[18:20] == (190).to_bytes(2, "little"):  # e_machine EM_CUDA
        return [Cubin(path.name, data)]
    with tempfile.TemporaryDirectory(prefix="aotc-xelf-") as tmp:
        _run([_tool(tc), "-xelf", "all", str(path.resolve())], cwd=tmp)
        return [Cubin(p.name, p.read_bytes()) for p in sorted(Path(tmp).glob("*.cubin"))]


def disassemble(cubin: bytes, tc: Toolchain) -> dict[str, list[str]]:
    """kernel/function symbol -> its SASS instructions in order (text without address and encoding)."""
    with tempfile.TemporaryDirectory(prefix="aotc-sass-") as tmp:
        f = Path(tmp) / "k.cubin"
        f.write_bytes(cubin)
        text = _run([_tool(tc), "-sass", str(f)])
    return parse_sass(text)


def parse_sass(text: str) -> dict[str, list[str]]:
    """`cuobjdump -sass` text -> function -> instructions, each prefixed `<address>|` so branch
    targets can be resolved by `normalise`."""
    functions: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if m := _FUNCTION.match(line):
            current = functions.setdefault(m.group(1), [])
        elif current is not None and (m := _INSTRUCTION.match(line)):
            current.append(f"{int(m.group(1), 16)}|{m.group(2)}")
    return functions


def normalise(instructions: list[str], registers: bool = False) -> list[str]:
    """Addresses dropped; a branch target becomes the distance in instructions (+n/-n), so code
    shifted by an extra instruction elsewhere still compares equal; mangled/backquoted symbol names
    become SYM; with registers=True, register numbers are dropped too (R12 -> R)."""
    index = {int(ins.split("|", 1)[0]): i for i, ins in enumerate(instructions)}
    out = []
    for i, ins in enumerate(instructions):
        text = ins.split("|", 1)[1]
        if _BRANCH.match(text):
            text = _TARGET.sub(lambda m, i=i: f"@{index[int(m.group(1), 16)] - i:+d}"
                               if int(m.group(1), 16) in index else m.group(0), text)
        text = _MANGLED.sub("SYM", text)
        if registers:
            text = _REGISTER.sub(lambda m: m.group(1), text)
        out.append(" ".join(text.split()))
    return out


def opcode(ins: str) -> str:
    """The opcode without predicate and modifiers: `@!P0 OMMA.SF.16864...` -> OMMA."""
    words = ins.split()
    word = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words[0] if words else "")
    return word.split(".")[0]


def resources(cubin: bytes, tc: Toolchain) -> dict[str, dict[str, int]]:
    """Per kernel: registers (`cuobjdump -res-usage`) and static SMEM as the driver counts it."""
    with tempfile.TemporaryDirectory(prefix="aotc-res-") as tmp:
        f = Path(tmp) / "k.cubin"
        f.write_bytes(cubin)
        usage = parse_res_usage(_run([_tool(tc), "-res-usage", str(f)]))
    return {name: {"registers": u.get("REG", 0), "smem_static": kernel_smem_static(cubin, name),
                   "stack_bytes": u.get("STACK", 0), "local_bytes": u.get("LOCAL", 0)}
            for name, u in usage.items() if name in kernel_symbols(cubin)}


def differing_sections(a: bytes, b: bytes) -> list[str]:
    """Names of the ELF sections whose bytes differ (or exist on one side only)."""
    def by_name(data: bytes) -> dict[str, bytes]:
        return {s.name: data[s.offset:s.offset + s.size] if s.type != 8 else b"" for s in sections(data)}

    sa, sb = by_name(a), by_name(b)
    return sorted(n for n in sa.keys() | sb.keys() if sa.get(n) != sb.get(n))


@dataclass
class KernelComparison:
    name_a: str
    name_b: str
    instructions: tuple[int, int]
    equal: bool  # normalised (addresses, branch targets, symbol names)
    equal_modulo_registers: bool
    first_difference: dict[str, Any] = field(default_factory=dict)  # index, a, b (normalised text)
    opcode_delta: dict[str, int] = field(default_factory=dict)  # opcode -> count in b minus count in a
    mma: tuple[dict[str, int], dict[str, int]] = ({}, {})
    resources: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def to_json(self) -> dict[str, Any]:
        return {"a": self.name_a, "b": self.name_b, "instructions": list(self.instructions), "equal": self.equal,
                "equal_modulo_registers": self.equal_modulo_registers, "first_difference": self.first_difference,
                "opcode_delta": self.opcode_delta, "mma": list(self.mma), "resources": list(self.resources)}


def compare_sass(a: list[str], b: list[str], name_a: str = "a", name_b: str = "b") -> KernelComparison:
    """Compare two kernels' parsed SASS (from `disassemble`)."""
    na, nb = normalise(a), normalise(b)
    ra, rb = normalise(a, registers=True), normalise(b, registers=True)
    first: dict[str, Any] = {}
    if ra != rb:
        i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
        first = {"index": i, "a": na[i] if i < len(na) else None, "b": nb[i] if i < len(nb) else None}
    elif na != nb:
        i = next(i for i, (x, y) in enumerate(zip(na, nb)) if x != y)
        first = {"index": i, "a": na[i], "b": nb[i]}
    ca, cb = Counter(map(opcode, na)), Counter(map(opcode, nb))
    delta = {op: cb[op] - ca[op] for op in sorted(ca.keys() | cb.keys()) if cb[op] != ca[op]}
    mma = tuple({op: n for op, n in sorted(c.items()) if op.endswith("MMA")} for c in (ca, cb))
    return KernelComparison(name_a, name_b, (len(a), len(b)), na == nb, ra == rb, first, delta, mma)  # type: ignore[arg-type]


def compare_kernel(cubin_a: bytes, kernel_a: str, cubin_b: bytes, kernel_b: str, tc: Toolchain
                   ) -> KernelComparison:
    """One kernel of each cubin, named (e.g. aotc's `aotc_kernel` vs CUTLASS's `device_kernel<...>`),
    with registers and static SMEM of both."""
    sass_a, sass_b = disassemble(cubin_a, tc), disassemble(cubin_b, tc)
    for name, sass, which in ((kernel_a, sass_a, "first"), (kernel_b, sass_b, "second")):
        if name not in sass:
            raise _diag(f"kernel {name[:120]} is not in the {which} cubin (it has: {', '.join(sass)[:400]})",
                        "name a kernel the cubin defines (cuobjdump -sass lists them)")
    result = compare_sass(sass_a[kernel_a], sass_b[kernel_b], kernel_a, kernel_b)
    result.resources = (resources(cubin_a, tc).get(kernel_a, {}), resources(cubin_b, tc).get(kernel_b, {}))
    return result


@dataclass
class CubinComparison:
    name_a: str
    name_b: str
    verdict: str
    sizes: tuple[int, int]
    kernels: int = 0
    differing_sections: list[str] = field(default_factory=list)  # when not byte-identical
    different_kernels: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.name_a, "b": self.name_b, "verdict": self.verdict, "sizes": list(self.sizes),
                "kernels": self.kernels, "differing_sections": self.differing_sections,
                "different_kernels": self.different_kernels}


def compare_cubins(a: Cubin, b: Cubin, tc: Toolchain) -> CubinComparison:
    """Byte-identical; else every function's normalised SASS equal (and the same function set)."""
    if a.data == b.data:
        return CubinComparison(a.name, b.name, BYTE_IDENTICAL, (len(a.data), len(b.data)), len(a.kernels))
    sa, sb = disassemble(a.data, tc), disassemble(b.data, tc)
    different = []
    for name in sorted(sa.keys() | sb.keys()):
        if name not in sa or name not in sb:
            different.append({"kernel": name, "only_in": "a" if name in sa else "b"})
            continue
        k = compare_sass(sa[name], sb[name], name, name)
        if not k.equal:
            different.append({"kernel": name, **k.to_json()})
    verdict = NORMALISED_EQUAL if not different else DIFFERENT
    return CubinComparison(a.name, b.name, verdict, (len(a.data), len(b.data)), len(sa),
                           differing_sections(a.data, b.data), different)


@dataclass
class LibraryComparison:
    a: str
    b: str
    cubins: list[CubinComparison]
    unmatched: tuple[list[str], list[str]] = ([], [])  # cubins found on one side only

    def counts(self) -> dict[str, int]:
        c = Counter(x.verdict for x in self.cubins)
        return {BYTE_IDENTICAL: c[BYTE_IDENTICAL], NORMALISED_EQUAL: c[NORMALISED_EQUAL],
                DIFFERENT: c[DIFFERENT] + len(self.unmatched[0]) + len(self.unmatched[1])}

    @property
    def equal(self) -> bool:
        return bool(self.cubins) and self.counts()[DIFFERENT] == 0

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "equal": self.equal, "counts": self.counts(),
                "unmatched": {"a": self.unmatched[0], "b": self.unmatched[1]},
                "cubins": [c.to_json() for c in self.cubins]}


def _pair(a: list[Cubin], b: list[Cubin]) -> tuple[list[tuple[Cubin, Cubin]], list[Cubin], list[Cubin]]:
    """Pair cubins by (target, kernel set), in order within a group: the link order of the two
    libraries may differ, the file names cuobjdump gives them carry that order."""
    groups: dict[tuple, list[Cubin]] = {}
    for c in b:
        groups.setdefault((c.target, c.kernels), []).append(c)
    pairs, left = [], []
    for c in a:
        group = groups.get((c.target, c.kernels))
        if group:
            pairs.append((c, group.pop(0)))
        else:
            left.append(c)
    return pairs, left, [c for g in groups.values() for c in g]


def compare_libraries(a: str | Path, b: str | Path, tc: Toolchain, jobs: int = 1) -> LibraryComparison:
    """Every cubin embedded in `a` against its counterpart in `b` (host .so, fatbin or cubin), `jobs`
    pairs at a time (the work is in disassembler processes; fused MoE's library holds 90 cubins)."""
    pairs, left, right = _pair(extract_cubins(a, tc), extract_cubins(b, tc))
    # Unpaired cubins with the same target: compare them anyway so the report shows what differs.
    for x in list(left):
        y = next((y for y in right if y.target == x.target), None)
        if y is not None:
            pairs.append((x, y))
            left.remove(x)
            right.remove(y)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        compared = list(pool.map(lambda pair: compare_cubins(*pair, tc), pairs))
    return LibraryComparison(str(a), str(b), compared, ([c.name for c in left], [c.name for c in right]))

"""BF16/FP16 grouped GEMM on warp-level mma.sync (SM80 class: CUTLASS 2.x DefaultGemmGrouped blocks, cp.async
multistage mainloop, fp32 accumulation). One template builds for sm_80, sm_90a and sm_120a, so the
H100 can prove numerically what SM120 runs. Owns the schema, SMEM model, rules and render context
of templates/gemm/grouped_sm80*.j2. Pure Python: no Jinja2, no nvcc.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aotc.abi import GroupedSm80Args
from aotc.arch import CP_ASYNC, LDMATRIX, MMA_SYNC, Arch
from aotc.diagnostics import Diagnostic
from aotc.families.base import Family, Field, SmemModel

ELEMENTS = {"bf16": "cutlass::bfloat16_t", "fp16": "cutlass::half_t"}
ELEMENT_BYTES = 2
INSTR_M, INSTR_N, INSTR_K = 16, 8, 16  # mma.sync.m16n8k16
ACC_FLOATS_PER_THREAD_MAX = 128
# Epilogue staging of the fp32 accumulators (CUTLASS 2.x epilogue::warp::TileIteratorTensorOp[Mixed]):
# 8 rows per warp row per iteration, each row padded by 4 lanes x 2 elements.
EPI_ROWS_PER_ITERATION = 8
EPI_ROW_PAD_ELEMS = 8
ACC_BYTES = 4
# fp16 output selects the "mixed" iterators, which stage 2 fragments per iteration; bf16 stages 1.
EPI_FRAGMENTS = {"bf16": 1, "fp16": 2}
PROBLEM_VISITOR_BYTES = 0  # kDeviceOnly visitor keeps no shared state (an empty struct)


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def warp_count(p: dict) -> tuple[int, int, int]:
    (tm, tn, tk), (wm, wn, wk) = p["tile"], p["warp"]
    return tm // wm, tn // wn, tk // wk


def threads(p: dict) -> int:
    wm, wn, wk = warp_count(p)
    return 32 * wm * wn * wk


def mainloop_bytes(p: dict) -> tuple[int, int]:
    tm, tn, tk = p["tile"]
    s = p["stages"]
    return tm * tk * s * ELEMENT_BYTES, tn * tk * s * ELEMENT_BYTES


def epilogue_bytes(p: dict) -> int:
    wcm, _, wck = warp_count(p)
    rows = wcm * EPI_ROWS_PER_ITERATION * wck
    cols = p["tile"][1] + EPI_ROW_PAD_ELEMS
    return rows * cols * ACC_BYTES * EPI_FRAGMENTS[p["dtype"]]




class GroupedGemmSm80(Family):
    name = "grouped_gemm_sm80"
    doc = ("BF16/FP16 grouped GEMM (MoE experts), mma.sync + cp.async multistage, CUTLASS 2.x grouped blocks, "
           "aotc tile schedule")
    template = "gemm/grouped_sm80.cu.j2"
    probe_template = "gemm/grouped_sm80_probe.cu.j2"
    args_struct = GroupedSm80Args
    fields: ClassVar[dict[str, Field]] = {
        "tile": Field("shape", "threadblock tile M, N, K", length=3, min=16, max=512, multiple_of=16),
        "warp": Field("shape", "warp tile M, N, K", length=3, min=16, max=256, multiple_of=8),
        "stages": Field(int, "cp.async pipeline stages", default=3, min=3, max=8),
        "dtype": Field(str, "A, B, C and D element type (fp32 accumulation)", choices=tuple(ELEMENTS)),
    }

    def requires(self, p: dict) -> frozenset[str]:
        return frozenset({MMA_SYNC, LDMATRIX, CP_ASYNC})

    def smem(self, p: dict, arch: Arch) -> SmemModel:
        a, b = mainloop_bytes(p)
        epi = epilogue_bytes(p)
        # SharedStorage = union{mainloop, epilogue} + the visitor's empty struct, padded to 16 B.
        union = max(a + b, epi)
        tail = _round_up(union + 1, 16) - union
        components: list[tuple[str, int]] = [("A_stages", a), ("B_stages", b)]
        if epi > a + b:
            components.append(("epilogue_overhang", epi - a - b))
        components.append(("problem_visitor_and_pad", tail))
        chosen = (("stages", p["stages"]), ("epilogue_bytes", epi), ("union", "mainloop" if a + b >= epi
                                                                        else "epilogue"))
        return SmemModel(tuple(components), chosen)

    def check(self, p: dict, arch: Arch) -> list[Diagnostic]:
        out = self._check_arch(arch)
        (tm, tn, tk), (wm, wn, wk) = p["tile"], p["warp"]
        if tm % wm or tn % wn or tk != wk:
            out.append(Diagnostic(
                "AOTC-SHAPE-101",
                f"tile {tm}x{tn}x{tk} is not covered by whole warp tiles {wm}x{wn}x{wk} (M and N must be "
                "multiples of the warp tile; warp K must equal tile K)",
                fix=f"use warp = [{wm}, {wn}, {tk}] with tile M, N multiples of {wm}, {wn}",
                details={"tile": [tm, tn, tk], "warp": [wm, wn, wk]}))
            return out
        if wm % INSTR_M or wn % INSTR_N:
            out.append(Diagnostic(
                "AOTC-SHAPE-102",
                f"warp tile {wm}x{wn} is not a multiple of the mma.sync shape {INSTR_M}x{INSTR_N}",
                fix=f"round the warp tile to multiples of {INSTR_M} (M) and {INSTR_N} (N)",
                details={"warp": [wm, wn, wk]}))
        if tk not in (32, 64):
            out.append(Diagnostic(
                "AOTC-SHAPE-103",
                f"tile K = {tk}: the crosswise-swizzled SMEM layout of K-major 16-bit operands needs "
                "K = 32 or 64 (64 B or 128 B rows)",
                fix="use tile K = 32 or 64", details={"k": tk}))
        n_threads = threads(p)
        if n_threads not in (64, 128, 256):
            out.append(Diagnostic(
                "AOTC-SHAPE-104",
                f"tile/warp give {n_threads // 32} warps ({n_threads} threads); use 2, 4 or 8 warps",
                fix="change the warp tile so that (tile M / warp M) x (tile N / warp N) is 2, 4 or 8",
                details={"threads": n_threads}))
        acc = wm * wn // 32
        if acc > ACC_FLOATS_PER_THREAD_MAX:
            out.append(Diagnostic(
                "AOTC-SHAPE-105",
                f"warp tile {wm}x{wn} keeps {acc} fp32 accumulators per thread; more than "
                f"{ACC_FLOATS_PER_THREAD_MAX} spills registers",
                fix="use a warp tile with M*N <= 4096 (e.g. 64x64)", details={"acc_per_thread": acc}))
        return out

    def _check_arch(self, arch: Arch) -> list[Diagnostic]:
        missing = sorted(self.requires({}) - arch.features)
        if not missing:
            return []
        return [Diagnostic(
            "AOTC-ARCH-101",
            f"{self.name} needs {', '.join(missing)} which {arch.name} lacks",
            fix="build for sm80, sm86, sm89, sm90a or an SM120 target", details={"missing": missing})]

    def render_context(self, p: dict, arch: Arch) -> dict:
        (tm, tn, tk), (wm, wn, wk) = p["tile"], p["warp"]
        return {
            "family": self.name,
            "arch_name": arch.name,
            "dtype": p["dtype"],
            "element": ELEMENTS[p["dtype"]],
            "tile_m": tm, "tile_n": tn, "tile_k": tk,
            "warp_m": wm, "warp_n": wn, "warp_k": wk,
            "stages": int(p["stages"]),
            "smem_budget": arch.smem_optin_bytes, "smem_model_total": self.smem(p, arch).total,
        }

    def expected_mma(self, p: dict, arch: Arch) -> str | None:
        return "HMMA"

    def fit_hint(self, p: dict, arch: Arch) -> str:
        budget = arch.smem_optin_bytes
        total = self.smem(p, arch).total
        for stages in range(p["stages"] - 1, 2, -1):
            t = self.smem({**p, "stages": stages}, arch).total
            if t <= budget:
                return (f"needs {total} B, {total - budget} B over the {budget} B of {arch.name}: set stages = "
                        f"{stages} ({t} B)")
        tm, tn, tk = p["tile"]
        if tk == 64:
            q = {**p, "tile": (tm, tn, 32), "warp": (*p["warp"][:2], 32)}
            t = self.smem(q, arch).total
            if t <= budget:
                return (f"needs {total} B, {total - budget} B over the {budget} B of {arch.name}: use tile K = 32 "
                        f"(tile {[tm, tn, 32]}, warp {[*p['warp'][:2], 32]}: {t} B)")
        return f"needs {total} B, {total - budget} B over the {budget} B of {arch.name}: halve tile M or N"


FAMILIES: dict[str, Any] = {GroupedGemmSm80.name: GroupedGemmSm80()}

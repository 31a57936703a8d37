"""Block-scaled GEMM families for SM120/SM121 (CUTLASS `Sm120` + `OpClassBlockScaledTensorOp`): the
dense GEMM (example 79a) and the pointer-array grouped GEMM for MoE (example 79d, BF16 output).
Owns the parameter schema, the byte-exact SharedStorage model, the legality rules and the render
context of templates/gemm/blockscaled_sm120*.j2. Pure Python: no Jinja2, no nvcc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aotc.abi import BlockScaledArgsDense, BlockScaledArgsGrouped
from aotc.arch import MMA_BLOCKSCALED, MMA_SYNC, TMA, Arch
from aotc.diagnostics import Diagnostic
from aotc.families.base import Family, Field, SmemModel

# CUTLASS 4.2 resolves StageCountAutoCarveout against this constant (cutlass::arch::
# sm120_smem_capacity_bytes), whatever the target; the aotc budget of the arch is checked separately.
CUTLASS_SM120_CAPACITY = 101_376
BARRIER_PAIR_BYTES = 16  # one stage of a TMA pipeline: full + empty mbarrier (8 B each)
ACC_FLOATS_PER_THREAD_MAX = 128  # beyond this the fp32 accumulators no longer fit the register file

# Epilogue of these families (BF16 D, no C): CUTLASS's SM120 builder picks a 64x32 epilogue tile and
# min(epi tiles, 2) = 2 store stages for every legal CTA tile (all have >= 2 epilogue tiles).
EPI_TILE_M, EPI_TILE_N, EPI_STAGES_D = 64, 32, 2
EPI_D_ALIGN = 512  # alignment_for_swizzle of the SW64 BF16 D layout
EPI_LOAD_PIPELINE = 32  # PipelineTransactionAsync<StagesC = 2>
EPI_TENSORMAPS = 3 * 128  # grouped only: TMA descriptors for C and D (2 epilogue warp groups)
LOAD_ORDER_BARRIER = 16  # OrderedSequenceBarrier<1, 2>
MATH_WG_ORDER_BARRIER = 32  # pingpong only: OrderedSequenceBarrier<1, 2> x 2 warp groups
DENSE_SCHEDULER = 144  # PersistentTileSchedulerSm90 shared storage
GROUP_SCHEDULER_PIPELINE = 128  # grouped: scheduler pipeline storage (3 stages)
GROUP_SCHEDULER_RESPONSE = 128  # grouped: TileSchedulerResponse[3]
MAINLOOP_TENSORMAPS = 4 * 128  # grouped: TMA descriptors for A, B, SFA, SFB


@dataclass(frozen=True)
class Operand:
    """One block-scaled operand type: CUTLASS type, data bits, scale-factor type and vector size."""

    cutlass: str
    bits: int
    sf: str
    sf_vec: int


OPERANDS: dict[str, Operand] = {
    "nvfp4": Operand("cutlass::nv_float4_t<cutlass::float_e2m1_t>", 4, "ue4m3", 16),
    "mxfp4": Operand("cutlass::mx_float4_t<cutlass::float_e2m1_t>", 4, "ue8m0", 32),
    "mxfp8": Operand("cutlass::mx_float8_t<cutlass::float_e4m3_t>", 8, "ue8m0", 32),
}
# Pairs this family builds; each was compiled and its SharedStorage probed with CUTLASS 4.2.
SUPPORTED_PAIRS = {("nvfp4", "nvfp4"), ("mxfp8", "mxfp4"), ("mxfp8", "mxfp8")}
OUT_TYPES = {"bf16": "cutlass::bfloat16_t"}


def uses_f8f6f4(p: dict) -> bool:
    """An 8-bit operand selects mma kind::mxf8f6f4, which keeps FP4 unpacked (1 byte) in SMEM."""
    return OPERANDS[p["a_dtype"]].bits == 8 or OPERANDS[p["b_dtype"]].bits == 8


def k_granule(p: dict) -> int:
    """K step of one scale-factor block: 4 scale factors x vector size (CUTLASS Blk_SF = 4)."""
    return 4 * OPERANDS[p["a_dtype"]].sf_vec


def alignment_elems(dtype: str, f8f6f4: bool) -> int:
    """Global-memory alignment in elements: 16 B, except unpacked FP4 for f8f6f4 (128 elements)."""
    op = OPERANDS[dtype]
    if op.bits == 4 and f8f6f4:
        return 128
    return 128 // op.bits


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class StructLayout:
    """Appends members in declaration order the way the compiler lays them out (each member at the
    next multiple of its alignment; a struct's size a multiple of its alignment); every gap is named."""

    def __init__(self) -> None:
        self.components: list[tuple[str, int]] = []
        self.offset = 0

    def pad_to(self, name: str, align: int) -> None:
        gap = round_up(self.offset, align) - self.offset
        if gap:
            self.components.append((name, gap))
            self.offset += gap

    def member(self, name: str, size: int, align: int = 1) -> None:
        self.pad_to(f"pad_before_{name}", align)
        if size:
            self.components.append((name, size))
            self.offset += size


@dataclass(frozen=True)
class StageBytes:
    a: int
    b: int
    sfa: int
    sfb: int

    @property
    def carveout_unit(self) -> int:
        """What CUTLASS's carve-out formula charges per stage (data + SF + one barrier pair)."""
        return self.a + self.b + self.sfa + self.sfb + BARRIER_PAIR_BYTES


def stage_bytes(p: dict) -> StageBytes:
    m, n, k = p["tile"]
    f8 = uses_f8f6f4(p)
    bits_a = 8 if f8 else OPERANDS[p["a_dtype"]].bits
    bits_b = 8 if f8 else OPERANDS[p["b_dtype"]].bits
    vec = OPERANDS[p["a_dtype"]].sf_vec
    return StageBytes(m * k * bits_a // 8, n * k * bits_b // 8, m * k // vec, n * k // vec)


def epilogue_tensor_bytes() -> int:
    d = EPI_STAGES_D * EPI_TILE_M * EPI_TILE_N * 2
    # The fusion (LinearCombination) storage is an empty struct (1 B), padded to the D alignment.
    return round_up(d + 1, EPI_D_ALIGN)


def epilogue_carveout(grouped: bool) -> int:
    """sizeof(CollectiveEpilogue::SharedStorage): what the example-style carve-out reserves."""
    size = epilogue_tensor_bytes()
    if grouped:
        size = round_up(size, 128) + EPI_TENSORMAPS
    return round_up(size + EPI_LOAD_PIPELINE, EPI_D_ALIGN)


def auto_stages(p: dict, grouped: bool) -> int:
    """CUTLASS 4.2 sm100_compute_stage_count_or_override_blockscaled with the epilogue carve-out.

    It divides the capacity by (stage data + one barrier pair) and ignores the 1024-B alignment of
    the A/B buffers, the 1024-B offset of the tensors behind the pipelines (dense kernels), the
    scheduler and tensormap storage, so the resulting kernel can overshoot the capacity; `smem()`
    models what the compiler really lays out and the rules catch an overshoot.
    """
    return (CUTLASS_SM120_CAPACITY - epilogue_carveout(grouped)) // stage_bytes(p).carveout_unit


def resolved_stages(p: dict, grouped: bool) -> int:
    return p["stages"] or auto_stages(p, grouped)


def _mainloop_tensors(lay: StructLayout, sb: StageBytes, stages: int) -> None:
    # CollectiveMma::TensorStorage: alignas(1024) A, alignas(1024) B, SFA, SFB.
    lay.member("A_stages", sb.a * stages, 1024)
    lay.member("B_stages", sb.b * stages, 1024)
    lay.member("SFA_stages", sb.sfa * stages)
    lay.member("SFB_stages", sb.sfb * stages)
    lay.pad_to("mainloop_pad", 1024)


def _epilogue_tensors(lay: StructLayout) -> None:
    d = EPI_STAGES_D * EPI_TILE_M * EPI_TILE_N * 2
    lay.member("epilogue_D", d, EPI_D_ALIGN)
    lay.member("epilogue_fusion_pad", epilogue_tensor_bytes() - d)


def pipeline_bytes(p: dict, stages: int, grouped: bool) -> int:
    size = stages * BARRIER_PAIR_BYTES + EPI_LOAD_PIPELINE + LOAD_ORDER_BARRIER
    if p["schedule"] == "pingpong":
        size += MATH_WG_ORDER_BARRIER
    return size + (GROUP_SCHEDULER_PIPELINE if grouped else 0)


def layout_dense(p: dict, stages: int) -> list[tuple[str, int]]:
    """sm90_gemm_tma_warpspecialized_{cooperative,pingpong}::SharedStorage (used by SM120)."""
    lay = StructLayout()
    lay.member("pipeline_barriers", pipeline_bytes(p, stages, grouped=False), 16)
    lay.member("scheduler", DENSE_SCHEDULER, 16)
    lay.pad_to("pad_before_tensors", 1024)  # TensorStorage holds alignas(1024) members
    _epilogue_tensors(lay)
    lay.pad_to("pad_before_mainloop", 1024)
    _mainloop_tensors(lay, stage_bytes(p), stages)
    lay.pad_to("pad_tail", 1024)
    return lay.components


def layout_grouped(p: dict, stages: int) -> list[tuple[str, int]]:
    """sm90_gemm_array_tma_warpspecialized_{cooperative,pingpong}::SharedStorage (used by SM120)."""
    lay = StructLayout()
    _mainloop_tensors(lay, stage_bytes(p), stages)
    _epilogue_tensors(lay)
    lay.pad_to("pad_tail_tensors", 1024)
    lay.member("pipeline_barriers", pipeline_bytes(p, stages, grouped=True), 16)
    lay.member("scheduler", GROUP_SCHEDULER_RESPONSE, 16)
    lay.member("tensormaps", MAINLOOP_TENSORMAPS + EPI_TENSORMAPS, 128)
    lay.pad_to("pad_tail", 1024)
    return lay.components






_FIELDS: dict[str, Field] = {
    "tile": Field("shape", "CTA tile M, N, K", length=3, min=64, max=512),
    "a_dtype": Field(str, "A operand: nvfp4 (e2m1 + ue4m3/16), mxfp4 (e2m1 + ue8m0/32), mxfp8 (e4m3 + ue8m0/32)",
                     choices=tuple(OPERANDS)),
    "b_dtype": Field(str, "B operand (same choices as a_dtype)", choices=tuple(OPERANDS)),
    "out_dtype": Field(str, "D element type", default="bf16", choices=tuple(OUT_TYPES)),
    "stages": Field(int, "mainloop stages; 0 = CUTLASS StageCountAutoCarveout", default=0, min=0, max=32),
    "schedule": Field(str, "warp-specialized schedule", default="cooperative", choices=("cooperative", "pingpong")),
}


class BlockScaledGemmSm120(Family):
    grouped = False
    template = "gemm/blockscaled_sm120.cu.j2"
    probe_template = "gemm/blockscaled_sm120_probe.cu.j2"
    fields = _FIELDS

    def requires(self, p: dict) -> frozenset[str]:
        # Block-scaled mma.sync, TMA loads/stores, ldmatrix (LDSM) from swizzled SMEM.
        return frozenset({MMA_BLOCKSCALED, TMA, MMA_SYNC})

    def smem(self, p: dict, arch: Arch) -> SmemModel:
        stages = resolved_stages(p, self.grouped)
        parts = layout_grouped(p, stages) if self.grouped else layout_dense(p, stages)
        chosen = (("stages", stages), ("stages_auto", p["stages"] == 0),
                  ("epilogue_carveout", epilogue_carveout(self.grouped)))
        return SmemModel(tuple(parts), chosen)

    def check(self, p: dict, arch: Arch) -> list[Diagnostic]:
        return [*self._check_arch(arch), *self._check_dtypes(p), *self._check_tile(p)]

    def _check_arch(self, arch: Arch) -> list[Diagnostic]:
        if arch.sm in (120, 121):
            return []
        return [Diagnostic(
            "AOTC-ARCH-001",
            f"{self.name} is built from CUTLASS's Sm120 block-scaled collectives (mma.sync block-scaled "
            f"kinds); target {arch.name} (sm_{arch.sm}) is not an SM120/SM121 target",
            fix="build it for sm120a, sm120f or sm121a; SM100 needs a tcgen05 (UMMA) kernel family instead",
            details={"arch": arch.name, "sm": arch.sm})]

    def _check_dtypes(self, p: dict) -> list[Diagnostic]:
        a, b = p["a_dtype"], p["b_dtype"]
        if (a, b) in SUPPORTED_PAIRS:
            return []
        sa, sb = OPERANDS[a], OPERANDS[b]
        if (sa.sf, sa.sf_vec) != (sb.sf, sb.sf_vec):
            return [Diagnostic(
                "AOTC-DTYPE-002",
                f"a_dtype={a} has {sa.sf} scale factors per {sa.sf_vec} elements but b_dtype={b} has "
                f"{sb.sf} per {sb.sf_vec}; CUTLASS 4.2 (check_input_datatypes) needs one scale-factor type "
                "and vector size for A and B, so FP8 x NVFP4 cannot be built",
                fix="use a_dtype='mxfp8' with b_dtype='mxfp4' (both ue8m0/32), or nvfp4 x nvfp4",
                details={"a_dtype": a, "b_dtype": b})]
        pairs = ", ".join(f"{x}x{y}" for x, y in sorted(SUPPORTED_PAIRS))
        return [Diagnostic(
            "AOTC-DTYPE-001",
            f"dtype pair {a} x {b} is not built by {self.name} (supported: {pairs})",
            fix=f"choose one of: {pairs}", details={"a_dtype": a, "b_dtype": b})]

    def _check_tile(self, p: dict) -> list[Diagnostic]:
        m, n, k = p["tile"]
        out: list[Diagnostic] = []
        if m % 128 or n % 128:
            out.append(Diagnostic(
                "AOTC-SHAPE-001",
                f"tile M={m}, N={n}: both must be multiples of 128 (one scale-factor block covers 128 rows "
                "of A and 128 columns of B)",
                fix=f"use M={max(128, m // 128 * 128)}, N={max(128, n // 128 * 128)}",
                details={"tile": list(p["tile"])}))
        if p["a_dtype"] in OPERANDS and p["b_dtype"] in OPERANDS and k % k_granule(p):
            g = k_granule(p)
            out.append(Diagnostic(
                "AOTC-SHAPE-002",
                f"tile K={k} is not a multiple of {g} (4 scale factors x {OPERANDS[p['a_dtype']].sf_vec} "
                f"elements for {p['a_dtype']})",
                fix=f"use K={max(g, k // g * g)} or {(k // g + 1) * g}", details={"k": k, "granule": g}))
        threads = 128 if p["schedule"] == "pingpong" else 256
        acc = m * n // threads
        if acc > ACC_FLOATS_PER_THREAD_MAX:
            out.append(Diagnostic(
                "AOTC-SHAPE-003",
                f"tile {m}x{n} with the {p['schedule']} schedule keeps {acc} fp32 accumulators per thread "
                f"({threads} MMA threads); more than {ACC_FLOATS_PER_THREAD_MAX} spills registers",
                fix="use schedule='cooperative' or a tile with M*N <= 32768 (e.g. 256x128)" if threads == 128
                else "use a tile with M*N <= 32768 (e.g. 256x128 or 128x256)",
                details={"acc_per_thread": acc}))
        if not out and (p["a_dtype"], p["b_dtype"]) in SUPPORTED_PAIRS:
            stages = resolved_stages(p, self.grouped)
            if stages < 2:
                out.append(Diagnostic(
                    "AOTC-SHAPE-004",
                    f"{'stages=1' if p['stages'] else 'auto stages resolve to ' + str(stages)} for tile "
                    f"{m}x{n}x{k}: the TMA pipeline needs at least 2 stages",
                    fix="set stages >= 2 or halve tile K",
                    details={"stages": stages}))
        return out

    def render_context(self, p: dict, arch: Arch) -> dict:
        m, n, k = p["tile"]
        f8 = uses_f8f6f4(p)
        pingpong = p["schedule"] == "pingpong"
        if self.grouped:
            kernel = "KernelPtrArrayTmaWarpSpecializedPingpong" if pingpong else \
                "KernelPtrArrayTmaWarpSpecializedCooperative"
            epilogue = "PtrArrayTmaWarpSpecializedPingpong" if pingpong else "PtrArrayTmaWarpSpecializedCooperative"
        else:
            kernel = "KernelTmaWarpSpecializedPingpong" if pingpong else "KernelTmaWarpSpecializedCooperative"
            epilogue = "TmaWarpSpecialized" if pingpong else "TmaWarpSpecializedCooperative"
        return {
            "family": self.name,
            "arch_name": arch.name,
            "grouped": self.grouped,
            "ptr": "*" if self.grouped else "",
            "tile_m": m, "tile_n": n, "tile_k": k,
            "a_dtype": p["a_dtype"], "b_dtype": p["b_dtype"], "out_dtype": p["out_dtype"],
            "element_a": OPERANDS[p["a_dtype"]].cutlass,
            "element_b": OPERANDS[p["b_dtype"]].cutlass,
            "element_d": OUT_TYPES[p["out_dtype"]],
            "alignment_a": alignment_elems(p["a_dtype"], f8),
            "alignment_b": alignment_elems(p["b_dtype"], f8),
            "stages": int(p["stages"]),
            "schedule": p["schedule"],
            "kernel_schedule": f"cutlass::gemm::{kernel}",
            "epilogue_schedule": f"cutlass::epilogue::{epilogue}",
            "k_granule": k_granule(p),
            "smem_budget": arch.smem_optin_bytes, "smem_model_total": self.smem(p, arch).total,
        }

    def expected_mma(self, p: dict, arch: Arch) -> str | None:
        # Measured in cuobjdump -sass of sm_120a builds (docs/families/gemm.md).
        return "QMMA" if uses_f8f6f4(p) else "OMMA"

    def fit_hint(self, p: dict, arch: Arch) -> str:
        return blockscaled_fit_hint(self, p, arch)


def blockscaled_fit_hint(fam: BlockScaledGemmSm120, p: dict, arch: Arch) -> str:
    """Largest explicit stage count that fits, else the largest smaller tile that fits."""
    budget = arch.smem_optin_bytes
    total = fam.smem(p, arch).total
    over = total - budget
    for stages in range(resolved_stages(p, fam.grouped), 1, -1):
        q = {**p, "stages": stages}
        t = fam.smem(q, arch).total
        if t <= budget:
            return (f"needs {total} B, {over} B over the {budget} B of {arch.name}: set stages = {stages} "
                    f"({t} B, {budget - t} B free)")
    m, n, k = p["tile"]
    for tile in ((m, n, k // 2), (m // 2, n, k), (m, n // 2, k)):
        q = {**p, "tile": tile, "stages": 0}
        if min(tile) < 64 or fam.check(q, arch):
            continue
        t = fam.smem(q, arch).total
        if t <= budget:
            return (f"needs {total} B, {over} B over the {budget} B of {arch.name}: no stage count >= 2 fits; "
                    f"use tile {list(tile)} (auto stages = {resolved_stages(q, fam.grouped)}, {t} B)")
    return f"needs {total} B, {over} B over the {budget} B of {arch.name}: halve tile M, N or K"


class DenseBlockScaledGemmSm120(BlockScaledGemmSm120):
    name = "gemm_blockscaled_sm120"
    doc = "dense block-scaled GEMM (NVFP4/MXFP8 x NVFP4/MXFP4 -> BF16), TN, CUTLASS Sm120 (example 79a)"
    grouped = False
    args_struct = BlockScaledArgsDense


class GroupedBlockScaledGemmSm120(BlockScaledGemmSm120):
    name = "grouped_gemm_blockscaled_sm120"
    doc = "pointer-array grouped block-scaled GEMM for MoE experts (BF16 out), CUTLASS Sm120 (example 79d)"
    grouped = True
    args_struct = BlockScaledArgsGrouped


FAMILIES: dict[str, Any] = {
    DenseBlockScaledGemmSm120.name: DenseBlockScaledGemmSm120(),
    GroupedBlockScaledGemmSm120.name: GroupedBlockScaledGemmSm120(),
}

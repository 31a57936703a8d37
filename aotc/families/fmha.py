"""FMHA families: `fmha_fwd` (prefill, FlashAttention-2 class on mma.sync; bf16/fp16, or e4m3 Q/K/V
with bf16 output) and `fmha_decode` (few query tokens, split-KV with an in-kernel last-split
combine, GQA heads packed into M), and their paged-KV-cache twins `fmha_fwd_paged` (chunked
prefill) and `fmha_decode_paged` (K/V read through a block table), all from one template.
Parameter schema, byte-exact SMEM model, legality rules and the ctypes mirror of the template's
AotcArgs. Pure Python: no Jinja2, no nvcc (the runtime imports this to pack arguments).
"""

from __future__ import annotations

import ctypes
from typing import ClassVar

from aotc.abi import FmhaArgs
from aotc.arch import CP_ASYNC, LDMATRIX, MMA_SYNC, MMA_SYNC_FP8, Arch
from aotc.diagnostics import Diagnostic
from aotc.families.base import Family, Field, SmemModel

ELEMENT_TYPES = {"bf16": "cutlass::bfloat16_t", "fp16": "cutlass::half_t", "e4m3": "cutlass::float_e4m3_t"}
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "e4m3": 1}
# Output element per input dtype: FP8 attention writes bf16 (FlashAttention-3 FP8 and TRT-LLM do too).
OUTPUT_TYPES = {"bf16": "cutlass::bfloat16_t", "fp16": "cutlass::half_t", "e4m3": "cutlass::bfloat16_t"}
FP8_DTYPES = frozenset({"e4m3"})
# The e4m3 path reads 128-byte K-major rows through a Swizzle<3,4,3> atom: head_dim a multiple of 128.
FP8_HEAD_DIMS = (128, 256)
STRUCT_ALIGN = 128  # alignas(128) on every SharedStorage member
# Accumulator + Q-fragment registers per thread above which ptxas spills (255 max, ~45 for
# addresses, softmax state and ldmatrix staging); 128x64 over 4 warps at head_dim 128 with Q in
# shared memory (the FlashAttention-2 tile for that size) needs 208.
MAX_FRAGMENT_REGISTERS = 208




def _fields() -> dict[str, Field]:
    return {
        "block_m": Field(int, "query rows per CTA (16 per warp, or a multiple)", min=16, max=256, multiple_of=16),
        "block_n": Field(int, "keys per K/V tile", choices=(32, 64, 128)),
        "head_dim": Field(int, "head dimension of Q/K/V/O", choices=(64, 128, 256)),
        "warps": Field(int, "warps per CTA, stacked along M", choices=(1, 2, 4, 8)),
        "kv_stages": Field(int, "K/V shared-memory buffers (1 = FA2 K/V interleave, 2 = double buffer)",
                           default=1, choices=(1, 2)),
        "dtype": Field(str, "Q/K/V element type (fp32 accumulation); O is the same type, bf16 for e4m3",
                       choices=tuple(ELEMENT_TYPES)),
        "q_in_regs": Field(bool, "keep the whole Q tile in registers (else re-read k-slices from shared memory)",
                           default=True),
    }


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def fragment_registers(p: dict) -> int:
    """32-bit registers per thread for acc_o + acc_s (fp32) and the Q fragment: the whole tile when
    Q stays in registers, else two k-slices (4 registers each per 16-row MMA tile)."""
    threads = 32 * p["warps"]
    acc_o = p["block_m"] * p["head_dim"] // threads
    acc_s = p["block_m"] * p["block_n"] // threads
    tiles_per_warp = p["block_m"] // (16 * p["warps"])
    q_bytes = p["block_m"] * p["head_dim"] * ELEMENT_BYTES[p["dtype"]]
    q_regs = q_bytes // 4 // threads if p["q_in_regs"] else 8 * tiles_per_warp
    return acc_o + acc_s + q_regs


class _FmhaBase(Family):
    doc: ClassVar[str]
    fields: ClassVar[dict[str, Field]] = _fields()
    template: ClassVar[str] = "fmha/fmha.cu.j2"
    probe_template: ClassVar[str] = "fmha/fmha_smem_probe.cu.j2"
    args_struct: ClassVar[type[ctypes.Structure]] = FmhaArgs
    decode: ClassVar[bool] = False
    paged: ClassVar[bool] = False

    def requires(self, p: dict) -> frozenset[str]:
        base = {MMA_SYNC, LDMATRIX, CP_ASYNC}
        # e4m3 x e4m3 -> f32 mma.sync (m16n8k32) exists from sm_89 on: sm_80/86 are "not applicable".
        return frozenset(base | {MMA_SYNC_FP8}) if p["dtype"] in FP8_DTYPES else frozenset(base)

    def tile_of(self, p: dict) -> tuple[int, ...]:
        return (p["block_m"],)  # query rows per CTA: select() scores it against seqlen_q

    def smem(self, p: dict, arch: Arch) -> SmemModel:
        """Mirror of SharedStorage: members at 128 B alignment, struct size rounded to 128 B."""
        ebytes = ELEMENT_BYTES[p["dtype"]]
        tile_q = p["block_m"] * p["head_dim"] * ebytes
        tile_kv = p["block_n"] * p["head_dim"] * ebytes
        members = [("q_tile_and_o_staging", tile_q), ("k_stages", p["kv_stages"] * tile_kv),
                   ("v_stages", p["kv_stages"] * tile_kv)]
        if self.decode:
            members.append(("last_split_flag", 4))
        components: list[tuple[str, int]] = []
        offset = 0
        for name, size in members:
            pad = _round_up(offset, STRUCT_ALIGN) - offset
            if pad:
                components.append((f"pad_before_{name}", pad))
            components.append((name, size))
            offset += pad + size
        tail = _round_up(offset, STRUCT_ALIGN) - offset
        if tail:
            components.append(("pad_struct_tail", tail))
        return SmemModel(tuple(components), (("kv_stages", p["kv_stages"]),))

    def check(self, p: dict, arch: Arch) -> list[Diagnostic]:
        # The SMEM verdict is aotc.build.rules' (always computed, from smem() and fit_hint()).
        return [*self._shape_diagnostics(p), *self._fp8_diagnostics(p), *self._register_diagnostics(p)]

    def _fp8_diagnostics(self, p: dict) -> list[Diagnostic]:
        if p["dtype"] not in FP8_DTYPES:
            return []
        out = []
        if self.paged:
            out.append(Diagnostic(
                "AOTC-FMHA-006", f"{self.name} has no {p['dtype']} variant (paged K/V is bf16/fp16 only)",
                fix="use dtype = \"bf16\" or \"fp16\", or the contiguous fmha_fwd family for e4m3",
                details={"dtype": p["dtype"]}))
        elif self.decode:
            out.append(Diagnostic(
                "AOTC-FMHA-005", f"{self.name} has no {p['dtype']} variant (only fmha_fwd does)",
                fix="use dtype = \"bf16\" or \"fp16\" for decode, or the fmha_fwd family for e4m3 prefill",
                details={"dtype": p["dtype"]}))
        if p["head_dim"] not in FP8_HEAD_DIMS:
            out.append(Diagnostic(
                "AOTC-FMHA-004",
                f"head_dim {p['head_dim']} with dtype {p['dtype']}: the e4m3 kernel reads {p['head_dim']}-byte rows "
                "through a 128-byte swizzle atom, so head_dim must be one of "
                + ", ".join(str(d) for d in FP8_HEAD_DIMS),
                fix="use head_dim = 128 (or 256), or dtype = \"bf16\" for head_dim 64",
                details={"head_dim": p["head_dim"], "allowed": list(FP8_HEAD_DIMS)}))
        return out

    def _shape_diagnostics(self, p: dict) -> list[Diagnostic]:
        out = []
        rows_per_pass = 16 * p["warps"]
        if p["block_m"] % rows_per_pass:
            out.append(Diagnostic(
                "AOTC-FMHA-001",
                f"block_m {p['block_m']} is not a multiple of 16 x warps = {rows_per_pass}: each warp owns "
                "whole 16-row mma.sync tiles",
                fix=f"use block_m = {rows_per_pass} or a multiple, or warps = {max(1, p['block_m'] // 16)}",
                details={"block_m": p["block_m"], "warps": p["warps"]}))
        threads = 32 * p["warps"]
        chunks = min(p["block_m"], p["block_n"]) * p["head_dim"] * ELEMENT_BYTES[p["dtype"]] // 16
        if chunks % threads:
            out.append(Diagnostic(
                "AOTC-FMHA-002",
                f"a {min(p['block_m'], p['block_n'])}-row tile has {chunks} 16-byte chunks, not divisible by "
                f"{threads} threads",
                fix="use fewer warps or larger tiles", details={"chunks": chunks, "threads": threads}))
        return out

    def _register_diagnostics(self, p: dict) -> list[Diagnostic]:
        regs = fragment_registers(p)
        if regs <= MAX_FRAGMENT_REGISTERS:
            return []
        return [Diagnostic(
            "AOTC-FMHA-003",
            f"{regs} registers per thread for the O/S accumulators and the Q fragment (block_m "
            f"{p['block_m']}, block_n {p['block_n']}, head_dim {p['head_dim']}, {p['warps']} warps) exceed "
            f"{MAX_FRAGMENT_REGISTERS}: the kernel would spill",
            fix="set q_in_regs = false, add warps (fewer rows per warp) or lower block_n",
            details={"registers": regs, "limit": MAX_FRAGMENT_REGISTERS})]

    def fit_hint(self, p: dict, arch: Arch) -> str:
        budget = arch.smem_optin_bytes
        options = []
        for name, change in (("kv_stages", {"kv_stages": 1}), ("block_n", {"block_n": p["block_n"] // 2}),
                             ("block_m", {"block_m": p["block_m"] // 2})):
            q = {**p, **change}
            if q == p or q["block_n"] < 32 or q["block_m"] < 16 * q["warps"]:
                continue
            total = self.smem(q, arch).total
            if total <= budget:
                options.append(f"{name} = {change[name]} ({total:,} B)")
        if not options:
            return f"no single change fits {budget:,} B; lower head_dim or several of block_m/block_n/kv_stages"
        return "fits with " + " or ".join(options)

    def render_context(self, p: dict, arch: Arch) -> dict:
        return {
            "family": self.name, "arch": arch.name, "block_m": p["block_m"], "block_n": p["block_n"],
            "head_dim": p["head_dim"], "warps": p["warps"], "kv_stages": p["kv_stages"], "dtype": p["dtype"],
            "element": ELEMENT_TYPES[p["dtype"]], "out_element": OUTPUT_TYPES[p["dtype"]],
            "fp8": p["dtype"] in FP8_DTYPES, "decode": self.decode, "paged": self.paged,
            "q_in_regs": p["q_in_regs"],
            "smem_budget": arch.smem_optin_bytes, "smem_model_total": self.smem(p, arch).total,
        }

    def expected_mma(self, p: dict, arch: Arch) -> str | None:
        # bf16/fp16 mma.sync m16n8k16 is HMMA on sm_80, sm_90 and sm_120 alike. e4m3 m16n8k32 is a
        # native QMMA.16832.F32.E4M3.E4M3 on sm_120a and sm_89; sm_90a has no warp-level FP8 MMA:
        # ptxas emulates it as F2FP.F16.E4M3.UNPACK_B + two HMMA.16816.F32 (pip cuobjdump 13.5).
        if p["dtype"] in FP8_DTYPES:
            return "HMMA" if arch.sm == 90 else "QMMA"
        return "HMMA"


class FmhaFwd(_FmhaBase):
    name = "fmha_fwd"
    doc = ("attention prefill: causal or not (runtime), batched or varlen (cu_seqlens), GQA/MQA, "
           "bf16/fp16 with fp32 accumulation, or e4m3 Q/K/V (per-tensor descales) with bf16 output (sm_89+)")


class FmhaDecode(_FmhaBase):
    name = "fmha_decode"
    doc = ("attention decode: few query tokens over a long KV cache, KV split across CTAs with an "
           "in-kernel combine by the last split; the q heads of a kv head are packed into M")
    decode = True


class FmhaFwdPaged(FmhaFwd):
    name = "fmha_fwd_paged"
    doc = ("attention prefill over a paged KV cache (chunked prefill: the prefix already in the cache): "
           "block table [batch, max_pages] int32, per-request KV lengths, pages [num_pages, page_size, "
           "kv_heads, head_dim] (K and V separate or stacked), page size a power of two; bf16/fp16")
    paged = True


class FmhaDecodePaged(FmhaDecode):
    name = "fmha_decode_paged"
    doc = ("attention decode over a paged KV cache: block table [batch, max_pages] int32, per-request KV "
           "lengths, split-KV with the in-kernel combine; bf16/fp16")
    paged = True


FAMILIES: dict[str, Family] = {f.name: f for f in (FmhaFwd(), FmhaDecode(), FmhaFwdPaged(), FmhaDecodePaged())}

"""Device-routed MoE on the SM120 block-scaled grouped GEMMs: NVFP4 x NVFP4 (`moe_w4a4`) and MXFP8 x
MXFP4 (`moe_w4a8_mx`) expert GEMMs whose per-expert problems are built on the GPU from an int32
device tensor of expert offsets, as `grouped_gemm_moe` does for BF16/FP16: two launches (the
aotc_moe_blockscaled_groups metadata kernel, then the grouped GEMM), no host read of the offsets,
nothing allocated, copied or synchronized, so the pair is capturable in a CUDA graph.

The per-expert CUTLASS strides and scale-factor layouts depend on the expert's row count, which only
the GPU knows. They come from the kernel's own helper (aotc_group_metadata) as a table of int32
words, each affine in the rows m and the 128-row tiles ceil(m / 128); the table is solved from 16
probe row counts and checked against all of them before it is used (AOTC-RT-007 otherwise).
"""

from __future__ import annotations

import struct
from typing import Any

from aotc.runtime import gemm, metadata, ops
from aotc.runtime.device import query_device
from aotc.runtime.errors import BAD_TENSOR, PROBLEM_REJECTED, runtime_error
from aotc.runtime.launch import Kernel, stream_handle
from aotc.runtime.tensors import expect, tensor_info

# kind -> (family params it matches, A bytes per element (0.5 = packed FP4), A dtypes, SF dtypes, SF vector)
KINDS = {
    "nvfp4": ({"a_dtype": "nvfp4", "b_dtype": "nvfp4", "out_dtype": "bf16"}, 0.5, gemm.FP4_PACKED, ("u8", "e4m3"), 16),
    "mxfp8": ({"a_dtype": "mxfp8", "b_dtype": "mxfp4", "out_dtype": "bf16"}, 1, ("u8", "i8", "e4m3"), ("u8", "ue8m0"),
              32),
}
TILE = metadata.SF_TILE_ROWS
# Row counts the stride/layout table is solved from (1, 128, 129) and checked against (all 16)
PROBES = (0, 1, 2, 127, 128, 129, 255, 256, 257, 1000, 4095, 4096, 4097, 65536, 100_003, 1 << 20)
PLAN_LIMIT = 256
_plans: dict[tuple, MoePlan] = {}


def sf_row_bytes(k: int, vec: int) -> int:
    """Bytes of one row of scale factors in the interleaved layout (K / vec padded to 4)."""
    cols = -(-k // vec)
    return -(-cols // 4) * 4


def moe_sf_rows(tokens: int, experts: int) -> int:
    """Rows of scale factors the activations of `tokens` rows over `experts` experts take at most:
    expert e's rows start at 128 x (sum of ceil(m_i / 128) over the experts before it), so the total
    is sum(ceil(m_e / 128)) x 128 <= tokens + 127 x experts, rounded down to 128."""
    return (tokens + (TILE - 1) * experts) // TILE * TILE


def moe_sf_bytes(tokens: int, experts: int, k: int, kind: str = "nvfp4") -> int:
    """Bytes `sfa` must hold for grouped_gemm_moe_nvfp4 / grouped_gemm_moe_mxfp8."""
    return moe_sf_rows(tokens, experts) * sf_row_bytes(k, KINDS[kind][4])


class MoePlan:
    """The argument block aotc_moe_blockscaled_groups writes for E experts of one kernel, N and K:
    byte offsets of the pointer arrays (A, B, SFA, SFB, D, each `ptr_stride` apart), of the helper's
    5 stride/layout arrays (`meta_at` + `meta_offsets`) and of the alpha pointers, and the word table."""

    __slots__ = ("alpha_at", "meta_at", "meta_offsets", "ptr_stride", "ptrs_at", "size", "words")

    def __init__(self, experts: int, meta_bytes: int, meta_offsets: tuple[int, ...], words: list[tuple]):
        self.ptr_stride = _round16(8 * experts)
        self.ptrs_at = _round16(12 * experts)
        self.meta_at = self.ptrs_at + 5 * self.ptr_stride
        self.meta_offsets = meta_offsets
        self.alpha_at = self.meta_at + meta_bytes
        self.size = self.alpha_at + self.ptr_stride
        self.words = words


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def moe_plan(helper: Any, experts: int, n: int, k: int) -> MoePlan:
    """The block layout for E experts (the same arrays and offsets nvfp4_group_block gives E groups)
    and the word table of the helper's strides/SF layouts for N and K, checked at every probe."""
    meta, offsets = gemm.group_metadata(helper, ((TILE, n, k),) * experts)
    probe, probe_offsets = gemm.group_metadata(helper, tuple((m, n, k) for m in PROBES))
    ends = (*probe_offsets[1:], len(probe))
    words = []
    for array, (start, end) in enumerate(zip(probe_offsets, ends, strict=True)):
        elem = (end - start) // len(PROBES)  # 16 probes: no padding in the span
        for word in range(elem // 4):
            f = {m: struct.unpack_from("<i", probe, start + i * elem + 4 * word)[0] for i, m in enumerate(PROBES)}
            c1, rem = divmod(f[128] - f[1], 127)
            c2 = f[129] - f[128] - c1
            c0 = f[1] - c1 - c2
            model = {m: _i32(c0 + c1 * m + c2 * -(-m // TILE)) for m in PROBES}
            if rem or model != f:
                raise runtime_error(PROBLEM_REJECTED, f"{helper.what}: word {word} of metadata array {array} is not "
                                    f"affine in an expert's rows (values {sorted(f.items())}); the device cannot "
                                    "build this kernel's per-expert arguments",
                                    "use grouped_gemm_nvfp4 with host problem sizes for this kernel")
            words.append((offsets[array] + 4 * word, elem, c0, c1, c2))
    if len(words) > metadata.MOE_WORDS:
        raise runtime_error(PROBLEM_REJECTED, f"{helper.what}: {len(words)} metadata words per expert; "
                            f"aotc_moe_blockscaled_groups writes at most {metadata.MOE_WORDS}",
                            "use grouped_gemm_nvfp4 with host problem sizes for this kernel")
    return MoePlan(experts, len(meta), offsets, words)


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def metadata_params(plan: MoePlan, block: int, offsets: int, a: int, b: int, sfa: int, sfb: int, d: int, alpha: int,
                    experts: int, n: int, k: int, kind: str) -> metadata.MoeBlockScaledParams:
    """aotc_moe_blockscaled_groups' parameters for contiguous operands: a [T, K] (A bytes per element
    of `kind`), b [E, N, K/2], sfa in per-expert 128-row tiles, sfb [E] x sf_bytes(N, K), d [T, N]
    bf16, alpha 0 or the address of float32 [E]."""
    _, a_bytes, _, _, vec = KINDS[kind]
    p = metadata.MoeBlockScaledParams(offsets, block, a, b, sfa, sfb, d, alpha, experts, n, k, len(plan.words),
                                      int(k * a_bytes), n * k // 2, TILE * sf_row_bytes(k, vec), _sf_bytes(n, k, vec),
                                      2 * n,
                                      plan.ptrs_at, plan.ptr_stride, plan.meta_at, plan.alpha_at)
    for i, word in enumerate(plan.words):
        p.table[i] = metadata.MoeWord(*word)
    return p


def _sf_bytes(rows: int, k: int, vec: int) -> int:
    return -(-rows // TILE) * TILE * sf_row_bytes(k, vec)


def fill_args(args: Any, plan: MoePlan, block: int, experts: int, sm_count: int, alpha: float,
              alpha_array: bool) -> None:
    """The grouped kernel's AotcArgs pointing into the block (no host problem sizes: CUTLASS's
    scheduler then reads the sizes on the device and launches one persistent CTA set)."""
    args.num_groups, args.sm_count = experts, sm_count
    args.problem_sizes, args.host_problem_sizes = block, 0
    args.ptr_A, args.ptr_B, args.ptr_SFA, args.ptr_SFB, args.ptr_D = (
        block + plan.ptrs_at + i * plan.ptr_stride for i in range(5))
    (args.stride_A, args.stride_B, args.stride_D, args.layout_SFA, args.layout_SFB) = (
        block + plan.meta_at + o for o in plan.meta_offsets)
    args.alpha_array = block + plan.alpha_at if alpha_array else 0
    args.alpha, args.reserved = float(alpha), 0


def grouped_gemm_moe_nvfp4(a: Any, b: Any, sfa: Any, sfb: Any, out: Any, expert_offsets: Any, *, alpha: Any = 1.0,
                           stream: Any = None, params: dict | None = None) -> Kernel:
    """NVFP4 MoE expert GEMMs with the routing on the GPU (SM120/SM121, `moe_w4a4`):
    out[t] = alpha_e * (A*SFA)[t] @ (B*SFB)[e]^T for the rows t of expert e.

    a [T, K/2] packed e2m1 sorted by expert; b [E, N, K/2] packed e2m1; sfa: ue4m3 bytes, expert e's
    rows in their own 128-row tiles starting at tile sum(ceil(m_i / 128), i < e) (the layout of
    vLLM's blockscale offsets), moe_sf_bytes(T, E, K) bytes; sfb: E x nvfp4_sf_bytes(N, K) bytes;
    out [T, N] bf16; expert_offsets int32 [E+1] on the device (read by the GPU only); alpha: a float
    or a float32 device tensor [E] (per-expert global scales). K % 64 == 0, N % 8 == 0."""
    return _moe("nvfp4", a, b, sfa, sfb, out, expert_offsets, alpha, stream, params)


def grouped_gemm_moe_mxfp8(a: Any, b: Any, sfa: Any, sfb: Any, out: Any, expert_offsets: Any, *, alpha: Any = 1.0,
                           stream: Any = None, params: dict | None = None) -> Kernel:
    """MXFP8 x MXFP4 MoE expert GEMMs with the routing on the GPU (SM120/SM121, `moe_w4a8_mx`): as
    grouped_gemm_moe_nvfp4 with a [T, K] e4m3 bytes and ue8m0 scale factors per 32 elements
    (moe_sf_bytes(T, E, K, "mxfp8") and E x K/32-wide SF tiles for b). K % 128 == 0, N % 8 == 0."""
    return _moe("mxfp8", a, b, sfa, sfb, out, expert_offsets, alpha, stream, params)


def _moe(kind: str, a: Any, b: Any, sfa: Any, sfb: Any, out: Any, expert_offsets: Any, alpha: Any, stream: Any,
         params: dict | None) -> Kernel:
    # a tensor of per-expert alphas, else one scalar for all (a Python or NumPy number)
    per_expert = not (isinstance(alpha, (int, float)) or getattr(alpha, "ndim", None) == 0)
    key = None
    if type(a).__module__ == "torch" and a.is_cuda and params is None:
        try:
            handle = ops._torch_stream(a.get_device()) if stream is None else stream_handle(stream)
            key = ("moe", kind, *(ops._tensor_key(t) for t in (a, b, sfa, sfb, out, expert_offsets)),
                   ops._tensor_key(alpha) if per_expert else alpha, handle)
        except AttributeError:  # not all torch tensors: the general path checks them
            key = None
        kernel = ops._fast_hit(key) if key is not None else None
        if kernel is not None:
            return kernel
    matches, a_bytes, a_dtypes, sf_dtypes, vec = KINDS[kind]
    ai = tensor_info(a)
    ordinal = ops.device_of(ai, "a")
    expect(ai, "a", dtype=a_dtypes, ndim=2, device=ordinal)
    tokens, k = ai.shape[0], int(ai.shape[1] / a_bytes)
    bi = expect(tensor_info(b), "b", dtype=gemm.FP4_PACKED, shape=(None, None, k // 2), device=ordinal)
    experts, n = bi.shape[0], bi.shape[1]
    if experts < 1:
        raise runtime_error(BAD_TENSOR, "argument 'b' holds 0 experts", "pass weights of shape [E, N, K/2], E >= 1",
                            argument="b")
    granule = 4 * vec
    if k % granule or n % gemm.OUT_ALIGN or k <= 0 or n <= 0:
        raise runtime_error(BAD_TENSOR, f"{kind} MoE GEMM N = {n}, K = {k}: K must be a positive multiple of {granule} "
                            f"(4 scale factors x {vec}) and N of {gemm.OUT_ALIGN} (16-byte bf16 rows)",
                            f"zero-pad K to {-(-max(k, 1) // granule) * granule} and N to "
                            f"{-(-max(n, 1) // gemm.OUT_ALIGN) * gemm.OUT_ALIGN}")
    oi = expect(tensor_info(out), "out", dtype="bf16", shape=(tokens, n), device=ordinal)
    ei = expect(tensor_info(expert_offsets), "expert_offsets", dtype="i32", shape=(experts + 1,), align=4,
                device=ordinal)
    sf_b = _sf_bytes(n, k, vec)
    sf = []
    for name, obj, need in (("sfa", sfa, moe_sf_bytes(tokens, experts, k, kind)), ("sfb", sfb, experts * sf_b)):
        info = expect(tensor_info(obj), name, dtype=sf_dtypes, device=ordinal)
        if info.numel < need:
            raise runtime_error(BAD_TENSOR, f"argument {name!r} holds {info.numel} scale-factor bytes; {tokens} tokens, "
                                f"{experts} experts, N={n}, K={k} need {need}",
                                f"allocate aotc.runtime.moe_sf_bytes({tokens}, {experts}, {k}, {kind!r}) bytes for "
                                f"sfa and {experts} x {sf_b} for sfb", argument=name)
        sf.append(info)
    alpha_ptr = 0
    if per_expert:
        alpha_ptr = expect(tensor_info(alpha), "alpha", dtype="f32", shape=(experts,), align=4, device=ordinal).ptr
    device = query_device(ordinal)
    kernel = gemm.nvfp4_kernel(gemm.NVFP4_GROUPED, device, (kind, "moe", tokens, n, k, experts),
                              {"m": max(1, tokens // experts), "n": n, "k": k, "groups": experts}, params, matches)
    handle = ops.default_stream(a, ordinal) if stream is None else stream_handle(stream)
    plan = _plan(kernel, experts, n, k)
    signature = key or ("moe", kind, ai.ptr, bi.ptr, sf[0].ptr, sf[1].ptr, oi.ptr, ei.ptr, alpha_ptr, ai.shape,
                        bi.shape)  # non-torch callers: reuse the block for the same tensors too
    block, owner = gemm._moe_block(ordinal, handle, plan.size, a, signature)
    mp = metadata_params(plan, block, ei.ptr, ai.ptr, bi.ptr, sf[0].ptr, sf[1].ptr, oi.ptr, alpha_ptr, experts, n, k,
                         kind)
    prologue = metadata.moe_blockscaled_call(ordinal, handle, mp)
    args = kernel.args_type()
    fill_args(args, plan, block, experts, device.sm_count, 1.0 if per_expert else alpha, per_expert)
    ws, ws_owner = ops.workspace_arg(kernel, args, ordinal, handle, a)
    call = kernel.prepare_call(args, handle, workspace=ws)
    kernel.fire_all((prologue.call, call))
    ops._fast_store(key, kernel, (prologue.call, call), (prologue, owner, ws_owner))
    return kernel


def _plan(kernel: Kernel, experts: int, n: int, k: int) -> MoePlan:
    key = (kernel.spec_key, kernel.arch, experts, n, k)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= PLAN_LIMIT:
            _plans.clear()
        plan = _plans[key] = moe_plan(kernel._helper, experts, n, k)
    return plan

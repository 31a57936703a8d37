"""Typed entry points over Kernel.launch: check the tensors, choose a stored kernel for the problem
(or take explicit params), fill the family's args struct and launch. One function per catalog
family; argument layouts follow the families' templates (documented in docs/runtime.md).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from .device import Device, query_device
from .errors import BAD_TENSOR, NO_KERNEL, runtime_error
from .launch import Kernel, stream_handle
from .lookup import stored_params
from .registry import get_kernel
from .tensors import HOST, UNKNOWN, TensorInfo, expect, tensor_info

FMHA_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> fmha family `dtype` param
_choices: dict[tuple, Kernel] = {}  # (family, ordinal, problem signature) -> chosen kernel


def default_stream(tensor: Any, ordinal: int) -> int:
    """torch's current stream when given torch tensors (what the caller's other work is queued on),
    else the legacy default stream."""
    if type(tensor).__module__.startswith("torch"):
        torch = sys.modules["torch"]
        return int(torch.cuda.current_stream(ordinal).cuda_stream)
    return 0


def device_of(info: TensorInfo, name: str) -> int:
    if info.device == HOST:
        raise runtime_error(BAD_TENSOR, f"argument {name!r} is in host memory; the kernel runs on a CUDA device",
                            "move it to the GPU first, e.g. .cuda()")
    return 0 if info.device == UNKNOWN else info.device


def choose(family: str, device: Device, signature: tuple, matches: dict, problem: dict,
           params: dict | None) -> Kernel:
    """The kernel of explicit params, or of the stored params of `family` containing `matches` that
    select() prefers for `problem`; memoized per problem signature."""
    if params is not None:
        return get_kernel(family, params, device=device.ordinal)
    key = (family, device.ordinal, signature)
    kernel = _choices.get(key)
    if kernel is None:
        candidates = [p for p in stored_params(family, device)
                      if all(p.get(k) == v for k, v in matches.items())]
        if not candidates:
            want = ", ".join(f"{k}={v}" for k, v in matches.items())
            raise runtime_error(NO_KERNEL, f"no stored {family} kernel with {want} runs on {device.label}",
                                f"build one: aotc build --arch {_default_target(device)} --filter {family}",
                                family=family, **{k: str(v) for k, v in matches.items()})
        from .select import select  # only when choosing: explicit params never load the heuristic

        chosen = select(family, candidates, problem, device, sm_count=device.sm_count)
        kernel = get_kernel(family, chosen, device=device.ordinal)
        _choices[key] = kernel
    return kernel


def _default_target(device: Device) -> str:
    targets = device.runnable_targets()
    return targets[0] if targets else f"sm{device.sm}"


def _last_dim_contiguous(info: TensorInfo, name: str) -> None:
    if info.strides and info.strides[-1] != 1:
        raise runtime_error(BAD_TENSOR, f"argument {name!r} has stride {info.strides[-1]} in its last dimension "
                            f"(shape {info.shape}); the kernel needs it contiguous (stride 1)",
                            "pass .contiguous()", argument=name)


def fmha_fwd(q: Any, k: Any, v: Any, out: Any, *, cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
             max_seqlen_q: int | None = None, max_seqlen_k: int | None = None, causal: bool = False,
             scale: float | None = None, stream: Any = None, params: dict | None = None) -> Kernel:
    """Attention prefill: out = softmax(scale * q k^T [causal mask]) v, GQA by head count.

    Batched: q/out [batch, seqlen_q, q_heads, head_dim], k/v [batch, seqlen_k, kv_heads, head_dim].
    Varlen: q/out [total_q, q_heads, head_dim], k/v [total_k, kv_heads, head_dim] with int32
    cu_seqlens_q/k [batch + 1] and max_seqlen_q/k. bf16 or fp16; returns the kernel used."""
    return _fmha("fmha_fwd", q, k, v, out, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                 scale, stream, params, 0)


def fmha_decode(q: Any, k: Any, v: Any, out: Any, *, cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
                max_seqlen_q: int | None = None, max_seqlen_k: int | None = None, causal: bool = False,
                scale: float | None = None, num_splits: int = 0, stream: Any = None,
                params: dict | None = None) -> Kernel:
    """Attention decode (few query tokens, split-KV; same layouts as fmha_fwd). num_splits 0 lets
    the kernel choose from the SM count; a split workspace is allocated and kept by the runtime."""
    return _fmha("fmha_decode", q, k, v, out, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                 scale, stream, params, num_splits)


def _fmha(family: str, q: Any, k: Any, v: Any, out: Any, cu_q: Any, cu_k: Any, max_q: int | None,
          max_k: int | None, causal: bool, scale: float | None, stream: Any, params: dict | None,
          num_splits: int) -> Kernel:
    qi = tensor_info(q)
    ordinal = device_of(qi, "q")
    varlen = cu_q is not None
    ndim = 3 if varlen else 4
    expect(qi, "q", dtype=tuple(FMHA_DTYPES), ndim=ndim, device=ordinal, contiguous=False)
    head_dim, q_heads = qi.shape[-1], qi.shape[-2]
    kv_shape: Sequence[int | None] = (None, None, head_dim) if varlen else (qi.shape[0], None, None, head_dim)
    ki = expect(tensor_info(k), "k", dtype=qi.dtype, shape=kv_shape, device=ordinal, contiguous=False)
    vi = expect(tensor_info(v), "v", dtype=qi.dtype, shape=ki.shape, device=ordinal, contiguous=False)
    oi = expect(tensor_info(out), "out", dtype=qi.dtype, shape=qi.shape, device=ordinal, contiguous=False)
    for name, info in (("q", qi), ("k", ki), ("v", vi), ("out", oi)):
        _last_dim_contiguous(info, name)
    kv_heads = ki.shape[-2]
    if q_heads % kv_heads:
        raise runtime_error(BAD_TENSOR, f"q has {q_heads} heads, k/v {kv_heads}: q heads must be a multiple",
                            "pass k/v with a head count dividing the query head count (GQA/MQA)")
    if varlen:
        if cu_k is None or max_q is None or max_k is None:
            raise runtime_error(BAD_TENSOR, "varlen attention needs cu_seqlens_q, cu_seqlens_k, max_seqlen_q and "
                                "max_seqlen_k together", "pass all four (max_seqlen_* = longest sequence)")
        ci = expect(tensor_info(cu_q), "cu_seqlens_q", dtype="i32", ndim=1, align=4, device=ordinal)
        expect(tensor_info(cu_k), "cu_seqlens_k", dtype="i32", shape=ci.shape, align=4, device=ordinal)
        batch, seqlen_q, seqlen_k, cu_ptrs = ci.shape[0] - 1, int(max_q), int(max_k), (ci.ptr, tensor_info(cu_k).ptr)
    else:
        batch, seqlen_q, seqlen_k, cu_ptrs = qi.shape[0], qi.shape[1], ki.shape[1], (0, 0)
    device = query_device(ordinal)
    dtype = FMHA_DTYPES[qi.dtype]
    kernel = choose(family, device, (head_dim, dtype, batch, q_heads, kv_heads, seqlen_q),
                    {"head_dim": head_dim, "dtype": dtype},
                    {"seqlen_q": seqlen_q * (q_heads // kv_heads if family == "fmha_decode" else 1),
                     "batch": batch * (kv_heads if family == "fmha_decode" else q_heads)}, params)
    args = kernel.args_type()
    args.q, args.k, args.v, args.o = qi.ptr, ki.ptr, vi.ptr, oi.ptr
    args.cu_seqlens_q, args.cu_seqlens_k = cu_ptrs
    for prefix, info in (("q", qi), ("k", ki), ("v", vi), ("o", oi)):
        strides = info.strides if not varlen else (0, *info.strides)
        setattr(args, f"{prefix}_batch_stride", strides[0])
        setattr(args, f"{prefix}_row_stride", strides[1])
        setattr(args, f"{prefix}_head_stride", strides[2])
    args.batch, args.num_q_heads, args.num_kv_heads, args.head_dim = batch, q_heads, kv_heads, head_dim
    args.seqlen_q, args.seqlen_k = seqlen_q, seqlen_k
    args.softmax_scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    args.causal = 1 if causal else 0
    args.num_splits = num_splits
    args.num_sms = device.sm_count
    kernel.launch(args, default_stream(q, ordinal) if stream is None else stream_handle(stream))
    return kernel


GEMM_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> grouped_gemm_sm80 `dtype` param
METADATA_LIMIT = 256  # distinct grouped problems whose device metadata arrays are kept
_metadata: dict[tuple, tuple[int, int]] = {}  # problem signature -> (device buffer, bytes)


def grouped_gemm(a: Sequence[Any], b: Sequence[Any], out: Sequence[Any], *, alpha: float = 1.0,
                 stream: Any = None, params: dict | None = None) -> Kernel:
    """MoE-style grouped GEMM: out[i] = alpha * a[i] @ b[i].T for every group i.

    a[i] [M_i, K_i] and out[i] [M_i, N_i] row-major, b[i] [N_i, K_i] row-major (an nn.Linear weight),
    all bf16 or all fp16 on one device, rows 16-byte aligned. Returns the kernel used."""
    if not (len(a) == len(b) == len(out)) or not a:
        raise runtime_error(BAD_TENSOR, f"grouped_gemm got {len(a)} A, {len(b)} B and {len(out)} out tensors",
                            "pass one A, B and out per group (at least one group)")
    infos = []
    for i, (x, w, o) in enumerate(zip(a, b, out, strict=True)):
        ai = tensor_info(x)
        ordinal = device_of(ai, f"a[{i}]")
        expect(ai, f"a[{i}]", dtype=tuple(GEMM_DTYPES), ndim=2, device=ordinal, contiguous=False)
        m, k = ai.shape
        bi = expect(tensor_info(w), f"b[{i}]", dtype=ai.dtype, shape=(None, k), device=ordinal, contiguous=False)
        oi = expect(tensor_info(o), f"out[{i}]", dtype=ai.dtype, shape=(m, bi.shape[0]), device=ordinal,
                    contiguous=False)
        for name, info in ((f"a[{i}]", ai), (f"b[{i}]", bi), (f"out[{i}]", oi)):
            _last_dim_contiguous(info, name)
            if info.strides[0] % 8:
                raise runtime_error(BAD_TENSOR, f"argument {name!r} row stride {info.strides[0]} elements is not a "
                                    "multiple of 8 (16 bytes)", "pad the rows or pass .contiguous()")
        infos.append((ai, bi, oi))
    ordinal = device_of(infos[0][0], "a[0]")
    dtype = infos[0][0].dtype
    if any(ai.dtype != dtype or ai.device != infos[0][0].device for ai, _, _ in infos):
        raise runtime_error(BAD_TENSOR, "grouped_gemm groups differ in dtype or device",
                            "pass every group in one dtype on one device")
    device = query_device(ordinal)
    shapes = tuple((ai.shape[0], bi.shape[0], ai.shape[1]) for ai, bi, _ in infos)
    total_m = sum(s[0] for s in shapes)
    kernel = choose("grouped_gemm_sm80", device, (GEMM_DTYPES[dtype], shapes),
                    {"dtype": GEMM_DTYPES[dtype]},
                    {"m": max(1, total_m // len(shapes)), "n": max(s[1] for s in shapes),
                     "k": max(s[2] for s in shapes), "groups": len(shapes)}, params)
    args = kernel.args_type()
    args.num_groups = len(shapes)
    meta = _group_metadata(infos, shapes)
    g = len(shapes)
    args.problem_sizes = meta
    base = meta + 12 * g + _pad(12 * g)
    args.ptr_A, args.ptr_B, args.ptr_D = base, base + 8 * g, base + 16 * g
    args.lda, args.ldb, args.ldd = base + 24 * g, base + 32 * g, base + 40 * g
    args.alpha, args.beta = float(alpha), 0.0
    args.threadblock_count = device.sm_count or 1
    args.threadblock_count = kernel.resident_ctas(args)
    kernel.launch(args, default_stream(a[0], ordinal) if stream is None else stream_handle(stream))
    return kernel


def _pad(n: int) -> int:
    return (-n) % 16


def _group_metadata(infos: list, shapes: tuple) -> int:
    """Device arrays the grouped kernel reads (problem sizes, pointers, leading dims), uploaded once per
    distinct problem and kept: identical calls reuse the same address, so the launch memo hits."""
    key = tuple((ai.ptr, bi.ptr, oi.ptr, ai.strides[0], bi.strides[0], oi.strides[0]) for ai, bi, oi in infos) + shapes
    hit = _metadata.get(key)
    if hit is not None:
        return hit[0]
    import array

    from .device import check, driver

    sizes = array.array("i", [v for s in shapes for v in s]).tobytes()
    sizes += bytes(_pad(len(sizes)))
    cols = [[ai.ptr for ai, _, _ in infos], [bi.ptr for _, bi, _ in infos], [oi.ptr for _, _, oi in infos],
            [ai.strides[0] for ai, _, _ in infos], [bi.strides[0] for _, bi, _ in infos],
            [oi.strides[0] for _, _, oi in infos]]
    blob = sizes + b"".join(array.array("q", col).tobytes() for col in cols)
    cu = driver()
    if len(_metadata) >= METADATA_LIMIT:
        for ptr, _ in _metadata.values():
            check(cu, cu.cuMemFree(ptr), "cuMemFree(grouped metadata)")  # synchronizes first
        _metadata.clear()
    ptr = int(check(cu, cu.cuMemAlloc(len(blob)), "cuMemAlloc(grouped metadata)"))
    check(cu, cu.cuMemcpyHtoD(ptr, blob, len(blob)), "cuMemcpyHtoD(grouped metadata)")
    _metadata[key] = (ptr, len(blob))
    return ptr

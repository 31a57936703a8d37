"""Attention entry points: fmha_fwd (prefill, batched or varlen) and fmha_decode (split-KV) over
contiguous K/V; the paged-cache ones are aotc.runtime.paged. See docs/runtime.md for the layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from aotc.runtime.device import query_device
from aotc.runtime.errors import BAD_TENSOR, runtime_error
from aotc.runtime.launch import Kernel, stream_handle
from aotc.runtime.ops import (
    _fast_hit,
    _fast_store,
    _tensor_key,
    _torch_stream,
    choose,
    default_stream,
    device_of,
    last_dim_contiguous,
    workspace_arg,
)
from aotc.runtime.tensors import expect, tensor_info

FMHA_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> fmha family `dtype` param


def set_attention_problem(args: Any, device: Any, shape: tuple[int, int, int, int, int, int], scale: float | None,
                          causal: bool, num_splits: int) -> None:
    """The problem fields every attention kernel's AotcArgs shares (contiguous, varlen and paged):
    shape = (batch, q heads, kv heads, head_dim, seqlen_q, seqlen_k)."""
    batch, q_heads, kv_heads, head_dim, seqlen_q, seqlen_k = shape
    args.batch, args.num_q_heads, args.num_kv_heads, args.head_dim = batch, q_heads, kv_heads, head_dim
    args.seqlen_q, args.seqlen_k = seqlen_q, seqlen_k
    args.softmax_scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    args.causal = 1 if causal else 0
    args.num_splits = num_splits
    args.num_sms = device.sm_count


def fmha_fwd(q: Any, k: Any, v: Any, out: Any, *, cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
             max_seqlen_q: int | None = None, max_seqlen_k: int | None = None, causal: bool = False,
             scale: float | None = None, stream: Any = None, params: dict | None = None) -> Kernel:
    """Attention prefill: out = softmax(scale * q k^T [causal mask]) v, GQA by head count.

    Batched: q/out [batch, seqlen_q, q_heads, head_dim], k/v [batch, seqlen_k, kv_heads, head_dim].
    Varlen: q/out [total_q, q_heads, head_dim], k/v [total_k, kv_heads, head_dim] with int32
    cu_seqlens_q/k [batch + 1] and max_seqlen_q/k. bf16 or fp16; returns the kernel used."""
    return _fmha("fmha_fwd", q, k, v, out, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                 scale, stream, params, 0, None)


def fmha_decode(q: Any, k: Any, v: Any, out: Any, *, cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
                max_seqlen_q: int | None = None, max_seqlen_k: int | None = None, causal: bool = False,
                scale: float | None = None, num_splits: int = 0, stream: Any = None,
                params: dict | None = None, workspace: Any = None) -> Kernel:
    """Attention decode (few query tokens, split-KV; same layouts as fmha_fwd). num_splits 0 lets
    the kernel choose from the SM count. The split workspace is `workspace` (a zero-filled device
    buffer, left zero by every launch) or, when omitted, taken once per stream from the caller's
    allocator (torch's caching allocator for torch tensors): capturable in a CUDA graph either way."""
    return _fmha("fmha_decode", q, k, v, out, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                 scale, stream, params, num_splits, workspace)


def fmha_problem(family: str, batch: int, q_heads: int, kv_heads: int, seqlen_q: int) -> dict:
    """What the choice among stored attention tiles scores (also what `aotc tune` buckets): query
    rows per CTA row block and independent (batch, head) blocks; decode packs the GQA heads of one
    KV head into the query rows."""
    decode = family == "fmha_decode"
    return {"seqlen_q": seqlen_q * (q_heads // kv_heads if decode else 1),
            "batch": batch * (kv_heads if decode else q_heads)}


def _fmha(family: str, q: Any, k: Any, v: Any, out: Any, cu_q: Any, cu_k: Any, max_q: int | None,
          max_k: int | None, causal: bool, scale: float | None, stream: Any, params: dict | None,
          num_splits: int, workspace: Any) -> Kernel:
    key = None
    if type(q).__module__ == "torch" and q.is_cuda and (params is None or
                                                        not any(type(x) is list for x in params.values())):
        try:
            handle = _torch_stream(q.get_device()) if stream is None else stream_handle(stream)
            key = (family, _tensor_key(q), _tensor_key(k), _tensor_key(v), _tensor_key(out),
                   None if cu_q is None else cu_q.data_ptr(), None if cu_k is None else cu_k.data_ptr(), max_q,
                   max_k, causal, scale, num_splits, handle, None if workspace is None else workspace.data_ptr(),
                   None if params is None else tuple(params.items()))
        except AttributeError:  # an argument that is not a torch tensor: the general path checks it
            key = None
        kernel = _fast_hit(key) if key is not None else None
        if kernel is not None:
            return kernel
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
        last_dim_contiguous(info, name)
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
                    {"head_dim": head_dim, "dtype": dtype}, fmha_problem(family, batch, q_heads, kv_heads, seqlen_q),
                    params)
    args = kernel.args_type()
    args.q, args.k, args.v, args.o = qi.ptr, ki.ptr, vi.ptr, oi.ptr
    args.cu_seqlens_q, args.cu_seqlens_k = cu_ptrs
    for prefix, info in (("q", qi), ("k", ki), ("v", vi), ("o", oi)):
        strides = info.strides if not varlen else (0, *info.strides)
        setattr(args, f"{prefix}_batch_stride", strides[0])
        setattr(args, f"{prefix}_row_stride", strides[1])
        setattr(args, f"{prefix}_head_stride", strides[2])
    set_attention_problem(args, device, (batch, q_heads, kv_heads, head_dim, seqlen_q, seqlen_k), scale, causal,
                          num_splits)
    handle = default_stream(q, ordinal) if stream is None else stream_handle(stream)
    ws, owner = workspace_arg(kernel, args, ordinal, handle, q, workspace, "fmha_decode")
    call = kernel.prepare_call(args, handle, workspace=ws)
    kernel.fire(call)
    _fast_store(key, kernel, (call,), owner)
    return kernel

"""Attention over a paged KV cache: decode and chunked prefill whose K/V live in fixed-size pages
named by a per-request block table (the vLLM/FlashInfer NHD layout). Checks the tensors, picks a
stored `fmha_decode_paged` / `fmha_fwd_paged` kernel, fills FmhaArgs and launches. Layouts and
semantics: docs/families/fmha.md ("Paged KV cache").
"""

from __future__ import annotations

from typing import Any

from aotc.runtime.attention import set_attention_problem
from aotc.runtime.device import query_device
from aotc.runtime.errors import BAD_TENSOR, runtime_error
from aotc.runtime.launch import Kernel, stream_handle
from aotc.runtime.ops import choose, default_stream, device_of, last_dim_contiguous, launch_with_workspace
from aotc.runtime.tensors import TensorInfo, expect, tensor_info

PAGED_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> family `dtype` param


def fmha_decode_paged(q: Any, k_cache: Any, v_cache: Any, block_table: Any, kv_lens: Any, out: Any, *,
                      max_kv_len: int | None = None, cu_seqlens_q: Any = None, max_seqlen_q: int | None = None,
                      causal: bool = False, scale: float | None = None, num_splits: int = 0, stream: Any = None,
                      params: dict | None = None, workspace: Any = None) -> Kernel:
    """Decode over a paged KV cache (split-KV; the q heads of a kv head share one K/V stream).

    q/out [batch, q_len, q_heads, head_dim] (or [total_q, q_heads, head_dim] with int32
    cu_seqlens_q [batch + 1] and max_seqlen_q); k_cache/v_cache [num_pages, page_size, kv_heads,
    head_dim] (separate tensors, or kv[:, 0] and kv[:, 1] of a stacked [num_pages, 2, ...] cache);
    block_table int32 [batch, max_pages]; kv_lens int32 [batch] (0 = empty request: its rows are 0).
    max_kv_len: the longest kv_lens entry when known (sizes the KV split; default: the table's
    capacity). The split workspace is `workspace` (a zero-filled device buffer, left zero by every
    launch) or, when omitted, taken once per stream from the caller's allocator (torch's caching
    allocator for torch tensors), as fmha_decode: capturable in a CUDA graph either way. Returns
    the kernel used."""
    return _paged("fmha_decode_paged", q, k_cache, v_cache, block_table, kv_lens, out, cu_seqlens_q,
                  max_seqlen_q, max_kv_len, causal, scale, num_splits, stream, params, workspace)


def fmha_fwd_paged(q: Any, k_cache: Any, v_cache: Any, block_table: Any, kv_lens: Any, out: Any, *,
                   cu_seqlens_q: Any = None, max_seqlen_q: int | None = None, max_kv_len: int | None = None,
                   causal: bool = True, scale: float | None = None, stream: Any = None,
                   params: dict | None = None) -> Kernel:
    """Chunked prefill over a paged KV cache: the new tokens' K/V are already written to the cache
    after the request's prefix, kv_lens[b] = prefix + new tokens, and query i of request b sees keys
    j <= i + kv_lens[b] - q_len[b] (bottom-right causal). Layouts as fmha_decode_paged."""
    return _paged("fmha_fwd_paged", q, k_cache, v_cache, block_table, kv_lens, out, cu_seqlens_q,
                  max_seqlen_q, max_kv_len, causal, scale, 0, stream, params, None)


def check_span(cache: TensorInfo) -> None:
    """The kernels address a K/V row as a 32-bit count of 16-byte chunks from the cache's start
    (2-byte elements: 8 per chunk), so the pages must span under 64 GiB."""
    span = max(cache.shape[0] - 1, 0) * abs(cache.strides[0]) + (cache.shape[1] - 1) * abs(cache.strides[1])
    if span // 8 >= 1 << 32:
        raise runtime_error(BAD_TENSOR, f"k_cache spans {span * 2 / 2**30:.1f} GiB of pages; the paged kernels "
                            "address at most 64 GiB per cache tensor", "split the KV cache into smaller tensors "
                            "(e.g. one per layer)")


def _paged(family: str, q: Any, k_cache: Any, v_cache: Any, block_table: Any, kv_lens: Any, out: Any,
           cu_q: Any, max_q: int | None, max_kv: int | None, causal: bool, scale: float | None, num_splits: int,
           stream: Any, params: dict | None, workspace: Any) -> Kernel:
    qi = tensor_info(q)
    ordinal = device_of(qi, "q")
    varlen = cu_q is not None
    expect(qi, "q", dtype=tuple(PAGED_DTYPES), ndim=3 if varlen else 4, device=ordinal, contiguous=False)
    head_dim, q_heads = qi.shape[-1], qi.shape[-2]
    ki = expect(tensor_info(k_cache), "k_cache", dtype=qi.dtype, shape=(None, None, None, head_dim), device=ordinal,
                contiguous=False)
    vi = expect(tensor_info(v_cache), "v_cache", dtype=qi.dtype, shape=ki.shape, device=ordinal, contiguous=False)
    oi = expect(tensor_info(out), "out", dtype=qi.dtype, shape=qi.shape, device=ordinal, contiguous=False)
    for name, info in (("q", qi), ("k_cache", ki), ("v_cache", vi), ("out", oi)):
        last_dim_contiguous(info, name)
    page_size, kv_heads = ki.shape[1], ki.shape[2]  # page ids are not range-checked: they live on the device
    if page_size < 1 or page_size & (page_size - 1):
        raise runtime_error(BAD_TENSOR, f"k_cache has {page_size} tokens per page; the paged kernels take a power "
                            "of two (e.g. 16 or 64)", "allocate the cache with a power-of-two page size")
    check_span(ki)
    if q_heads % kv_heads:
        raise runtime_error(BAD_TENSOR, f"q has {q_heads} heads, the KV cache {kv_heads}: q heads must be a multiple",
                            "pass a cache whose kv head count divides the query head count (GQA/MQA)")
    bi = expect(tensor_info(block_table), "block_table", dtype="i32", ndim=2, align=4, device=ordinal)
    batch, max_pages = bi.shape
    li = expect(tensor_info(kv_lens), "kv_lens", dtype="i32", shape=(batch,), align=4, device=ordinal)
    if varlen:
        if max_q is None:
            raise runtime_error(BAD_TENSOR, "varlen q needs max_seqlen_q with cu_seqlens_q",
                                "pass max_seqlen_q = the longest query length")
        expect(tensor_info(cu_q), "cu_seqlens_q", dtype="i32", shape=(batch + 1,), align=4, device=ordinal)
        seqlen_q = int(max_q)
    else:
        if qi.shape[0] != batch:
            raise runtime_error(BAD_TENSOR, f"q has batch {qi.shape[0]} but block_table has {batch} rows",
                                "pass one block-table row and one kv_lens entry per request")
        seqlen_q = qi.shape[1]
    capacity = max_pages * page_size
    seqlen_k = capacity if max_kv is None else int(max_kv)
    if not 0 <= seqlen_k <= capacity:
        raise runtime_error(BAD_TENSOR, f"max_kv_len {seqlen_k} is outside [0, {capacity}] (block table of "
                            f"{max_pages} pages x {page_size} tokens)", "pass the longest kv_lens entry")
    device = query_device(ordinal)
    dtype = PAGED_DTYPES[qi.dtype]
    decode = family == "fmha_decode_paged"
    group = q_heads // kv_heads
    kernel = choose(family, device, (head_dim, dtype, batch, q_heads, kv_heads, seqlen_q),
                     {"head_dim": head_dim, "dtype": dtype},
                     {"seqlen_q": seqlen_q * (group if decode else 1), "batch": batch * (kv_heads if decode else q_heads)},
                     params)
    args = kernel.args_type()
    args.q, args.k, args.v, args.o = qi.ptr, ki.ptr, vi.ptr, oi.ptr
    args.cu_seqlens_q = tensor_info(cu_q).ptr if varlen else 0
    for prefix, info in (("q", qi), ("o", oi)):
        strides = info.strides if not varlen else (0, *info.strides)
        setattr(args, f"{prefix}_batch_stride", strides[0])
        setattr(args, f"{prefix}_row_stride", strides[1])
        setattr(args, f"{prefix}_head_stride", strides[2])
    for prefix, info in (("k", ki), ("v", vi)):
        setattr(args, f"{prefix}_page_stride", info.strides[0])
        setattr(args, f"{prefix}_row_stride", info.strides[1])
        setattr(args, f"{prefix}_head_stride", info.strides[2])
    args.block_table, args.kv_lens = bi.ptr, li.ptr
    args.block_table_stride, args.page_size = bi.strides[0], page_size
    set_attention_problem(args, device, (batch, q_heads, kv_heads, head_dim, seqlen_q, seqlen_k), scale, causal,
                          num_splits)
    handle = default_stream(q, ordinal) if stream is None else stream_handle(stream)
    launch_with_workspace(kernel, args, ordinal, handle, q, workspace, "fmha_decode")  # decode kernels share it
    return kernel

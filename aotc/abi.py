"""The launch ABI's ctypes mirrors: each template's `AotcArgs` (what a typed entry point fills) and
`AotcLaunch` (what a host helper answers), field order and types exactly as in the C structs. Their
own module, apart from the families' build-time rules, so that a serving process packs arguments
without importing the families, the target table or the SMEM models.

The AotcArgs classes are made on first use (PEP 562 `__getattr__`, once per process under a lock):
making a ctypes.Structure class costs ~60 µs, and a process serving attention needs one of five.
"""

from __future__ import annotations

import ctypes
import threading
from typing import TYPE_CHECKING


class AotcLaunch(ctypes.Structure):
    """Mirror of `AotcLaunch` in templates/common/aotc_abi.h."""

    _fields_ = [
        ("grid", ctypes.c_uint32 * 3),
        ("block", ctypes.c_uint32 * 3),
        ("smem_bytes", ctypes.c_uint32),
        ("params_bytes", ctypes.c_uint32),
        ("workspace_bytes", ctypes.c_uint64),
    ]


# class name -> (docstring, _fields_) of every AotcArgs mirror
_ARGS: dict[str, tuple[str, list]] = {
    "FmhaArgs": (
        "Mirror of `struct AotcArgs` in templates/fmha/fmha.cu.j2 (field order and types must match).",
        [
            ("q", ctypes.c_uint64),
            ("k", ctypes.c_uint64),
            ("v", ctypes.c_uint64),
            ("o", ctypes.c_uint64),
            ("cu_seqlens_q", ctypes.c_uint64),
            ("cu_seqlens_k", ctypes.c_uint64),
            ("q_batch_stride", ctypes.c_int64),
            ("q_row_stride", ctypes.c_int64),
            ("q_head_stride", ctypes.c_int64),
            ("k_batch_stride", ctypes.c_int64),
            ("k_row_stride", ctypes.c_int64),
            ("k_head_stride", ctypes.c_int64),
            ("v_batch_stride", ctypes.c_int64),
            ("v_row_stride", ctypes.c_int64),
            ("v_head_stride", ctypes.c_int64),
            ("o_batch_stride", ctypes.c_int64),
            ("o_row_stride", ctypes.c_int64),
            ("o_head_stride", ctypes.c_int64),
            ("batch", ctypes.c_int32),
            ("num_q_heads", ctypes.c_int32),
            ("num_kv_heads", ctypes.c_int32),
            ("head_dim", ctypes.c_int32),
            ("seqlen_q", ctypes.c_int32),
            ("seqlen_k", ctypes.c_int32),
            ("softmax_scale", ctypes.c_float),
            ("causal", ctypes.c_int32),
            ("num_splits", ctypes.c_int32),
            ("num_sms", ctypes.c_int32),
            ("q_descale", ctypes.c_float),
            ("k_descale", ctypes.c_float),
            ("v_descale", ctypes.c_float),
            # paged families only (0 elsewhere)
            ("block_table", ctypes.c_uint64),
            ("kv_lens", ctypes.c_uint64),
            ("k_page_stride", ctypes.c_int64),
            ("v_page_stride", ctypes.c_int64),
            ("block_table_stride", ctypes.c_int32),
            ("page_size", ctypes.c_int32),
        ],
    ),
    "GroupedSm80Args": (
        "Mirror of AotcArgs in templates/gemm/grouped_sm80.cu.j2.",
        [
            ("num_groups", ctypes.c_int32),
            ("threadblock_count", ctypes.c_int32),
            ("problem_sizes", ctypes.c_uint64),
            ("ptr_A", ctypes.c_uint64),
            ("ptr_B", ctypes.c_uint64),
            ("ptr_C", ctypes.c_uint64),
            ("ptr_D", ctypes.c_uint64),
            ("lda", ctypes.c_uint64),
            ("ldb", ctypes.c_uint64),
            ("ldc", ctypes.c_uint64),
            ("ldd", ctypes.c_uint64),
            ("alpha", ctypes.c_float),
            ("beta", ctypes.c_float),
            # device-routed MoE (grouped_gemm_moe): groups derived on the GPU from int32 expert offsets
            ("expert_offsets", ctypes.c_uint64),
            ("route_A", ctypes.c_uint64),
            ("route_B", ctypes.c_uint64),
            ("route_D", ctypes.c_uint64),
            ("route_lda", ctypes.c_int64),
            ("route_ldb", ctypes.c_int64),
            ("route_ldd", ctypes.c_int64),
            ("route_b_stride", ctypes.c_int64),
            ("route_n", ctypes.c_int32),
            ("route_k", ctypes.c_int32),
        ],
    ),
    "BlockScaledArgsDense": (
        "Mirror of AotcArgs in blockscaled_sm120.cu.j2 (dense).",
        [
            ("ptr_A", ctypes.c_uint64),
            ("ptr_B", ctypes.c_uint64),
            ("ptr_SFA", ctypes.c_uint64),
            ("ptr_SFB", ctypes.c_uint64),
            ("ptr_D", ctypes.c_uint64),
            ("m", ctypes.c_int32),
            ("n", ctypes.c_int32),
            ("k", ctypes.c_int32),
            ("batch", ctypes.c_int32),
            ("alpha", ctypes.c_float),
            ("sm_count", ctypes.c_int32),
        ],
    ),
    "BlockScaledArgsGrouped": (
        "Mirror of AotcArgs in blockscaled_sm120.cu.j2 (grouped). stride_* / layout_SF* are device copies of what the helper's aotc_group_metadata() writes.",
        [
            ("num_groups", ctypes.c_int32),
            ("sm_count", ctypes.c_int32),
            ("problem_sizes", ctypes.c_uint64),
            ("host_problem_sizes", ctypes.c_uint64),
            ("ptr_A", ctypes.c_uint64),
            ("ptr_B", ctypes.c_uint64),
            ("ptr_SFA", ctypes.c_uint64),
            ("ptr_SFB", ctypes.c_uint64),
            ("ptr_D", ctypes.c_uint64),
            ("stride_A", ctypes.c_uint64),
            ("stride_B", ctypes.c_uint64),
            ("stride_D", ctypes.c_uint64),
            ("layout_SFA", ctypes.c_uint64),
            ("layout_SFB", ctypes.c_uint64),
            ("alpha_array", ctypes.c_uint64),
            ("alpha", ctypes.c_float),
            ("reserved", ctypes.c_int32),
        ],
    ),
    "QuantizeArgs": (
        "Mirror of AotcArgs in templates/quantize/blockscaled_quantize.cu.j2.",
        [
            ("x", ctypes.c_uint64),
            ("q", ctypes.c_uint64),
            ("sf", ctypes.c_uint64),
            ("rows", ctypes.c_int64),
            ("cols", ctypes.c_int64),
            ("x_row_stride", ctypes.c_int64),
            ("global_scale", ctypes.c_float),
            ("reserved", ctypes.c_int32),
        ],
    ),
}

# family name -> the class name of its AotcArgs mirror (aotc.families.<module> sets the same class as args_struct)
FAMILY_ARGS: dict[str, str] = {
    "fmha_fwd": "FmhaArgs",
    "fmha_decode": "FmhaArgs",
    "fmha_fwd_paged": "FmhaArgs",
    "fmha_decode_paged": "FmhaArgs",
    "grouped_gemm_sm80": "GroupedSm80Args",
    "gemm_blockscaled_sm120": "BlockScaledArgsDense",
    "grouped_gemm_blockscaled_sm120": "BlockScaledArgsGrouped",
    "quantize_blockscaled": "QuantizeArgs",
}

_lock = threading.Lock()


def args_struct(family: str) -> type[ctypes.Structure]:
    """The AotcArgs mirror of a family (KeyError for an unknown family)."""
    return __getattr__(FAMILY_ARGS[family])


def __getattr__(name: str) -> type[ctypes.Structure]:
    made = globals().get(name)
    if made is not None:
        return made
    spec = _ARGS.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:  # one class per name: isinstance checks compare against it
        made = globals().get(name)
        if made is None:
            made = type(
                name, (ctypes.Structure,), {"__doc__": spec[0], "__module__": __name__, "_fields_": spec[1]}
            )
            globals()[name] = made
    return made


if TYPE_CHECKING:  # pragma: no cover - what type checkers see
    FmhaArgs: type[ctypes.Structure]
    GroupedSm80Args: type[ctypes.Structure]
    BlockScaledArgsDense: type[ctypes.Structure]
    BlockScaledArgsGrouped: type[ctypes.Structure]
    QuantizeArgs: type[ctypes.Structure]

"""Quantize entry points: bf16/fp16 activations -> NVFP4 (for gemm_nvfp4 / grouped_gemm_nvfp4) or
MXFP8 (for moe_w4a8_mx), written straight into the byte layout those kernels read. Runs the
quantize_blockscaled family on any sm_80+ device (see docs/families/quantize.md).
"""

from __future__ import annotations

from typing import Any

from aotc.runtime.errors import BAD_TENSOR, runtime_error
from aotc.runtime.launch import Kernel, stream_handle
from aotc.runtime.ops import default_stream, device_of, launch_with_workspace
from aotc.runtime.tensors import expect, tensor_info

FAMILY = "quantize_blockscaled"
IN_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> family `in_dtype`
SF_VEC = {"nvfp4": 16, "mxfp8": 32}  # elements per scale factor
NVFP4_GLOBAL_DIVISOR = 448.0 * 6.0  # e4m3 max x e2m1 max: the per-tensor scale that lets block scales use all of e4m3
Q_DTYPES = {"nvfp4": ("u8", "i8", "e2m1x2"), "mxfp8": ("u8", "i8", "e4m3")}
SF_DTYPES = {"nvfp4": ("u8", "e4m3"), "mxfp8": ("u8", "ue8m0")}


def sf_bytes(rows: int, cols: int, fmt: str = "nvfp4") -> int:
    """Bytes of the scale factors of a rows x cols operand: rows padded to 128, cols / vector padded to 4
    (CUTLASS's Sm1xxBlkScaledConfig layout; equals gemm.nvfp4_sf_bytes for nvfp4)."""
    sf_cols = -(-cols // SF_VEC[fmt])
    return -(-rows // 128) * 128 * (-(-sf_cols // 4) * 4)


def nvfp4_global_scale(amax: float) -> float:
    """Per-tensor scale for two-level NVFP4 (torchao's per_tensor_amax_to_scale): amax / (448 * 6).
    The GEMM's alpha is then global_scale(A) * global_scale(B)."""
    return float(amax) / NVFP4_GLOBAL_DIVISOR


def quantize_nvfp4(x: Any, q: Any, sf: Any, *, global_scale: float = 1.0, stream: Any = None,
                   params: dict | None = None) -> Kernel:
    """x [M, K] bf16/fp16 (K % 16 == 0, rows 16-byte aligned) -> q [M, K/2] packed e2m1 (low nibble
    first) and sf (sf_bytes(M, K) bytes) ue4m3 scale factors, block of 16: sf = e4m3(amax / 6 /
    global_scale), q = e2m1(x / (global_scale * sf)). Returns the kernel used."""
    return _quantize("nvfp4", x, q, sf, float(global_scale), stream, params)


def quantize_mxfp8(x: Any, q: Any, sf: Any, *, stream: Any = None, params: dict | None = None) -> Kernel:
    """x [M, K] bf16/fp16 (K % 32 == 0) -> q [M, K] e4m3 and sf (sf_bytes(M, K, "mxfp8") bytes) ue8m0
    scale factors, block of 32: sf = 2^(floor(log2(amax)) - 8), q = e4m3(x / sf). Returns the kernel."""
    return _quantize("mxfp8", x, q, sf, 0.0, stream, params)


def _quantize(fmt: str, x: Any, q: Any, sf: Any, global_scale: float, stream: Any, params: dict | None) -> Kernel:
    from aotc.runtime.device import query_device
    from aotc.runtime.ops import choose

    xi = tensor_info(x)
    ordinal = device_of(xi, "x")
    expect(xi, "x", dtype=tuple(IN_DTYPES), ndim=2, device=ordinal, contiguous=False)
    rows, cols = xi.shape
    vec = SF_VEC[fmt]
    if cols % vec:
        raise runtime_error(BAD_TENSOR, f"x has {cols} columns; {fmt} needs a multiple of {vec} (one scale factor "
                            f"per {vec} elements)", f"zero-pad the rows to {-(-cols // vec) * vec} columns")
    if xi.strides[1] != 1 or xi.strides[0] % 8:
        raise runtime_error(BAD_TENSOR, f"x has strides {xi.strides} elements; rows must be contiguous and start "
                            "16-byte aligned (row stride a multiple of 8)", "pass x.contiguous()")
    packed_cols = cols // 2 if fmt == "nvfp4" else cols
    qi = expect(tensor_info(q), "q", dtype=Q_DTYPES[fmt], shape=(rows, packed_cols), device=ordinal)
    si = expect(tensor_info(sf), "sf", dtype=SF_DTYPES[fmt], device=ordinal, align=4)
    need = sf_bytes(rows, cols, fmt)
    if si.numel < need:
        raise runtime_error(BAD_TENSOR, f"sf holds {si.numel} bytes; {rows} x {cols} needs {need} (rows padded to "
                            f"128, {cols // vec} scale factors per row padded to 4)",
                            f"allocate sf with aotc.runtime.quantize.sf_bytes({rows}, {cols}, {fmt!r}) bytes")
    device = query_device(ordinal)
    in_dtype = IN_DTYPES[xi.dtype]
    kernel = choose(FAMILY, device, (fmt, in_dtype), {"format": fmt, "in_dtype": in_dtype}, {}, params)
    args = kernel.args_type()
    args.x, args.q, args.sf = xi.ptr, qi.ptr, si.ptr
    args.rows, args.cols, args.x_row_stride = rows, cols, xi.strides[0]
    args.global_scale = global_scale
    launch_with_workspace(kernel, args, ordinal, default_stream(x, ordinal) if stream is None else stream_handle(stream),
                          x)
    return kernel

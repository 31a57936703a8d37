"""GEMM entry points: grouped GEMM over per-group tensors (grouped_gemm), the MoE layout with
expert offsets on the device (grouped_gemm_moe), and the SM120 block-scaled NVFP4 GEMMs (gemm_nvfp4,
grouped_gemm_nvfp4). The MXFP8/NVFP4 MoE entry points are aotc.runtime.moe. See docs/runtime.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aotc.runtime.device import Device, query_device
from aotc.runtime.errors import BAD_TENSOR, HELPER_ABI, PROBLEM_REJECTED, TARGET_MISMATCH, runtime_error
from aotc.runtime.launch import Kernel, stream_handle
from aotc.runtime.ops import (
    _fast_hit,
    _fast_store,
    _torch_stream,
    choose,
    default_stream,
    device_of,
    last_dim_contiguous,
    launch_with_workspace,
)
from aotc.runtime.tensors import TensorInfo, expect, tensor_info

GEMM_DTYPES = {"bf16": "bf16", "f16": "fp16"}  # tensor dtype -> grouped_gemm_sm80 `dtype` param
METADATA_LIMIT = 256  # distinct grouped problems whose device metadata arrays are kept
# problem signature -> (device buffer, bytes, (memory owner, host object kept alive with it))
_metadata: dict[tuple, tuple[int, int, Any]] = {}


def grouped_problem(shapes: Sequence[tuple[int, int, int]]) -> dict:
    """What the choice among stored grouped GEMM tiles scores for per-group (M, N, K) shapes (also
    what `aotc tune` buckets): mean M, largest N and K, the group count."""
    return {"m": max(1, sum(s[0] for s in shapes) // len(shapes)), "n": max(s[1] for s in shapes),
            "k": max(s[2] for s in shapes), "groups": len(shapes)}


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
            last_dim_contiguous(info, name)
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
    kernel = choose("grouped_gemm_sm80", device, (GEMM_DTYPES[dtype], shapes), {"dtype": GEMM_DTYPES[dtype]},
                    grouped_problem(shapes), params)
    args = kernel.args_type()
    args.num_groups = len(shapes)
    handle = default_stream(a[0], ordinal) if stream is None else stream_handle(stream)
    meta = _group_metadata(infos, shapes, ordinal, handle, a[0])
    g = len(shapes)
    args.problem_sizes = meta
    base = meta + 12 * g + _pad(12 * g)
    args.ptr_A, args.ptr_B, args.ptr_D = base, base + 8 * g, base + 16 * g
    args.lda, args.ldb, args.ldd = base + 24 * g, base + 32 * g, base + 40 * g
    args.alpha, args.beta = float(alpha), 0.0
    args.threadblock_count = device.sm_count or 1
    args.threadblock_count = kernel.resident_ctas(args)
    kernel.launch(args, handle)
    return kernel


def grouped_gemm_moe(a: Any, b: Any, out: Any, expert_offsets: Any, *, alpha: float = 1.0, stream: Any = None,
                     params: dict | None = None) -> Kernel:
    """MoE expert GEMMs with the routing on the GPU: out[t] = alpha * a[t] @ b[e].T for every row t of
    expert e, where rows expert_offsets[e] .. expert_offsets[e+1]-1 of `a` and `out` belong to expert e.

    a [total_tokens, K] (sorted by expert), b [E, N, K] (the experts' nn.Linear weights), out
    [total_tokens, N], bf16 or fp16, rows 16-byte aligned; expert_offsets: int32 [E+1] on the device,
    non-decreasing from 0 to total_tokens (read only by the GPU: never synchronized, never checked on
    the host). The GEMM kernel derives each expert's problem (rows, A/D row, weight) from the offsets
    as it schedules its tiles: one launch on `stream`, nothing allocated or written first, capturable in
    a CUDA graph."""
    key = None
    if params is None and type(a).__module__ == "torch":
        try:
            key = _moe_key(a, b, out, expert_offsets, alpha, stream)
        except AttributeError:  # not all torch tensors: the general path checks them
            key = None
        kernel = _fast_hit(key) if key is not None else None
        if kernel is not None:
            return kernel
    ai = tensor_info(a)
    ordinal = device_of(ai, "a")
    expect(ai, "a", dtype=tuple(GEMM_DTYPES), ndim=2, device=ordinal, contiguous=False)
    tokens, k = ai.shape
    bi = expect(tensor_info(b), "b", dtype=ai.dtype, shape=(None, None, k), device=ordinal, contiguous=False)
    experts, n = bi.shape[0], bi.shape[1]
    oi = expect(tensor_info(out), "out", dtype=ai.dtype, shape=(tokens, n), device=ordinal, contiguous=False)
    ei = expect(tensor_info(expert_offsets), "expert_offsets", dtype="i32", shape=(experts + 1,), align=4,
                device=ordinal)
    if experts < 1:
        raise runtime_error(BAD_TENSOR, "argument 'b' holds 0 experts", "pass weights of shape [E, N, K], E >= 1",
                            argument="b")
    for name, info in (("a", ai), ("out", oi)):
        last_dim_contiguous(info, name)
        if info.strides[0] % 8:
            raise runtime_error(BAD_TENSOR, f"argument {name!r} row stride {info.strides[0]} elements is not a "
                                "multiple of 8 (16 bytes)", "pad the rows or pass .contiguous()", argument=name)
    if bi.strides[2] != 1 or bi.strides[1] % 8 or bi.strides[0] % 8:
        raise runtime_error(BAD_TENSOR, f"argument 'b' strides {bi.strides} elements: each expert's [N, K] rows "
                            "must be contiguous in K with 16-byte aligned rows and experts",
                            "pass .contiguous() weights", argument="b")
    device = query_device(ordinal)
    dtype = GEMM_DTYPES[ai.dtype]
    kernel = choose("grouped_gemm_sm80", device, (dtype, "moe", tokens, n, k, experts), {"dtype": dtype},
                    {"m": max(1, tokens // experts), "n": n, "k": k, "groups": experts}, params)
    _check_routed(kernel)
    handle = default_stream(a, ordinal) if stream is None else stream_handle(stream)
    args = kernel.args_type()
    args.num_groups = experts
    args.expert_offsets, args.route_A, args.route_B, args.route_D = ei.ptr, ai.ptr, bi.ptr, oi.ptr
    args.route_lda, args.route_ldb, args.route_ldd = ai.strides[0], bi.strides[1], oi.strides[0]
    args.route_b_stride, args.route_n, args.route_k = bi.strides[0], n, k
    args.alpha, args.beta = float(alpha), 0.0
    args.threadblock_count = device.sm_count or 1
    args.threadblock_count = kernel.resident_ctas(args)
    call = kernel.prepare_call(args, handle)
    kernel.fire(call)
    _fast_store(key, kernel, (call,))
    return kernel


def _moe_key(a: Any, b: Any, out: Any, offsets: Any, alpha: float, stream: Any) -> tuple | None:
    """grouped_gemm_moe's call signature (None for a tensor not on a GPU): every pointer, shape, stride
    and dtype of the four tensors, alpha and the stream, as one flat tuple (no per-tensor call and
    sub-tuple: 0.1-0.3 us less than four _tensor_key tuples on the H200 host, of 1.9-3.5 us; the torch
    attribute reads themselves are the cost, bench/results/moe_single_launch_h200.md)."""
    ordinal = a.get_device()  # -1 off the GPU (is_cuda, without a second attribute read)
    if ordinal < 0:
        return None
    handle = _torch_stream(ordinal) if stream is None else stream_handle(stream)
    return ("moe", a.data_ptr(), a.shape, a.stride(), a.dtype, b.data_ptr(), b.shape, b.stride(), b.dtype,
            out.data_ptr(), out.shape, out.stride(), out.dtype, offsets.data_ptr(), offsets.shape, offsets.stride(),
            offsets.dtype, alpha, handle)


def _check_routed(kernel: Kernel) -> None:
    """AOTC-RT-005 unless the kernel's helper takes this runtime's AotcArgs (a grouped_gemm_sm80 kernel
    built before the device-routed fields would read a routed launch as empty group arrays)."""
    import ctypes

    lib = kernel._helper.lib
    size = lib.aotc_args_bytes() if hasattr(lib, "aotc_args_bytes") else None
    want = ctypes.sizeof(kernel.args_type)
    if size != want:
        raise runtime_error(HELPER_ABI, f"{kernel._helper.what} takes {size or 'an older'} B of AotcArgs; this runtime "
                            f"passes {want} B with the expert offsets (grouped_gemm_moe derives the experts' problems "
                            "in the GEMM kernel)", "rebuild it with this aotc version: aotc build --filter "
                            f"{kernel.name} --arch {kernel.arch}", helper_args_bytes=size, runtime_args_bytes=want)


_moe_blocks: dict[tuple, tuple[int, Any]] = {}  # (ordinal, stream, bytes, signature) -> (address, owner)


def _moe_block(ordinal: int, stream: int, size: int, like: Any, signature: tuple) -> tuple[int, Any]:
    """Device memory the block-scaled MoE metadata kernel writes the per-expert arrays into (moe.py):
    one per (stream, call signature), from the caller's allocator, so launches in flight never share one."""
    key = (ordinal, stream, size, signature)
    hit = _moe_blocks.get(key)
    if hit is None:
        from aotc.runtime.scratch import allocate

        if len(_moe_blocks) >= METADATA_LIMIT:
            _moe_blocks.clear()
        hit = _moe_blocks[key] = allocate(size, ordinal, stream, like)
    return hit


def _pad(n: int) -> int:
    return (-n) % 16


def _group_metadata(infos: list, shapes: tuple, ordinal: int, stream: int, like: Any) -> int:
    """Device arrays the grouped kernel reads (problem sizes, pointers, leading dims), written on the
    device once per distinct problem and kept: identical calls reuse the same address, so the launch
    memo hits."""
    key = tuple((ai.ptr, bi.ptr, oi.ptr, ai.strides[0], bi.strides[0], oi.strides[0]) for ai, bi, oi in infos) + shapes
    hit = _metadata.get((ordinal, stream, key))
    if hit is not None:
        return hit[0]
    import array

    sizes = array.array("i", [v for s in shapes for v in s]).tobytes()
    sizes += bytes(_pad(len(sizes)))
    cols = [[ai.ptr for ai, _, _ in infos], [bi.ptr for _, bi, _ in infos], [oi.ptr for _, _, oi in infos],
            [ai.strides[0] for ai, _, _ in infos], [bi.strides[0] for _, bi, _ in infos],
            [oi.strides[0] for _, _, oi in infos]]
    blob = sizes + b"".join(array.array("q", col).tobytes() for col in cols)
    return device_block((ordinal, stream, key), blob, ordinal, stream, like)


def device_block(key: tuple, blob: bytes, ordinal: int, stream: int, like: Any, keep: Any = None) -> int:
    """Device copy of `blob`, written by the aotc_fill kernel on `stream` into memory from the caller's
    allocator (no host copy, no allocation by aotc, so it is capturable in a CUDA graph), kept under
    `key` (with `keep`, host memory the launch args point to) until METADATA_LIMIT distinct problems
    are held; then the cache starts over (the memory goes back to its allocator)."""
    from aotc.runtime.metadata import fill
    from aotc.runtime.scratch import allocate

    if len(_metadata) >= METADATA_LIMIT:
        _metadata.clear()
    blob += bytes(_pad(len(blob)))
    ptr, owner = allocate(len(blob), ordinal, stream, like)
    fill(ordinal, stream, ptr, blob)
    _metadata[key] = (ptr, len(blob), (owner, keep))
    return ptr


# ---- NVFP4 block-scaled GEMMs (SM120/SM121 only) -------------------------------------------------
NVFP4_DENSE = "gemm_blockscaled_sm120"
NVFP4_GROUPED = "grouped_gemm_blockscaled_sm120"
NVFP4_MATCH = {"a_dtype": "nvfp4", "b_dtype": "nvfp4", "out_dtype": "bf16"}
FP4_PACKED = ("u8", "i8", "e2m1x2")  # two e2m1 values per byte, low nibble first
SF_BYTES = ("u8", "e4m3")  # ue4m3 scale factors as raw bytes (torch has no unsigned e4m3)
NVFP4_SF_VEC = 16  # one scale factor per 16 elements along K
NVFP4_K_GRANULE = 4 * NVFP4_SF_VEC  # K step of one CUTLASS scale-factor atom (Blk_SF = 4)
SF_ATOM_ROWS = 128  # the interleaved SF layout pads M (and N) to 128 rows
OUT_ALIGN = 8  # bf16 elements in 16 bytes: D rows must start 16-byte aligned


def nvfp4_sf_bytes(rows: int, k: int) -> int:
    """Bytes of one operand's scale factors in CUTLASS's interleaved SF layout (SFA: rows = M,
    SFB: rows = N): rows padded to 128, K/16 scale factors padded to 4 per row."""
    sf_cols = -(-k // NVFP4_SF_VEC)
    return -(-rows // SF_ATOM_ROWS) * SF_ATOM_ROWS * (-(-sf_cols // 4) * 4)


def check_nvfp4_problem(m: int, n: int, k: int, where: str = "") -> None:
    """AOTC-RT-006 when (m, n, k) cannot run: sizes positive, K a multiple of 64, N a multiple of 8."""
    at = f" ({where})" if where else ""
    if m <= 0 or n <= 0 or k <= 0:
        raise runtime_error(BAD_TENSOR, f"NVFP4 GEMM problem {m} x {n} x {k}{at}: M, N and K must be positive",
                            "pass the real problem sizes")
    if k % NVFP4_K_GRANULE:
        raise runtime_error(BAD_TENSOR, f"NVFP4 GEMM K = {k}{at} is not a multiple of {NVFP4_K_GRANULE} "
                            f"(4 scale factors x {NVFP4_SF_VEC} elements)",
                            f"zero-pad K to {-(-k // NVFP4_K_GRANULE) * NVFP4_K_GRANULE} (A, B and their scale factors)")
    if n % OUT_ALIGN:
        raise runtime_error(BAD_TENSOR, f"NVFP4 GEMM N = {n}{at} is not a multiple of {OUT_ALIGN}: bf16 output rows "
                            "must start 16-byte aligned", f"pad N to {-(-n // OUT_ALIGN) * OUT_ALIGN}")


def _nvfp4_operands(a: Any, b: Any, sfa: Any, sfb: Any, out: Any, m: int, n: int, k: int,
                    suffix: str = "") -> tuple[TensorInfo, ...]:
    """TensorInfos of one problem's operands, checked: A [M, K/2] and B [N, K/2] packed FP4 bytes,
    SFA/SFB scale-factor bytes of at least the interleaved layout's size, out [M, N] bf16."""
    check_nvfp4_problem(m, n, k, f"group {suffix.strip('[]')}" if suffix else "")
    ai = tensor_info(a)
    ordinal = device_of(ai, f"a{suffix}")
    expect(ai, f"a{suffix}", dtype=FP4_PACKED, shape=(m, k // 2), device=ordinal)
    bi = expect(tensor_info(b), f"b{suffix}", dtype=FP4_PACKED, shape=(n, k // 2), device=ordinal)
    sf = []
    for name, obj, rows in ((f"sfa{suffix}", sfa, m), (f"sfb{suffix}", sfb, n)):
        info = expect(tensor_info(obj), name, dtype=SF_BYTES, device=ordinal)
        need = nvfp4_sf_bytes(rows, k)
        if info.numel < need:
            raise runtime_error(BAD_TENSOR, f"argument {name!r} holds {info.numel} scale-factor bytes; rows={rows}, "
                                f"K={k} need {need} (rows padded to {SF_ATOM_ROWS}, K/{NVFP4_SF_VEC} padded to 4)",
                                "allocate the interleaved SF layout in full (zero the padding)", argument=name)
        sf.append(info)
    oi = expect(tensor_info(out), f"out{suffix}", dtype="bf16", shape=(m, n), device=ordinal)
    return ai, bi, sf[0], sf[1], oi


def nvfp4_kernel(family: str, device: Device, signature: tuple, problem: dict, params: dict | None,
                 matches: dict = NVFP4_MATCH) -> Kernel:
    """The stored NVFP4 kernel for `problem`; AOTC-RT-003 first when the device is not SM120/SM121,
    so a wrong device is named before any tensor memory or driver module is touched."""
    from aotc.arch import ARCHES

    if not any(ARCHES[t].sm in (120, 121) for t in device.runnable_targets()):
        raise runtime_error(TARGET_MISMATCH, f"{family} is built only for sm120a, sm120f and sm121a (block-scaled "
                            f"mma.sync of SM120/SM121); {device.label} cannot run it",
                            "run NVFP4 GEMMs on an RTX 50x0, RTX PRO 6000 or GB10; on other devices use a "
                            "family built for them (e.g. grouped_gemm with bf16 operands)",
                            family=family, device_cc=list(device.cc))
    return choose(family, device, signature, matches, problem, params)


def gemm_nvfp4(a: Any, b: Any, sfa: Any, sfb: Any, out: Any, *, m: int, n: int, k: int, alpha: float = 1.0,
               stream: Any = None, params: dict | None = None) -> Kernel:
    """Dense NVFP4 GEMM on SM120/SM121: out = alpha * (A*SFA) @ (B*SFB)^T in bf16.

    a [M, K/2] and b [N, K/2]: packed e2m1 bytes (uint8/int8 or torch.float4_e2m1fn_x2), row-major
    (B is the N x K weight, i.e. column-major K x N); sfa/sfb: ue4m3 bytes in CUTLASS's interleaved
    SF layout (nvfp4_sf_bytes each); out [M, N] bf16. K % 64 == 0, N % 8 == 0. Returns the kernel."""
    m, n, k = int(m), int(n), int(k)
    ai, bi, sai, sbi, oi = _nvfp4_operands(a, b, sfa, sfb, out, m, n, k)
    ordinal = device_of(ai, "a")
    device = query_device(ordinal)
    kernel = nvfp4_kernel(NVFP4_DENSE, device, (m, n, k), {"m": m, "n": n, "k": k}, params)
    args = kernel.args_type()
    args.ptr_A, args.ptr_B, args.ptr_SFA, args.ptr_SFB, args.ptr_D = ai.ptr, bi.ptr, sai.ptr, sbi.ptr, oi.ptr
    args.m, args.n, args.k, args.batch = m, n, k, 1
    args.alpha = float(alpha)
    args.sm_count = device.sm_count
    launch_with_workspace(kernel, args, ordinal, default_stream(a, ordinal) if stream is None
                           else stream_handle(stream), a)
    return kernel


def grouped_gemm_nvfp4(a: Sequence[Any], b: Sequence[Any], sfa: Sequence[Any], sfb: Sequence[Any],
                       out: Sequence[Any], *, problem_sizes: Sequence[Sequence[int]], alpha: float = 1.0,
                       stream: Any = None, params: dict | None = None) -> Kernel:
    """MoE-style grouped NVFP4 GEMM on SM120/SM121: out[i] = alpha * a[i] @ b[i]^T per group, with
    problem_sizes[i] = (M_i, N_i, K_i) and per-group operands laid out as in gemm_nvfp4."""
    g = len(problem_sizes)
    if not g or any(len(x) != g for x in (a, b, sfa, sfb, out)):
        raise runtime_error(BAD_TENSOR, f"grouped_gemm_nvfp4 got {g} problem sizes and {len(a)} A, {len(b)} B, "
                            f"{len(sfa)} SFA, {len(sfb)} SFB, {len(out)} out tensors",
                            "pass one (M, N, K) and one of each tensor per group (at least one group)")
    shapes = tuple((int(p[0]), int(p[1]), int(p[2])) for p in problem_sizes)
    infos = [_nvfp4_operands(*ops, *shape, suffix=f"[{i}]")
             for i, (ops, shape) in enumerate(zip(zip(a, b, sfa, sfb, out, strict=True), shapes, strict=True))]
    ordinal = device_of(infos[0][0], "a[0]")
    if any(info[0].device != infos[0][0].device for info in infos):
        raise runtime_error(BAD_TENSOR, "grouped_gemm_nvfp4 groups are on different devices",
                            "pass every group on one device")
    device = query_device(ordinal)
    kernel = nvfp4_kernel(NVFP4_GROUPED, device, shapes,
                          {"m": max(1, sum(s[0] for s in shapes) // g), "n": max(s[1] for s in shapes),
                           "k": max(s[2] for s in shapes), "groups": g}, params)
    args = kernel.args_type()
    args.num_groups, args.sm_count = g, device.sm_count
    handle = default_stream(a[0], ordinal) if stream is None else stream_handle(stream)
    _fill_nvfp4_group_arrays(args, kernel, infos, shapes, ordinal, handle, a[0])
    args.alpha_array, args.alpha, args.reserved = 0, float(alpha), 0
    launch_with_workspace(kernel, args, ordinal, handle, a[0])
    return kernel


def _metadata_fn(helper: Any) -> Any:
    import ctypes

    fn = getattr(helper.lib, "aotc_group_metadata", None)
    if fn is None:
        raise runtime_error(HELPER_ABI, f"the host helper of {helper.what} exports no aotc_group_metadata()",
                            "rebuild the kernel with this aotc version")
    u64p = ctypes.POINTER(ctypes.c_uint64)
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, u64p, u64p,
                   ctypes.c_char_p, ctypes.c_int]
    return fn


def group_metadata(helper: Any, shapes: Sequence[tuple[int, int, int]]) -> tuple[bytes, tuple[int, ...]]:
    """The helper's per-group CUTLASS strides and SF layouts (aotc_group_metadata): host bytes and the
    byte offsets of its 5 arrays (stride_A, stride_B, stride_D, layout_SFA, layout_SFB). No driver."""
    import ctypes

    fn = _metadata_fn(helper)
    sizes = (ctypes.c_int32 * (3 * len(shapes)))(*[v for s in shapes for v in s])
    offsets, needed, err = (ctypes.c_uint64 * 5)(), ctypes.c_uint64(), ctypes.create_string_buffer(512)
    out: Any = None
    for _ in range(2):  # first call: the size; second: the fill
        if fn(len(shapes), sizes, out, needed.value, offsets, ctypes.byref(needed), err, len(err)) != 0:
            raise runtime_error(PROBLEM_REJECTED, f"{helper.what}: aotc_group_metadata failed for {len(shapes)} "
                                f"groups: {err.value.decode(errors='replace') or 'no reason given'}",
                                "pass at least one group, every M, N and K positive")
        if out is None:
            out = ctypes.create_string_buffer(needed.value)
    return bytes(out), tuple(offsets)


def _fill_nvfp4_group_arrays(args: Any, kernel: Kernel, infos: list, shapes: tuple, ordinal: int, stream: int,
                             like: Any) -> None:
    """Point the args at one device block: problem sizes, the 5 pointer arrays (A, B, SFA, SFB, D),
    then the helper's strides/SF layouts. Written on the device once per distinct problem and kept
    with its host problem sizes (CUTLASS reads those on the host): the same addresses let the launch
    memo hit."""
    key = (kernel.spec_key, ordinal, stream, tuple(tuple(i.ptr for i in info) for info in infos), shapes)
    hit = _metadata.get(key)
    if hit is None:
        hit = _upload_nvfp4_group(key, kernel, infos, shapes, ordinal, stream, like)
    fields = hit[2][1][1]  # hit[2][1][0]: the host problem sizes, kept alive with the device block
    (args.problem_sizes, args.host_problem_sizes, args.ptr_A, args.ptr_B, args.ptr_SFA, args.ptr_SFB, args.ptr_D,
     args.stride_A, args.stride_B, args.stride_D, args.layout_SFA, args.layout_SFB) = fields


def nvfp4_group_block(infos: list, shapes: tuple, meta: bytes, offsets: Sequence[int]) -> tuple[bytes, list[int]]:
    """The device block of a grouped launch and the byte offset of each of its 11 device arrays
    (problem sizes, A, B, SFA, SFB, D pointers, then the helper's 5 arrays), all 16-byte aligned."""
    import array

    parts = [array.array("i", [v for s in shapes for v in s]).tobytes()]
    parts += [array.array("q", [info[j].ptr for info in infos]).tobytes() for j in range(5)]
    blob, at = b"", []
    for part in parts:
        at.append(len(blob))
        blob += part + bytes(_pad(len(part)))
    at += [len(blob) + o for o in offsets]
    return blob + meta, at


def _upload_nvfp4_group(key: tuple, kernel: Kernel, infos: list, shapes: tuple, ordinal: int, stream: int,
                        like: Any) -> tuple:
    import ctypes

    meta, offsets = group_metadata(kernel._helper, shapes)
    blob, at = nvfp4_group_block(infos, shapes, meta, offsets)
    host_sizes = (ctypes.c_int32 * (3 * len(shapes)))(*[v for s in shapes for v in s])
    ptr = device_block(key, blob, ordinal, stream, like)
    fields = (ptr + at[0], ctypes.addressof(host_sizes), *(ptr + o for o in at[1:]))
    owner = _metadata[key][2][0]
    _metadata[key] = (ptr, len(blob), (owner, (host_sizes, fields)))
    return _metadata[key]

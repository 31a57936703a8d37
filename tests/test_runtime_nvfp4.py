"""NVFP4 runtime entry points, host side: a real sm120a build of moe_w4a4/tile=128x128x128, its real
host helper (aotc_group_metadata, aotc_query) called through the runtime's ctypes code, the device
block layout the grouped launch uploads, and the target error on a non-SM120 device. No GPU needed."""

from __future__ import annotations

import ctypes
from typing import ClassVar

import pytest

import aotc.runtime as rt
from aotc.diagnostics import AotcError
from aotc.families import get_family
from aotc.runtime import gemm, ops
from aotc.runtime.device import Device, device_from_capability
from aotc.runtime.loader import AotcLaunch
from aotc.runtime.tensors import TensorInfo

SPEC = "moe_w4a4/tile=128x128x128"
FAMILY = "grouped_gemm_blockscaled_sm120"
SHAPES = ((128, 256, 512), (7, 4096, 1024), (300, 8, 64))  # (M, N, K) per group
H100 = Device(ordinal=0, cc=(9, 0), name="NVIDIA H100", smem_optin_bytes=232_448, sm_count=132)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(params, sources) of a real sm120a build of SPEC (about 2 nvcc minutes)."""
    from aotc.arch import parse_arch_list
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache

    specs = [s for s in load_specs().specs if s.name == SPEC]
    assert specs, f"catalog lost {SPEC}"
    cache = Cache(tmp_path_factory.mktemp("nvfp4-cache"))
    summary = build(specs, parse_arch_list("sm120a"), cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return dict(specs[0].params), [rt.CacheSource(cache)]


@pytest.fixture(scope="module")
def helper(built):
    params, sources = built
    return rt.host_kernel(rt.find(FAMILY, params, device_from_capability((12, 0)), sources=sources)).helper


def _args(groups: int, k: int) -> ctypes.Structure:
    """Grouped args for aotc_query: device arrays are never read by the host helper, so any nonzero
    aligned address does; the host problem sizes are real."""
    args = get_family(FAMILY).args_struct()
    sizes = (ctypes.c_int32 * (3 * groups))(*([256, 256, k] * groups))
    args._keep = sizes  # lives as long as the args
    args.num_groups, args.sm_count, args.alpha = groups, 170, 1.0
    args.host_problem_sizes = ctypes.addressof(sizes)
    for i, name in enumerate(("problem_sizes", "ptr_A", "ptr_B", "ptr_SFA", "ptr_SFB", "ptr_D", "stride_A",
                              "stride_B", "stride_D", "layout_SFA", "layout_SFB")):
        setattr(args, name, 0x7F00_0000_0000 + 0x10000 * i)
    return args


def _query(helper, args) -> tuple[int, AotcLaunch, str]:
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    rc = helper.query_fn(ctypes.addressof(args), ctypes.byref(out), err, 512)
    return rc, out, err.value.decode()


def _spans(meta: bytes, offsets: tuple[int, ...]) -> list[int]:
    return [b - a for a, b in zip(offsets, (*offsets[1:], len(meta)), strict=True)]


@pytest.mark.compile
def test_group_metadata_is_five_aligned_arrays_of_one_element_per_group(helper):
    spans = {}
    for g in (1, 2, 3, 4, 16):  # 16 groups: 16 B rounding can no longer hide the element size
        meta, offsets = gemm.group_metadata(helper, (SHAPES * 6)[:g])
        assert len(offsets) == 5 and all(o % 16 == 0 for o in offsets), offsets
        spans[g] = _spans(meta, offsets)
    # Each array is G elements of one fixed size, rounded up to 16 B: find that size per array.
    elems = []
    for i in range(5):
        fits = [e for e in range(1, 65) if all(spans[g][i] == -(-e * g // 16) * 16 for g in spans)]
        assert fits, (i, spans)
        elems.append(fits[0])
    # A, B, D strides of packed row-major operands keep one dynamic int64 (the row stride).
    assert elems[:3] == [8, 8, 8], elems
    assert elems[3] == elems[4], elems  # SFA and SFB layouts are one type


@pytest.mark.compile
def test_group_metadata_strides_follow_each_group(helper):
    # make_cute_packed_stride of row-major A [M, K], B [N, K] and D [M, N]: row strides K, K and N.
    meta, offsets = gemm.group_metadata(helper, SHAPES)

    def column(i: int) -> list[int]:
        return [int.from_bytes(meta[offsets[i] + 8 * g:offsets[i] + 8 * g + 8], "little") for g in range(len(SHAPES))]

    assert column(0) == [k for _, _, k in SHAPES]
    assert column(1) == [k for _, _, k in SHAPES]
    assert column(2) == [n for _, n, _ in SHAPES]
    # The SF layouts depend on the shapes, not only on G.
    other, _ = gemm.group_metadata(helper, ((128, 128, 128),) * len(SHAPES))
    assert other[offsets[3]:] != meta[offsets[3]:]


@pytest.mark.compile
def test_device_block_layout_is_aligned_and_points_at_each_array(helper):
    infos = [tuple(TensorInfo(0x1000 * (10 * g + j + 1), (1,), (1,), "u8", 0) for j in range(5))
             for g in range(len(SHAPES))]
    meta, offsets = gemm.group_metadata(helper, SHAPES)
    blob, at = gemm.nvfp4_group_block(infos, SHAPES, meta, offsets)
    assert len(at) == 11 and all(o % 16 == 0 for o in at)
    g = len(SHAPES)
    sizes = [int.from_bytes(blob[at[0] + 4 * i:at[0] + 4 * i + 4], "little") for i in range(3 * g)]
    assert sizes == [v for s in SHAPES for v in s]
    for j in range(5):  # pointer arrays A, B, SFA, SFB, D: one 8-byte address per group
        got = [int.from_bytes(blob[at[1 + j] + 8 * i:at[1 + j] + 8 * i + 8], "little") for i in range(g)]
        assert got == [infos[i][j].ptr for i in range(g)]
    assert blob[at[6]:] == meta and at[6:] == [at[6] + o for o in offsets]


@pytest.mark.compile
def test_helper_query_accepts_aligned_k_and_refuses_misaligned_k(helper):
    # Without a driver CUTLASS's TMA descriptor set-up prints errors to stdout; the query still answers.
    rc, launch, err = _query(helper, _args(2, 128))
    assert rc == 0, err
    assert launch.smem_bytes == 84_992  # the catalog's SMEM model figure for this tile (4 auto stages)
    assert launch.block[0] > 0 and launch.params_bytes > 0
    for k in (80, 48, 16):  # packed FP4 rows of K/2 bytes that are not a multiple of 16 B
        rc, _, err = _query(helper, _args(2, k))
        assert rc != 0, k
        assert "can_implement() rejected the 2-group problem" in err and "16-byte aligned" in err
    # The real CUTLASS gate is 16-byte rows (K % 32), not the 64 granule the message names: K = 96
    # passes. The Python entry points keep K % 64 (a whole scale-factor atom), the proven case.
    rc, _, err = _query(helper, _args(2, 96))
    assert rc == 0, err


def test_python_side_refuses_k_off_the_granule_with_numbers():
    with pytest.raises(AotcError) as exc:
        gemm.check_nvfp4_problem(256, 256, 96)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-006"
    assert "K = 96" in diag.message and "multiple of 64" in diag.message and "pad K to 128" in diag.fix
    with pytest.raises(AotcError, match="N = 12"):
        gemm.check_nvfp4_problem(256, 12, 128)


def test_sf_bytes_pad_rows_to_128_and_sf_columns_to_4():
    assert gemm.nvfp4_sf_bytes(128, 64) == 128 * 4
    assert gemm.nvfp4_sf_bytes(1, 64) == 128 * 4
    assert gemm.nvfp4_sf_bytes(129, 128) == 256 * 8
    assert gemm.nvfp4_sf_bytes(300, 1024) == 384 * 64


@pytest.mark.compile
def test_sm120a_kernel_on_an_h100_is_a_target_error(built):
    params, sources = built
    with pytest.raises(AotcError) as exc:
        rt.get_kernel(FAMILY, params, device=H100, arch="sm120a", sources=sources)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-003"
    assert "sm120a" in diag.message and "NVIDIA H100" in diag.message


def test_entry_point_names_the_target_before_any_lookup():
    # No driver and no cache here: reaching the lookup or the driver would raise RT-001/RT-002.
    for family in (gemm.NVFP4_DENSE, gemm.NVFP4_GROUPED):
        with pytest.raises(AotcError) as exc:
            gemm.nvfp4_kernel(family, H100, (1,), {"m": 1, "n": 8, "k": 64}, None)
        diag = exc.value.diagnostics[0]
        assert diag.code == "AOTC-RT-003"
        assert "sm120a" in diag.message and "compute capability 9.0" in diag.message


# ---- the launch path's driver calls, recorded (no SM120 GPU here: the calls, not their effects) ----
DENSE_SPEC = "gemm_nvfp4/tile=128x128x128"
# Calls a CUDA graph capture refuses or that would stall a serving loop: allocations, copies
# through the host, synchronizations. (cuMemset*Async is stream-ordered: a memset node in a graph.)
FORBIDDEN = ("cuMemAlloc", "cuMemFree", "cuMemcpy", "cuMemHostAlloc", "cuMemHostRegister", "cuMemset",
             "Synchronize", "cuStreamQuery", "cuEventQuery")


class _Enum:
    """Stand-in for a cuda.bindings enum class: any member name is itself."""

    def __getattr__(self, name: str) -> str:
        return name


class RecordingDriver:
    """Answers the driver calls of the runtime as an RTX 5090 would (cc 12.0, 170 SMs, 101,376 B of
    opt-in SMEM) and records each one: (name, args). Anything not answered below is recorded and
    fails the call, so a new driver call on the path shows up in the test."""

    CUdevice_attribute = CUfunction_attribute = CUpointer_attribute = _Enum()
    ATTRIBUTES: ClassVar[dict[str, int]] = {"CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 12, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": 0,
                  "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": 101_376,
                  "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT": 170}
    CONTEXT = 0xC0_0000

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.fills: list[bytes] = []  # what each aotc_fill launch writes, copied at launch time
        self.routing: list[bytes] = []  # the parameters of each aotc_moe_blockscaled_groups launch, likewise
        self._handles = iter(range(0x1000, 1 << 30, 0x10))
        answers = {
            "cuInit": lambda *a: (0,), "cuDeviceGetCount": lambda: (0, 1), "cuDeviceGet": lambda i: (0, i),
            "cuDeviceGetAttribute": lambda attr, dev: (0, self.ATTRIBUTES[attr]),
            "cuDeviceGetName": lambda n, dev: (0, b"NVIDIA GeForce RTX 5090\0"),
            "cuDevicePrimaryCtxRetain": lambda dev: (0, self.CONTEXT), "cuCtxSetCurrent": lambda ctx: (0,),
            "cuLibraryLoadData": lambda *a: (0, next(self._handles)),
            "cuLibraryGetKernel": lambda lib, name: (0, next(self._handles)),
            "cuKernelGetFunction": lambda kernel: (0, next(self._handles)),
            "cuModuleLoadData": lambda image: (0, next(self._handles)),
            "cuModuleGetFunction": lambda module, name: (0, next(self._handles)),
            "cuFuncSetAttribute": lambda *a: (0,),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor": lambda *a: (0, 1),
            "cuPointerGetAttribute": lambda attr, ptr: (0, 0),
            "cuGetErrorName": lambda err: (0, b"CUDA_ERROR_RECORDED"),
            "cuDriverGetVersion": lambda: (0, 13000),  # the tune tables' device identity
            "cuLaunchKernel": self._launch, "cuMemsetD8Async": lambda *a: (0,),
            "CUstream": lambda handle: handle, "CUresult": lambda err: err,
        }
        self._answers = answers

    def _launch(self, *call) -> tuple[int]:
        """cuLaunchKernel: an aotc_fill launch's parameter bytes are copied now, as the driver does
        (its parameter buffers are gone once the call returns)."""
        from aotc.runtime import metadata

        functions = metadata._modules.get(0, (None,) * 3)  # (module, aotc_fill, aotc_moe_blockscaled_groups)
        if functions[1] is not None and call[0] == functions[1]:
            self.fills.append(fill_bytes(call))
        if functions[2] is not None and call[0] == functions[2]:  # aotc_moe_blockscaled_groups: its struct
            first_field = (ctypes.c_void_p * 1).from_address(call[9])[0]
            self.routing.append(ctypes.string_at(first_field, ctypes.sizeof(metadata.MoeBlockScaledParams)))
        return (0,)

    def __getattr__(self, name: str):
        def call(*args):
            self.calls.append((name, args))
            if name not in self._answers:
                raise AssertionError(f"unexpected driver call {name}{args}")
            return self._answers[name](*args)
        return call


class RecordingNative:
    """The ctypes half of the hot path (cuCtxGetCurrent), recorded into the same list."""

    def __init__(self, driver: RecordingDriver):
        self.calls = driver.calls

    def current_context(self) -> int:
        self.calls.append(("cuCtxGetCurrent", ()))
        return RecordingDriver.CONTEXT


def fill_bytes(call: tuple) -> bytes | None:
    """The bytes an aotc_fill launch writes (its by-value blob), read through its kernelParams."""
    pointers = (ctypes.c_void_p * 3).from_address(call[9])
    nbytes = ctypes.c_uint32.from_address(pointers[1]).value
    return ctypes.string_at(pointers[2], nbytes)


class DeviceBytes:
    """A DLPack producer for device memory at a made-up address: what tensor_info reads, nothing
    behind it (the host never dereferences device pointers)."""

    CODES: ClassVar[dict[str, tuple[int, int]]] = {"u8": (1, 8), "bf16": (4, 16), "i32": (0, 32), "f32": (2, 32)}

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: str):
        from aotc.runtime.dlpack import _DLTensor

        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._dl = _DLTensor()
        self._dl.data, self._dl.ndim, self._dl.shape = ptr, len(shape), self._shape
        self._dl.device.device_type, self._dl.device.device_id = 2, 0  # kDLCUDA, device 0
        self._dl.dtype.code, self._dl.dtype.bits = self.CODES[dtype]
        self._dl.dtype.lanes = 1

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)

    def __dlpack__(self, stream=None):
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self._dl), b"dltensor", None)


@pytest.fixture(scope="module")
def built_dense(tmp_path_factory):
    """(params, sources) of a real sm120a build of DENSE_SPEC (about 2 nvcc minutes)."""
    from aotc.arch import parse_arch_list
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache

    specs = [s for s in load_specs().specs if s.name == DENSE_SPEC]
    assert specs, f"catalog lost {DENSE_SPEC}"
    cache = Cache(tmp_path_factory.mktemp("nvfp4-dense-cache"))
    summary = build(specs, parse_arch_list("sm120a"), cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return dict(specs[0].params), [rt.CacheSource(cache)]


QUANTIZE_SPECS = ("quantize_nvfp4/in_dtype=bf16", "quantize_mxfp8/in_dtype=bf16")


@pytest.fixture(scope="module")
def built_quantize(tmp_path_factory):
    """Sources of real sm120a builds of both bf16 quantize kernels (small TUs, no CUTLASS)."""
    from aotc.arch import parse_arch_list
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache

    specs = [s for s in load_specs().specs if s.name in QUANTIZE_SPECS]
    assert len(specs) == len(QUANTIZE_SPECS), "catalog lost a quantize spec"
    cache = Cache(tmp_path_factory.mktemp("quantize-cache"))
    summary = build(specs, parse_arch_list("sm120a"), cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return [rt.CacheSource(cache)]


@pytest.fixture
def recording(monkeypatch, built, built_dense, built_quantize):
    """The runtime wired to a RecordingDriver, with both real sm120a builds as its sources and a
    caller's allocator handing out made-up addresses (recorded as 'allocator' calls)."""
    from aotc.runtime import device, lookup, metadata, moe, registry, scratch

    drv = RecordingDriver()
    for name, value in (("_cu", drv), ("_native", RecordingNative(drv)), ("_devices", {}), ("_contexts", {}),
                        ("_context_handles", {})):
        monkeypatch.setattr(device, name, value)
    monkeypatch.setattr(metadata, "_modules", {})
    for name in ("_fast", "_workspaces", "_choices"):
        monkeypatch.setattr(ops, name, {})
    for name in ("_metadata", "_moe_blocks"):
        monkeypatch.setattr(gemm, name, {})
    monkeypatch.setattr(moe, "_plans", {})
    monkeypatch.setattr(lookup, "_sources", built[1] + built_dense[1] + built_quantize)
    addresses = iter(range(0x7E00_0000_0000, 1 << 48, 1 << 20))

    def allocator(nbytes, ordinal, stream):
        drv.calls.append(("allocator", (nbytes, ordinal, stream)))
        return next(addresses), None

    scratch.set_allocator(allocator)
    registry.clear()
    yield drv
    scratch.set_allocator(None)
    registry.clear()


def _nvfp4_operands(base: int, m: int, n: int, k: int) -> tuple[DeviceBytes, ...]:
    return (DeviceBytes(base, (m, k // 2), "u8"), DeviceBytes(base + 0x100_0000, (n, k // 2), "u8"),
            DeviceBytes(base + 0x200_0000, (gemm.nvfp4_sf_bytes(m, k),), "u8"),
            DeviceBytes(base + 0x300_0000, (gemm.nvfp4_sf_bytes(n, k),), "u8"),
            DeviceBytes(base + 0x400_0000, (m, n), "bf16"))


def _forbidden(calls: list) -> list:
    return [c for c in calls if any(word in c[0] for word in FORBIDDEN)
            and not (c[0].startswith("cuMemset") and c[0].endswith("Async"))]


@pytest.mark.compile
def test_nvfp4_launch_paths_make_no_allocation_copy_or_sync_driver_call(recording, capfd):
    from aotc.runtime import metadata

    stream = 0x5157
    m, n, k = 256, 512, 256
    dense = _nvfp4_operands(0x7F00_0000_0000, m, n, k)
    kernel = rt.gemm_nvfp4(*dense, m=m, n=n, k=k, stream=stream)
    assert kernel.name.startswith("gemm_nvfp4")
    groups = [_nvfp4_operands(0x7F10_0000_0000 + 0x10_0000_0000 * g, *shape) for g, shape in enumerate(SHAPES)]
    grouped = rt.grouped_gemm_nvfp4(*zip(*groups, strict=True), problem_sizes=SHAPES, stream=stream)
    first = list(recording.calls)
    assert _forbidden(first) == [], _forbidden(first)
    launches = [c for c in first if c[0] == "cuLaunchKernel"]
    assert all(c[1][8] == stream for c in launches)  # every launch on the caller's stream
    # The grouped metadata reached the device through aotc_fill launches (by-value parameters, no
    # copy call); their bytes are exactly the block the grouped kernel's args point into.
    fill_fn = metadata._modules[0][1]
    fills = [c for c in launches if c[1][0] == fill_fn]
    assert fills and launches[-1][1][0] != fill_fn  # fills first, then the GEMM
    assert len(recording.fills) == len(fills)
    written = b"".join(recording.fills)
    infos = [tuple(rt.tensor_info(t) for t in ops_) for ops_ in groups]
    meta, offsets = gemm.group_metadata(grouped._helper, SHAPES)
    blob, _ = gemm.nvfp4_group_block(infos, SHAPES, meta, offsets)
    assert written[:len(blob)] == blob
    # Warm calls of the same problems: one context read and one launch each, nothing else.
    recording.calls.clear()
    rt.gemm_nvfp4(*dense, m=m, n=n, k=k, stream=stream)
    rt.grouped_gemm_nvfp4(*zip(*groups, strict=True), problem_sizes=SHAPES, stream=stream)
    assert [c[0] for c in recording.calls if c[0] != "cuCtxGetCurrent"] == ["cuLaunchKernel", "cuLaunchKernel"]
    capfd.readouterr()  # CUTLASS's TMA set-up without a driver prints to stdout


def _warm_calls(calls: list) -> list[str]:
    """Driver calls of a warm op call, leaving out the context read and CUstream (a handle wrapper of
    cuda.bindings, not a driver call)."""
    return [c[0] for c in calls if c[0] not in ("cuCtxGetCurrent", "CUstream")]


@pytest.mark.compile
def test_device_routed_moe_and_quantize_launch_paths_make_no_allocation_copy_or_sync(recording, capfd):
    """grouped_gemm_moe_nvfp4 (expert offsets on the device, per-expert alpha) and both quantize ops on
    real sm120a builds: nothing but the caller's allocator, zero fills ordered on the stream and
    launches; the routing kernel's parameters are metadata_params of the plan, the block and the tensors."""
    from aotc.runtime import metadata, moe, quantize

    stream = 0x5157
    experts, tokens, n, k = 8, 300, 256, 256
    at = iter(range(0x7F40_0000_0000, 1 << 48, 0x1_0000_0000))
    a = DeviceBytes(next(at), (tokens, k // 2), "u8")
    b = DeviceBytes(next(at), (experts, n, k // 2), "u8")
    sfa = DeviceBytes(next(at), (moe.moe_sf_bytes(tokens, experts, k),), "u8")
    sfb = DeviceBytes(next(at), (experts * gemm.nvfp4_sf_bytes(n, k),), "u8")
    out, offsets = DeviceBytes(next(at), (tokens, n), "bf16"), DeviceBytes(next(at), (experts + 1,), "i32")
    alpha = DeviceBytes(next(at), (experts,), "f32")
    kernel = rt.grouped_gemm_moe_nvfp4(a, b, sfa, sfb, out, offsets, alpha=alpha, stream=stream)
    x = DeviceBytes(next(at), (tokens, k), "bf16")
    q, sf = DeviceBytes(next(at), (tokens, k // 2), "u8"), DeviceBytes(next(at), (gemm.nvfp4_sf_bytes(tokens, k),), "u8")
    rt.quantize_nvfp4(x, q, sf, global_scale=0.5, stream=stream)
    q8 = DeviceBytes(next(at), (tokens, k), "u8")
    rt.quantize_mxfp8(x, q8, DeviceBytes(next(at), (quantize.sf_bytes(tokens, k, "mxfp8"),), "u8"), stream=stream)
    first = list(recording.calls)
    assert _forbidden(first) == [], _forbidden(first)
    launches = [c for c in first if c[0] == "cuLaunchKernel"]
    assert all(c[1][8] == stream for c in launches)
    routing = metadata._modules[0][2]
    assert [c[1][0] == routing for c in launches] == [True, False, False, False]  # routing, GEMM, 2 quantize
    assert launches[1][1][0] == kernel._function
    # The routing launch's parameters, copied at launch time, are what the plan gives for the block the
    # allocator handed out and the caller's tensors.
    plan = moe._plans[(kernel.spec_key, kernel.arch, experts, n, k)]
    assert ("allocator", (plan.size, 0, stream)) in first
    (sent,) = recording.routing
    block = metadata.MoeBlockScaledParams.from_buffer_copy(sent).out
    want = moe.metadata_params(plan, block, *(rt.tensor_info(t).ptr for t in (offsets, a, b, sfa, sfb, out, alpha)),
                               experts, n, k, "nvfp4")
    assert sent == bytes(want)
    # Warm calls: launches only.
    recording.calls.clear()
    rt.grouped_gemm_moe_nvfp4(a, b, sfa, sfb, out, offsets, alpha=alpha, stream=stream)
    rt.quantize_nvfp4(x, q, sf, global_scale=0.5, stream=stream)
    assert _warm_calls(recording.calls) == ["cuLaunchKernel"] * 3
    capfd.readouterr()

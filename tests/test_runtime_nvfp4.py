"""NVFP4 runtime entry points, host side: a real sm120a build of moe_w4a4/tile=128x128x128, its real
host helper (aotc_group_metadata, aotc_query) called through the runtime's ctypes code, the device
block layout the grouped launch uploads, and the target error on a non-SM120 device. No GPU needed."""

from __future__ import annotations

import ctypes

import pytest

import aotc.runtime as rt
from aotc.diagnostics import AotcError
from aotc.families import get_family
from aotc.runtime import ops
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
        meta, offsets = ops.group_metadata(helper, (SHAPES * 6)[:g])
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
    meta, offsets = ops.group_metadata(helper, SHAPES)

    def column(i: int) -> list[int]:
        return [int.from_bytes(meta[offsets[i] + 8 * g:offsets[i] + 8 * g + 8], "little") for g in range(len(SHAPES))]

    assert column(0) == [k for _, _, k in SHAPES]
    assert column(1) == [k for _, _, k in SHAPES]
    assert column(2) == [n for _, n, _ in SHAPES]
    # The SF layouts depend on the shapes, not only on G.
    other, _ = ops.group_metadata(helper, ((128, 128, 128),) * len(SHAPES))
    assert other[offsets[3]:] != meta[offsets[3]:]


@pytest.mark.compile
def test_device_block_layout_is_aligned_and_points_at_each_array(helper):
    infos = [tuple(TensorInfo(0x1000 * (10 * g + j + 1), (1,), (1,), "u8", 0) for j in range(5))
             for g in range(len(SHAPES))]
    meta, offsets = ops.group_metadata(helper, SHAPES)
    blob, at = ops.nvfp4_group_block(infos, SHAPES, meta, offsets)
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
        ops.check_nvfp4_problem(256, 256, 96)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-006"
    assert "K = 96" in diag.message and "multiple of 64" in diag.message and "pad K to 128" in diag.fix
    with pytest.raises(AotcError, match="N = 12"):
        ops.check_nvfp4_problem(256, 12, 128)


def test_sf_bytes_pad_rows_to_128_and_sf_columns_to_4():
    assert ops.nvfp4_sf_bytes(128, 64) == 128 * 4
    assert ops.nvfp4_sf_bytes(1, 64) == 128 * 4
    assert ops.nvfp4_sf_bytes(129, 128) == 256 * 8
    assert ops.nvfp4_sf_bytes(300, 1024) == 384 * 64


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
    for family in (ops.NVFP4_DENSE, ops.NVFP4_GROUPED):
        with pytest.raises(AotcError) as exc:
            ops.nvfp4_kernel(family, H100, (1,), {"m": 1, "n": 8, "k": 64}, None)
        diag = exc.value.diagnostics[0]
        assert diag.code == "AOTC-RT-003"
        assert "sm120a" in diag.message and "compute capability 9.0" in diag.message

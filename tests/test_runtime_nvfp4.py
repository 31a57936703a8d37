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
    from aotc.build import build
    from aotc.cache import Cache
    from aotc.spec import load_specs

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


@pytest.mark.compile
def test_group_metadata_has_five_aligned_arrays_sized_per_group(helper):
    sizes = []
    for g in (1, 2, 3):
        meta, offsets = ops.group_metadata(helper, SHAPES[:g])
        assert len(offsets) == 5
        assert all(o % 16 == 0 for o in offsets), offsets
        assert list(offsets) == sorted(offsets) and offsets[0] == 0 and offsets[-1] < len(meta)
        sizes.append((len(meta), offsets))
    # Each of the 5 arrays holds one element per group: the block grows with G, and with 2 groups
    # no array is smaller than one element (>= 4 B: a stride or a layout holds at least one int).
    (b1, o1), (b2, o2), (b3, o3) = sizes
    assert b1 < b2 < b3
    for i in range(4):
        assert o2[i + 1] - o2[i] >= o1[i + 1] - o1[i]
        assert o3[i + 1] - o3[i] >= o2[i + 1] - o2[i]


@pytest.mark.compile
def test_group_metadata_strides_follow_each_group(helper):
    # The A stride of a packed row-major [M, K] operand is (K, 1, M*K) in elements (CUTLASS
    # make_cute_packed_stride); the row stride K must appear in each group's stride_A element.
    meta, offsets = ops.group_metadata(helper, SHAPES)
    elem = (offsets[1] - offsets[0]) // len(SHAPES) if (offsets[1] - offsets[0]) % len(SHAPES) == 0 else None
    a_bytes = meta[offsets[0]:offsets[1]]
    for g, (_, _, k) in enumerate(SHAPES):
        values = [int.from_bytes(a_bytes[i:i + 8], "little", signed=True) for i in range(0, len(a_bytes) - 7, 8)]
        assert k in values, (g, k, values)
    assert elem is None or elem >= 8
    # Different shapes give different layouts: the bytes depend on the problem, not only on G.
    other, _ = ops.group_metadata(helper, ((64, 64, 128),) * len(SHAPES))
    assert other != meta


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
def test_helper_query_accepts_k_granule_and_refuses_other_k(helper):
    rc, launch, err = _query(helper, _args(2, 128))
    assert rc == 0, err
    assert launch.smem_bytes <= 101_376 and launch.block[0] > 0 and launch.params_bytes > 0
    rc, _, err = _query(helper, _args(2, 96))  # 96 = 1.5 x the NVFP4 K granule of 64
    assert rc != 0
    assert "2-group" in err and "multiple of 64" in err


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

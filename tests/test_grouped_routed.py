"""grouped_gemm_moe as one launch: the grouped_gemm_sm80 kernel derives each expert's problem from the
int32 expert offsets itself (aotc::routed_group in templates/gemm/grouped_sm80_types.j2), so no
metadata kernel runs first and no per-expert table is kept anywhere (no workspace, no extra SMEM).

One real build (moe_bf16_128x256 for sm_120a through the build pipeline: cubin verified, helper
.so) proves the template compiles and fits; its host helper then shows what a routed launch gets
(grid, SMEM, Params bytes) for any E, and runs the kernel's own derivation on host offsets. The
runtime's refusal of a helper built before the routed fields needs no compiler. Numerics against
torch (E = 8/64/128, empty experts, one expert with every token, strided rows, CUDA-graph replay):
tools/device_serving.py on a GPU."""

from __future__ import annotations

import ctypes
import itertools
import random
import struct
from types import SimpleNamespace

import pytest

from aotc.arch import get_arch
from aotc.diagnostics import AotcError
from aotc.families import get_family
from aotc.runtime import gemm
from aotc.runtime.loader import AotcLaunch

FAMILY = get_family("grouped_gemm_sm80")
ARGS = FAMILY.args_struct
SPEC = "moe_bf16_128x256"  # the catalog's smallest-SMEM SM80-class tile (73,744 B), bf16 only
ARCH = get_arch("sm120a")
A, B, D = 0x7F00_0000_0000, 0x7F10_0000_0000, 0x7F20_0000_0000  # stand-in device addresses
ROUTE = struct.Struct("<4Q4q2i")  # aotc::Route: offsets, a, b, d, lda, ldb, ldd, b_stride, n, k


def test_args_struct_appends_the_route_after_the_array_fields():
    """A helper built before the route fields reads the same array fields at the same offsets."""
    names = [n for n, _ in ARGS._fields_]
    assert names[:13] == ["num_groups", "threadblock_count", "problem_sizes", "ptr_A", "ptr_B", "ptr_C", "ptr_D",
                          "lda", "ldb", "ldc", "ldd", "alpha", "beta"]
    assert ARGS.beta.offset == 84 and ARGS.expert_offsets.offset == 88 and ctypes.sizeof(ARGS) == 160


def _kernel_with_helper(lib) -> SimpleNamespace:
    return SimpleNamespace(_helper=SimpleNamespace(lib=lib, what="grouped_gemm_sm80 for sm90a (abc)"),
                           args_type=ARGS, name=SPEC, arch="sm90a")


def test_a_helper_without_the_route_fields_is_refused_with_the_rebuild_command():
    with pytest.raises(AotcError) as exc:
        gemm._check_routed(_kernel_with_helper(SimpleNamespace()))  # exports no aotc_args_bytes
    d = exc.value.diagnostics[0]
    assert d.code == "AOTC-RT-005" and "an older B of AotcArgs" in d.message and "160 B" in d.message
    assert d.fix == f"rebuild it with this aotc version: aotc build --filter {SPEC} --arch sm90a"
    with pytest.raises(AotcError) as exc:
        gemm._check_routed(_kernel_with_helper(SimpleNamespace(aotc_args_bytes=lambda: 88)))
    assert "takes 88 B of AotcArgs" in exc.value.diagnostics[0].message
    gemm._check_routed(_kernel_with_helper(SimpleNamespace(aotc_args_bytes=lambda: 160)))  # the current layout


# ---- one real build ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    """moe_bf16_128x256 built for sm_120a by the pipeline (cubin compiled and verified), its helper loaded."""
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.cache import Cache
    from aotc.runtime.loader import Helper

    specs = [s for s in load_specs().specs if s.name == SPEC]
    assert specs, f"catalog lost {SPEC}"
    root = tmp_path_factory.mktemp("routed")
    cache = Cache(root / "cache")
    summary = build(specs, [ARCH], cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    (result,) = summary.results
    manifest = cache.get_manifest(result.key)
    path = root / "helper.so"
    path.write_bytes(cache.read_blob(manifest["blobs"]["helper"]["sha256"]))
    h = Helper(path, SPEC)
    h.lib.aotc_args_bytes.restype = ctypes.c_uint32
    h.lib.aotc_routed_group.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_char_p,
                                        ctypes.c_int]
    h.lib.aotc_tile_walk.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64,
                                     ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    return SimpleNamespace(helper=h, manifest=manifest, params=specs[0].params)


def routed_args(offsets_address: int, experts: int, n: int = 256, k: int = 512, lda: int | None = None,
                ldd: int | None = None, **over) -> ctypes.Structure:
    args = ARGS(num_groups=experts, threadblock_count=170, alpha=1.0, expert_offsets=offsets_address, route_A=A,
                route_B=B, route_D=D, route_lda=lda or k, route_ldb=k, route_ldd=ldd or n, route_b_stride=n * k,
                route_n=n, route_k=k)
    for name, value in over.items():
        setattr(args, name, value)
    return args


def query(h, args) -> tuple[int, AotcLaunch, str]:
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    rc = h.query_fn(ctypes.addressof(args), ctypes.byref(out), err, len(err))
    return rc, out, err.value.decode()


def prepare(h, args) -> tuple[AotcLaunch, bytes]:
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    buf = ctypes.create_string_buffer(4096)
    assert h.prepare_fn(ctypes.addressof(args), None, ctypes.addressof(buf), 4096, ctypes.byref(out), err, 512) == 0, \
        err.value
    return out, buf.raw[:out.params_bytes]


@pytest.mark.compile
def test_the_routed_kernel_builds_verified_for_sm120a(helper):
    m = helper.manifest
    assert m["sass"]["mma"].get("HMMA", 0) > 0 and m["sass"]["banned"] in ([], {})
    assert m["resources"].get("spill_stores", 0) == 0 and m["resources"].get("spill_loads", 0) == 0
    assert m["smem_model"]["total"] == FAMILY.smem(helper.params, ARCH).total <= ARCH.smem_optin_bytes
    assert helper.helper.lib.aotc_args_bytes() == ctypes.sizeof(ARGS)


@pytest.mark.compile
@pytest.mark.parametrize("experts", [1, 8, 64, 128, 257, 4096])
def test_a_routed_launch_needs_the_same_smem_and_params_for_any_expert_count(helper, experts):
    """The groups are derived in registers per tile: SMEM is CUTLASS's SharedStorage (the model) for
    every E, no workspace, and the Params are CUTLASS's GemmGrouped Params plus one Route."""
    offsets = (ctypes.c_int32 * (experts + 1))()
    args = routed_args(ctypes.addressof(offsets), experts)
    launch, params = prepare(helper.helper, args)
    assert list(launch.grid) == [170, 1, 1] and list(launch.block) == [256, 1, 1]
    assert launch.smem_bytes == FAMILY.smem(helper.params, ARCH).total == 73_744
    assert launch.workspace_bytes == 0
    assert launch.params_bytes == 144 + ROUTE.size
    # CUTLASS's Params first: problem visitor (no problem-size array, E problems), then the route
    problem_sizes, count = struct.unpack_from("<Qi", params, 0)
    assert problem_sizes == 0 and count == experts
    assert ROUTE.unpack_from(params, 144) == (ctypes.addressof(offsets), A, B, D, 512, 512, 256, 256 * 512, 256, 512)


def offsets_for(case: str, experts: int, tokens: int) -> list[int]:
    rng = random.Random(experts * 7 + tokens)
    if case == "one":
        counts = [tokens if e == experts // 2 else 0 for e in range(experts)]
    elif case == "empty":
        counts = [0] * experts
    else:  # every third expert gets tokens, the others none
        picks = [rng.randrange(experts) // 3 * 3 for _ in range(tokens)]
        counts = [picks.count(e) for e in range(experts)]
    return [0, *itertools.accumulate(counts)]


def derived(h, args, e: int) -> tuple[int, ...]:
    out, err = (ctypes.c_int64 * 9)(), ctypes.create_string_buffer(256)
    assert h.lib.aotc_routed_group(ctypes.addressof(args), e, out, err, 256) == 0, err.value
    return tuple(out)


@pytest.mark.compile
@pytest.mark.parametrize("experts", [8, 64, 128])
@pytest.mark.parametrize("case", ["random", "one", "empty"])
def test_each_expert_gets_its_rows_and_weight(helper, experts, case):
    """The kernel's own derivation (aotc::routed_group, run on host offsets): expert e with rows s..t-1
    is (t - s, N, K) at A + s * lda, B + e * N * K, D + s * ldd (bytes: 2 per element)."""
    n, k, lda, ldd = 256, 512, 576, 320
    offs = offsets_for(case, experts, 16 * experts + 7)
    host = (ctypes.c_int32 * len(offs))(*offs)
    args = routed_args(ctypes.addressof(host), experts, n, k, lda=lda, ldd=ldd)
    for e in range(experts):
        s, t = offs[e], offs[e + 1]
        assert derived(helper.helper, args, e) == (t - s, n, k, A + 2 * s * lda, B + 2 * e * n * k, D + 2 * s * ldd,
                                                   lda, k, ldd)


@pytest.mark.compile
def test_a_decreasing_offset_pair_is_an_empty_expert(helper):
    host = (ctypes.c_int32 * 4)(0, 40, 30, 50)
    args = routed_args(ctypes.addressof(host), 3)
    assert [derived(helper.helper, args, e)[0] for e in range(3)] == [40, 0, 20]


@pytest.mark.compile
@pytest.mark.parametrize(("over", "says"), [
    ({"beta": 0.5}, "beta = 0.5 with expert_offsets"),
    ({"ptr_A": 0x1000}, "problem_sizes, ptr_A .. ldd must be 0"),
    ({"route_B": 0}, "needs route_B"),
    ({"route_k": 100, "route_lda": 100, "route_ldb": 100}, "K = 100"),
    ({"route_ldb": 256}, "lda, ldb >= K"),
    ({"route_b_stride": 8}, "expert stride >= N x ldb"),
    ({"route_D": D + 8}, "16-byte aligned"),
    ({"num_groups": 0}, "num_groups = 0"),
])
def test_a_bad_routed_problem_is_refused_with_its_numbers(helper, over, says):
    host = (ctypes.c_int32 * 9)()
    rc, _, err = query(helper.helper, routed_args(ctypes.addressof(host), 8, **over))
    assert rc != 0 and says in err, err


@pytest.mark.compile
def test_group_arrays_still_launch_as_before(helper):
    """grouped_gemm's path (host-built device arrays) is the same kernel with no route."""
    args = ARGS(num_groups=3, threadblock_count=170, problem_sizes=0x1000, ptr_A=0x2000, ptr_B=0x3000, ptr_D=0x4000,
                lda=0x5000, ldb=0x6000, ldd=0x7000, alpha=1.0)
    launch, params = prepare(helper.helper, args)
    assert launch.smem_bytes == 73_744 and launch.params_bytes == 144 + ROUTE.size
    assert struct.unpack_from("<Qi", params, 0) == (0x1000, 3)
    assert ROUTE.unpack_from(params, 144)[0] == 0  # no offsets: the kernel reads the arrays
    rc, _, err = query(helper.helper, ARGS(num_groups=3, threadblock_count=170))
    assert rc != 0 and "or pass expert_offsets" in err


# ---- the tile schedule: the kernel's TileCursor replayed by the helper on host memory ----------------
TILE_M, TILE_N = 128, 256  # moe_bf16_128x256


def walk(h, args, grid: int) -> list[tuple[int, int, int, int]]:
    """(cta, group, tile row, tile column) of every tile the kernel's `grid` CTAs visit, in order."""
    visited, err = ctypes.c_int64(), ctypes.create_string_buffer(256)
    assert h.lib.aotc_tile_walk(ctypes.addressof(args), grid, None, 0, ctypes.byref(visited), err, 256) == 0, err.value
    out = (ctypes.c_int32 * (4 * max(1, visited.value)))()
    assert h.lib.aotc_tile_walk(ctypes.addressof(args), grid, out, visited.value, ctypes.byref(visited), err,
                                256) == 0, err.value
    return [tuple(out[4 * i:4 * i + 4]) for i in range(visited.value)]


def expected_tiles(sizes: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Tile number t -> (group, tile row, tile column): groups end to end, row-major inside each."""
    out = []
    for g, (m, n) in enumerate(sizes):
        rows, cols = -(-m // TILE_M), -(-n // TILE_N)
        out += [(g, r, c) for r in range(rows) for c in range(cols)]
    return out


def check_walk(visits: list[tuple[int, int, int, int]], sizes: list[tuple[int, int]], grid: int) -> None:
    """CTA b visits tile numbers b, b + grid, ... in that order, each placed in its group at its row and
    column; together the CTAs visit every tile of every group exactly once."""
    want = expected_tiles(sizes)
    assert len(visits) == len(want)
    seen = [0] * grid
    for cta, group, row, col in visits:
        t = cta + seen[cta] * grid
        seen[cta] += 1
        assert (group, row, col) == want[t], (cta, t)
    assert seen == [len(range(b, len(want), grid)) for b in range(grid)]
    assert sorted((g, r, c) for _, g, r, c in visits) == sorted(want)  # each tile once


def counts_for(case: str, experts: int) -> list[int]:
    rng = random.Random(experts)
    if case == "one":  # one expert takes every token: its tiles run through every CTA
        return [40 * TILE_M + 5 if e == experts - 1 else 0 for e in range(experts)]
    if case == "empty":
        return [0] * experts
    if case == "ragged":  # 0..9 row tiles per expert: windows of 32 groups end mid-way through CTAs' strides
        return [rng.choice([0, 0, 1, TILE_M - 1, TILE_M, TILE_M + 1, 3 * TILE_M, 9 * TILE_M - 3]) for _ in
                range(experts)]
    return [rng.randrange(3 * TILE_M) if e % 3 == 0 else 0 for e in range(experts)]  # two of three empty


@pytest.mark.compile
@pytest.mark.parametrize("experts", [1, 8, 33, 64, 128, 257])
@pytest.mark.parametrize("case", ["random", "one", "empty", "ragged"])
def test_the_tile_schedule_visits_each_tile_of_each_expert_once(helper, experts, case):
    n = 512  # two tile columns per expert
    counts = counts_for(case, experts)
    offs = [0, *itertools.accumulate(counts)]
    host = (ctypes.c_int32 * len(offs))(*offs)
    args = routed_args(ctypes.addressof(host), experts, n=n, k=64)
    sizes = [(c, n) for c in counts]
    total = len(expected_tiles(sizes))
    for grid in sorted({1, 3, 31, 32, 33, 170, total, total + 5} - {0}):
        check_walk(walk(helper.helper, args, grid), sizes, grid)


@pytest.mark.compile
def test_the_tile_schedule_skips_whole_windows_of_empty_groups(helper):
    """One CTA step can pass several windows of 32 groups (100 empty experts between two busy ones), and
    a decreasing offset pair is an empty expert to the schedule as well."""
    counts = [TILE_M] + [0] * 100 + [2 * TILE_M] + [0] * 40
    offs = [0, *itertools.accumulate(counts)]
    host = (ctypes.c_int32 * len(offs))(*offs)
    args = routed_args(ctypes.addressof(host), len(counts), n=256, k=64)
    for grid in (1, 2, 3):
        check_walk(walk(helper.helper, args, grid), [(c, 256) for c in counts], grid)
    host = (ctypes.c_int32 * 4)(0, 300, 200, 500)  # expert 1 decreases: 0 rows
    args = routed_args(ctypes.addressof(host), 3, n=256, k=64)
    check_walk(walk(helper.helper, args, 2), [(300, 256), (0, 256), (300, 256)], 2)


@pytest.mark.compile
def test_the_tile_schedule_of_group_arrays(helper):
    """grouped_gemm's path: the same cursor over (M, N, K) triples (here in host memory), edges rounded up,
    a group with M or N = 0 has no tiles."""
    sizes = [(128, 256), (1, 1), (0, 512), (300, 600), (129, 0), (5000, 257)] * 7
    triples = (ctypes.c_int32 * (3 * len(sizes)))(*[v for m, n in sizes for v in (m, n, 64)])
    args = ARGS(num_groups=len(sizes), threadblock_count=170, problem_sizes=ctypes.addressof(triples))
    for grid in (1, 5, 64, 170):
        check_walk(walk(helper.helper, args, grid), sizes, grid)

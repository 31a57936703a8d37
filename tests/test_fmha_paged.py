"""Paged-KV-cache attention families (fmha_fwd_paged, fmha_decode_paged): catalog legality on every
SM12x target, rules, SMEM equal to the contiguous twins, the ABI fields, the runtime's refusal of
host tensors, and (compile-marked) the real host helper's paged problem validation and Params, and
an sm_120a build of the paged decode kernel (no spill, HMMA only, page ids shuffled from block-table
windows ahead of the MMAs)."""

from __future__ import annotations

import ctypes
import re
import struct
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.rules import check
from aotc.build.spec import load_specs
from aotc.families import get_family
from aotc.families.fmha import FmhaArgs

HERE = Path(__file__).resolve().parent
CATALOG = HERE.parent / "tile_specs" / "fmha_default.toml"


def _spec(family: str, **params):
    import sys

    sys.path.insert(0, str(HERE))
    from test_fmha_family import spec

    return spec(family, **params)


def test_catalog_paged_specs_fit_every_target():
    specs = [s for s in load_specs([CATALOG]).specs if s.family.endswith("_paged")]
    assert {s.family for s in specs} == {"fmha_fwd_paged", "fmha_decode_paged"}
    assert {s.params["dtype"] for s in specs} == {"bf16", "fp16"}
    for s in specs:
        for arch in ("sm120a", "sm120f", "sm121a", "sm90a", "sm80"):
            verdict = check(s, get_arch(arch))
            assert verdict.ok, [d.format() for d in verdict.diagnostics]
            assert verdict.smem.total <= 101_376


def test_paged_smem_and_context_equal_the_contiguous_twin():
    for paged, plain in (("fmha_decode_paged", "fmha_decode"), ("fmha_fwd_paged", "fmha_fwd")):
        p = _spec(paged).params
        arch = get_arch("sm120a")
        assert get_family(paged).smem(p, arch) == get_family(plain).smem(p, arch)
        ctx, ctx_plain = get_family(paged).render_context(p, arch), get_family(plain).render_context(p, arch)
        assert ctx["paged"] is True and ctx_plain["paged"] is False
        assert {k: v for k, v in ctx.items() if k not in ("paged", "family")} == \
               {k: v for k, v in ctx_plain.items() if k not in ("paged", "family")}


def test_paged_e4m3_is_rejected_with_a_code():
    verdict = check(_spec("fmha_fwd_paged", dtype="e4m3"), get_arch("sm120a"))
    assert [d.code for d in verdict.diagnostics] == ["AOTC-FMHA-006"]
    assert "bf16" in verdict.diagnostics[0].fix
    verdict = check(_spec("fmha_decode_paged", dtype="e4m3"), get_arch("sm120a"))
    assert [d.code for d in verdict.diagnostics] == ["AOTC-FMHA-006"]


def test_paged_abi_fields_follow_the_old_ones():
    # appended after v_descale: a caller that never sets them passes zeros (contiguous kernels refuse
    # a block table rather than ignore it; see the helper test)
    names = [f[0] for f in FmhaArgs._fields_]
    assert names[-6:] == ["block_table", "kv_lens", "k_page_stride", "v_page_stride", "block_table_stride",
                          "page_size"]
    assert FmhaArgs.block_table.offset > FmhaArgs.v_descale.offset


def test_runtime_refuses_host_tensors_before_any_device_use():
    torch = pytest.importorskip("torch")
    from aotc import runtime as rt
    from aotc.diagnostics import AotcError

    q = torch.zeros(2, 1, 8, 128, dtype=torch.bfloat16)
    cache = torch.zeros(4, 16, 2, 128, dtype=torch.bfloat16)
    table = torch.zeros(2, 2, dtype=torch.int32)
    lens = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(AotcError) as exc:
        rt.fmha_decode_paged(q, cache, cache, table, lens, torch.empty_like(q))
    assert exc.value.diagnostics[0].code == "AOTC-RT-006" and "host memory" in exc.value.diagnostics[0].message


class _DeviceArray:
    """A device array by description only (__cuda_array_interface__): nothing is allocated or read."""

    def __init__(self, shape, typestr="<f2", ptr=1 << 20):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3}


def test_runtime_refuses_a_kv_cache_beyond_32_bit_chunk_offsets():
    # The kernels address a K/V row as a 32-bit count of 16-byte chunks: 2^23 pages of 16 x 2 x 128
    # fp16 elements span 64 GiB and are refused, one page less passes (fmha_*_paged check it first).
    from aotc.diagnostics import AotcError
    from aotc.runtime.paged import check_span
    from aotc.runtime.tensors import tensor_info

    pages = (1 << 35) // (16 * 2 * 128)
    with pytest.raises(AotcError) as exc:
        check_span(tensor_info(_DeviceArray((pages + 1, 16, 2, 128))))
    d = exc.value.diagnostics[0]
    assert d.code == "AOTC-RT-006" and "spans 64.0 GiB" in d.message and "at most 64 GiB" in d.message
    check_span(tensor_info(_DeviceArray((pages, 16, 2, 128))))
    # a stacked cache's K view: pages twice as far apart, so half as many fit
    stacked = _DeviceArray((pages // 2 + 1, 16, 2, 128))
    stacked.__cuda_array_interface__["strides"] = (2 * 16 * 2 * 128 * 2, 2 * 128 * 2, 128 * 2, 2)
    with pytest.raises(AotcError):
        check_span(tensor_info(stacked))


# ------------------------------------------------------------------------- compile-marked tests
def _helper(family: str, tmp_path: Path, **params) -> ctypes.CDLL:
    import sys

    sys.path.insert(0, str(HERE))
    from test_fmha_family import build_helper

    return build_helper(_spec(family, **params), tmp_path, family)


def paged_problem(**kw) -> FmhaArgs:
    """Decode of 2 requests, 32 q / 8 kv heads, head_dim 128, over 64-token pages of a stacked
    [pages, 2, 64, 8, 128] cache (K and V views: page stride 2 x 64 x 8 x 128)."""
    hq, hkv, d, ps = 32, 8, 128, 64
    a = FmhaArgs(q=1 << 20, k=2 << 20, v=(2 << 20) + ps * hkv * d * 2, o=4 << 20, batch=2, num_q_heads=hq,
                 num_kv_heads=hkv, head_dim=d, seqlen_q=1, seqlen_k=0, softmax_scale=d ** -0.5,
                 block_table=8 << 20, kv_lens=9 << 20, k_page_stride=2 * ps * hkv * d,
                 v_page_stride=2 * ps * hkv * d, block_table_stride=512, page_size=ps, num_sms=132)
    for t, h in (("q", hq), ("o", hq)):
        setattr(a, f"{t}_head_stride", d)
        setattr(a, f"{t}_row_stride", h * d)
        setattr(a, f"{t}_batch_stride", h * d)
    for t in ("k", "v"):
        setattr(a, f"{t}_head_stride", d)
        setattr(a, f"{t}_row_stride", hkv * d)
    for k, v in kw.items():
        setattr(a, k, v)
    return a


@pytest.mark.compile
def test_paged_helper_validates_and_fills_params(tmp_path):
    import sys

    sys.path.insert(0, str(HERE))
    from test_fmha_family import prepare, problem, query

    lib = _helper("fmha_decode_paged", tmp_path)
    # seqlen_k 0: the table's capacity (512 pages x 64 = 32768 tokens) sizes the split, as a
    # 32768-token contiguous decode would: 16 tiles -> floor(264 / 16) = 16 splits
    rc, launch, err = query(lib, paged_problem())
    assert rc == 0, err
    assert list(launch.grid) == [16, 8, 2]
    # the longest real KV length, when given, sizes it instead: 300 tokens = 5 KV blocks -> 5 splits
    rc, launch, err = query(lib, paged_problem(seqlen_k=300))
    assert rc == 0 and launch.grid[0] == 5, err
    rc, _, err = query(lib, paged_problem(page_size=48))
    assert rc and "page_size 48 must be a power of two" in err
    rc, _, err = query(lib, paged_problem(block_table=0))
    assert rc and "needs block_table" in err
    rc, _, err = query(lib, paged_problem(cu_seqlens_k=4096))
    assert rc and "kv_lens, not cu_seqlens_k" in err
    rc, _, err = query(lib, paged_problem(v_page_stride=2 * 64 * 8 * 128 + 4))
    assert rc and "v strides" in err
    # K and V share one chunk offset per row: their page and row strides must be equal
    rc, _, err = query(lib, paged_problem(v_page_stride=3 * 64 * 8 * 128))
    assert rc and "same non-negative page and row strides (k: 131072 and 1024, v: 196608 and 1024" in err
    rc, _, err = query(lib, paged_problem(k_row_stride=2048, v_row_stride=1024))
    assert rc and "(k: 131072 and 2048, v: 131072 and 1024" in err
    # ... in 32 bits of 16-byte chunks: a page of 2^35 elements is refused, 2^34 - 8 is not
    rc, _, err = query(lib, paged_problem(k_page_stride=1 << 35, v_page_stride=1 << 35))
    assert rc and "page stride 34359738368 and row stride 1024 elements are too large" in err
    rc, _, err = query(lib, paged_problem(k_page_stride=(1 << 34) - 8, v_page_stride=(1 << 34) - 8))
    assert rc == 0, err
    # Params: the page strides travel in k/v_batch_stride, then block table, kv_lens, stride, log2(page)
    rc, params, err = prepare(lib, paged_problem(seqlen_k=300, num_splits=1))
    assert rc == 0, err
    k_batch_stride = struct.unpack_from("q", params, 6 * 8 + 3 * 8)[0]
    assert k_batch_stride == 2 * 64 * 8 * 128
    table, lens, stride, shift = struct.unpack_from("QQii", params, len(params) - 24)
    assert (table, lens, stride, shift) == (8 << 20, 9 << 20, 512, 6)
    # a contiguous kernel refuses a block table instead of ignoring it
    plain = _helper("fmha_decode", tmp_path)
    rc, _, err = query(plain, problem(s=1, block_table=8 << 20))
    assert rc and "needs an fmha_fwd_paged or fmha_decode_paged kernel" in err


@pytest.mark.compile
def test_paged_decode_sm120a_build_hmma_no_spill(tmp_path):
    import sys

    sys.path.insert(0, str(HERE))
    from test_fmha_family import main_loop, sass_of

    s = _spec("fmha_decode_paged")
    lines, sass = sass_of(s, "sm120a", tmp_path)
    assert re.search(r"\b0 bytes spill stores", lines), lines
    # per warp and KV tile: S = 16x64x128 (8 k16 x 8 n8 = 64 MMAs) and O += 16x128x64 (4 k16 x 16 n8 = 64)
    assert len(re.findall(r"\bHMMA\.16816\.F32", sass)) == 128
    assert not re.search(r"\b(HGMMA|UTC\w+|OMMA|QMMA)\b", sass)
    # Block-table reads are off the cp.async path. Per KV tile a thread takes the page id of each row
    # it copies (threads / 16-byte chunks per row apart; the tile's K and V share them) by one warp
    # shuffle from a 32-entry window of the table row, all before the tile's first MMA while the K copy
    # that uses them comes later. The loop reads the table once per window (the next window, one
    # window ahead) plus one entry per row on the one-token-page path, and no shuffle reads a register
    # a table load in the loop writes (none waits for a table read).
    loop = main_loop(sass)
    table = [i for i, x in enumerate(loop) if re.search(r"\bLDG\.E\.CONSTANT\b", x)]
    shuffles = [i for i, x in enumerate(loop) if re.search(r"\bSHFL\.IDX\b", x)]
    copies = [i for i, x in enumerate(loop) if "LDGSTS" in x]
    mmas = [i for i, x in enumerate(loop) if "HMMA" in x]
    threads, chunks_per_row = 32 * s.params["warps"], s.params["head_dim"] * 2 // 16
    rows = s.params["block_n"] // (threads // chunks_per_row)
    assert len(shuffles) == rows and len(table) == rows + 1
    assert max(table + shuffles) < mmas[0] < max(copies)
    loaded = {re.search(r"LDG\.E\.CONSTANT (R\d+)", loop[i]).group(1) for i in table}
    sources = {re.search(r"SHFL\.IDX PT, R\d+, (R\d+)", loop[i]).group(1) for i in shuffles}
    assert not loaded & sources, (loaded, sources)


@pytest.mark.compile
def test_paged_prefill_sm120a_table_loads_wait_behind_the_mmas(tmp_path):
    import sys

    sys.path.insert(0, str(HERE))
    from test_fmha_family import main_loop, sass_of

    # the 4-warp tile with Q in shared memory: the one with the fewest registers to spare
    s = next(x for x in load_specs([CATALOG]).specs if x.name == "fmha_paged_fwd_m128n64_qsmem")
    lines, sass = sass_of(s, "sm120a", tmp_path)
    assert re.search(r"\b0 bytes spill stores", lines), lines
    # Per KV tile a lane loads the page id of one row its warp copies (lane_row) before the tile's first
    # MMA, and no instruction reads the loaded id before that MMA: it becomes a chunk offset only in
    # front of the K copy, after S = Q K^T, so no warp waits for the block table at the top of a KV
    # tile. Each copy of a row takes that offset by warp shuffle from the lane holding it: one shuffle
    # per row a thread copies, for K and again for V (V loads from the same offsets a step later), each
    # in the whole-tile copy and in the predicated one of a sequence's last tile, and always from an
    # immediate lane (width-16 shuffles: no lane index computed per copy).
    loop = main_loop(sass)

    def operands(x: str) -> list[str]:
        return [o.strip() for o in re.sub(r"^@!?U?P\w+\s+", "", x).split(None, 1)[-1].split(",")]

    table = [i for i, x in enumerate(loop) if re.search(r"\bLDG\.E\.CONSTANT\b", x)]
    mmas = [i for i, x in enumerate(loop) if "HMMA" in x]
    shuffles = [i for i, x in enumerate(loop) if re.search(r"\bSHFL\.IDX\b", x)]
    threads, chunks_per_row = 32 * s.params["warps"], s.params["head_dim"] * 2 // 16
    assert len(table) == 1
    assert len(shuffles) == 2 * 2 * (s.params["block_n"] // (threads // chunks_per_row))
    assert all(re.search(r"SHFL\.IDX PT, R\d+, R\d+, (RZ|0x[0-9a-f]+), 0x[0-9a-f]+", loop[i]) for i in shuffles)
    assert max(table) < mmas[0]
    for i in table:
        reg = operands(loop[i])[0]
        use = next(j for j in range(i + 1, len(loop))
                   if any(re.search(rf"\b{reg}\b", o) for o in operands(loop[j])[1:]))
        assert use > mmas[0], (loop[i], loop[use])

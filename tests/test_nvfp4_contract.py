"""The data contract of the SM120 block-scaled GEMMs, executed on the CPU: the bytes aotc's runtime
hands the kernel (AotcArgs; for grouped GEMM the device block built by gemm.nvfp4_group_block from the
real helper's aotc_group_metadata), with pointers turned into offsets of one memory image, are run
through CUTLASS's host reference for block-scaled GEMM (tests/programs/blockscaled_gemm_reference.cu)
and compared with an independent float64 dequantise-then-matmul in NumPy."""

from __future__ import annotations

import ctypes
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from aotc.diagnostics import AotcError
from aotc.families import get_family
from aotc.runtime import gemm
from aotc.runtime.tensors import TensorInfo

pytestmark = pytest.mark.compile  # nvcc: the CUTLASS host reference and two sm_120a host helpers

REPO = Path(__file__).resolve().parent.parent
GROUPED_SPECS = {"nvfp4": "moe_w4a4/tile=128x128x128", "mx": "moe_w4a8_mx"}
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
# (data format, bits, SF format, SF vector) of each operand kind
NVFP4, MXFP4, MXFP8 = ("e2m1", 4, "ue4m3", 16), ("e2m1", 4, "ue8m0", 32), ("e4m3", 8, "ue8m0", 32)
NAN_PAD = 0x7F  # SF padding filled with a NaN scale (ue4m3 0x7f; 0x7f is 2^0 in ue8m0, see _operand)


# ---- independent float64 decoding (from the format definitions, not from the C++ code) -------------
def decode_e4m3(b: np.ndarray, signed: bool = True) -> np.ndarray:
    b = b.astype(np.int64)
    exp, man = (b >> 3) & 0xF, b & 0x7
    value = np.where(exp == 0, man * 2.0 ** -9, (1 + man / 8.0) * 2.0 ** (exp - 7))
    value = np.where((exp == 0xF) & (man == 0x7), np.nan, value)
    return np.where(signed & (b >= 0x80), -value, value)


def decode_sf(b: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "ue4m3":
        return decode_e4m3(b & 0x7F, signed=False)
    return np.where(b == 0xFF, np.nan, 2.0 ** (b.astype(np.int64) - 127))


def sf_index(rows: int, k: int, vec: int) -> np.ndarray:
    """[rows, k / vec] byte offsets of each scale factor: CUTLASS's Sm1xxBlkScaledConfig K-major atom,
    Shape((32, 4), (vec, 4)) : Stride((16, 4), (0, 1)) = 512 B per 128 rows x 4 SF columns, atoms tiled
    K first, then rows (tile_to_shape with Step<_2, _1, _3>)."""
    r = np.arange(rows)[:, None]
    c = np.arange(k // vec)[None, :]
    atoms_k = -(-(k // vec) // 4)
    return ((r // 128) * atoms_k + c // 4) * 512 + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4


def dequantize(data: np.ndarray, sf: np.ndarray, rows: int, k: int, kind: tuple) -> np.ndarray:
    """float64 [rows, k] value of an operand's bytes: data codes times their block's scale factor."""
    fmt, _, sf_fmt, vec = kind
    if fmt == "e2m1":
        codes = np.empty((rows, k), dtype=np.uint8)
        codes[:, 0::2], codes[:, 1::2] = data & 0xF, data >> 4  # low nibble first
        values = E2M1[codes]
    else:
        values = decode_e4m3(data)
    scales = decode_sf(sf[sf_index(rows, k, vec)], sf_fmt)
    return values * np.repeat(scales, vec, axis=1)


class Operand:
    """One random operand: its bytes as the kernel reads them and its float64 value."""

    def __init__(self, rng: np.random.Generator, rows: int, k: int, kind: tuple):
        fmt, _, sf_fmt, vec = kind
        if fmt == "e2m1":
            codes = rng.integers(0, 16, (rows, k), dtype=np.uint8)
            self.data = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
        else:
            self.data = rng.integers(0, 256, (rows, k), dtype=np.uint8)
            self.data[(self.data & 0x7F) == 0x7F] = 0x38  # no NaN inputs
        sf_lo, sf_hi = (0x20, 0x48) if sf_fmt == "ue4m3" else (120, 134)
        size = -(-rows // 128) * 128 * -(-(k // vec) // 4) * 4
        # Padding holds NaN scales (ue4m3) / huge ones (ue8m0 0xfe): if anything read it, D would show it.
        self.sf = np.full(size, NAN_PAD if sf_fmt == "ue4m3" else 0xFE, dtype=np.uint8)
        self.sf[sf_index(rows, k, vec)] = rng.integers(sf_lo, sf_hi, (rows, k // vec), dtype=np.uint8)
        self.value = dequantize(self.data, self.sf, rows, k, kind)


class Image:
    """One memory image: every device buffer at an offset (256-byte aligned, never 0)."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)

    def put(self, data: bytes) -> int:
        offset = len(self.buf)
        self.buf += bytes(data) + bytes(-len(data) % 256)
        return offset

    def alloc(self, nbytes: int) -> int:
        return self.put(bytes(nbytes))


# ---- programs -------------------------------------------------------------------------------------
def _nvcc() -> str:
    from aotc.build.toolchain import find_toolchain

    return find_toolchain().nvcc


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The CUTLASS host reference program (host code only; about 10 s of nvcc)."""
    from aotc.build.toolchain import cutlass_include_dirs

    out = tmp_path_factory.mktemp("gemm-ref") / "blockscaled_gemm_reference"
    cmd = [_nvcc(), "-x", "cu", "-std=c++17", "--expt-relaxed-constexpr", "-O2",
           *(f"-I{d}" for d in cutlass_include_dirs()), "-o", str(out),
           str(REPO / "tests/programs/blockscaled_gemm_reference.cu")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    return out


@pytest.fixture(scope="module")
def helpers(tmp_path_factory) -> dict:
    """The real sm_120a host helpers of the grouped catalog kernels (helper compile only, no cubin)."""
    from aotc.arch import get_arch
    from aotc.build.compile import flags, helper_flags
    from aotc.build.render import render
    from aotc.build.spec import load_specs
    from aotc.build.toolchain import cutlass_include_dirs, find_toolchain
    from aotc.resources import templates_dir
    from aotc.runtime.loader import Helper

    arch, toolchain = get_arch("sm120a"), find_toolchain()
    specs = {s.name: s for s in load_specs().specs}
    out = {}
    for kind, name in GROUPED_SPECS.items():
        work = tmp_path_factory.mktemp(f"helper-{kind}")
        (work / "kernel.cu").write_text(render(specs[name], arch).text)
        device_flags = flags(arch, toolchain, include_dirs=[str(templates_dir()), *cutlass_include_dirs()])
        subprocess.run([toolchain.nvcc, *helper_flags(device_flags), "-o", str(work / "helper.so"),
                        str(work / "kernel.cu")], check=True, capture_output=True, text=True, timeout=1200,
                       cwd=work)
        out[kind] = Helper(work / "helper.so", name)
    return out


def run_reference(program: Path, mode: str, args: ctypes.Structure, image: Image) -> tuple[bytes, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "args").write_bytes(bytes(args))
        (t / "image").write_bytes(bytes(image.buf))
        subprocess.run([str(program), mode, str(t / "args"), str(t / "image"), str(t / "out"), str(t / "deq")],
                       check=True, timeout=300)
        return (t / "out").read_bytes(), np.fromfile(t / "deq", dtype=np.float32)


def read_bf16(buf: bytes, offset: int, rows: int, cols: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint16, count=rows * cols, offset=offset).astype(np.uint32) << 16
    return raw.view(np.float32).reshape(rows, cols).astype(np.float64)


def check_d(d: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float) -> None:
    """D within bf16 rounding of the float64 product (plus fp32 accumulation error)."""
    exact = alpha * (a @ b.T)
    mag = np.abs(alpha) * (np.abs(a) @ np.abs(b).T)
    ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(exact), 1e-30))) - 7)
    bound = ulp / 2 + a.shape[1] * 2.0 ** -23 * mag + 1e-30
    assert np.isfinite(d).all()
    worst = np.max(np.abs(d - exact) / bound) if d.size else 0.0
    assert worst <= 1.0, f"worst error {worst:.3f} x the bf16 rounding bound"


def check_dequant(deq: np.ndarray, values: list[np.ndarray]) -> None:
    """The reference's A*SFA / B*SFB, as it reads them, equal NumPy's decoding exactly."""
    want = np.concatenate([v.ravel() for v in values]) if values else np.zeros(0)
    assert deq.size == want.size
    assert (deq.astype(np.float64) == want).all(), np.nonzero(deq != want)[0][:10]


# ---- tests ----------------------------------------------------------------------------------------
def test_reference_mirrors_the_runtime_structs(reference, helpers):
    sizes = json.loads(subprocess.run([str(reference), "sizes"], check=True, capture_output=True, text=True).stdout)
    assert sizes["dense_args"] == ctypes.sizeof(get_family(gemm.NVFP4_DENSE).args_struct)
    assert sizes["grouped_args"] == ctypes.sizeof(get_family(gemm.NVFP4_GROUPED).args_struct)
    for kind, sf_key in (("nvfp4", "nvfp4_layout_sf"), ("mx", "mx_layout_sf")):
        # 16 groups: each array of aotc_group_metadata is 16 elements, no rounding left to hide a size
        meta, offsets = gemm.group_metadata(helpers[kind], ((128, 128, 128),) * 16)
        spans = [b - a for a, b in zip(offsets, (*offsets[1:], len(meta)), strict=True)]
        assert spans == [16 * s for s in (*sizes["stride"], *sizes[sf_key])], (kind, spans, sizes)


@pytest.mark.parametrize("m,n,k", [(256, 256, 256), (200, 136, 320), (1, 8, 64), (129, 264, 192)])
def test_dense_nvfp4(reference, m, n, k):
    gemm.check_nvfp4_problem(m, n, k)  # the runtime accepts this problem
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a, b = Operand(rng, m, k, NVFP4), Operand(rng, n, k, NVFP4)
    assert a.sf.size == gemm.nvfp4_sf_bytes(m, k) and b.sf.size == gemm.nvfp4_sf_bytes(n, k)
    image = Image()
    args = get_family(gemm.NVFP4_DENSE).args_struct()
    # as gemm_nvfp4 fills them, pointers being image offsets
    args.ptr_A, args.ptr_B = image.put(a.data.tobytes()), image.put(b.data.tobytes())
    args.ptr_SFA, args.ptr_SFB = image.put(a.sf.tobytes()), image.put(b.sf.tobytes())
    args.ptr_D = image.alloc(2 * m * n)
    args.m, args.n, args.k, args.batch, args.alpha, args.sm_count = m, n, k, 1, 0.75, 170
    out, deq = run_reference(reference, "dense_nvfp4", args, image)
    check_dequant(deq, [a.value, b.value])
    check_d(read_bf16(out, args.ptr_D, m, n), a.value, b.value, 0.75)


def grouped_case(helper, kinds: tuple, shapes: tuple, alpha: float, seed: int):
    """Operands of every group, the memory image, and AotcArgs filled as grouped_gemm_nvfp4 does."""
    rng = np.random.default_rng(seed)
    image, operands, infos = Image(), [], []
    for m, n, k in shapes:
        a, b = Operand(rng, m, k, kinds[0]), Operand(rng, n, k, kinds[1])
        ptrs = [image.put(a.data.tobytes()), image.put(b.data.tobytes()), image.put(a.sf.tobytes()),
                image.put(b.sf.tobytes()), image.alloc(2 * m * n)]
        operands.append((a, b))
        infos.append(tuple(TensorInfo(p, (1,), (1,), "u8", 0) for p in ptrs))
    meta, offsets = gemm.group_metadata(helper, shapes)
    blob, at = gemm.nvfp4_group_block(infos, shapes, meta, offsets)
    base = image.put(blob)
    args = get_family(gemm.NVFP4_GROUPED).args_struct()
    args.num_groups, args.sm_count = len(shapes), 170
    # gemm._upload_nvfp4_group's fields: (block + at[0], host sizes, block + at[1:]); the host copy of the
    # problem sizes is read by CUTLASS's can_implement on the host only, never by the kernel.
    (args.problem_sizes, args.host_problem_sizes, args.ptr_A, args.ptr_B, args.ptr_SFA, args.ptr_SFB, args.ptr_D,
     args.stride_A, args.stride_B, args.stride_D, args.layout_SFA, args.layout_SFB) = (
        base + at[0], 0, *(base + o for o in at[1:]))
    args.alpha_array, args.alpha, args.reserved = 0, alpha, 0
    return image, args, operands, infos


def _check_grouped(reference, mode, image, args, operands, infos, shapes, alpha):
    out, deq = run_reference(reference, mode, args, image)
    check_dequant(deq, [v for a, b in operands for v in (a.value, b.value)])
    for (a, b), info, (m, n, _) in zip(operands, infos, shapes, strict=True):
        check_d(read_bf16(out, info[4].ptr, m, n), a.value, b.value, alpha)


def test_grouped_nvfp4_ragged_groups_with_own_n_and_k(reference, helpers):
    shapes = ((1, 256, 128), (7, 136, 320), (300, 64, 256), (128, 512, 64))
    for m, n, k in shapes:
        gemm.check_nvfp4_problem(m, n, k)
    case = grouped_case(helpers["nvfp4"], (NVFP4, NVFP4), shapes, 1.5, 1)
    _check_grouped(reference, "grouped_nvfp4", *case, shapes, 1.5)


def test_grouped_nvfp4_empty_group(reference, helpers):
    # The runtime refuses a 0-row group (AOTC-RT-006) today; the device block itself carries it:
    # the other groups are computed right, the empty one writes nothing.
    with pytest.raises(AotcError, match="must be positive"):
        gemm.check_nvfp4_problem(0, 128, 128)
    shapes = ((0, 128, 128), (7, 128, 128), (300, 64, 128))
    case = grouped_case(helpers["nvfp4"], (NVFP4, NVFP4), shapes, 1.0, 2)
    _check_grouped(reference, "grouped_nvfp4", *case, shapes, 1.0)


def test_grouped_mxfp8_x_mxfp4(reference, helpers):
    # moe_w4a8_mx: e4m3 activations (1 byte) x packed e2m1 weights, ue8m0 scale factors per 32
    shapes = ((7, 128, 128), (300, 64, 256), (1, 256, 384))
    case = grouped_case(helpers["mx"], (MXFP8, MXFP4), shapes, 0.5, 3)
    _check_grouped(reference, "grouped_mxfp8_mxfp4", *case, shapes, 0.5)


def test_sf_layout_matches_torchao_to_blocked():
    # The NumPy SF layout above, cross-checked with torchao's to_blocked (cuBLAS's documented layout).
    torch = pytest.importorskip("torch")
    blocked = pytest.importorskip("torchao.prototype.mx_formats.utils").to_blocked
    for rows, sf_cols in ((300, 7), (1, 1), (128, 4), (257, 40)):
        ids = torch.arange(rows * sf_cols, dtype=torch.int64).reshape(rows, sf_cols)
        flat = blocked(ids).numpy()
        index = sf_index(rows, sf_cols * 16, 16)
        assert (flat[index.ravel()] == ids.numpy().ravel()).all()


def test_chain_gpu_quantized_operands_through_the_reference(reference):
    # A [200, 256] and B [136, 256] quantized by aotc.runtime.quantize_nvfp4 on the H200 (sm_90a build,
    # tools/device_quantize.py run), saved with their bf16 inputs and global scales.
    data = np.load(REPO / "tests/data/nvfp4_chain_h200.npz")
    m, n, k = data["a.q"].shape[0], data["b.q"].shape[0], 2 * data["a.q"].shape[1]
    a = dequantize(data["a.q"], data["a.sf"], m, k, NVFP4)
    b = dequantize(data["b.q"], data["b.sf"], n, k, NVFP4)
    alpha = float(np.float32(data["a.global_scale"]) * np.float32(data["b.global_scale"]))
    image = Image()
    args = get_family(gemm.NVFP4_DENSE).args_struct()
    args.ptr_A, args.ptr_B = image.put(data["a.q"].tobytes()), image.put(data["b.q"].tobytes())
    args.ptr_SFA, args.ptr_SFB = image.put(data["a.sf"].tobytes()), image.put(data["b.sf"].tobytes())
    args.ptr_D = image.alloc(2 * m * n)
    args.m, args.n, args.k, args.batch, args.alpha, args.sm_count = m, n, k, 1, alpha, 170
    out, deq = run_reference(reference, "dense_nvfp4", args, image)
    check_dequant(deq, [a, b])
    d = read_bf16(out, args.ptr_D, m, n)
    check_d(d, a, b, alpha)
    # and D is the product of the unquantized bf16 inputs up to NVFP4's quantization error: per element
    # about 0.1 RMS for Gaussian data, and for the product about the two operands' errors combined.
    xa, xb = ((data[f"{t}.x"].view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
              for t in ("a", "b"))
    err_a = np.linalg.norm(a * float(data["a.global_scale"]) - xa) / np.linalg.norm(xa)
    err_b = np.linalg.norm(b * float(data["b.global_scale"]) - xb) / np.linalg.norm(xb)
    assert max(err_a, err_b) < 0.12, (err_a, err_b)
    exact = xa @ xb.T
    rel = np.linalg.norm(d - exact) / np.linalg.norm(exact)
    assert rel < 1.1 * np.hypot(err_a, err_b), (rel, err_a, err_b)


def test_a_wrong_sf_layout_is_caught(reference):
    # The same check fails when the scale factors are handed row-major instead of interleaved: the
    # comparison is sensitive to the layout, not only to the values.
    m, n, k = 128, 128, 256
    rng = np.random.default_rng(5)
    a, b = Operand(rng, m, k, NVFP4), Operand(rng, n, k, NVFP4)
    plain = np.zeros_like(a.sf)
    plain[:m * k // 16] = a.sf[sf_index(m, k, 16)].ravel()
    image = Image()
    args = get_family(gemm.NVFP4_DENSE).args_struct()
    args.ptr_A, args.ptr_B = image.put(a.data.tobytes()), image.put(b.data.tobytes())
    args.ptr_SFA, args.ptr_SFB = image.put(plain.tobytes()), image.put(b.sf.tobytes())
    args.ptr_D = image.alloc(2 * m * n)
    args.m, args.n, args.k, args.batch, args.alpha = m, n, k, 1, 1.0
    _, deq = run_reference(reference, "dense_nvfp4", args, image)
    with pytest.raises(AssertionError):
        check_dequant(deq, [a.value, b.value])


# ---- device-routed MoE: the shipped aotc_moe_blockscaled_groups PTX, executed on the CPU ---------------
MOE_KINDS = {"nvfp4": ("nvfp4", (NVFP4, NVFP4), "grouped_nvfp4"), "mx": ("mxfp8", (MXFP8, MXFP4), "grouped_mxfp8_mxfp4")}


def moe_device_block(helper, kind: str, offsets: list[int], n: int, k: int, pointers: dict, block: int,
                     alpha: int = 0):
    """What grouped_gemm_moe_nvfp4/_mxfp8 launches before the GEMM, run as shipped (tests/ptx_exec.py) at
    the runtime's launch shape: the plan, and the block bytes it writes at address `block`."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from ptx_exec import Kernel, Memory

    from aotc.runtime import metadata, moe

    experts = len(offsets) - 1
    plan = moe.moe_plan(helper, experts, n, k)
    memory = Memory()
    off_ptr = memory.place(0x7E00_0000_0000, np.array(offsets, dtype=np.int32).tobytes())
    memory.place(block, b"\xcd" * plan.size)  # never zeroed in the runtime either
    params = moe.metadata_params(plan, block, off_ptr, pointers["a"], pointers["b"], pointers["sfa"], pointers["sfb"],
                                 pointers["d"], alpha, experts, n, k, MOE_KINDS[kind][0])
    Kernel(metadata.PTX, "aotc_moe_blockscaled_groups").run(bytes(params), memory, metadata._moe_grid(experts),
                                                            metadata.MOE_THREADS)
    return plan, memory.region(block)


def moe_host_block(helper, kind: str, offsets: list[int], n: int, k: int, pointers: dict):
    """The host path for the same routing: one group per expert (empty ones included) with its own
    operand addresses, through gemm.group_metadata and gemm.nvfp4_group_block."""
    kinds = MOE_KINDS[kind][1]
    a_row, vec = k * kinds[0][1] // 8, kinds[0][3]
    sf_row = -(-(k // vec) // 4) * 4  # scale-factor bytes per row: K / vec padded to 4
    sfb_bytes = -(-n // 128) * 128 * sf_row
    shapes, infos, tiles = [], [], 0
    for e in range(len(offsets) - 1):
        m = offsets[e + 1] - offsets[e]
        ptrs = (pointers["a"] + offsets[e] * a_row, pointers["b"] + e * n * k // 2, pointers["sfa"] + tiles * 128 * sf_row,
                pointers["sfb"] + e * sfb_bytes, pointers["d"] + offsets[e] * n * 2)
        infos.append(tuple(TensorInfo(p, (1,), (1,), "u8", 0) for p in ptrs))
        shapes.append((m, n, k))
        tiles += -(-m // 128)
    meta, offs = gemm.group_metadata(helper, tuple(shapes))
    return gemm.nvfp4_group_block(infos, tuple(shapes), meta, offs)


@pytest.mark.parametrize("kind", ["nvfp4", "mx"])
@pytest.mark.parametrize("experts", [8, 64, 128])
@pytest.mark.parametrize("case", ["random", "one", "empty"])
def test_device_moe_block_equals_the_host_path(helpers, kind, experts, case):
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_runtime_metadata import moe_offsets

    n, k = 256, 512
    offsets = moe_offsets(case, experts, 16 * experts + 7)
    pointers = {name: 0x7F00_0000_0000 + i * 0x10_0000_0000 for i, name in enumerate(("a", "b", "sfa", "sfb", "d"))}
    alpha = 0x7F80_0000_0000
    block = 0x7E40_0000_0000
    plan, device = moe_device_block(helpers[kind], kind, offsets, n, k, pointers, block, alpha)
    host, at = moe_host_block(helpers[kind], kind, offsets, n, k, pointers)
    assert [plan.ptrs_at + i * plan.ptr_stride for i in range(5)] == at[1:6]
    assert [plan.meta_at + o for o in plan.meta_offsets] == at[6:]
    assert device[:len(host)] == host  # sizes, the 5 pointer arrays and every stride/SF layout, byte for byte
    assert plan.alpha_at == len(host)
    alphas = np.frombuffer(device, dtype=np.uint64, count=experts, offset=plan.alpha_at)
    assert (alphas == alpha + 4 * np.arange(experts, dtype=np.uint64)).all()


@pytest.mark.parametrize("kind", ["nvfp4", "mx"])
def test_device_moe_block_through_the_reference(reference, helpers, kind):
    """End to end on the CPU: experts' operands packed as the MoE ops take them (A rows sorted by expert,
    each expert's scale factors in its own 128-row tiles, per-expert alpha), the argument block written
    by the shipped PTX, then CUTLASS's host reference: every expert right, empty experts included."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from aotc.runtime import moe

    kinds = MOE_KINDS[kind][1]
    n, k = 136, 256
    counts = [0, 7, 300, 0, 1, 128]  # empty experts, one row, several SF tiles, an exact tile
    offsets = [0, *np.cumsum(counts).tolist()]
    rng = np.random.default_rng(11)
    a_ops = [Operand(rng, m, k, kinds[0]) for m in counts]
    b_ops = [Operand(rng, n, k, kinds[1]) for _ in counts]
    alpha = np.array([0.5, 1.5, 0.25, 2.0, 1.0, 0.75], dtype=np.float32)
    image = Image()
    pointers = {"a": image.put(b"".join(x.data.tobytes() for x in a_ops)),
                "b": image.put(b"".join(x.data.tobytes() for x in b_ops)),
                "sfa": image.put(b"".join(x.sf.tobytes() for x in a_ops)),
                "sfb": image.put(b"".join(x.sf.tobytes() for x in b_ops)),
                "d": image.alloc(2 * offsets[-1] * n)}
    assert len(b"".join(x.sf.tobytes() for x in a_ops)) <= moe.moe_sf_bytes(offsets[-1], len(counts), k,
                                                                            MOE_KINDS[kind][0])
    alpha_ptr = image.put(alpha.tobytes())
    block = image.alloc(64 << 10)
    plan, written = moe_device_block(helpers[kind], kind, offsets, n, k, pointers, block, alpha_ptr)
    image.buf[block:block + plan.size] = written
    args = get_family(gemm.NVFP4_GROUPED).args_struct()
    moe.fill_args(args, plan, block, len(counts), 170, 1.0, True)
    out, deq = run_reference(reference, MOE_KINDS[kind][2], args, image)
    check_dequant(deq, [v for a, b in zip(a_ops, b_ops, strict=True) for v in (a.value, b.value)])
    for e, (a, b) in enumerate(zip(a_ops, b_ops, strict=True)):
        check_d(read_bf16(out, pointers["d"] + offsets[e] * n * 2, counts[e], n), a.value, b.value, float(alpha[e]))

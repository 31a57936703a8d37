"""The quantize family's software rounding (templates/quantize/rounding.h, the code the sm_90a/sm_80
kernels run) compiled for the host and checked against independent references: CUDA's own host
emulation of cvt.rn.satfinite.e2m1x2 and torch's e4m3 cast on every bf16 value, and torchao's
reference quantizers (nvfp4_quantize, to_mx FLOOR, to_blocked) on whole tensors, bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import device_quantize as dq

from aotc.runtime import quantize as rq


@pytest.fixture(scope="module")
def host_program(tmp_path_factory) -> Path:
    """tests/programs/quantize_host.cpp built with nvcc (host code only: a few seconds)."""
    from aotc.build.toolchain import find_toolchain

    out = tmp_path_factory.mktemp("quantize-host") / "quantize_host"
    cmd = [find_toolchain().nvcc, "-x", "cu", "-std=c++17", "-O2", f"-I{REPO / 'templates'}", "-o", str(out),
           str(REPO / "tests/programs/quantize_host.cpp")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return out


def _run(program: Path, *args: str) -> None:
    subprocess.run([str(program), *args], check=True, timeout=120)


def all_bf16_values() -> np.ndarray:
    return (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)


def test_e2m1_matches_cuda_emulation_and_torchao_on_every_bf16_value(host_program, tmp_path):
    from torchao.prototype.mx_formats.kernels import f32_to_f4_unpacked

    x = all_bf16_values()
    x.tofile(tmp_path / "x.f32")
    _run(host_program, "e2m1", str(tmp_path / "x.f32"), str(tmp_path / "codes"))
    codes = np.fromfile(tmp_path / "codes", dtype=np.uint8)
    ours, cuda = codes[:x.size], codes[x.size:]
    assert (ours == cuda).all(), np.nonzero(ours != cuda)[0][:10]  # NaN included: +6 (0x7) in both
    finite_or_inf = ~np.isnan(x)
    ref = f32_to_f4_unpacked(torch.from_numpy(x.copy())).numpy()
    assert (ours[finite_or_inf] == ref[finite_or_inf]).all()
    # Scaled values exercise every rounding threshold from both sides, not only bf16's 8-bit mantissas.
    rng = np.random.default_rng(3)
    y = (rng.standard_normal(1 << 18) * 3).astype(np.float32)
    y = np.concatenate([y, np.float32([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -5.0])])
    y = np.concatenate([y, np.nextafter(y[-10:], np.float32(np.inf)), np.nextafter(y[-10:], np.float32(-np.inf))])
    y.tofile(tmp_path / "y.f32")
    _run(host_program, "e2m1", str(tmp_path / "y.f32"), str(tmp_path / "codes"))
    codes = np.fromfile(tmp_path / "codes", dtype=np.uint8)
    assert (codes[:y.size] == codes[y.size:]).all()
    assert (codes[:y.size] == f32_to_f4_unpacked(torch.from_numpy(y)).numpy()).all()


def test_e4m3_matches_torch_on_every_bf16_value(host_program, tmp_path):
    x = all_bf16_values()
    x.tofile(tmp_path / "x.f32")
    _run(host_program, "e4m3", str(tmp_path / "x.f32"), str(tmp_path / "codes"))
    ours = np.fromfile(tmp_path / "codes", dtype=np.uint8)
    # torch's cast saturates only after a clamp (what torchao does before it); NaN keeps its sign in
    # torch (0xff for -NaN) where the satfinite conversion gives 0x7f: scale factors are never negative.
    ref = torch.from_numpy(x.copy()).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    keep = ~np.isnan(x)
    assert (ours[keep] == ref[keep]).all()
    assert (ours[~keep] == 0x7F).all()


@pytest.mark.parametrize("fmt", dq.FORMATS)
def test_whole_tensors_match_torchao_bit_for_bit(host_program, tmp_path, fmt):
    for name, data in dq.cases(fmt).items():
        x = torch.from_numpy(data).to(torch.bfloat16)
        xf = x.float().numpy()
        xf.tofile(tmp_path / "x.f32")
        gs = dq.global_scale_for(fmt, name, x)
        rows, cols = data.shape
        outs = [str(tmp_path / "q"), str(tmp_path / "sf")]
        if fmt == "nvfp4":
            _run(host_program, "nvfp4", str(tmp_path / "x.f32"), str(rows), str(cols), repr(gs), *outs)
        else:
            _run(host_program, "mxfp8", str(tmp_path / "x.f32"), str(rows), str(cols), *outs)
        q = np.fromfile(tmp_path / "q", dtype=np.uint8).reshape(rows, -1)
        sf = np.fromfile(tmp_path / "sf", dtype=np.uint8)
        assert sf.size == rq.sf_bytes(rows, cols, fmt)
        res = dq.compare(fmt, x, q, sf, gs)
        assert res["ok"], (name, res)
        assert res["nan_block_sf_is_nan"], name

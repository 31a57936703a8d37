"""quantize_blockscaled: real sm_120a / sm_90a builds through the pipeline; the SASS of the sm_120a
build converts with the hardware e2m1 instruction and the sm_90a build without it (software rounding,
tests/test_quantize_rounding.py); the host helper's refusals; the runtime entry points' checks."""

from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest

import aotc.runtime as rt
from aotc.diagnostics import AotcError
from aotc.families import get_family
from aotc.runtime import gemm
from aotc.runtime import quantize as rq
from aotc.runtime.device import device_from_capability
from aotc.runtime.loader import AotcLaunch

FAMILY = "quantize_blockscaled"
PARAMS = {"format": "nvfp4", "in_dtype": "bf16", "threads": 256}
# cvt.rn.satfinite.e2m1x2.f32 in SASS (ptxas of CUDA 13): F2FP.SATFINITE.E2M1.F32.PACK_AB_MERGE_C
E2M1_SASS = re.compile(r"\bF2FP\.[A-Z0-9_.]*E2M1")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache, toolchain) holding quantize_nvfp4/in_dtype=bf16 for sm120a and sm90a (seconds each)."""
    from aotc.arch import parse_arch_list
    from aotc.build.pipeline import build
    from aotc.build.spec import load_specs
    from aotc.build.toolchain import find_toolchain
    from aotc.cache import Cache

    specs = [s for s in load_specs().specs if s.name == "quantize_nvfp4/in_dtype=bf16"]
    assert specs, "catalog lost quantize_nvfp4/in_dtype=bf16"
    cache = Cache(tmp_path_factory.mktemp("quantize-cache"))
    summary = build(specs, parse_arch_list("sm120a,sm90a"), cache, progress=False)
    assert summary.ok, [d.format() for r in summary.results for d in r.diagnostics]
    return cache, find_toolchain()


def _found(built, cc, arch):
    cache, _ = built
    return rt.find(FAMILY, PARAMS, device_from_capability(cc), arch=arch, sources=[rt.CacheSource(cache)])


def _sass(built, cc, arch, tmp_path) -> str:
    found = _found(built, cc, arch)
    path = tmp_path / f"{arch}.cubin"
    path.write_bytes(found.source.read_blob(found.manifest["blobs"]["cubin"]["sha256"]))
    return subprocess.run([built[1].cuobjdump, "-sass", str(path)], check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.compile
def test_sm120a_converts_in_hardware_and_sm90a_in_software(built, tmp_path):
    sm120 = _sass(built, (12, 0), "sm120a", tmp_path)
    # 16 elements per thread, two per instruction
    assert len(E2M1_SASS.findall(sm120)) == 8, E2M1_SASS.findall(sm120)
    assert not E2M1_SASS.findall(_sass(built, (9, 0), "sm90a", tmp_path))
    manifest = _found(built, (12, 0), "sm120a").manifest
    assert manifest["resources"]["smem_static"] == 0 and manifest["resources"]["spills_bytes"] == 0
    assert manifest["sass"]["banned"] == []


def _query(helper, **fields) -> tuple[int, AotcLaunch, str]:
    args = get_family(FAMILY).args_struct()
    defaults = {"x": 0x10000, "q": 0x20000, "sf": 0x30000, "rows": 300, "cols": 2048, "x_row_stride": 2048,
                "global_scale": 1.0}
    for name, value in (defaults | fields).items():
        setattr(args, name, value)
    out, err = AotcLaunch(), ctypes.create_string_buffer(512)
    rc = helper.query_fn(ctypes.addressof(args), ctypes.byref(out), err, 512)
    return rc, out, err.value.decode()


@pytest.mark.compile
def test_helper_launch_shape_and_refusals(built):
    helper = rt.host_kernel(_found(built, (12, 0), "sm120a")).helper
    rc, launch, err = _query(helper)
    assert rc == 0, err
    blocks = 384 * 128  # rows padded to 128, 2048 / 16 = 128 scale-factor columns: one thread each
    assert (launch.grid[0], launch.block[0], launch.smem_bytes) == (blocks // 256, 256, 0)
    for fields, words in (({"cols": 2056, "x_row_stride": 2056}, "not a multiple of 16"),
                          ({"x_row_stride": 2044}, "row stride"),
                          ({"global_scale": 0.0}, "normal float"),
                          ({"global_scale": 1e-40}, "normal float"),
                          ({"global_scale": float("inf")}, "normal float"),
                          ({"x": 0x10008}, "16-byte aligned"),
                          ({"rows": 0}, "must be >= 1")):
        rc, _, err = _query(helper, **fields)
        assert rc != 0 and words in err, (fields, err)


def test_render_picks_the_conversion_per_target():
    from aotc.arch import ARCHES

    fam = get_family(FAMILY)
    hw = {name: fam.render_context(PARAMS, ARCHES[name])["hw_e2m1"] for name in ("sm120a", "sm120f", "sm121a",
                                                                                   "sm90a", "sm80")}
    assert hw == {"sm120a": True, "sm120f": True, "sm121a": True, "sm90a": False, "sm80": False}
    assert not fam.render_context({**PARAMS, "format": "mxfp8"}, ARCHES["sm120a"])["hw_e2m1"]


def test_sf_bytes_is_the_gemm_layout_size():
    for rows, cols in ((1, 16), (300, 2048), (129, 80), (4096, 7168)):
        if cols % 64 == 0:  # the sizes gemm_nvfp4 checks its scale-factor buffers against
            assert rq.sf_bytes(rows, cols, "nvfp4") == gemm.nvfp4_sf_bytes(rows, cols)
        assert rq.sf_bytes(rows, cols, "nvfp4") == -(-rows // 128) * 128 * -(-(cols // 16) // 4) * 4
    assert rq.sf_bytes(300, 160, "mxfp8") == 384 * 8
    assert rq.nvfp4_global_scale(2688.0) == 1.0


def test_entry_points_refuse_host_memory_with_a_code():
    x = np.zeros((4, 32), dtype=np.float16)
    for call in (lambda: rt.quantize_nvfp4(x, np.zeros((4, 16), np.uint8), np.zeros(512, np.uint8)),
                 lambda: rt.quantize_mxfp8(x, np.zeros((4, 32), np.uint8), np.zeros(512, np.uint8))):
        with pytest.raises(AotcError) as exc:
            call()
        diag = exc.value.diagnostics[0]
        assert diag.code == "AOTC-RT-006" and "host memory" in diag.message

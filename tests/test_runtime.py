"""Runtime on the CPU: lookup and target order, errors (no GPU, wrong target refused before loading,
corrupt blobs, helper ABI), memoization and thread safety, tensor and stream adapters, select().
Cache entries are real: a tiny ABI-conforming kernel compiled by nvcc for several targets and stored
through aotc.cache; a real catalog kernel built by aotc.build where that pipeline is available.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from aotc import runtime as rt
from aotc.arch import MMA_BLOCKSCALED, Arch
from aotc.cache import Cache
from aotc.diagnostics import AotcError
from aotc.families import FAMILY_MODULES, Family, Field, SmemModel
from aotc.keys import action_inputs, action_key, spec_key
from aotc.resources import templates_dir
from aotc.runtime import loader, registry
from aotc.runtime.device import device_from_capability

REPO = Path(__file__).resolve().parent.parent
FAMILY = "rt_test_axpy"
TARGETS = ("sm80", "sm90a", "sm120a", "sm120f")

# A tiny kernel that follows the launch ABI of templates/common/aotc_abi.h exactly like the catalog
# templates: compiled once per target as a cubin and once as the host helper.
AXPY_SOURCE = r"""
#include "common/aotc_abi.h"
struct AotcArgs { const float* x; float* y; float a; int n; unsigned long long workspace_bytes; unsigned smem; };
struct Params { AotcArgs args; const float* workspace; };
#ifdef AOTC_HOST_HELPER
AOTC_EXPORT int aotc_query(const AotcArgs* a, AotcLaunch* out, char* err, int errlen) {
  if (a->n <= 0) { char m[96]; std::snprintf(m, sizeof m, "n = %d, must be positive", a->n);
                   return aotc_fail(err, errlen, m); }
  out->grid[0] = (a->n + 127) / 128; out->grid[1] = out->grid[2] = 1;
  out->block[0] = 128; out->block[1] = out->block[2] = 1;
  out->smem_bytes = a->smem; out->params_bytes = sizeof(Params); out->workspace_bytes = a->workspace_bytes;
  return 0;
}
AOTC_EXPORT int aotc_prepare(const AotcArgs* a, void* ws, void* params_out, uint32_t cap, AotcLaunch* out,
                             char* err, int errlen) {
  int rc = aotc_query(a, out, err, errlen);
  if (rc) return rc;
  if (cap < sizeof(Params)) return aotc_fail(err, errlen, "params buffer too small");
  Params p{*a, (const float*)ws};
  std::memcpy(params_out, &p, sizeof p);
  return 0;
}
#else
extern "C" __global__ void aotc_kernel(const __grid_constant__ Params p) {
  extern __shared__ float stage[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float x = i < p.args.n ? p.args.x[i] : 0.f;
  if (p.args.smem) { stage[p.args.smem / 4 - 1 - threadIdx.x] = x; __syncthreads();
                     x = stage[p.args.smem / 4 - 1 - threadIdx.x]; }
  float bias = p.workspace ? p.workspace[0] : 0.f;  // the runtime zeroes a fresh workspace
  if (i < p.args.n) p.args.y[i] = p.args.a * x + p.args.y[i] + bias;
}
#endif
"""

BAD_ABI_HELPER = r"""
extern "C" int aotc_abi_version() { return 99; }
extern "C" int aotc_query(const void*, void*, char*, int) { return 0; }
extern "C" int aotc_prepare(const void*, void*, void*, unsigned, void*, char*, int) { return 0; }
"""


class AxpyArgs(ctypes.Structure):
    _fields_ = [("x", ctypes.c_void_p), ("y", ctypes.c_void_p), ("a", ctypes.c_float), ("n", ctypes.c_int),
                ("workspace_bytes", ctypes.c_uint64), ("smem", ctypes.c_uint32)]


class AxpyFamily(Family):
    """The test kernel as a family: `tile` only distinguishes stored entries (for select)."""

    name = FAMILY
    doc = "y = a*x + y (runtime tests)"
    fields: ClassVar[dict[str, Field]] = {"tile": Field("shape", "CTA tile (m, n)", default=(128, 128), length=2),
                                          "needs_blockscaled": Field(bool, "pretend the kernel needs block-scaled MMA", default=False)}
    template = ""
    probe_template = ""
    args_struct = AxpyArgs

    def requires(self, p: dict) -> frozenset[str]:
        return frozenset({MMA_BLOCKSCALED}) if p["needs_blockscaled"] else frozenset()

    def smem(self, p: dict, arch: Arch) -> SmemModel:
        return SmemModel((("stage", 0),))

    def check(self, p: dict, arch: Arch) -> list:
        return []

    def render_context(self, p: dict, arch: Arch) -> dict:
        return {}

    def expected_mma(self, p: dict, arch: Arch) -> str | None:
        return None


FAMILIES = {FAMILY: AxpyFamily()}


def find_nvcc() -> str:
    from aotc.build.toolchain import find_toolchain

    return find_toolchain().nvcc


def compile_axpy(out: Path, targets: tuple[str, ...] = TARGETS) -> dict[str, bytes]:
    """Real nvcc: one cubin per target plus the host helper; returns role/target -> bytes."""
    nvcc = find_nvcc()
    src = out / "axpy.cu"
    src.write_text(AXPY_SOURCE)
    inc = f"-I{templates_dir()}"
    blobs: dict[str, bytes] = {"source": AXPY_SOURCE.encode()}
    for target in targets:
        arch = rt_arch(target)
        cubin = out / f"{target}.cubin"
        subprocess.run([nvcc, "-cubin", "-gencode", arch.gencode, inc, "-o", str(cubin), str(src)], check=True)
        blobs[target] = cubin.read_bytes()
    helper = out / "helper.so"
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-DAOTC_HOST_HELPER", "-x", "cu", inc, "-o",
                    str(helper), str(src)], check=True)
    blobs["helper"] = helper.read_bytes()
    return blobs


def rt_arch(name: str) -> Arch:
    from aotc.arch import get_arch

    return get_arch(name)


def store_entry(cache: Cache, params: dict, target: str, cubin: bytes, helper: bytes, source: bytes) -> dict:
    """Store one kernel the way the build does: manifest (with blobs) under its action key, then the ref."""
    typed, errors = FAMILIES[FAMILY].validate(params)
    assert not errors
    inputs = action_inputs(source.decode() + json.dumps(typed, default=list), "test-nvcc", ["-cubin"], target, {})
    key = action_key(inputs)
    arch = rt_arch(target)
    manifest = {"name": f"axpy_{typed['tile'][0]}x{typed['tile'][1]}", "family": FAMILY, "params": typed,
                "arch": target, "target": {"sm": arch.sm, "variant": arch.variant}, "entry": "aotc_kernel",
                "inputs": inputs}
    stored = cache.put_entry(key, {"cubin": cubin, "helper": helper, "source": source}, manifest)
    cache.set_ref(spec_key(FAMILY, typed, target), key, {"name": manifest["name"], "family": FAMILY,
                                                          "params": typed, "arch": target})
    return stored


@pytest.fixture(scope="module")
def axpy_blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return compile_axpy(tmp_path_factory.mktemp("axpy"))


@pytest.fixture(autouse=True)
def axpy_family(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Register the test family through the public registry and isolate per-test runtime state."""
    monkeypatch.setitem(FAMILY_MODULES, FAMILY, __name__)
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "rtdir"))
    rt.clear()
    yield
    rt.clear()


def make_cache(root: Path, blobs: dict[str, bytes], targets: tuple[str, ...], params: dict | None = None,
               cubin_for: dict[str, str] | None = None) -> tuple[Cache, list]:
    """A real cache holding the axpy kernel for `targets` (optionally storing another target's cubin
    under a target's key, as a mislabelled entry would)."""
    cache = Cache(root)
    for target in targets:
        cubin = blobs[(cubin_for or {}).get(target, target)]
        store_entry(cache, params or {}, target, cubin, blobs["helper"], blobs["source"])
    return cache, [rt.CacheSource(cache)]


# ---- lookup and target order -------------------------------------------------------------------
@pytest.mark.parametrize(("cc", "stored", "expected"), [
    ((12, 0), ("sm120a", "sm120f", "sm90a"), "sm120a"),  # exact `a` first
    ((12, 0), ("sm120f", "sm90a"), "sm120f"),  # then the family build
    ((12, 1), ("sm120a", "sm120f"), "sm120f"),  # sm_120a does not run on 12.1; 120f does
    ((9, 0), ("sm90a", "sm120a", "sm80"), "sm90a"),
    ((8, 9), ("sm80", "sm90a"), "sm80"),  # plain sm_80 runs on newer 8.x
])
def test_find_prefers_exact_then_family_then_plain(tmp_path, axpy_blobs, cc, stored, expected):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, stored)
    found = rt.find(FAMILY, {}, device_from_capability(cc), sources=sources)
    assert found.arch == expected
    assert found.manifest["arch"] == expected
    assert found.spec_key == spec_key(FAMILY, found.params, expected)


def test_find_fills_defaults_like_the_build(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",), params={"tile": [128, 128]})
    dev = device_from_capability((9, 0))
    # {} and an explicit default, list or tuple, are the same kernel
    assert rt.find(FAMILY, {}, dev, sources=sources).spec_key == \
        rt.find(FAMILY, {"tile": (128, 128), "needs_blockscaled": False}, dev, sources=sources).spec_key


def test_sources_are_searched_in_order(tmp_path, axpy_blobs):
    _, first = make_cache(tmp_path / "a", axpy_blobs, ("sm90a",))
    _, second = make_cache(tmp_path / "b", axpy_blobs, ("sm90a", "sm120a"))
    dev90, dev120 = device_from_capability((9, 0)), device_from_capability((12, 0))
    assert rt.find(FAMILY, {}, dev90, sources=first + second).source is first[0]
    assert rt.find(FAMILY, {}, dev120, sources=first + second).source is second[0]


def test_no_kernel_lists_what_exists_and_the_build_command(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm120a",))
    with pytest.raises(AotcError) as exc:
        rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-002"
    assert "compute capability 9.0" in diag.message
    assert "sm120a (cannot run here)" in diag.message
    assert diag.fix == "build one: aotc build --arch sm90a --filter axpy_128x128"
    assert diag.details["stored"] == ["sm120a"]


def test_no_kernel_when_no_target_of_the_device_has_the_features(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm120a",), params={"needs_blockscaled": True})
    with pytest.raises(AotcError) as exc:
        rt.find(FAMILY, {"needs_blockscaled": True}, device_from_capability((9, 0)), sources=sources)
    assert exc.value.diagnostics[0].code == "AOTC-RT-002"
    assert "mma_blockscaled" in exc.value.diagnostics[0].fix and "sm_90" in exc.value.diagnostics[0].fix


def test_bad_params_and_unknown_family(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    dev = device_from_capability((9, 0))
    with pytest.raises(AotcError) as exc:
        rt.find(FAMILY, {"tile": [128]}, dev, sources=sources)
    assert exc.value.diagnostics[0].code == "AOTC-RT-009" and "2 entries, got 1" in str(exc.value)
    with pytest.raises(AotcError) as exc:
        rt.find("no_such_family", {}, dev, sources=sources)
    assert exc.value.diagnostics[0].code == "AOTC-RT-009" and "grouped_gemm_sm80" in str(exc.value)


# ---- wrong target: refused before the driver sees it -------------------------------------------
def test_forced_sm120a_on_an_h100_is_refused(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm120a",))
    with pytest.raises(AotcError) as exc:
        rt.find(FAMILY, {}, device_from_capability((9, 0), name="NVIDIA H100"), arch="sm120a", sources=sources)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-003"
    assert "sm_120 exactly" in diag.message and "NVIDIA H100" in diag.message
    assert diag.fix.endswith("aotc build --arch sm90a --filter axpy_128x128")


def test_mislabelled_cubin_is_refused_by_its_elf_target_before_loading(tmp_path, axpy_blobs):
    # The sm90a ref points at an sm_120a cubin (a broken wheel or a hand-edited cache): lookup trusts
    # the ref, the loader reads the ELF and refuses. With no driver here, reaching the driver would
    # raise AOTC-RT-001 instead: the code proves the check ran first.
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",), cubin_for={"sm90a": "sm120a"})
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    with pytest.raises(AotcError) as exc:
        rt.load_kernel(found, device_from_capability((9, 0)))
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-003"
    assert "built for sm_120a" in diag.message and "9.0" in diag.message
    assert diag.details["cubin_target"] == "sm_120a"
    assert "aotc build --arch sm90a" in diag.fix
    # The kept cubin is named by its ELF's target, not by the manifest's claim: a later process that
    # looks under the claimed target finds nothing to trust and parses the ELF again.
    digest = found.manifest["blobs"]["cubin"]["sha256"]
    assert [p.name for p in loader.helper_dir().glob(f"{digest}.*.cubin")] == [f"{digest}.sm120a.cubin"]
    rt.clear()
    with pytest.raises(AotcError) as exc:
        rt.load_kernel(found, device_from_capability((9, 0)))
    assert exc.value.diagnostics[0].code == "AOTC-RT-003"


def test_elf_target_of_each_cubin_is_read_correctly(axpy_blobs):
    for target in TARGETS:
        name, arch = loader.cubin_arch(axpy_blobs[target])
        assert arch.sm == rt_arch(target).sm
        assert name.startswith(f"sm_{arch.sm}")
    assert loader.cubin_arch(axpy_blobs["sm120a"])[0] == "sm_120a"
    assert not loader.cubin_arch(axpy_blobs["sm120a"])[1].runs_on((9, 0))
    assert loader.cubin_arch(axpy_blobs["sm90a"])[1].runs_on((9, 0))


# ---- corrupt blobs, helper ABI -----------------------------------------------------------------
def _blob_file(cache: Cache, digest: str) -> Path:
    return cache.store.path(digest)


def test_corrupt_cubin_is_reported_not_loaded(tmp_path, axpy_blobs):
    cache, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    digest = found.manifest["blobs"]["cubin"]["sha256"]
    import zstandard

    _blob_file(cache, digest).write_bytes(zstandard.ZstdCompressor().compress(b"\x7fELF not the cubin"))
    with pytest.raises(AotcError) as exc:
        rt.load_kernel(found, device_from_capability((9, 0)))
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-004"
    assert digest[:12] in diag.message and "corrupt" in diag.message
    assert "aotc build --arch sm90a" in diag.fix


def test_missing_blob_is_reported(tmp_path, axpy_blobs):
    cache, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    _blob_file(cache, found.manifest["blobs"]["cubin"]["sha256"]).unlink()
    with pytest.raises(AotcError) as exc:
        rt.host_kernel(found)
    assert exc.value.diagnostics[0].code == "AOTC-RT-004"


def test_helper_of_another_abi_is_refused(tmp_path, axpy_blobs):
    nvcc = find_nvcc()
    (tmp_path / "bad.cu").write_text(BAD_ABI_HELPER)
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-o", str(tmp_path / "bad.so"),
                    str(tmp_path / "bad.cu")], check=True)
    cache = Cache(tmp_path / "c")
    store_entry(cache, {}, "sm90a", axpy_blobs["sm90a"], (tmp_path / "bad.so").read_bytes(), b"bad")
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=[rt.CacheSource(cache)])
    with pytest.raises(AotcError) as exc:
        rt.host_kernel(found)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-005"
    assert "launch ABI 99" in diag.message and "speaks 1" in diag.message


def test_helper_abi_version_matches_the_runtime(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    host = rt.host_kernel(rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources))
    assert host.helper.lib.aotc_abi_version() == 1
    assert loader.cubin_arch(host.cubin)[0] == "sm_90a"


def test_helper_query_reports_the_launch_and_rejections(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    helper = rt.host_kernel(rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)).helper
    out, err = loader.AotcLaunch(), ctypes.create_string_buffer(256)
    args = AxpyArgs(0, 0, 2.0, 1000, 0, 0)
    assert helper.query_fn(ctypes.addressof(args), ctypes.byref(out), err, 256) == 0
    assert (list(out.grid), list(out.block), out.params_bytes) == ([8, 1, 1], [128, 1, 1], 48)
    args.n = -3
    assert helper.query_fn(ctypes.addressof(args), ctypes.byref(out), err, 256) == 1
    assert err.value == b"n = -3, must be positive"


def test_tampered_helper_file_is_rewritten_from_the_verified_blob(tmp_path, axpy_blobs):
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    digest = found.manifest["blobs"]["helper"]["sha256"]
    path = loader.helper_dir() / f"{digest}.so"
    path.write_bytes(b"not a shared object")
    rt.host_kernel(found)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_cubin_is_kept_verified_in_the_runtime_folder_and_rechecked_on_every_read(tmp_path, axpy_blobs):
    cache, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    found = rt.find(FAMILY, {}, device_from_capability((9, 0)), sources=sources)
    digest = found.manifest["blobs"]["cubin"]["sha256"]
    first = rt.host_kernel(found).cubin
    kept = loader.helper_dir() / f"{digest}.sm90a.cubin"  # named by the target its ELF was found to have
    assert kept.read_bytes() == first
    _blob_file(cache, digest).unlink()  # a later process: served from the kept file, no zstd, no cache read
    rt.clear()
    elf = sys.modules.pop("aotc.elf", None)  # nor an ELF parse: the name carries the checked target
    try:
        host = rt.host_kernel(found)
        assert "aotc.elf" not in sys.modules
    finally:
        if elf is not None:
            sys.modules["aotc.elf"] = elf
    assert host.cubin == first and host.target == (90, "a")
    kept.write_bytes(first[:-1] + bytes([first[-1] ^ 1]))  # one flipped bit: not loaded
    rt.clear()
    with pytest.raises(AotcError) as exc:
        rt.host_kernel(found)
    assert exc.value.diagnostics[0].code == "AOTC-RT-004"  # the cache blob is gone too: nothing to load


def test_typed_ops_refuse_host_tensors_with_a_coded_error():
    torch = pytest.importorskip("torch")
    q = torch.zeros(1, 16, 1, 128, dtype=torch.bfloat16)
    a, b = torch.zeros(16, 128, dtype=torch.bfloat16), torch.zeros(2, 64, 128, dtype=torch.bfloat16)
    out, offsets = torch.zeros(16, 64, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int32)
    for call in (lambda: rt.fmha_fwd(q, q, q, q), lambda: rt.fmha_decode(q, q, q, q),
                 lambda: rt.grouped_gemm_moe(a, b, out, offsets)):
        with pytest.raises(AotcError) as exc:
            call()
        diag = exc.value.diagnostics[0]
        assert diag.code == "AOTC-RT-006" and "host memory" in diag.message


# ---- no driver ---------------------------------------------------------------------------------
def _has_driver() -> bool:
    try:
        rt.query_device(0)
    except AotcError:
        return False
    return True


@pytest.mark.skipif(_has_driver(), reason="a CUDA driver and GPU are present")
def test_no_gpu_is_a_clear_error_not_a_crash(tmp_path, axpy_blobs):
    with pytest.raises(AotcError) as exc:
        rt.query_device(0)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-001"
    assert "driver" in diag.message.lower() or "GPU" in diag.message
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    with pytest.raises(AotcError) as exc:
        rt.get_kernel(FAMILY, {}, sources=sources)
    assert exc.value.diagnostics[0].code == "AOTC-RT-001"


# ---- memoization and thread safety -------------------------------------------------------------
class CountingSource(rt.CacheSource):
    """A real cache source that counts blob reads."""

    def __init__(self, cache: Cache):
        super().__init__(cache)
        self.reads: list[str] = []
        self._lock = threading.Lock()

    def read_blob(self, digest: str) -> bytes:
        with self._lock:
            self.reads.append(digest)
        return super().read_blob(digest)


def test_many_threads_share_one_load(tmp_path, axpy_blobs):
    cache, _ = make_cache(tmp_path / "c", axpy_blobs, ("sm90a", "sm120a"))
    source = CountingSource(cache)
    barrier = threading.Barrier(16)
    results: list = []
    errors: list = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            dev = device_from_capability((9, 0) if i % 2 else (12, 0))
            found = rt.find(FAMILY, {}, dev, sources=[source])
            results.append((found.arch, rt.host_kernel(found)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    by_arch = {arch: {id(h) for a, h in results if a == arch} for arch, _ in results}
    assert {k: len(v) for k, v in by_arch.items()} == {"sm90a": 1, "sm120a": 1}
    # one cubin read per target; the helper (same digest for both) at most once per target
    cubin90 = cache.get_manifest(_key(cache, "sm90a"))["blobs"]["cubin"]["sha256"]
    assert source.reads.count(cubin90) == 1
    assert len(source.reads) <= 4


def _key(cache: Cache, target: str) -> str:
    typed, _ = FAMILIES[FAMILY].validate({})
    return cache.get_ref(spec_key(FAMILY, typed, target))["key"]


def test_helper_written_by_many_processes_at_once(tmp_path, axpy_blobs):
    """Several processes drop the same helper into one runtime folder concurrently (atomic replace)."""
    blob = tmp_path / "helper.bin"
    blob.write_bytes(axpy_blobs["helper"])
    digest = hashlib.sha256(axpy_blobs["helper"]).hexdigest()
    script = (
        "import os, sys, pathlib, time\n"
        "from aotc.runtime import loader\n"
        "data = pathlib.Path(sys.argv[1]).read_bytes()\n"
        "for _ in range(20):\n"
        "    p = loader.helper_path(sys.argv[2], lambda: data)\n"
        "    (p.parent / (sys.argv[2] + '.so')).unlink(missing_ok=True)\n"
        # the final load waits until no process still deletes the file (the deletions are the test's own)
        "done = pathlib.Path(sys.argv[3])\n"
        "(done / str(os.getpid())).touch()\n"
        "while len(list(done.iterdir())) < 4:\n"
        "    time.sleep(0.01)\n"
        "h = loader.Helper(loader.helper_path(sys.argv[2], lambda: data), 'test')\n"
        "print(h.lib.aotc_abi_version())\n"
    )
    env = {**os.environ, "AOTC_RUNTIME_DIR": str(tmp_path / "shared_rt"), "PYTHONPATH": repo_path()}
    (tmp_path / "done").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(blob), digest, str(tmp_path / "done")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == ["1"] * 4
    leftovers = [p.name for p in (tmp_path / "shared_rt").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_helper_dir_is_private(tmp_path, monkeypatch):
    shared = tmp_path / "open"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(shared))
    with pytest.raises(AotcError) as exc:
        loader.helper_dir()
    assert exc.value.diagnostics[0].code == "AOTC-RT-005" and "0o777" in exc.value.diagnostics[0].message


def test_helper_dir_default_is_the_temp_folder_tempfile_would_pick(tmp_path, monkeypatch):
    """Without AOTC_RUNTIME_DIR / XDG_RUNTIME_DIR: $TMPDIR/aotc-<uid> without tempfile's write probe;
    a $TMPDIR where no folder can be made falls back to tempfile.gettempdir()'s choice."""
    import tempfile

    from aotc import runtime_folder as files

    monkeypatch.setattr(files, "_dirs", {})  # the folder is memoized per process and setting
    for var in ("AOTC_RUNTIME_DIR", "XDG_RUNTIME_DIR", "TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    root = loader.helper_dir()
    assert root == tmp_path / f"aotc-{os.getuid()}" and root.stat().st_mode & 0o777 == 0o700
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # a file: nothing can be made under it
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    monkeypatch.setenv("TMPDIR", str(blocked))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(fallback))
    files._dirs.clear()
    assert loader.helper_dir() == fallback / f"aotc-{os.getuid()}"


def test_fast_lookup_memo_key_ignores_dict_order_and_list_vs_tuple():
    assert registry.freeze({"a": [1, 2], "b": 3}) == registry.freeze({"b": 3, "a": (1, 2)})
    assert registry.freeze({"a": [1, 2]}) != registry.freeze({"a": [2, 1]})


# ---- process boundary: the runtime imports nothing from the build side --------------------------
def test_runtime_import_pulls_in_no_build_side_module(tmp_path, axpy_blobs):
    make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    script = (
        "import sys\n"
        "import aotc.runtime as rt\n"
        "from aotc.cache import Cache\n"
        "src = [rt.CacheSource(Cache(sys.argv[1]))]\n"
        "dev = rt.device_from_capability((9, 0))\n"
        "try:\n"
        "    rt.find('grouped_gemm_sm80', {}, dev, sources=src)\n"
        "except Exception:\n"
        "    pass\n"
        "bad = [m for m in sys.modules if m in ('jinja2', 'subprocess') or m.split('.')[0] == 'jinja2'\n"
        "       or m.split('.')[:2] == ['aotc', 'build'] or m == 'aotc.cli']\n"
        "print(','.join(bad))\n"
        "print('loaded', ','.join(sorted(m for m in sys.modules if m.startswith('aotc'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": repo_path()}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "c")], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "", f"build-side modules imported by the runtime: {out[0]}"
    assert "aotc.runtime" in out[1]


# ---- tensors and streams -----------------------------------------------------------------------
class CudaArray:
    """A minimal __cuda_array_interface__ producer (the protocol, as numba and cupy expose it)."""

    def __init__(self, ptr: int, shape: tuple, typestr: str, strides: tuple | None = None):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape, "typestr": typestr,
                                         "strides": strides, "version": 3}


def test_dlpack_host_array_is_read_and_refused_for_the_gpu():
    a = np.arange(24, dtype=np.float16).reshape(4, 6)
    info = rt.tensor_info(a)
    assert (info.ptr, info.shape, info.strides, info.dtype, info.device) == (
        a.ctypes.data, (4, 6), (6, 1), "f16", -1)
    with pytest.raises(AotcError) as exc:
        rt.expect(info, "q", dtype="f16", shape=(4, 6), device=0, align=0)
    assert exc.value.diagnostics[0].code == "AOTC-RT-006" and "host memory" in str(exc.value)


def test_dlpack_view_strides_and_offset():
    a = np.zeros((8, 8), dtype=np.float32)
    view = a[2:, ::2]
    info = rt.tensor_info(view)
    assert info.ptr == a.ctypes.data + 2 * 8 * 4 and info.strides == (8, 2) and info.shape == (6, 4)
    with pytest.raises(AotcError, match="not contiguous"):
        rt.expect(info, "x", dtype="f32", align=0)


def test_cuda_array_interface_checks_dtype_shape_alignment():
    ok = rt.tensor_info(CudaArray(0x7F0000000000, (3, 64), "<f2"))
    assert (ok.dtype, ok.strides) == ("f16", (64, 1))
    rt.expect(ok, "k", dtype=("f16", "bf16"), shape=(None, 64))
    with pytest.raises(AotcError, match="dimension 1 must be 128, got 64"):
        rt.expect(ok, "k", shape=(3, 128))
    with pytest.raises(AotcError, match=r"dtype f16; this kernel takes bf16"):
        rt.expect(ok, "k", dtype="bf16")
    odd = rt.tensor_info(CudaArray(0x7F0000000008, (3, 64), "<f2"))
    with pytest.raises(AotcError) as exc:
        rt.expect(odd, "k", align=16)
    assert "8 B past a 16 B boundary" in exc.value.diagnostics[0].message
    strided = rt.tensor_info(CudaArray(0x7F0000000000, (4, 4), "<f4", strides=(32, 4)))
    assert strided.strides == (8, 1) and not strided.is_contiguous()


def test_unusable_objects_are_refused():
    with pytest.raises(AotcError) as exc:
        rt.tensor_info([1, 2, 3])
    assert exc.value.diagnostics[0].code == "AOTC-RT-006"
    with pytest.raises(AotcError):
        rt.stream_handle("stream 7")


def test_stream_handles():
    class CoreStream:
        def __cuda_stream__(self):
            return (0, 0xABC)

    class TorchStream:
        cuda_stream = 0x1234

    assert [rt.stream_handle(s) for s in (None, 0, 7, CoreStream(), TorchStream())] == [0, 0, 7, 0xABC, 0x1234]


# ---- select ------------------------------------------------------------------------------------
def test_select_picks_the_least_padded_stored_tile(tmp_path, axpy_blobs):
    cache = Cache(tmp_path / "c")
    for tile in ((128, 128), (64, 128), (128, 256)):
        store_entry(cache, {"tile": list(tile)}, "sm90a", axpy_blobs["sm90a"], axpy_blobs["helper"],
                    axpy_blobs["source"])
    sources = [rt.CacheSource(cache)]
    dev = device_from_capability((9, 0))
    cands = [{"tile": [128, 128]}, {"tile": [64, 128]}, {"tile": [128, 256]}, {"tile": [64, 64]}]
    # m=64: a 128-row tile pads 2x, 64x128 fits exactly
    assert rt.select(FAMILY, cands, {"m": 64, "n": 4096, "k": 4096}, dev, sources=sources) == {"tile": [64, 128]}
    # m=n=4096: no padding for any; the largest stored tile (the unstored 64x64 is skipped) wins
    assert rt.select(FAMILY, cands, {"m": 4096, "n": 4096, "k": 64}, dev, sources=sources) == {"tile": [128, 256]}
    with pytest.raises(AotcError) as exc:
        rt.select(FAMILY, [{"tile": [64, 64]}], {"m": 1, "n": 1}, dev, sources=sources)
    assert exc.value.diagnostics[0].code == "AOTC-RT-010"



def test_fmha_entry_point_refuses_host_tensors_before_any_driver_call():
    q = np.zeros((1, 16, 2, 128), dtype=np.float16)
    with pytest.raises(AotcError) as exc:
        rt.fmha_fwd(q, q, q, q)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-006" and "'q' is in host memory" in diag.message


def test_grouped_gemm_entry_point_checks_groups_before_any_driver_call():
    a = [np.zeros((64, 128), dtype=np.float16)]
    with pytest.raises(AotcError, match="got 1 A, 0 B and 1 out"):
        rt.grouped_gemm(a, [], a)
    with pytest.raises(AotcError) as exc:
        rt.grouped_gemm(a, a, a)
    assert exc.value.diagnostics[0].code == "AOTC-RT-006" and "'a[0]' is in host memory" in str(exc.value)


# ---- cold start: what a serving process pays before its first launch ----------------------------
def serving_processes(tmp_path: Path, script: str, *argvs: tuple[str, ...]) -> list[list[str]]:
    """One fresh process per argv tuple, run as `python -c script tmp_path *argv` serving from the cache
    tmp_path/c with the runtime folder tmp_path/rt (the test family's module importable from
    tmp_path, as `axpy_family_mod`): each one's stdout, split."""
    (tmp_path / "axpy_family_mod.py").write_text(FAMILY_MODULE)
    env = {**os.environ, "PYTHONPATH": repo_path(), "AOTC_CACHE_DIR": str(tmp_path / "c"),
           "AOTC_RUNTIME_DIR": str(tmp_path / "rt")}
    return [_child(["-c", script, str(tmp_path), *argv], env).split() for argv in argvs]


def repo_path() -> str:
    """PYTHONPATH for a child: this checkout first, then whatever the caller's PYTHONPATH holds (where
    dependencies may live, e.g. a GPU host's --target install)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def _child(args: list[str], env: dict) -> str:
    """A child Python's stdout; its stderr in the failure when it exits non-zero."""
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def run_python(script: str, *argv: str) -> list[str]:
    return _child(["-c", script, *argv], {**os.environ, "PYTHONPATH": repo_path()}).splitlines()


def test_runtime_package_import_loads_submodules_on_first_use():
    script = (
        "import sys\n"
        "import aotc.runtime as rt\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('aotc', 'zstandard')))))\n"
        "rt.fmha_fwd\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('aotc.runtime.'))))\n"
        "missing = [n for n in rt.__all__ if getattr(rt, n, None) is None]\n"
        "print(','.join(missing), set(rt.__all__) <= set(dir(rt)))\n"
        "try:\n"
        "    rt.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    first, after_ops, resolved, error = run_python(script)
    assert first.split(",") == ["aotc", "aotc.runtime"]  # nothing else until something is used
    loaded = after_ops.split(",")
    assert "aotc.runtime.attention" in loaded and "aotc.runtime.ops" in loaded  # the entry point and its plumbing
    assert "aotc.runtime.gemm" not in loaded and "aotc.runtime.tile_select" not in loaded  # nor the GEMM ops
    assert resolved == " True"  # every exported name resolves and is listed by dir()
    assert "no_such_name" in error


def test_flashinfer_hook_imports_neither_the_kernel_loader_nor_a_dataclass():
    """install() is on the start-up path of every served FlashInfer process: importing the hook imports
    no other aotc module (the cache, the arch table, the diagnostics and the kernel sources load when
    a module is served, or on an error path), and creates no dataclass (each costs ~1 ms; the hook's
    own state was one). tests/test_flashinfer.py checks what install() and a served module add."""
    script = (
        "import dataclasses, sys\n"
        "made = []\n"
        "original = dataclasses._process_class\n"
        "def recording(cls, *a, **k):\n"
        "    made.append(f'{cls.__module__}.{cls.__qualname__}')\n"
        "    return original(cls, *a, **k)\n"
        "dataclasses._process_class = recording\n"
        "import aotc.flashinfer.hook\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('aotc'))))\n"
        "print(','.join(m for m in made if m.startswith('aotc')))\n"
    )
    loaded, made = run_python(script)
    assert loaded.split(",") == ["aotc", "aotc.flashinfer", "aotc.flashinfer.hook"]
    assert made == "", f"dataclasses created when importing the hook: {made}"


FAMILY_MODULE = '''
import ctypes
from aotc.families import Family, Field, SmemModel

class Args(ctypes.Structure):
    _fields_ = [("x", ctypes.c_void_p), ("y", ctypes.c_void_p), ("a", ctypes.c_float), ("n", ctypes.c_int),
                ("workspace_bytes", ctypes.c_uint64), ("smem", ctypes.c_uint32)]

class Axpy(Family):
    name = "rt_test_axpy"
    doc = ""
    fields = {"tile": Field("shape", "tile", default=(128, 128), length=2),
              "needs_blockscaled": Field(bool, "", default=False)}
    template = probe_template = ""
    args_struct = Args
    def requires(self, p): return frozenset()
    def smem(self, p, arch): return SmemModel((("stage", 0),))
    def check(self, p, arch): return []
    def render_context(self, p, arch): return {}
    def expected_mma(self, p, arch): return None

FAMILIES = {"rt_test_axpy": Axpy()}
'''


def test_serving_path_creates_no_dataclass(tmp_path, axpy_blobs):
    """Creating a dataclass costs ~1-2 ms (measured after torch's import): the path from `import
    aotc.runtime` to a verified, target-checked kernel and the typed entry points must create none."""
    make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    (tmp_path / "axpy_family_mod.py").write_text(FAMILY_MODULE)
    script = (
        "import dataclasses, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "made = []\n"
        "original = dataclasses._process_class\n"
        "def recording(cls, *a, **k):\n"
        "    made.append(f'{cls.__module__}.{cls.__qualname__}')\n"
        "    return original(cls, *a, **k)\n"
        "dataclasses._process_class = recording\n"
        "import aotc.runtime as rt\n"
        "from aotc.families import FAMILY_MODULES\n"
        "from aotc.cache import Cache\n"
        "FAMILY_MODULES['rt_test_axpy'] = 'axpy_family_mod'\n"
        "rt.set_sources([rt.CacheSource(Cache(sys.argv[1]))])\n"
        "dev = rt.device_from_capability((9, 0))\n"
        "found = rt.find('rt_test_axpy', {}, dev)\n"
        "host = rt.host_kernel(found)\n"
        "from aotc.runtime.loader import check_cubin_target\n"
        "check_cubin_target(host.cubin, dev, found)\n"
        "rt.fmha_fwd, rt.grouped_gemm, rt.tensor_info, rt.Kernel\n"
        "print(found.arch, len(host.cubin))\n"
        "print(','.join(m for m in made if m.startswith('aotc')))\n"
    )
    found, made = run_python(script, str(tmp_path / "c"), str(tmp_path))
    assert found == f"sm90a {len(axpy_blobs['sm90a'])}"  # the path really ran: the stored cubin, verified
    assert made == "", f"dataclasses created on the serving path: {made}"


def test_warm_serving_path_imports_no_blob_store(tmp_path, axpy_blobs):
    """Once the runtime folder keeps a kernel's cubin and helper (the first process writes them), a
    later process reads two records and those files: it imports neither the blob store (nor zstd)
    nor the header map, and with AOTC_CACHE_DIR set it does not look for a source checkout (stats of
    the package's folder), each ~0.2-0.5 ms of a cold start. Every loaded byte is still checked
    against the manifest's digests (test_cubin_is_kept_verified_...)."""
    make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import aotc.runtime as rt\n"
        "from aotc.families import FAMILY_MODULES\n"
        "FAMILY_MODULES['rt_test_axpy'] = 'axpy_family_mod'\n"
        "found = rt.find('rt_test_axpy', {}, rt.device_from_capability((9, 0)))\n"
        "host = rt.host_kernel(found)\n"
        "print(len(host.cubin), ','.join(sorted(m for m in sys.modules if m.startswith(('aotc.cache', 'zstandard', \n"
        "                                                                              'aotc.resources')))))\n"
        "print(sys.modules['aotc.resources'].package_dir.cache_info().currsize)\n"
    )
    runs = serving_processes(tmp_path, script, (), ())
    assert runs[0][0] == runs[1][0] == str(len(axpy_blobs["sm90a"]))
    assert "aotc.cache.store" in runs[0][1].split(",")  # the first process read the blobs from the store
    # aotc.cache.records: the read side entries and manifest re-export (the FlashInfer hook imports it alone)
    assert runs[1][1].split(",") == ["aotc.cache", "aotc.cache.entries", "aotc.cache.records", "aotc.resources"]
    assert runs[1][2] == "0"  # the default cache is AOTC_CACHE_DIR: the package's folder was never resolved


def test_records_replacing_dataclasses_keep_value_semantics():
    import copy
    import pickle

    from aotc.arch import ARCHES
    from aotc.diagnostics import Diagnostic

    dev = device_from_capability((12, 0), name="RTX")
    diag = Diagnostic("AOTC-RT-001", "no GPU", fix="run on a GPU", details={"n": 0})
    for value in (dev, ARCHES["sm120a"], diag, Field(int, "stages", default=2, min=1), SmemModel((("a", 8),))):
        assert pickle.loads(pickle.dumps(value)) == value  # build workers pickle specs and diagnostics
        assert copy.deepcopy(value) == value
        with pytest.raises(AttributeError):
            value.name = "changed"  # immutable, as the frozen dataclasses were
    assert dev == device_from_capability((12, 0), name="RTX") and hash(dev) == hash(device_from_capability((12, 0),
                                                                                                          name="RTX"))
    assert dev != device_from_capability((12, 1), name="RTX")
    assert Diagnostic("X", "m").details == {} and Diagnostic("X", "m").details is not Diagnostic("X", "m").details
    assert repr(dev) == "Device(ordinal=0, cc=(12, 0), name='RTX', smem_optin_bytes=0, sm_count=0)"


# ---- warm path: KernelKey ------------------------------------------------------------------------
def test_kernel_key_freezes_params_and_reports_like_get_kernel(tmp_path, axpy_blobs, monkeypatch):
    params = {"tile": (128, 128)}
    key = rt.kernel_key(FAMILY, params, arch="sm90a")
    params["tile"] = (64, 64)  # the caller's dict changing later does not change the key
    assert key.params == {"tile": (128, 128)} and key.arch == "sm90a"
    _, sources = make_cache(tmp_path / "c", axpy_blobs, ("sm90a",))
    monkeypatch.setattr("aotc.runtime.lookup._sources", sources)
    with pytest.raises(AotcError) as exc:  # no GPU here: the same clear error as the named call
        rt.get_kernel(key)
    assert exc.value.diagnostics[0].code == "AOTC-RT-001"
    with pytest.raises(TypeError, match="params are required"):
        rt.get_kernel(FAMILY)


@pytest.mark.gpu
def test_kernel_key_resolves_once_and_follows_clear(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    target = rt.query_device(0).runnable_targets()[0]
    (tmp_path / "build").mkdir()
    blobs = compile_axpy(tmp_path / "build", (target,))
    _, sources = make_cache(tmp_path / "c", blobs, (target,))
    monkeypatch.setattr("aotc.runtime.lookup._sources", sources)
    key = rt.kernel_key(FAMILY, {})
    kernel = rt.get_kernel(key)
    assert kernel is rt.get_kernel(FAMILY, {}) and rt.get_kernel(key) is kernel
    x = torch.randn(1000, device="cuda")
    y = torch.randn(1000, device="cuda")
    ref = 3.0 * x + y
    rt.get_kernel(key).launch(AxpyArgs(x.data_ptr(), y.data_ptr(), 3.0, 1000, 0, 0), torch.cuda.current_stream())
    torch.cuda.synchronize()
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    rt.clear()  # a cleared registry: the key must not hand back the forgotten kernel
    fresh = rt.get_kernel(key)
    assert fresh is not kernel and fresh is rt.get_kernel(FAMILY, {})


def test_helper_dir_that_is_a_file_is_a_coded_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "f"))
    (tmp_path / "f").write_text("not a folder")
    monkeypatch.setattr("aotc.runtime_folder._dirs", {})
    with pytest.raises(AotcError) as exc:
        loader.helper_dir()
    assert exc.value.diagnostics[0].code == "AOTC-RT-005" and "not a folder" in exc.value.diagnostics[0].message
    assert (tmp_path / "f").read_text() == "not a folder"  # left as it was

"""Runtime on a real GPU: the tiny ABI kernel compiled for this device's target, found, loaded and
launched through aotc.runtime (correct results vs torch, memoized launches, workspaces per stream,
SMEM opt-in, helper rejections, concurrent first loads) and an sm_120a cubin refused on a device
that cannot run it before the driver sees it. Skipped where no GPU is present.
"""

from __future__ import annotations

import ctypes
import threading

import pytest

from aotc import runtime as rt
from aotc.cache import Cache
from aotc.diagnostics import AotcError

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

from test_runtime import FAMILY, AxpyArgs, axpy_family, compile_axpy, store_entry  # noqa: F401


@pytest.fixture(scope="module")
def device_target() -> str:
    dev = rt.query_device(0)
    return dev.runnable_targets()[0]


@pytest.fixture(scope="module")
def gpu_blobs(tmp_path_factory, device_target) -> dict[str, bytes]:
    targets = (device_target,) if device_target == "sm120a" else (device_target, "sm120a")
    return compile_axpy(tmp_path_factory.mktemp("axpy_gpu"), targets)


@pytest.fixture
def sources(tmp_path, gpu_blobs, device_target):
    cache = Cache(tmp_path / "cache")
    store_entry(cache, {}, device_target, gpu_blobs[device_target], gpu_blobs["helper"], gpu_blobs["source"])
    return [rt.CacheSource(cache)]


def axpy_args(x, y, a: float, **extra) -> AxpyArgs:
    return AxpyArgs(x.data_ptr(), y.data_ptr(), a, x.numel(), extra.get("workspace_bytes", 0), extra.get("smem", 0))


def test_launch_matches_torch_and_memoizes(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    assert rt.get_kernel(FAMILY, {}, sources=sources) is k
    x = torch.randn(100_003, device="cuda")
    y = torch.randn(100_003, device="cuda")
    ref = 2.5 * x + y
    args = axpy_args(x, y, 2.5)
    k.launch(args, torch.cuda.current_stream())
    torch.cuda.synchronize()
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    k.launch(args)  # same bytes: no new prepare
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 2.5 * x + ref, rtol=1e-6, atol=1e-5)
    assert len(k._prepared) == 1


def test_workspace_is_zeroed_and_kept_per_stream(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    x, y = torch.randn(4096, device="cuda"), torch.zeros(4096, device="cuda")
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    args = axpy_args(x, y, 1.0, workspace_bytes=256)
    k.launch(args, s1)
    k.launch(args, s2)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 2 * x)  # the kernel adds workspace[0]: zero
    assert len(k._workspaces) == 2 and all(size == 256 for _, size in k._workspaces.values())


def test_large_dynamic_smem_is_opted_in_and_device_limit_enforced(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    x, y = torch.randn(1024, device="cuda"), torch.zeros(1024, device="cuda")
    k.launch(axpy_args(x, y, 3.0, smem=96 * 1024))
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 3 * x)
    with pytest.raises(AotcError) as exc:
        k.launch(axpy_args(x, y, 3.0, smem=k.device.smem_optin_bytes + 1024))
    assert exc.value.diagnostics[0].code == "AOTC-RT-007" and str(k.device.smem_optin_bytes) in str(exc.value)


def test_helper_rejection_is_reported(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    with pytest.raises(AotcError) as exc:
        k.launch(AxpyArgs(0, 0, 1.0, -5, 0, 0))
    assert exc.value.diagnostics[0].code == "AOTC-RT-007" and "n = -5, must be positive" in str(exc.value)
    with pytest.raises(AotcError) as exc:
        k.launch(ctypes.c_int(3))
    assert exc.value.diagnostics[0].code == "AOTC-RT-006"


def test_concurrent_first_get_kernel_loads_once(sources):
    results, errors = [], []
    barrier = threading.Barrier(16)

    def worker():
        try:
            barrier.wait()
            results.append(rt.get_kernel(FAMILY, {}, sources=sources))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({id(k) for k in results}) == 1


def test_sm120a_cubin_on_this_device_is_refused_before_the_driver(tmp_path, gpu_blobs, device_target):
    if device_target == "sm120a":
        pytest.skip("this device runs sm_120a")
    cache = Cache(tmp_path / "c")
    store_entry(cache, {}, "sm120a", gpu_blobs["sm120a"], gpu_blobs["helper"], gpu_blobs["source"])
    store_entry(cache, {}, device_target, gpu_blobs["sm120a"], gpu_blobs["helper"], gpu_blobs["source"])
    src = [rt.CacheSource(cache)]
    with pytest.raises(AotcError) as exc:
        rt.get_kernel(FAMILY, {}, arch="sm120a", sources=src)
    assert exc.value.diagnostics[0].code == "AOTC-RT-003"
    with pytest.raises(AotcError) as exc:  # mislabelled: the ELF check, not CUDA error 209
        rt.get_kernel(FAMILY, {}, sources=src)
    assert exc.value.diagnostics[0].code == "AOTC-RT-003" and "built for sm_120a" in str(exc.value)


def test_caller_workspace_is_used_and_the_launch_captures_in_a_cuda_graph(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    x, y = torch.randn(4096, device="cuda"), torch.zeros(4096, device="cuda")
    ws = torch.full((64,), 0.5, device="cuda")  # the axpy kernel adds workspace[0]
    args = axpy_args(x, y, 2.0, workspace_bytes=256)
    assert k.workspace_bytes(args) == 256
    own = dict(k._workspaces)
    k.launch(args, torch.cuda.current_stream(), workspace=ws.data_ptr())
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 2 * x + 0.5)
    assert k._workspaces == own  # nothing allocated by the runtime
    graph = torch.cuda.graph_pool_handle()
    g = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    with torch.cuda.graph(g, pool=graph, stream=side):
        k.launch(args, side, workspace=ws.data_ptr())
    y.zero_()
    x.copy_(torch.randn_like(x))  # new input values, same buffers
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 2 * x + 0.5)


def _other_context():
    from cuda.bindings import driver as cu

    dev = cu.cuDeviceGet(0)[1]
    try:
        err, ctx = cu.cuCtxCreate(None, 0, dev)  # cuda-bindings 13: (create params, flags, device)
    except TypeError:
        err, ctx = cu.cuCtxCreate(0, dev)  # cuda-bindings 12
    assert int(err) == 0
    return cu, ctx


def test_launch_lands_in_the_primary_context_whatever_context_is_current(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    x, y = torch.randn(8192, device="cuda"), torch.zeros(8192, device="cuda")
    args = axpy_args(x, y, 1.0)
    k.launch(args)
    torch.cuda.synchronize()
    cu, other = _other_context()  # cuCtxCreate makes it current on this thread
    try:
        assert int(cu.cuCtxGetCurrent()[1]) == int(other)
        k.launch(args)  # into the primary context, where x and y live
        k.launch(args)
        assert int(cu.cuCtxGetCurrent()[1]) == int(other)  # the caller's context stays current
    finally:
        cu.cuCtxPopCurrent()
        cu.cuCtxDestroy(other)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, 3 * x)


def test_launches_from_threads_with_other_or_no_context_current(sources):
    k = rt.get_kernel(FAMILY, {}, sources=sources)
    n, workers = 4096, 8
    xs = [torch.randn(n, device="cuda") for _ in range(workers)]
    ys = [torch.zeros(n, device="cuda") for _ in range(workers)]
    torch.cuda.synchronize()
    cu, other = _other_context()
    cu.cuCtxPopCurrent()  # created on this thread; the odd workers make it current on theirs
    errors, barrier = [], threading.Barrier(workers)

    def worker(i: int) -> None:
        try:
            if i % 2:
                cu.cuCtxSetCurrent(other)
            barrier.wait()
            for _ in range(5):
                k.launch(axpy_args(xs[i], ys[i], float(i)))
            if i % 2:
                assert int(cu.cuCtxGetCurrent()[1]) == int(other)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cu.cuCtxDestroy(other)
    assert not errors, errors
    k.synchronize()
    for i in range(workers):
        torch.testing.assert_close(ys[i], 5 * i * xs[i])


def test_a_later_process_loads_and_launches_from_the_lookup_record(tmp_path, gpu_blobs, device_target):
    """The first process searches and records; the next loads the same kernel from the record, without
    the lookup or the cache modules, and computes the same result (aotc.runtime.recall)."""
    from test_runtime import serving_processes

    store_entry(Cache(tmp_path / "c"), {}, device_target, gpu_blobs[device_target], gpu_blobs["helper"],
                gpu_blobs["source"])
    script = (
        "import sys, torch\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from aotc.families import FAMILY_MODULES\n"
        "FAMILY_MODULES['rt_test_axpy'] = 'axpy_family_mod'  # its args struct: not a catalog family\n"
        "import aotc.runtime as rt\n"
        "k = rt.get_kernel('rt_test_axpy', {})\n"
        "x = torch.arange(1000, device='cuda', dtype=torch.float32); y = torch.ones_like(x)\n"
        "k.launch(k.args_type(x=x.data_ptr(), y=y.data_ptr(), a=2.0, n=1000), torch.cuda.current_stream())\n"
        "torch.cuda.synchronize()\n"
        "print(torch.equal(y, 2 * x + 1), 'aotc.runtime.lookup' in sys.modules, 'aotc.cache' in sys.modules)\n"
    )
    runs = serving_processes(tmp_path, script, (), ())
    assert runs[0] == ["True", "True", "True"]  # searched the cache
    assert runs[1] == ["True", "False", "False"]  # loaded from the record: no search, same result

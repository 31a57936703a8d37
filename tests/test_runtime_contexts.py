"""Which context a launch runs in, whatever the calling thread has current: the launch path
(Kernel.fire / fire_all) and the load/prepare path (device.in_primary), run against a driver that
keeps a context stack and records every call. The kernel launches in its device's primary context
and the caller's context is current again afterwards; the one check per op call is a read of the
current context handle. No GPU needed (tools/device_serving.py proves it on one)."""

from __future__ import annotations

import pytest

from aotc.diagnostics import AotcError
from aotc.runtime import device
from aotc.runtime.launch import Kernel

PRIMARY, OTHER = 0xC0_0000, 0xD0_0000


class StackDriver:
    """The calling thread's context stack, as the driver keeps it; every call recorded with the
    context current when it ran."""

    def __init__(self, current: int = 0):
        self.stack = [current] if current else []
        self.calls: list[tuple[str, int]] = []
        self.fail_launch = False

    def current(self) -> int:
        return self.stack[-1] if self.stack else 0

    def _record(self, name: str) -> None:
        self.calls.append((name, self.current()))

    def cuCtxSetCurrent(self, ctx):
        self._record("cuCtxSetCurrent")
        if self.stack:
            self.stack[-1] = ctx
        else:
            self.stack.append(ctx)
        return (0,)

    def cuCtxPushCurrent(self, ctx):
        self._record("cuCtxPushCurrent")
        self.stack.append(ctx)
        return (0,)

    def cuCtxPopCurrent(self):
        self._record("cuCtxPopCurrent")
        return (0, self.stack.pop())

    def cuLaunchKernel(self, *call):
        self._record("cuLaunchKernel")
        return (700 if self.fail_launch else 0,)  # 700: CUDA_ERROR_ILLEGAL_ADDRESS

    def cuGetErrorName(self, err):
        return (0, b"CUDA_ERROR_ILLEGAL_ADDRESS")


class StackNative:
    def __init__(self, drv: StackDriver):
        self.drv = drv

    def current_context(self) -> int:
        self.drv._record("cuCtxGetCurrent")
        return self.drv.current()


@pytest.fixture
def driver(monkeypatch):
    def make(current: int) -> tuple[StackDriver, Kernel]:
        drv = StackDriver(current)
        for name, value in (("_cu", drv), ("_native", StackNative(drv)), ("_contexts", {0: PRIMARY}),
                            ("_context_handles", {0: PRIMARY})):
            monkeypatch.setattr(device, name, value)
        kernel = Kernel.__new__(Kernel)  # the launch path's state only: no cubin behind it
        kernel.name, kernel._cu, kernel._native, kernel._launch = "k", drv, StackNative(drv), drv.cuLaunchKernel
        kernel._ordinal, kernel._context = 0, PRIMARY
        monkeypatch.setattr("aotc.runtime.launch._contexts", {0: PRIMARY})
        return drv, kernel
    return make


def test_primary_current_launches_after_one_read(driver):
    drv, kernel = driver(PRIMARY)
    kernel.fire(("call",))
    assert drv.calls == [("cuCtxGetCurrent", PRIMARY), ("cuLaunchKernel", PRIMARY)]


def test_another_context_current_is_pushed_over_and_kept(driver):
    drv, kernel = driver(OTHER)
    kernel.fire_all((("routing",), ("gemm",)))  # one check and one push/pop for an op's launches
    # the mismatch path reads once more (none current, or another?), then pushes over it
    assert drv.calls == [("cuCtxGetCurrent", OTHER), ("cuCtxGetCurrent", OTHER), ("cuCtxPushCurrent", OTHER),
                         ("cuLaunchKernel", PRIMARY), ("cuLaunchKernel", PRIMARY), ("cuCtxPopCurrent", PRIMARY)]
    assert drv.stack == [OTHER]  # the caller's context is current again


def test_no_context_current_adopts_the_primary_one(driver):
    drv, kernel = driver(0)
    kernel.fire(("call",))
    assert [c for c in drv.calls if c[0] == "cuLaunchKernel"] == [("cuLaunchKernel", PRIMARY)]
    assert drv.stack == [PRIMARY]  # as torch would leave it: the next call is one read and a launch
    drv.calls.clear()
    kernel.fire(("call",))
    assert drv.calls == [("cuCtxGetCurrent", PRIMARY), ("cuLaunchKernel", PRIMARY)]


def test_a_failed_launch_under_another_context_still_restores_it(driver):
    drv, kernel = driver(OTHER)
    drv.fail_launch = True
    with pytest.raises(AotcError, match="AOTC-RT-008"):
        kernel.fire(("call",))
    assert drv.stack == [OTHER]


@pytest.mark.parametrize("current", [PRIMARY, OTHER, 0])
def test_load_and_prepare_run_in_the_primary_context(driver, current):
    drv, _ = driver(current)
    with device.in_primary(0):
        inside = drv.current()
    assert inside == PRIMARY
    assert drv.stack == ([current] if current else [PRIMARY])

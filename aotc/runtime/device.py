"""The device the runtime launches on: compute capability, SMEM limit, primary context.
Only this module and loader/launch talk to the CUDA driver (through cuda.bindings, and through
ctypes for the hot path's context check, cuCtxGetCurrent). A `Device` can
also be built from a capability alone, so lookup and target checks run without a driver or GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from typing import Any

from aotc.frozen import Frozen
from aotc.runtime.errors import DRIVER_CALL, NO_DEVICE, runtime_error

_lock = threading.Lock()
_devices: dict[int, Device] = {}
_contexts: dict[int, Any] = {}  # ordinal -> retained primary context (CUcontext)
_context_handles: dict[int, int] = {}  # ordinal -> the same context as an int, for the hot-path check
_cu: Any = None  # cuda.bindings.driver once cuInit succeeded
_native: Native | None = None


class Device(Frozen):
    """One CUDA device (immutable record, aotc.frozen)."""

    __slots__ = ("ordinal", "cc", "name", "smem_optin_bytes", "sm_count")  # noqa: RUF023 - constructor order
    ordinal: int
    cc: tuple[int, int]
    name: str
    smem_optin_bytes: int  # 0 when unknown (a capability-only Device)
    sm_count: int  # multiprocessors; 0 when unknown

    def __init__(self, ordinal: int, cc: tuple[int, int], name: str = "", smem_optin_bytes: int = 0,
                 sm_count: int = 0):
        super().__init__(ordinal=ordinal, cc=cc, name=name, smem_optin_bytes=smem_optin_bytes, sm_count=sm_count)

    @property
    def sm(self) -> int:
        return self.cc[0] * 10 + self.cc[1]

    @property
    def label(self) -> str:
        what = f"{self.name} " if self.name else ""
        return f"device {self.ordinal} ({what}compute capability {self.cc[0]}.{self.cc[1]}, sm_{self.sm})"

    def runnable_targets(self) -> list[str]:
        """Every catalog target this device can run, most preferred first."""
        from aotc.arch import ARCHES, target_preference  # the lookup's, not the serving path's

        return target_preference(self.cc, list(ARCHES))


def device_from_capability(cc: tuple[int, int], ordinal: int = 0, name: str = "") -> Device:
    """A Device known only by its capability: for lookups and checks without a driver."""
    return Device(ordinal=ordinal, cc=(int(cc[0]), int(cc[1])), name=name)


def driver() -> Any:
    """cuda.bindings.driver, initialised once; a clear AOTC-RT-001 when there is no driver or GPU."""
    global _cu
    if _cu is not None:
        return _cu
    try:
        from cuda.bindings import driver as cu
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise runtime_error(NO_DEVICE, f"cuda-python is not importable: {exc}",
                            "pip install cuda-python (a dependency of aotc)") from exc
    try:
        (err,) = cu.cuInit(0)
    except Exception as exc:  # the driver library itself is missing (no NVIDIA driver installed)
        raise runtime_error(NO_DEVICE, f"no NVIDIA driver found: {exc}",
                            "run on a machine with an NVIDIA GPU and driver, or pass a device capability "
                            "for lookups only") from exc
    if int(err) != 0:
        raise runtime_error(NO_DEVICE, f"cuInit failed with {error_name(cu, err)}: no usable CUDA GPU",
                            "check nvidia-smi and CUDA_VISIBLE_DEVICES")
    _cu = cu
    return cu


def error_name(cu: Any, err: Any) -> str:
    status, name = cu.cuGetErrorName(err)
    if int(status) != 0 or not name:
        return f"CUresult {int(err)}"
    return f"{name.decode()} ({int(err)})"


def check(cu: Any, result: tuple, what: str) -> Any:
    """Unpack a cuda.bindings result tuple; AOTC-RT-008 naming the call and the CUresult on failure."""
    err = result[0]
    if int(err) != 0:
        raise runtime_error(DRIVER_CALL, f"{what} failed with {error_name(cu, err)}",
                            "see the CUDA error above; a sticky error (e.g. an illegal address) needs a "
                            "new process", cuda_error=int(err))
    return result[1] if len(result) == 2 else result[1:]


def query_device(ordinal: int = 0) -> Device:
    """The Device for a CUDA ordinal, queried once per process."""
    dev = _devices.get(ordinal)
    if dev is not None:
        return dev
    with _lock:
        if ordinal not in _devices:
            _devices[ordinal] = _query(ordinal)
    return _devices[ordinal]


def _query(ordinal: int) -> Device:
    cu = driver()
    count = check(cu, cu.cuDeviceGetCount(), "cuDeviceGetCount")
    if count == 0 or not 0 <= ordinal < count:
        raise runtime_error(NO_DEVICE, f"CUDA device {ordinal} requested, {count} visible",
                            f"use an ordinal in 0..{count - 1}" if count else "no CUDA GPU is visible: check "
                            "nvidia-smi and CUDA_VISIBLE_DEVICES")
    handle = check(cu, cu.cuDeviceGet(ordinal), "cuDeviceGet")
    attr = cu.CUdevice_attribute
    major = check(cu, cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, handle), "cc")
    minor = check(cu, cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, handle), "cc")
    smem = check(cu, cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, handle),
                 "smem opt-in")
    sms = check(cu, cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, handle), "SM count")
    raw_name = check(cu, cu.cuDeviceGetName(64, handle), "cuDeviceGetName")
    name = raw_name.split(b"\0", 1)[0].decode(errors="replace")
    return Device(ordinal=ordinal, cc=(int(major), int(minor)), name=name, smem_optin_bytes=int(smem),
                  sm_count=int(sms))


def primary_context(ordinal: int) -> int:
    """The device's primary context (the one torch and cupy use), retained once, as an int handle."""
    handle = _context_handles.get(ordinal)
    if handle is not None:
        return handle
    cu = driver()
    with _lock:
        if ordinal not in _contexts:
            query_device(ordinal)
            dev = check(cu, cu.cuDeviceGet(ordinal), "cuDeviceGet")
            ctx = check(cu, cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
            _contexts[ordinal] = ctx
            _context_handles[ordinal] = int(ctx)
    return _context_handles[ordinal]


@contextlib.contextmanager
def in_primary(ordinal: int) -> Iterator[None]:
    """Run the body in the device's primary context, leaving the caller's current context as it was:
    nothing to do when it is current already, adopted when the thread has none, else pushed for the
    body and popped after (load and prepare paths; the launch path does the same in Kernel.fire)."""
    handle = primary_context(ordinal)
    current = native().current_context()
    if current == handle:
        yield
        return
    cu = driver()
    if not current:
        check(cu, cu.cuCtxSetCurrent(_contexts[ordinal]), "cuCtxSetCurrent")
        yield
        return
    check(cu, cu.cuCtxPushCurrent(_contexts[ordinal]), "cuCtxPushCurrent")
    try:
        yield
    finally:
        check(cu, cu.cuCtxPopCurrent(), "cuCtxPopCurrent")


class Native:
    """cuCtxGetCurrent through ctypes on the driver library cuda.bindings already loaded: the launch
    path's context check, with a per-thread slot and a prebuilt byref (no objects made per call;
    measured on the H200: cuda.bindings is the cheaper way to call cuLaunchKernel itself)."""

    def __init__(self, lib: Any):
        self._get = lib.cuCtxGetCurrent
        self._get.restype = ctypes.c_int
        self._get.argtypes = None  # a prebuilt byref is passed as is: no per-call conversion
        self._tls = threading.local()

    def current_context(self) -> int:
        """The calling thread's current context handle (0 when none)."""
        tls = self._tls
        try:
            slot, ref = tls.slot
        except AttributeError:
            slot = ctypes.c_void_p()
            ref = ctypes.byref(slot)
            tls.slot = (slot, ref)
        self._get(ref)
        return slot.value or 0


def native() -> Native:
    """The ctypes entry point of the driver library (loaded once, after cuInit)."""
    global _native
    if _native is None:
        driver()  # cuInit first: a clear AOTC-RT-001 when there is no driver
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:  # pragma: no cover - cuda.bindings loaded it just before
            raise runtime_error(NO_DEVICE, f"the CUDA driver library cannot be opened: {exc}",
                                "install the NVIDIA driver") from exc
        _native = Native(lib)
    return _native

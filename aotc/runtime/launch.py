"""A loaded kernel and its launch path: the family's AotcArgs -> the host helper's aotc_query /
aotc_prepare (grid, SMEM, by-value Params, workspace) -> cuLaunchKernel. Prepared Params are memoized
per identical args bytes (and workspace address), so a warm launch is one dict lookup, a check of the
thread's current context and one driver call; it allocates, copies and synchronizes nothing, which
keeps it capturable in CUDA graphs.
"""

from __future__ import annotations

import ctypes
import threading
from typing import TYPE_CHECKING, Any

from aotc.abi import AotcLaunch, args_struct
from aotc.runtime.device import Device, _contexts, check, driver, in_primary, native, primary_context
from aotc.runtime.errors import BAD_TENSOR, PROBLEM_REJECTED, runtime_error

if TYPE_CHECKING:
    from aotc.runtime.loader import Helper

DEFAULT_SMEM_LIMIT = 48 * 1024  # above this a kernel must opt in via MAX_DYNAMIC_SHARED_SIZE_BYTES
MAX_PARAMS_BYTES = 32_764  # cuLaunchKernel's by-value parameter limit (CUDA >= 12.1, Volta+)
MEMO_LIMIT = 4096  # distinct prepared problems kept per kernel before the memo starts over
_ERR_LEN = 1024


class Prepared:
    """Everything cuLaunchKernel needs for one problem; `keep` holds the buffers kernel_params points to.
    (Plain slotted class: no dataclass machinery at import.)"""

    __slots__ = ("block", "grid", "keep", "kernel_params", "smem", "workspace_bytes")

    def __init__(self, grid: tuple[int, int, int], block: tuple[int, int, int], smem: int, workspace_bytes: int,
                 kernel_params: int, keep: tuple):
        self.grid = grid
        self.block = block
        self.smem = smem
        self.workspace_bytes = workspace_bytes
        self.kernel_params = kernel_params  # address of a void*[1] pointing at the Params bytes
        self.keep = keep

    def __repr__(self) -> str:
        return (f"Prepared(grid={self.grid}, block={self.block}, smem={self.smem}, "
                f"workspace_bytes={self.workspace_bytes})")


def stream_handle(stream: Any) -> int:
    """CUstream handle as an int from an int, None (legacy default stream), a torch.cuda.Stream, a
    cuda.core Stream or any object with __cuda_stream__."""
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        return int(proto()[1])
    for attr in ("cuda_stream", "handle"):  # torch.cuda.Stream, cuda.bindings-style objects
        value = getattr(stream, attr, None)
        if value is not None:
            return int(value)
    raise runtime_error(BAD_TENSOR, f"cannot use {type(stream).__name__} as a CUDA stream",
                        "pass an int handle, a torch.cuda.Stream, a cuda.core Stream or None")


class Kernel:
    """One loaded kernel on one device. `launch(args, stream)` is the hot path."""

    def __init__(self, found: Any, device: Device, library: Any, function: Any, helper: Helper):
        self.family_name = found.family
        self.name = found.manifest.get("name", found.family)
        self.params = found.params
        self.arch = found.arch
        self.spec_key = found.spec_key
        self.manifest = found.manifest
        self.device = device
        try:  # the family's args_struct, without importing the family
            self.args_type = args_struct(found.family)
        except KeyError:  # a family outside the catalog (a plugin, a test): its own module says
            self.args_type = self.family.args_struct
        self._library = library  # keeps the module loaded as long as the Kernel lives
        self._function = function
        self._helper = helper
        self._cu = driver()
        self._native = native()
        self._launch = self._cu.cuLaunchKernel
        self._ordinal = device.ordinal
        self._context = primary_context(device.ordinal)
        self._need: dict[bytes, int] = {}  # args bytes -> workspace bytes the problem needs
        self._prepared: dict[tuple[int, bytes], Prepared] = {}  # (workspace address, args bytes) -> Params
        self._workspaces: dict[int, tuple[int, int]] = {}  # stream -> own (device pointer, bytes): fallback
        self._streams: dict[int, Any] = {}
        # (stream) or (stream, workspace) -> args bytes -> cuLaunchKernel argument tuple
        self._ready: dict[Any, dict[bytes, tuple]] = {}
        self._smem_opted = DEFAULT_SMEM_LIMIT
        self._occupancy: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, {self.arch}, {self.device.label})"

    @property
    def family(self) -> Any:
        """The kernel's Family (aotc.families): loaded on first use, the launch path never needs it."""
        from aotc.families import get_family

        return get_family(self.family_name)

    # -- hot path ---------------------------------------------------------------------------------
    def launch(self, args: ctypes.Structure, stream: Any = 0, *, workspace: int = 0, refresh: bool = False) -> None:
        """Launch on `stream` with the family's args struct (see aotc.families.<family>.args_struct).

        `workspace`: device address of at least `workspace_bytes(args)` bytes, zero-filled once by the
        caller (every aotc kernel that uses one leaves it zero again), e.g. from torch's caching
        allocator; then nothing is allocated here and the launch is capturable in a CUDA graph.
        Without it a problem that needs a workspace gets one from cuMemAlloc, kept per stream (not
        capture-safe). Params are memoized per args bytes; pass refresh=True when host memory the
        args point to (e.g. `host_problem_sizes`) changed in place since an identical launch."""
        handle = stream if type(stream) is int else stream_handle(stream)
        ready = self._ready.get((handle, workspace) if workspace else handle)
        call = ready.get(bytes(args)) if ready is not None and not refresh else None
        if call is None:
            call = self.prepare_call(args, handle, workspace=workspace, refresh=refresh)
        self.fire(call)

    def fire(self, call: tuple) -> None:
        """cuLaunchKernel of a prepared call (from prepare_call) in this device's primary context,
        whatever context the calling thread has current: one cheap read of the current context
        handle; only when it differs is the primary context pushed for the launch and popped after."""
        if self._native.current_context() != self._context:
            self._fire_elsewhere((call,))
            return
        (err,) = self._launch(*call)
        if err:
            check(self._cu, (err,), f"cuLaunchKernel({self.name})")

    def fire_all(self, calls: tuple) -> None:
        """Several prepared calls in order (e.g. a metadata kernel, then this kernel), one context check."""
        if self._native.current_context() != self._context:
            self._fire_elsewhere(calls)
            return
        launch = self._launch
        for call in calls:
            (err,) = launch(*call)
            if err:
                check(self._cu, (err,), f"cuLaunchKernel({self.name})")

    def _fire_elsewhere(self, calls: tuple) -> None:
        cu, ctx = self._cu, _contexts[self._ordinal]
        if not self._native.current_context():  # no context on this thread yet: adopt the primary one
            check(cu, cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
            self.fire_all(calls)
            return
        check(cu, cu.cuCtxPushCurrent(ctx), "cuCtxPushCurrent")  # another context is current: keep it
        try:
            errs = [self._launch(*call)[0] for call in calls]
        finally:
            check(cu, cu.cuCtxPopCurrent(), "cuCtxPopCurrent")
        for err in errs:
            if err:
                check(cu, (err,), f"cuLaunchKernel({self.name})")

    def prepare_call(self, args: ctypes.Structure, handle: int, *, workspace: int = 0, refresh: bool = False) -> tuple:
        """The full cuLaunchKernel argument tuple for (args, stream handle, workspace), prepared and
        memoized; `fire(call)` launches it. Callers that keep the tuple skip even the memo lookup."""
        key = bytes(args)
        need = self._need.get(key)
        if need is None or refresh:
            need = int(self.query(args).workspace_bytes)
            self._need[key] = need
        ws = workspace
        if need and not ws:
            ws = self._workspace(handle, need)
        prepared = None if refresh else self._prepared.get((ws if need else 0, key))
        if prepared is None:
            prepared = self._prepare(args, key, ws if need else 0)
        g, b = prepared.grid, prepared.block
        call = (self._function, g[0], g[1], g[2], b[0], b[1], b[2], prepared.smem, self._stream(handle),
                prepared.kernel_params, 0)
        self._ready.setdefault((handle, workspace) if workspace else handle, {})[key] = call
        return call

    def workspace_bytes(self, args: ctypes.Structure) -> int:
        """Device workspace this problem needs (0 for most kernels); memoized per args bytes."""
        key = bytes(args)
        need = self._need.get(key)
        if need is None:
            need = self._need[key] = int(self.query(args).workspace_bytes)
        return need

    # -- slow path (first launch of a problem) -------------------------------------------------------
    def query(self, args: ctypes.Structure) -> AotcLaunch:
        """Grid, block, SMEM, Params size and workspace the kernel needs for this problem."""
        self._check_args(args)
        out = AotcLaunch()
        err = ctypes.create_string_buffer(_ERR_LEN)
        if self._helper.query_fn(ctypes.addressof(args), ctypes.byref(out), err, _ERR_LEN) != 0:
            raise self._rejected(err)
        return out

    def resident_ctas(self, args: ctypes.Structure) -> int:
        """CTAs that fit on the whole device at once for this problem's launch shape (SM count x
        blocks per SM): the CTA count of persistent kernels. Memoized per (block, SMEM)."""
        info = self.query(args)
        threads, smem = info.block[0] * info.block[1] * info.block[2], int(info.smem_bytes)
        per_sm = self._occupancy.get((threads, smem))
        if per_sm is None:
            with self._lock, in_primary(self._ordinal):
                self._check_limits(info)  # opts into > 48 KiB first, or occupancy reads 0
                per_sm = int(check(self._cu, self._cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                    self._function, threads, smem), f"cuOccupancyMaxActiveBlocksPerMultiprocessor({self.name})"))
            if per_sm < 1:
                raise runtime_error(PROBLEM_REJECTED, f"{self.name} fits 0 CTAs per SM ({threads} threads, {smem} B "
                                    f"SMEM) on {self.device.label}", "use a kernel built for this device")
            self._occupancy[(threads, smem)] = per_sm
        return per_sm * max(self.device.sm_count, 1)

    def _check_args(self, args: ctypes.Structure) -> None:
        if not isinstance(args, self.args_type):
            raise runtime_error(BAD_TENSOR, f"{self.name} takes a {self.args_type.__name__} "
                                f"({self.family_name}.args_struct), got {type(args).__name__}",
                                f"build the args with aotc.families.get_family({self.family_name!r}).args_struct")

    def _rejected(self, err: ctypes.Array) -> Exception:
        text = err.value.decode(errors="replace") or "no reason given"
        return runtime_error(PROBLEM_REJECTED, f"{self.name} ({self.arch}) cannot run this problem: {text}",
                             "check the problem against the kernel's tile and alignment requirements, or "
                             "pick another kernel")

    def _prepare(self, args: ctypes.Structure, key: bytes, workspace: int) -> Prepared:
        with self._lock, in_primary(self._ordinal):
            info = self.query(args)
            self._check_limits(info)
            cap = max(int(info.params_bytes), 1)
            raw = ctypes.create_string_buffer(cap + 128)
            # Params may hold alignas(64..128) members (TMA descriptors): align the host copy too.
            base = (ctypes.addressof(raw) + 127) & ~127
            err = ctypes.create_string_buffer(_ERR_LEN)
            rc = self._helper.prepare_fn(ctypes.addressof(args), workspace or None, base, cap,
                                         ctypes.byref(info), err, _ERR_LEN)
            if rc != 0:
                raise self._rejected(err)
            pointer = (ctypes.c_void_p * 1)(base)
            prepared = Prepared(tuple(info.grid), tuple(info.block), int(info.smem_bytes),
                                int(info.workspace_bytes), ctypes.addressof(pointer), (raw, pointer))
            if len(self._prepared) >= MEMO_LIMIT:
                self._prepared.clear()
                self._ready.clear()
                self._need.clear()
            self._prepared[(workspace, key)] = prepared
            return prepared

    def _check_limits(self, info: AotcLaunch) -> None:
        smem, limit = int(info.smem_bytes), self.device.smem_optin_bytes
        if limit and smem > limit:
            raise runtime_error(PROBLEM_REJECTED, f"{self.name} asks for {smem} B of shared memory per block; "
                                f"{self.device.label} allows {limit} B", "use a kernel built for this device")
        if info.params_bytes > MAX_PARAMS_BYTES:
            raise runtime_error(PROBLEM_REJECTED, f"{self.name} Params are {info.params_bytes} B; cuLaunchKernel "
                                f"takes at most {MAX_PARAMS_BYTES} B", "this is a template bug: report it")
        if smem > self._smem_opted:
            attr = self._cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            check(self._cu, self._cu.cuFuncSetAttribute(self._function, attr, smem),
                  f"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES={smem}) for {self.name}")
            self._smem_opted = smem

    def _workspace(self, handle: int, nbytes: int) -> int:
        """The kernel's own workspace for launches on `handle` when the caller passes none: cuMemAlloc,
        zeroed on allocation, grown on demand, one per stream (launches on different streams never
        share scratch memory). Not capture-safe: the typed entry points pass the caller's memory."""
        ptr, size = self._workspaces.get(handle, (0, 0))
        if size >= nbytes:
            return ptr
        cu = self._cu
        with in_primary(self._ordinal):
            if ptr:
                check(cu, cu.cuMemFree(ptr), "cuMemFree(workspace)")  # synchronizes: no launch still uses it
                self._prepared = {k: v for k, v in self._prepared.items() if k[0] != ptr}
                self._ready.pop(handle, None)
            new = int(check(cu, cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes} B workspace for {self.name})"))
            check(cu, cu.cuMemsetD8Async(new, 0, nbytes, self._stream(handle)), "cuMemsetD8Async(workspace)")
        self._workspaces[handle] = (new, nbytes)
        return new

    def _stream(self, handle: int) -> Any:
        obj = self._streams.get(handle)
        if obj is None:
            obj = self._cu.CUstream(handle)
            self._streams[handle] = obj
        return obj

    def synchronize(self) -> None:
        """Wait for all work on the device's primary context (tests and tools)."""
        with in_primary(self._ordinal):
            check(self._cu, self._cu.cuCtxSynchronize(), "cuCtxSynchronize")

"""Device scratch memory for the launch path (split-KV workspaces, grouped-GEMM metadata blocks),
taken from the caller's allocator so that a launch stays capturable in a CUDA graph: torch's caching
allocator when the op was given torch tensors (under capture it serves the graph's private pool), a
callable set with `set_allocator` otherwise, and cuMemAlloc, which a capture forbids, only last.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

# (nbytes, device ordinal, stream handle) -> (device address, owner keeping the memory alive)
Allocator = Callable[[int, int, int], tuple[int, Any]]
_allocator: Allocator | None = None


def set_allocator(allocator: Allocator | None) -> None:
    """Where scratch memory comes from when the tensors are not torch's (e.g. cupy's pool):
    `allocator(nbytes, ordinal, stream) -> (address, owner)`; the memory lives while `owner` does.
    None restores the default (cuMemAlloc, which is not capture-safe)."""
    global _allocator
    _allocator = allocator


def is_torch(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch")


def allocate(nbytes: int, ordinal: int, stream: int, like: Any, *, zero: bool = False) -> tuple[int, Any]:
    """(address, owner) of `nbytes` of device memory on `ordinal`, ordered on `stream` (a zero fill, if
    asked, is queued there too). The caller keeps `owner` as long as launches may use the memory."""
    nbytes = max(int(nbytes), 16)
    if is_torch(like):
        return _torch(nbytes, ordinal, stream, zero)
    if _allocator is not None:
        ptr, owner = _allocator(nbytes, ordinal, stream)
    else:
        block = DriverBlock(nbytes, ordinal)
        ptr, owner = block.ptr, block
    if zero:
        from aotc.runtime.device import check, driver, in_primary

        cu = driver()
        with in_primary(ordinal):
            check(cu, cu.cuMemsetD8Async(ptr, 0, nbytes, cu.CUstream(stream)), "cuMemsetD8Async(scratch)")
    return int(ptr), owner


def _torch(nbytes: int, ordinal: int, stream: int, zero: bool) -> tuple[int, Any]:
    torch = sys.modules["torch"]
    make = torch.zeros if zero else torch.empty
    current = torch.cuda.current_stream(ordinal)
    if stream in (0, int(current.cuda_stream)):
        t = make(nbytes, dtype=torch.uint8, device=f"cuda:{ordinal}")
    else:  # allocate (and zero) on the launch stream: the caching allocator is stream-ordered
        with torch.cuda.stream(torch.cuda.ExternalStream(stream, device=f"cuda:{ordinal}")):
            t = make(nbytes, dtype=torch.uint8, device=f"cuda:{ordinal}")
    return int(t.data_ptr()), t


class DriverBlock:
    """cuMemAlloc'd memory freed when the last reference goes (cuMemFree synchronizes the device)."""

    __slots__ = ("nbytes", "ptr")

    def __init__(self, nbytes: int, ordinal: int):
        from aotc.runtime.device import check, driver, in_primary

        cu = driver()
        self.nbytes = nbytes
        with in_primary(ordinal):
            self.ptr = int(check(cu, cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes} B of scratch)"))

    def __del__(self) -> None:
        # At interpreter shutdown or with a dead context there is nothing left to free into.
        with contextlib.suppress(Exception):
            from aotc.runtime.device import driver

            driver().cuMemFree(self.ptr)

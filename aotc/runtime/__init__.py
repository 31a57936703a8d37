"""aotc runtime: find a cached kernel for this device, load it, and launch it in-process, with no
compiler, no CUTLASS and no Jinja2. Imports only aotc.arch/keys/families/cache/store/elf/diagnostics
and cuda-python (lazily, on first device use). See docs/runtime.md.

    k = aotc.runtime.get_kernel("grouped_gemm_sm80", params)   # memoized per device
    k.launch(args, stream)                                     # args: the family's args_struct
"""

from __future__ import annotations

from .device import Device, device_from_capability, query_device
from .launch import Kernel, stream_handle
from .lookup import (
    CacheSource,
    Found,
    KernelSource,
    WheelSource,
    add_source,
    default_sources,
    find,
    set_sources,
)
from .ops import fmha_decode, fmha_fwd, grouped_gemm
from .registry import HostKernel, clear, get_kernel, host_kernel, load_kernel, loaded
from .select import select
from .tensors import TensorInfo, expect, tensor_info

__all__ = [
    "CacheSource",
    "Device",
    "Found",
    "HostKernel",
    "Kernel",
    "KernelSource",
    "TensorInfo",
    "WheelSource",
    "add_source",
    "clear",
    "default_sources",
    "device_from_capability",
    "expect",
    "find",
    "fmha_decode",
    "fmha_fwd",
    "get_kernel",
    "grouped_gemm",
    "host_kernel",
    "load_kernel",
    "loaded",
    "query_device",
    "select",
    "set_sources",
    "stream_handle",
    "tensor_info",
]

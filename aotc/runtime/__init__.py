"""aotc runtime: find a cached kernel for this device, load it, and launch it in-process, with no
compiler, no CUTLASS and no Jinja2. Imports only aotc.arch/keys/families/cache/store/elf/diagnostics
and cuda-python (lazily, on first device use). See docs/runtime.md.

    k = aotc.runtime.get_kernel("grouped_gemm_sm80", params)   # memoized per device
    k.launch(args, stream)                                     # args: the family's args_struct
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# name -> submodule. Submodules load on first use (PEP 562), so `import aotc.runtime` costs almost
# nothing and a server that only calls get_kernel never loads ops/select/tensors.
_EXPORTS = {
    "Device": "device", "device_from_capability": "device", "query_device": "device",
    "Kernel": "launch", "stream_handle": "launch",
    "CacheSource": "lookup", "Found": "lookup", "KernelSource": "lookup", "WheelSource": "lookup",
    "add_source": "lookup", "default_sources": "lookup", "find": "lookup", "set_sources": "lookup",
    "fmha_decode": "attention", "fmha_fwd": "attention", "gemm_nvfp4": "gemm", "grouped_gemm": "gemm",
    "grouped_gemm_nvfp4": "gemm", "grouped_gemm_moe": "gemm", "set_allocator": "scratch",
    "grouped_gemm_moe_mxfp8": "moe", "grouped_gemm_moe_nvfp4": "moe", "moe_sf_bytes": "moe",
    "quantize_mxfp8": "quantize", "quantize_nvfp4": "quantize",
    "fmha_decode_paged": "paged", "fmha_fwd_paged": "paged",
    "HostKernel": "registry", "KernelKey": "registry", "clear": "registry", "get_kernel": "registry",
    "host_kernel": "registry", "kernel_key": "registry", "load_kernel": "registry", "loaded": "registry",
    "select": "tile_select",
    "TensorInfo": "tensors", "expect": "tensors", "tensor_info": "tensors",
}

__all__ = [
    "CacheSource",
    "Device",
    "Found",
    "HostKernel",
    "Kernel",
    "KernelKey",
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
    "fmha_decode_paged",
    "fmha_fwd",
    "fmha_fwd_paged",
    "gemm_nvfp4",
    "get_kernel",
    "grouped_gemm",
    "grouped_gemm_moe",
    "grouped_gemm_moe_mxfp8",
    "grouped_gemm_moe_nvfp4",
    "grouped_gemm_nvfp4",
    "host_kernel",
    "kernel_key",
    "load_kernel",
    "loaded",
    "moe_sf_bytes",
    "quantize_mxfp8",
    "quantize_nvfp4",
    "query_device",
    "select",
    "set_allocator",
    "set_sources",
    "stream_handle",
    "tensor_info",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aotc.runtime' has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later accesses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from aotc.runtime.attention import fmha_decode, fmha_fwd
    from aotc.runtime.device import Device, device_from_capability, query_device
    from aotc.runtime.gemm import gemm_nvfp4, grouped_gemm, grouped_gemm_moe, grouped_gemm_nvfp4
    from aotc.runtime.launch import Kernel, stream_handle
    from aotc.runtime.lookup import (
        CacheSource,
        Found,
        KernelSource,
        WheelSource,
        add_source,
        default_sources,
        find,
        set_sources,
    )
    from aotc.runtime.moe import grouped_gemm_moe_mxfp8, grouped_gemm_moe_nvfp4, moe_sf_bytes
    from aotc.runtime.paged import fmha_decode_paged, fmha_fwd_paged
    from aotc.runtime.quantize import quantize_mxfp8, quantize_nvfp4
    from aotc.runtime.registry import (
        HostKernel,
        KernelKey,
        clear,
        get_kernel,
        host_kernel,
        kernel_key,
        load_kernel,
        loaded,
    )
    from aotc.runtime.scratch import set_allocator
    from aotc.runtime.tensors import TensorInfo, expect, tensor_info
    from aotc.runtime.tile_select import select

"""Cache keys of FlashInfer modules: one ref per (FlashInfer version, module name, arch), written by
the build and read by the runtime hook (two small file reads, no directory scan). Pure; no
FlashInfer, Jinja2 or nvcc import.
"""

from __future__ import annotations

FAMILY = "flashinfer"
# Blob role of the module's shared library in the manifest.
SO_BLOB = "so"
# The names of aotc.arch.ARCHES, in its order: the archs the hook asks FlashInfer about. Spelled out
# here so that serving a module does not import aotc.arch (its Arch records cost ~0.3-0.5 ms on the
# 2-core CPU machine); tests/test_flashinfer.py checks they agree.
ARCH_NAMES = ("sm80", "sm86", "sm89", "sm90a", "sm100a", "sm120a", "sm120f", "sm121a")


def module_key(module: str, flashinfer_version: str, arch: str) -> str:
    """The lookup key: FlashInfer's own module name already encodes its parameters (dtypes, head
    dims, ...); the version pins the sources it was generated from, as FlashInfer's AOT wheels do."""
    from aotc.keys import spec_key  # not imported where a served record answers (ARCH_NAMES is)

    return spec_key(FAMILY, {"module": module, "flashinfer_version": flashinfer_version}, arch)


def flashinfer_arch_list(arch: str) -> str:
    """FLASHINFER_CUDA_ARCH_LIST spelling of an aotc arch: sm120a -> 12.0a, sm90a -> 9.0a."""
    from aotc.arch import ARCHES  # the build side's question; the hook's look-up needs only module_key

    a = ARCHES[arch]
    return f"{a.sm // 10}.{a.sm % 10}{a.variant}"

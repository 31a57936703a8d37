"""Load a found kernel: verified blobs -> ELF target check -> cubin into the driver (cuLibraryLoadData,
entry `aotc_kernel`) and the host helper .so into the process (ctypes, ABI version checked).
The target check runs before the driver sees the cubin: lazy loading would otherwise accept a cubin
the device cannot run and fail later with CUDA_ERROR_NO_BINARY_FOR_GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aotc import ABI_VERSION
from aotc.abi import AotcLaunch
from aotc.runtime.device import Device, check, driver, error_name, in_primary
from aotc.runtime.errors import CORRUPT_BLOB, HELPER_ABI, TARGET_MISMATCH, build_command, runtime_error
from aotc.runtime_folder import helper_dir, helper_path, verified_read, write_atomic

if TYPE_CHECKING:  # the target table and the lookup load only when a check fails or a target is unknown
    from aotc.arch import Arch
    from aotc.runtime.recall import Found

__all__ = ["ENTRY", "AotcLaunch", "Helper", "check_cubin_target", "load_cubin", "load_helper", "read_blob",
           "read_cubin"]

ENTRY = "aotc_kernel"
CUDA_ERROR_NO_BINARY_FOR_GPU = 209




def read_blob(found: Found, role: str) -> bytes:
    """The verified bytes of one blob of the manifest; AOTC-RT-004 when missing or corrupt."""
    digest = blob_digest(found, role)
    with _unreadable(found, role, digest):
        return found.source.read_blob(digest)


def blob_digest(found: Found, role: str) -> str:
    blobs = found.manifest.get("blobs", {})
    if role not in blobs:
        raise runtime_error(CORRUPT_BLOB, f"the {found.arch} manifest of {found.family} ({found.spec_key[:12]}) "
                            f"in {found.source.name} lists no {role!r} blob (has: {', '.join(blobs)})",
                            f"rebuild it: {build_command(found.arch, found.family, found.manifest.get('name', ''))}")
    return blobs[role]["sha256"]


@contextlib.contextmanager
def _unreadable(found: Found, role: str, digest: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        from aotc.diagnostics import AotcError

        if not isinstance(exc, AotcError | OSError | KeyError | ValueError):
            raise
        raise runtime_error(
            CORRUPT_BLOB, f"the {role} blob {digest[:12]} of {found.family} for {found.arch} in {found.source.name} "
            f"cannot be read: {exc}",
            f"it is not loaded; rebuild it: {build_command(found.arch, found.family, found.manifest.get('name', ''))}",
            digest=digest) from exc


def read_cubin(found: Found, target: tuple[int, str] | None = None) -> tuple[bytes, tuple[int, str]]:
    """The verified cubin and its ELF target (sm, variant). Every process loads it, so it is kept
    decompressed in the private runtime folder as `<digest>.sm<sm><variant>.cubin`, named by the
    target its ELF was found to have when it was written: a later process reads and hashes that file
    (found under `target`, else the target the manifest names) and needs neither zstandard nor an
    ELF parse. A file failing its digest, or a manifest naming another target than the ELF's, takes
    the full path: read from the source (verified), ELF parsed, kept under the ELF's own target."""
    digest = blob_digest(found, "cubin")
    root = helper_dir()
    if target is None:
        from aotc.arch import ARCHES

        arch = ARCHES.get(found.arch)
        target = (arch.sm, arch.variant) if arch is not None else None
    if target is not None:
        data = verified_read(root / f"{digest}.sm{target[0]}{target[1]}.cubin", digest)
        if data is not None:
            return data, target
    with _unreadable(found, "cubin", digest):
        data = found.source.read_blob(digest)
    from aotc.elf import cubin_target

    sm, variant = cubin_target(data)
    write_atomic(root, root / f"{digest}.sm{sm}{variant}.cubin", data)
    return data, (sm, variant)


def cubin_arch(cubin: bytes, target: tuple[int, str] | None = None) -> tuple[str, Arch]:
    """(nvcc target name, Arch) of a cubin, from its ELF header and compat notes (or from `target`,
    its (sm, variant) as read_cubin found it)."""
    if target is None:
        from aotc.elf import cubin_target

        target = cubin_target(cubin)
    from aotc.arch import ARCHES, Arch

    sm, variant = target
    arch = ARCHES.get(f"sm{sm}{variant}") or Arch(f"sm{sm}{variant}", sm, variant, 0, frozenset(), 1)
    return f"sm_{sm}{variant}", arch


def check_cubin_target(cubin: bytes, device: Device, found: Found, target: tuple[int, str] | None = None) -> None:
    """AOTC-RT-003 unless the cubin's own ELF target runs on the device (checked before loading);
    `target`: the (sm, variant) read_cubin established for these bytes (else the ELF is parsed)."""
    nvcc_name, arch = cubin_arch(cubin, target)
    if arch.runs_on(device.cc):
        return
    from aotc.runtime.lookup import buildable_target, stored_targets

    stored = stored_targets(found.family, found.params, [found.source])
    target_name = buildable_target(found.family, found.params, device)
    fix = (f"build one for this device: {build_command(target_name, found.family, found.manifest.get('name', ''))}"
           if target_name else f"{found.family} cannot be built for sm_{device.sm}; run it on a device of its target")
    raise runtime_error(
        TARGET_MISMATCH,
        f"the {found.family} cubin ({found.spec_key[:12]}, from {found.source.name}) is built for {nvcc_name}, which "
        f"cannot run on {device.label}; stored targets for these params: {', '.join(stored) or 'none'}",
        fix, cubin_target=nvcc_name, device_cc=list(device.cc), stored=sorted(stored))


def load_cubin(cubin: bytes, device: Device, what: str) -> tuple[Any, Any]:
    """(library, function) of `aotc_kernel` in the device's primary context."""
    cu = driver()
    with in_primary(device.ordinal):
        library = check(cu, cu.cuLibraryLoadData(cubin, None, None, 0, None, None, 0), f"cuLibraryLoadData({what})")
        kernel = check(cu, cu.cuLibraryGetKernel(library, ENTRY.encode()), f"cuLibraryGetKernel({what}, {ENTRY})")
        # Forces the module into this context now, so a wrong binary fails here and not at first launch.
        err, function = cu.cuKernelGetFunction(kernel)
    if int(err) == CUDA_ERROR_NO_BINARY_FOR_GPU:
        raise runtime_error(TARGET_MISMATCH, f"the driver has no binary of {what} for {device.label} "
                            f"({error_name(cu, err)})", "build the kernel for this device's target")
    check(cu, (err, function), f"cuKernelGetFunction({what})")
    return library, function


_CUDART = "libcudart.so.13"  # the soname every host helper needs (aotc.build.compile.SHARED_CUDART)
_cudart_loaded = False


def load_shared_cudart() -> None:
    """Make the CUDA runtime the helpers link against resolvable by its soname: from the loader path if
    it is there (a system toolkit, or torch already loaded it), else from the pip nvidia-cuda-runtime
    wheel (found by cuda.pathfinder). One runtime for the process, shared by every helper."""
    global _cudart_loaded
    if _cudart_loaded:
        return
    try:
        ctypes.CDLL(_CUDART, mode=ctypes.RTLD_GLOBAL)
    except OSError as first:
        try:
            from cuda.pathfinder import load_nvidia_dynamic_lib

            load_nvidia_dynamic_lib("cudart")
        except Exception as exc:  # any failure here has the same fix
            raise runtime_error(HELPER_ABI, f"the CUDA runtime {_CUDART} that host helpers link against cannot "
                                f"be loaded ({first}; pip wheels: {exc})",
                                "pip install nvidia-cuda-runtime (a dependency of aotc), or put a CUDA 13 "
                                "toolkit's lib64 on LD_LIBRARY_PATH") from exc
    _cudart_loaded = True


class Helper:
    """The host helper of one kernel: aotc_query / aotc_prepare through ctypes."""

    def __init__(self, path: Path, what: str):
        load_shared_cudart()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise runtime_error(HELPER_ABI, f"the host helper of {what} ({path.name}) cannot be loaded: {exc}",
                                "rebuild the kernel with this aotc version") from exc
        self.lib = lib
        self.what = what
        for sym in ("aotc_abi_version", "aotc_query", "aotc_prepare"):
            if not hasattr(lib, sym):
                raise runtime_error(HELPER_ABI, f"the host helper of {what} exports no {sym}()",
                                    "rebuild the kernel with this aotc version")
        lib.aotc_abi_version.restype = ctypes.c_int
        lib.aotc_abi_version.argtypes = []
        version = lib.aotc_abi_version()
        if version != ABI_VERSION:
            raise runtime_error(HELPER_ABI, f"the host helper of {what} speaks launch ABI {version}; this aotc "
                                f"runtime speaks {ABI_VERSION}", "rebuild the kernel with this aotc version "
                                "(or install the aotc version it was built with)", helper_abi=version,
                                runtime_abi=ABI_VERSION)
        vp, ip, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
        launch_p = ctypes.POINTER(AotcLaunch)
        lib.aotc_query.restype = ip
        lib.aotc_query.argtypes = [vp, launch_p, ctypes.c_char_p, ip]
        lib.aotc_prepare.restype = ip
        lib.aotc_prepare.argtypes = [vp, vp, vp, u32, launch_p, ctypes.c_char_p, ip]
        self.query_fn = lib.aotc_query
        self.prepare_fn = lib.aotc_prepare


def load_helper(found: Found) -> Helper:
    blob = found.manifest.get("blobs", {}).get("helper")
    what = f"{found.family} for {found.arch} ({found.spec_key[:12]})"
    if blob is None:
        raise runtime_error(HELPER_ABI, f"{what} has no host helper blob in its manifest",
                            f"rebuild it: {build_command(found.arch, found.family, found.manifest.get('name', ''))}")
    return Helper(helper_path(blob["sha256"], lambda: read_blob(found, "helper")), what)

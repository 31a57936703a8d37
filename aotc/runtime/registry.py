"""Per-process kernel registry: (device, family, params[, arch]) -> loaded Kernel, memoized per
device and spec key. The first load takes a lock (one thread loads, the others wait and share it);
later lookups are one dict read and take no lock. A process's first load of a kernel takes what an
earlier process's lookup found from the runtime folder (aotc.runtime.recall) when that is still
current, and imports the lookup (families, spec keys, the cache) only otherwise.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from aotc.runtime.device import Device, query_device
from aotc.runtime.launch import Kernel
from aotc.runtime.loader import Helper, check_cubin_target, load_cubin, load_helper, read_cubin
from aotc.runtime.recall import recall, remember

if TYPE_CHECKING:
    from aotc.runtime.recall import Found
    from aotc.runtime.sources import KernelSource

_fast: dict[tuple, Kernel] = {}  # (ordinal, family, frozen params, arch) -> Kernel
_by_spec: dict[tuple[int, str], Kernel] = {}  # (ordinal, spec key) -> Kernel
_host: dict[str, HostKernel] = {}  # spec key -> verified cubin bytes + loaded helper (any device)
_lock = threading.RLock()
_generation = 0  # bumped by clear(): a KernelKey remembers its kernel only for its generation


class HostKernel:
    """The device-independent half of a loaded kernel: verified cubin bytes, their ELF target
    (sm, variant) and the host helper. (A plain class, not a dataclass: dataclass creation costs
    milliseconds at import.)"""

    __slots__ = ("cubin", "helper", "target")

    def __init__(self, cubin: bytes, helper: Helper, target: tuple[int, str] | None = None):
        self.cubin = cubin
        self.helper = helper
        self.target = target

    def __repr__(self) -> str:
        return f"HostKernel(cubin=<{len(self.cubin)} bytes>, helper={self.helper.what!r})"


class KernelKey:
    """A frozen (family, params, device, arch) for the hot path: `get_kernel(key)` is one attribute
    read once the key's kernel is loaded, with no params hashing. Make one with `kernel_key(...)`."""

    __slots__ = ("_generation", "_kernel", "arch", "device", "family", "params")

    def __init__(self, family: str, params: dict, device: Device | int | None = None, arch: str | None = None):
        self.family = family
        self.params = dict(params)  # a private copy: later changes to the caller's dict do not leak in
        self.device = device
        self.arch = arch
        self._kernel: Kernel | None = None
        self._generation = -1

    def __repr__(self) -> str:
        return f"KernelKey({self.family!r}, {self.params!r}, device={self.device!r}, arch={self.arch!r})"


def kernel_key(family: str, params: dict, *, device: Device | int | None = None,
               arch: str | None = None) -> KernelKey:
    """A reusable key for `get_kernel(key)`; the kernel is looked up and loaded on its first use."""
    return KernelKey(family, params, device, arch)


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of a params dict (lists become tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def resolve_device(device: Device | int | None) -> Device:
    if isinstance(device, Device):
        return device if device.smem_optin_bytes else query_device(device.ordinal)
    return query_device(0 if device is None else int(device))


def get_kernel(family: str | KernelKey, params: dict | None = None, *, device: Device | int | None = None,
               arch: str | None = None, sources: list[KernelSource] | None = None) -> Kernel:
    """The loaded kernel for (family, params) on `device` (default: CUDA device 0), or for a
    `KernelKey` (then params, device and arch come from the key). Memoized: the warm call is a dict
    lookup, or one attribute read for a key."""
    if type(family) is KernelKey:
        if family._generation == _generation:
            return family._kernel  # type: ignore[return-value]
        return _load_key(family)
    if params is None:
        raise TypeError("get_kernel(family, params): params are required unless a KernelKey is given")
    ordinal = 0 if device is None else device.ordinal if isinstance(device, Device) else int(device)
    try:  # hashable values (the common case): no sort, no recursion; other orders just add entries
        fast_key: tuple = (ordinal, family, arch, *params.items())
        kernel = _fast.get(fast_key)
    except TypeError:  # list values: the order- and list-insensitive form
        fast_key = (ordinal, family, arch, freeze(params))
        kernel = _fast.get(fast_key)
    if kernel is not None:
        return kernel
    with _lock:
        kernel = _fast.get(fast_key)
        if kernel is None:
            dev = resolve_device(device)
            found, checked = locate(family, params, dev, arch, sources)
            kernel = _by_spec.get((dev.ordinal, found.spec_key)) or load_kernel(found, dev, checked)
            _by_spec[(dev.ordinal, found.spec_key)] = kernel
            if checked is None and sources is None and _default_sources():
                remember(family, params, arch, dev, found, _host[found.spec_key].target)
            if sources is None:  # explicit source lists are not memoized under the default key
                _fast[fast_key] = kernel
    return kernel


def locate(family: str, params: dict, device: Device, arch: str | None = None,
           sources: list[KernelSource] | None = None) -> tuple[Found, tuple[int, str] | None]:
    """What get_kernel loads: (found, its cubin's target as checked for this device's capability)
    from a current record of an earlier process's lookup when the default sources are in use, else
    (find()'s answer, None)."""
    if sources is None and _default_sources():
        hit = recall(family, params, arch, device)
        if hit is not None:
            return hit
    from aotc.runtime.lookup import find

    return find(family, params, device, arch=arch, sources=sources), None


def _default_sources() -> bool:
    """Whether lookups use the process's default source list (records describe only that one)."""
    lookup = sys.modules.get("aotc.runtime.lookup")
    return lookup is None or lookup.uses_default_sources()


def kernel_for(found: Found, device: Device) -> Kernel:
    """The loaded kernel of something find() (or lookup.stored_candidates) already located: no
    second lookup. Memoized per device and spec key like get_kernel."""
    kernel = _by_spec.get((device.ordinal, found.spec_key))
    if kernel is None:
        with _lock:
            kernel = _by_spec.get((device.ordinal, found.spec_key))
            if kernel is None:
                kernel = _by_spec[(device.ordinal, found.spec_key)] = load_kernel(found, resolve_device(device))
    return kernel


def remember_found(family: str, params: dict, device: Device, found: Found) -> None:
    """Record that get_kernel(family, params) on this device answers `found`, once its kernel loaded
    and passed the target check here (ops.choose: a later process's recalled choice then loads it
    without the lookup)."""
    host = _host.get(found.spec_key)
    if host is not None and host.target is not None and _default_sources():
        remember(family, params, None, device, found, host.target)


def _load_key(key: KernelKey) -> Kernel:
    generation = _generation  # read first: a clear() during the load leaves the key unresolved
    kernel = get_kernel(key.family, key.params, device=key.device, arch=key.arch)
    key._kernel, key._generation = kernel, generation
    return kernel


def host_kernel(found: Found, target: tuple[int, str] | None = None) -> HostKernel:
    """Read and verify the cubin and load the helper once per process and spec key (no driver);
    `target`: the cubin's ELF target when known (the kept file's name carries it)."""
    host = _host.get(found.spec_key)
    if host is None:
        with _lock:
            host = _host.get(found.spec_key)
            if host is None:
                cubin, target = read_cubin(found, target)
                host = HostKernel(cubin, load_helper(found), target)
                _host[found.spec_key] = host
    return host


def load_kernel(found: Found, device: Device, checked: tuple[int, str] | None = None) -> Kernel:
    """Check the cubin's ELF target against the device, then load it there (not memoized per device:
    get_kernel does that). `checked`: an ELF target already found to run on this device's capability
    (a record is written only after this check passed, and is keyed by the capability)."""
    host = host_kernel(found, checked)
    if host.target != checked or checked is None:  # before the driver sees it (lazy loading hides 209)
        check_cubin_target(host.cubin, device, found, host.target)
    what = f"{found.family} {found.arch} {found.spec_key[:12]}"
    library, function = load_cubin(host.cubin, device, what)
    return Kernel(found, device, library, function, host.helper)


def loaded() -> list[Kernel]:
    """Every kernel loaded in this process."""
    return list(_by_spec.values())


def clear() -> None:
    """Forget every loaded kernel (tests; a long-lived server swapping caches)."""
    global _generation
    with _lock:
        _generation += 1
        _fast.clear()
        _by_spec.clear()
        _host.clear()
        lookup = sys.modules.get("aotc.runtime.lookup")
        if lookup is not None:
            lookup.forget()  # stored candidates; memos above this module check _generation

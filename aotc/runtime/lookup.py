"""Lookup: (family, params, device) -> the stored manifest to load, searching the targets the
device can run in preference order (exact `a` > `f` family > plain) across kernel sources (the local
cache first; installed kernel wheels append theirs). No driver needed: the device may be a capability.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from aotc.arch import ARCHES, get_arch
from aotc.diagnostics import AotcError
from aotc.families import UnknownFamilyError, get_family
from aotc.keys import spec_key
from aotc.runtime.device import Device
from aotc.runtime.errors import BAD_PARAMS, NO_KERNEL, TARGET_MISMATCH, build_command, runtime_error
from aotc.runtime.recall import Found
from aotc.runtime.sources import CacheSource, KernelSource, WheelSource

__all__ = ["CacheSource", "Found", "KernelSource", "WheelSource", "add_source", "default_sources", "find",
           "set_sources", "stored_candidates", "stored_params", "typed_params"]


_sources: list[KernelSource] | None = None
_default: list[KernelSource] | None = None  # the list default_sources() made, while nothing replaced or added
_sources_lock = threading.Lock()


def default_sources() -> list[KernelSource]:
    """The process-wide source list: the default local cache, then installed kernel wheels, then
    any added sources."""
    global _sources, _default
    if _sources is None:
        with _sources_lock:
            if _sources is None:
                from aotc.cache import Cache, default_cache_dir

                _sources = _default = [CacheSource(Cache(default_cache_dir())), WheelSource()]
    return _sources


def uses_default_sources() -> bool:
    """Whether the process-wide list is (still) the default one: not replaced, nothing added."""
    return _sources is None or _sources is _default


def add_source(source: KernelSource) -> None:
    """Append a source (e.g. an installed kernel wheel); searched after the ones already there."""
    global _default
    default_sources().append(source)
    _default = None
    forget()


def set_sources(sources: list[KernelSource]) -> None:
    """Replace the process-wide source list (e.g. to point a server at another cache directory)."""
    global _sources
    with _sources_lock:
        _sources = list(sources)
    forget()


# (family, device cc) -> (the source list scanned, its candidates): a choice among stored kernels
# reads the ref listings once per family and device, not once per new problem size.
CANDIDATES_LIMIT = 256
_candidates: dict[tuple, tuple[list, list]] = {}


def forget() -> None:
    """Drop the memoized candidate lists (after sources change or kernels are built meanwhile)."""
    _candidates.clear()


def stored_candidates(family: str, device: Device, sources: list[KernelSource] | None = None) -> list[Found]:
    """Every distinct params stored for `family` that `device` can run, each found once at its most
    preferred target, in the sources' order (sources without a `refs()` listing contribute nothing).
    Memoized per (family, device capability) and source list until forget()."""
    srcs = default_sources() if sources is None else sources
    key = (family, device.cc)
    hit = _candidates.get(key)
    if hit is not None and hit[0] is srcs:
        return hit[1]
    runnable = set(device.runnable_targets())
    seen: dict[str, dict] = {}
    for src in srcs:
        listing = getattr(src, "refs", None)
        for ref in listing() if listing else ():
            if ref.get("family") == family and ref.get("arch") in runnable and isinstance(ref.get("params"), dict):
                seen.setdefault(json.dumps(ref["params"], sort_keys=True, default=list), ref["params"])
    found = []
    for params in seen.values():
        try:
            found.append(find(family, params, device, sources=srcs))
        except AotcError as exc:
            if exc.diagnostics[0].code != NO_KERNEL:  # a ref without its entry is no candidate
                raise
    if len(_candidates) >= CANDIDATES_LIMIT:
        _candidates.clear()
    _candidates[key] = (srcs, found)
    return found


def stored_params(family: str, device: Device, sources: list[KernelSource] | None = None) -> list[dict]:
    """The params of stored_candidates()."""
    return [f.params for f in stored_candidates(family, device, sources)]


def typed_params(family: str, params: dict) -> dict:
    """Validate and complete params exactly as the build does, so the spec keys agree."""
    try:
        fam = get_family(family)
    except UnknownFamilyError as exc:
        raise runtime_error(BAD_PARAMS, str(exc).strip("'\""), "use one of the listed family names") from None
    typed, errors = fam.validate(dict(params))
    if errors:
        raise runtime_error(BAD_PARAMS, f"invalid parameters for {family}: " + "; ".join(errors),
                            "pass the parameters the kernel was built with (see its tile spec)")
    return typed


def find(family: str, params: dict, device: Device, *, arch: str | None = None,
         sources: list[KernelSource] | None = None) -> Found:
    """The most preferred stored kernel for (family, params) that `device` can run."""
    typed = typed_params(family, params)
    srcs = default_sources() if sources is None else sources
    if arch is not None:
        target = get_arch(arch)
        if not target.runs_on(device.cc):
            raise _not_runnable(family, typed, device, target.name, srcs)
        targets = [target.name]
    else:
        targets = device.runnable_targets()
    for name in targets:
        key = spec_key(family, typed, name)
        for src in srcs:
            manifest = src.resolve(key)
            if manifest is not None:
                return Found(family, typed, name, key, manifest, src)
    raise _no_kernel(family, typed, device, targets, srcs)


def ref_probes(found: Found, device: Device, arch: str | None) -> list[str] | None:
    """The ref files find() read, in its order, to answer `found` from the default sources: every ref
    of a more preferred target or an earlier source (absent then) and the answering one (last). None
    when a source has no ref files (its answer cannot be checked without asking it again)."""
    srcs = default_sources()
    if not all(isinstance(src, CacheSource | WheelSource) for src in srcs):
        return None

    def caches() -> Iterator[CacheSource]:  # installed wheels are discovered only if reached
        for src in srcs:
            yield from src.caches() if isinstance(src, WheelSource) else (src,)

    paths = []
    for name in [found.arch] if arch is not None else device.runnable_targets():
        key = spec_key(found.family, found.params, name)
        for cache in caches():
            paths.append(str(cache.cache.ref_path(key)))
            if name == found.arch and cache.resolve(key) == found.manifest:
                return paths
    return None


def listing_probes(table_key: str | None) -> list[str] | None:
    """The folders and files whose stamps stand for what stored_candidates listed and which tune
    table it found, under the default sources: each cache's refs folder and its shard folders (a ref
    written or removed changes one), the path of the table `table_key` names, and for installed
    kernel wheels every folder on the import path as well (installing or removing a distribution
    changes one). None when a source has no such folders."""
    srcs = default_sources()
    if not all(isinstance(src, CacheSource | WheelSource) for src in srcs):
        return None
    from aotc.runtime.tuned import table_path

    def watched(cache: Any) -> list[str]:
        refs = cache.base / "refs"
        shards = sorted(e.path for e in os.scandir(refs) if e.is_dir()) if refs.is_dir() else []
        return [str(refs), *shards, *([str(table_path(cache, table_key))] if table_key else [])]

    paths: list[str] = []
    for src in srcs:
        if isinstance(src, WheelSource):
            paths += [p for p in dict.fromkeys(sys.path) if p and os.path.isdir(p)]
            for wheel in src.caches():
                paths += watched(wheel.cache)
        else:
            paths += watched(src.cache)
    return paths


def stored_targets(family: str, typed: dict, sources: list[KernelSource]) -> dict[str, dict]:
    """Every catalog target stored for (family, params) in any source: arch -> manifest."""
    found: dict[str, dict] = {}
    for name in ARCHES:
        key = spec_key(family, typed, name)
        for src in sources:
            manifest = src.resolve(key)
            if manifest is not None:
                found[name] = manifest
                break
    return found


def _describe(stored: dict[str, dict], device: Device) -> str:
    if not stored:
        return "nothing is stored for these parameters on any target"
    parts = [f"{a} ({'runs here' if ARCHES[a].runs_on(device.cc) else 'cannot run here'})" for a in stored]
    return "stored targets: " + ", ".join(parts)


def buildable_target(family: str, typed: dict, device: Device) -> str | None:
    """The most preferred target the device runs that offers every feature the family needs."""
    try:
        needs = get_family(family).requires(typed)
    except AotcError:  # pragma: no cover - requires() returns, never raises, by contract
        return None
    for name in device.runnable_targets():
        if needs <= ARCHES[name].features:
            return name
    return None


def _fix(family: str, typed: dict, device: Device, stored: dict[str, dict]) -> str:
    target = buildable_target(family, typed, device)
    if target is None:
        needs = sorted(get_family(family).requires(typed))
        return (f"{family} needs {', '.join(needs)}, which no target of sm_{device.sm} offers: run it on a "
                "device it was built for")
    spec_name = next((m.get("name", "") for m in stored.values()), "")
    return f"build one: {build_command(target, family, spec_name)}"


def _no_kernel(family: str, typed: dict, device: Device, searched: list[str],
               sources: list[KernelSource]) -> AotcError:
    stored = stored_targets(family, typed, sources)
    where = ", ".join(s.name for s in sources) or "no sources"
    return runtime_error(
        NO_KERNEL,
        f"no {family} kernel with params {typed} for {device.label}: searched targets "
        f"{', '.join(searched) or '(none runnable)'} in {where}; {_describe(stored, device)}",
        _fix(family, typed, device, stored),
        family=family, device_cc=list(device.cc), searched=searched, stored=sorted(stored))


def _not_runnable(family: str, typed: dict, device: Device, target: str,
                  sources: list[KernelSource]) -> AotcError:
    stored = stored_targets(family, typed, sources)
    return runtime_error(
        TARGET_MISMATCH,
        f"{family} for {target} cannot run on {device.label}: a {target} binary runs only on "
        f"{_runs_on_text(target)}; {_describe(stored, device)}",
        _fix(family, typed, device, stored),
        family=family, target=target, device_cc=list(device.cc), stored=sorted(stored))


def _runs_on_text(target: str) -> str:
    arch = ARCHES[target]
    if arch.variant == "a":
        return f"sm_{arch.sm} exactly"
    return f"sm_{arch.family_major}x devices from sm_{arch.sm} up"

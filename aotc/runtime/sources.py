"""Kernel sources: where manifests and blobs come from (the local cache, installed kernel wheels).
Their own module, apart from lookup's target search, so that the FlashInfer hook can read a cache
without importing the families or the driver layer.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: no import on the serving path
    from collections.abc import Callable


class KernelSource:
    """Where manifests and blobs come from. `resolve` answers None for an unknown spec key;
    `read_blob` returns the verified bytes of a digest or raises AotcError. Any object with these
    members is a source; this base class names them (annotations, no bodies: CacheSource and
    WheelSource implement them). (Not a typing.Protocol: creating one
    costs ~0.2 ms, on the import path of every serving process.)"""

    name: str
    resolve: Callable[[str], dict | None]  # spec key -> manifest (JSON form), None when not stored
    read_blob: Callable[[str], bytes]  # sha256 digest -> verified bytes, AotcError otherwise


class CacheSource(KernelSource):
    """A local aotc cache directory (aotc.cache.Cache) as a kernel source."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.name = f"cache {getattr(cache, 'root', cache)}"

    def resolve(self, spec_key: str) -> dict | None:
        """The manifest's JSON form, checked against the schema first: a malformed one is
        AOTC-CACHE-005 here rather than a KeyError while loading."""
        manifest = self.cache.resolve_ref(spec_key)
        if manifest is not None:
            from aotc.cache.records import manifest_problems

            problems = manifest_problems(manifest)  # Manifest.from_json's check, without building one
            if problems:
                from aotc.cache.manifest import ManifestError

                raise ManifestError(problems, f"{manifest.get('key', spec_key)} in {self.name}")
        return manifest

    def read_blob(self, digest: str) -> bytes:
        return self.cache.read_blob(digest)

    def origin(self, digest: str) -> str:
        """Which store holds a blob this source resolved (for reports)."""
        return self.name

    def refs(self) -> list[dict]:
        """Every stored ref (family, params, arch, name): what select() can choose from."""
        return list(self.cache.refs())

    def tuned_table(self, key: str) -> dict | None:
        """The selection table `aotc tune` stored under `key` (aotc.runtime.tuned); None if none."""
        from aotc.runtime.tuned import read_table

        return read_table(self.cache, key)


class WheelSource(KernelSource):
    """Installed kernel wheels (aotc.runtime.installed_wheels), in distribution-name order. Discovered on the
    first miss of the sources before it, so a process served from the local cache never pays for
    the entry-point scan."""

    name = "installed kernel wheels"

    def __init__(self) -> None:
        self._caches: list[CacheSource] | None = None
        self._owner: dict[str, CacheSource] = {}  # blob digest -> the wheel cache that listed it

    def caches(self) -> list[CacheSource]:
        if self._caches is None:
            from aotc.cache import Cache
            from aotc.cache.store import LocalBlobStore
            from aotc.runtime.installed_wheels import discover

            installed, refused = discover()
            for r in refused:  # skipped, never silently: each with its coded reason
                warnings.warn(f"kernel wheel {r.distribution} refused: {r.reason}", RuntimeWarning, stacklevel=3)
            # read-only: a bad blob in site-packages is refused, never moved (it would outlive uninstall)
            self._caches = [CacheSource(Cache(w.root, store=LocalBlobStore(w.root, read_only=True)))
                            for w in installed]
            for src, w in zip(self._caches, installed, strict=True):
                src.name = f"kernel wheel {w.distribution}"
        return self._caches

    def resolve(self, spec_key: str) -> dict | None:
        for src in self.caches():
            manifest = src.resolve(spec_key)
            if manifest is not None:
                for blob in manifest.get("blobs", {}).values():
                    self._owner[blob["sha256"]] = src
                return manifest
        return None

    def refs(self) -> list[dict]:
        return [ref for src in self.caches() for ref in src.refs()]

    def tuned_table(self, key: str) -> dict | None:
        return next((t for src in self.caches() if (t := src.tuned_table(key)) is not None), None)

    def owner(self, digest: str) -> CacheSource | None:
        """The wheel cache whose resolved manifest listed the blob `digest` (None before that)."""
        return self._owner.get(digest)

    def origin(self, digest: str) -> str:
        owner = self._owner.get(digest)
        return owner.name if owner is not None else self.name

    def read_blob(self, digest: str) -> bytes:
        owner = self._owner.get(digest)
        if owner is None:
            raise KeyError(digest)
        return owner.read_blob(digest)

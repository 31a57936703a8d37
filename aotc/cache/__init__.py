"""The kernel cache, split by who uses it: `records` (where a cache lives, record checksums, the
manifest schema: the read side a serving process needs, stdlib only), `entries` (the Cache: manifests,
refs, blobs, logs) and `store` (blob backends) here; `maintenance` (verify, gc, stats) for the CLI;
direct-mode prekeys live on the build side (aotc.build.direct_mode). Layout: docs/CONTRACTS.md.
The names below resolve on first use (PEP 562), so importing `aotc.cache.records` alone (the
FlashInfer hook does) does not import the Cache class and what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["SCHEMA", "Cache", "CacheFormatError", "default_cache_dir"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'aotc.cache' has no attribute {name!r}")
    if name == "default_cache_dir":  # where the default cache is: aotc.resources, not the Cache class
        from aotc.resources import default_cache_dir as value
    else:
        from aotc.cache import entries

        value = getattr(entries, name)
    globals()[name] = value  # later accesses are plain attribute reads
    return value


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from aotc.cache.entries import SCHEMA, Cache, CacheFormatError
    from aotc.resources import default_cache_dir

"""The kernel cache, split by who uses it: `entries` (the Cache: manifests, refs, blobs, logs; read
by serving processes) and `store` (blob backends) here; `maintenance` (verify, gc, stats) for the
CLI; direct-mode prekeys live on the build side (aotc.build.direct_mode). Layout: docs/CONTRACTS.md.
"""

from aotc.cache.entries import SCHEMA, Cache, CacheFormatError, default_cache_dir

__all__ = ["SCHEMA", "Cache", "CacheFormatError", "default_cache_dir"]

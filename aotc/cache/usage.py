"""Persisted build statistics of a cache, as ccache keeps them: hits and misses since the last
`aotc stats --zero`, evictions, and when each entry was last used by a build (what LRU eviction
orders by). Two small JSON records under <root>/v1/, updated under one writer lock; build side and
`aotc stats` only (a serving process never writes them).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Iterable

from aotc.cache.entries import Cache
from aotc.cache.store import CacheWriteError, atomic_write

STATS_FILE = "stats.json"  # {"hits", "misses", "builds", "evicted_entries", "evicted_bytes", "since"}
USED_FILE = "used.json"  # {action key: unix time of the last build that hit or built it}
_COUNTERS = ("hits", "misses", "builds", "evicted_entries", "evicted_bytes")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read(cache: Cache, name: str) -> dict:
    try:
        value = json.loads((cache.base / name).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}  # absent, or damaged (never worth failing a build over): counts start again
    return value if isinstance(value, dict) else {}


def _write(cache: Cache, name: str, value: dict) -> None:
    atomic_write(cache.base / name, [json.dumps(value, sort_keys=True).encode()], cache.tmp_dir)


def read_stats(cache: Cache) -> dict:
    """The counters (0 when never recorded) and since when they count."""
    raw = _read(cache, STATS_FILE)
    out = {k: int(raw.get(k, 0)) if isinstance(raw.get(k, 0), int) else 0 for k in _COUNTERS}
    out["since"] = raw.get("since") if isinstance(raw.get("since"), str) else None
    return out


def record_build(cache: Cache, hits: int, misses: int, used_keys: Iterable[str]) -> None:
    """Add one build's hits (found in the cache) and misses (compiled, or tried to) to the counters,
    and mark the entries it used as used now."""
    now = time.time()
    try:
        _record(cache, hits, misses, used_keys, now)
    except CacheWriteError:
        pass  # a read-only or full cache still serves its hits: the counters are not worth failing for


def _record(cache: Cache, hits: int, misses: int, used_keys: Iterable[str], now: float) -> None:
    with cache.lock("usage"):
        st = read_stats(cache)
        st["hits"] += hits
        st["misses"] += misses
        st["builds"] += 1
        st["since"] = st["since"] or _now_iso()
        _write(cache, STATS_FILE, st)
        used = _read(cache, USED_FILE)
        used.update(dict.fromkeys((k for k in used_keys if k), now))
        _write(cache, USED_FILE, used)


def record_eviction(cache: Cache, entries: int, stored_bytes: int, keys: Iterable[str]) -> None:
    with cache.lock("usage"):
        st = read_stats(cache)
        st["evicted_entries"] += entries
        st["evicted_bytes"] += stored_bytes
        st["since"] = st["since"] or _now_iso()
        _write(cache, STATS_FILE, st)
        used = _read(cache, USED_FILE)
        for key in keys:
            used.pop(key, None)
        _write(cache, USED_FILE, used)


def zero(cache: Cache) -> None:
    """`aotc stats --zero`: counters back to 0 from now; last-use times stay (eviction needs them)."""
    with cache.lock("usage"):
        _write(cache, STATS_FILE, {**dict.fromkeys(_COUNTERS, 0), "since": _now_iso()})


def last_used(cache: Cache) -> dict[str, float]:
    return {k: float(v) for k, v in _read(cache, USED_FILE).items() if isinstance(v, (int, float))}

"""How long a build will take, before it starts: which kernels the cache already holds (the same
direct-mode check a build makes, no compiler run), and for the rest the compile times recorded in the
cache's manifests per family, scheduled longest first over the build's jobs. `aotc build --dry-run`
prints it; the same per-family figures order a build's queue and drive its ETA.
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass, field


@dataclass
class Estimate:
    hits: list[str] = field(default_factory=list)  # "name (arch)" the cache holds
    misses: list[tuple[str, str, float | None]] = field(default_factory=list)  # name (arch), family, seconds
    skipped: int = 0  # not applicable to an arch, or rejected by the rules
    jobs: int = 1
    family_seconds: dict[str, float] = field(default_factory=dict)  # median compile seconds on record

    @property
    def unknown(self) -> list[str]:
        return [n for n, _, s in self.misses if s is None]

    @property
    def compile_seconds(self) -> float:
        return sum(s for _, _, s in self.misses if s is not None)

    @property
    def wall_seconds(self) -> float:
        return makespan([s for _, _, s in self.misses if s is not None], self.jobs)

    def to_json(self) -> dict:
        return {"hits": self.hits, "misses": [{"kernel": n, "family": f, "seconds": s} for n, f, s in self.misses],
                "skipped": self.skipped, "jobs": self.jobs, "family_seconds": self.family_seconds,
                "compile_seconds": round(self.compile_seconds, 1), "wall_seconds": round(self.wall_seconds, 1),
                "unknown": self.unknown}


def family_seconds(cache) -> dict[str, float]:
    """Median recorded compile time (nvcc device + helper) per family, from the cache's manifests."""
    times: dict[str, list[float]] = {}
    for m in cache.entries():
        secs = m.get("compile_seconds")
        if isinstance(secs, (int, float)) and secs > 0 and isinstance(m.get("family"), str):
            times.setdefault(m["family"], []).append(float(secs))
    return {fam: statistics.median(v) for fam, v in times.items()}


def longest_first(items: list, seconds_of) -> list:
    """Items ordered longest expected compile first (unknown ones first of all: assume the worst), so a
    long CUTLASS compile never starts last on an otherwise idle machine."""
    return sorted(items, key=lambda item: -(seconds_of(item) if seconds_of(item) is not None else float("inf")))


def makespan(seconds: list[float], jobs: int) -> float:
    """Wall time of running these compiles longest first on `jobs` workers (each to the first free)."""
    workers = [0.0] * max(1, jobs)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(workers, heapq.heappop(workers) + s)
    return max(workers)


def remaining_wall(running_left: list[float], queued: list[float], jobs: int) -> float:
    """Wall seconds until the last compile ends: the running ones' remaining times occupy their
    workers, then the queued ones go longest first to whichever worker frees first."""
    workers = sorted(running_left)[:max(1, jobs)]
    workers += [0.0] * (max(1, jobs) - len(workers))
    heapq.heapify(workers)
    for s in sorted(queued, reverse=True):
        heapq.heappush(workers, heapq.heappop(workers) + s)
    return max(workers)


def estimate(specs, archs, cache, jobs: int) -> Estimate:
    from aotc.build.direct_mode import lookup_prekey
    from aotc.build.pipeline import Builder
    from aotc.build.rules import check

    builder = Builder(cache)
    est = Estimate(jobs=jobs, family_seconds=family_seconds(cache))
    for spec in specs:
        for arch in archs:
            if not check(spec, arch).ok:
                est.skipped += 1
                continue
            _, _, pk = builder.plan(spec, arch)
            name = f"{spec.name} ({arch.name})"
            if lookup_prekey(cache, pk, builder.hash_file) is not None:
                est.hits.append(name)
            else:
                est.misses.append((name, spec.family, est.family_seconds.get(spec.family)))
    return est


def format_seconds(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

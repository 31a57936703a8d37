"""aotc.runtime.select(): pick one of several stored tiles of a family for a problem shape, by a
simple, documented heuristic (docs/runtime.md): least padded work, then fewer CTA waves wasted,
then the larger tile. Scoring only: candidates come from lookup.stored_candidates (memoized). Not
named select.py: importing a submodule of that name would shadow the function on aotc.runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from aotc.families import get_family
from aotc.runtime.device import Device
from aotc.runtime.errors import NO_CANDIDATE, runtime_error
from aotc.runtime.lookup import Found, KernelSource, stored_candidates, typed_params


def padded_work(tile: Sequence[int], dims: Sequence[int]) -> float:
    """Work done with padding to whole tiles over the useful work (1.0 = no waste)."""
    ratio = 1.0
    for t, d in zip(tile, dims, strict=False):
        if d > 0 and t > 0:
            ratio *= math.ceil(d / t) * t / d
    return ratio


def problem_dims(problem: dict) -> tuple[int, ...]:
    """(m, n, k) of a GEMM problem, or (seqlen_q,) of an attention problem; () if neither."""
    if {"m", "n"} <= problem.keys():
        return tuple(int(problem[k]) for k in ("m", "n", "k") if k in problem)
    for name in ("seqlen_q", "max_seqlen_q", "s_q"):
        if name in problem:
            return (int(problem[name]),)
    return ()


def score(tile: Sequence[int] | None, problem: dict, sm_count: int) -> tuple[float, float, int]:
    """Lower is better: (padded work, wasted share of the last wave, -tile area). `tile` is the
    family's tile_of(params): the problem dimensions each of its entries covers."""
    dims = problem_dims(problem)
    if tile is None or not dims:
        return (1.0, 0.0, 0)
    ctas = math.prod(math.ceil(d / t) for t, d in zip(tile, dims[:2], strict=False))
    batches = int(problem.get("groups", problem.get("batch", 1)))
    ctas *= max(batches, 1)
    waves = math.ceil(ctas / sm_count) if sm_count else 1
    idle = (waves * sm_count - ctas) / (waves * sm_count) if sm_count else 0.0
    return (round(padded_work(tile, dims), 3), round(idle, 3), -math.prod(tile[:2]))


def best(candidates: Sequence[Found], problem: dict, sm_count: int = 0) -> Found:
    """The stored candidate to use for `problem` (the first of equals, in the sources' order)."""
    return min(candidates, key=lambda f: score(get_family(f.family).tile_of(f.params), problem, sm_count))


def select(family: str, candidates: Sequence[dict], problem: dict, device: Device, *,
           sources: list[KernelSource] | None = None, sm_count: int = 0) -> dict:
    """The candidate params to use for `problem` on `device`, among those stored for it."""
    stored = {_key(f.params): f for f in stored_candidates(family, device, sources)}
    mine = [(p, stored[k]) for p in candidates if (k := _key(typed_params(family, p))) in stored]
    if not mine:
        raise runtime_error(NO_CANDIDATE, f"none of the {len(candidates)} {family} candidates is stored for "
                            f"{device.label}", f"build them: aotc build --arch {_target(device)} --filter {family}",
                            family=family, candidates=len(candidates))
    chosen = best([f for _, f in mine], problem, sm_count)
    return next(p for p, f in mine if f is chosen)


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=list)


def _target(device: Device) -> str:
    targets = device.runnable_targets()
    return targets[0] if targets else f"sm{device.sm}"

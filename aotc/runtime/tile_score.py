"""The heuristic's score of one stored tile for a problem shape (docs/runtime.md): least padded work,
then fewer CTA waves wasted, then the larger tile. Stdlib only: a choice recalled from a record
(aotc.runtime.recall) is scored without importing the families or the lookup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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

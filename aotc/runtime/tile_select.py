"""select(): pick one of several stored tiles of a family for a problem shape. A deliberately
simple, documented heuristic (docs/runtime.md): least padded work, then fewer CTAs waves wasted,
then the larger tile. Candidates not stored for the device are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from aotc.diagnostics import AotcError
from aotc.runtime.device import Device
from aotc.runtime.errors import NO_CANDIDATE, NO_KERNEL, runtime_error
from aotc.runtime.lookup import KernelSource, find

# Problem keys per tile axis: a params field holding the tile (first match wins) and the problem
# dimension each entry of that tile covers.
TILE_FIELDS = ("tile", "cta_tile", "tile_shape", "block")
QUERY_TILE_FIELDS = ("tile_q", "block_q", "block_m")


def padded_work(tile: Sequence[int], dims: Sequence[int]) -> float:
    """Work done with padding to whole tiles over the useful work (1.0 = no waste)."""
    ratio = 1.0
    for t, d in zip(tile, dims, strict=False):
        if d > 0 and t > 0:
            ratio *= math.ceil(d / t) * t / d
    return ratio


def tile_of(params: dict) -> tuple[int, ...] | None:
    for name in TILE_FIELDS:
        value = params.get(name)
        if isinstance(value, (list, tuple)) and value:
            return tuple(int(v) for v in value)
    for name in QUERY_TILE_FIELDS:
        value = params.get(name)
        if isinstance(value, int):
            return (value,)
    return None


def problem_dims(problem: dict) -> tuple[int, ...]:
    """(m, n, k) of a GEMM problem, or (seqlen_q,) of an attention problem; () if neither."""
    if {"m", "n"} <= problem.keys():
        return tuple(int(problem[k]) for k in ("m", "n", "k") if k in problem)
    for name in ("seqlen_q", "max_seqlen_q", "s_q"):
        if name in problem:
            return (int(problem[name]),)
    return ()


def score(params: dict, problem: dict, sm_count: int) -> tuple[float, float, int]:
    """Lower is better: (padded work, wasted share of the last wave, -tile area)."""
    tile, dims = tile_of(params), problem_dims(problem)
    if tile is None or not dims:
        return (1.0, 0.0, 0)
    ctas = math.prod(math.ceil(d / t) for t, d in zip(tile, dims[:2], strict=False))
    batches = int(problem.get("groups", problem.get("batch", 1)))
    ctas *= max(batches, 1)
    waves = math.ceil(ctas / sm_count) if sm_count else 1
    idle = (waves * sm_count - ctas) / (waves * sm_count) if sm_count else 0.0
    return (round(padded_work(tile, dims), 3), round(idle, 3), -math.prod(tile[:2]))


def select(family: str, candidates: Sequence[dict], problem: dict, device: Device, *,
           sources: list[KernelSource] | None = None, sm_count: int = 0) -> dict:
    """The candidate params to use for `problem` on `device`, among those stored for it."""
    stored: list[dict] = []
    for params in candidates:
        try:
            find(family, params, device, sources=sources)
        except AotcError as exc:
            if exc.diagnostics[0].code != NO_KERNEL:
                raise
            continue
        stored.append(params)
    if not stored:
        raise runtime_error(NO_CANDIDATE, f"none of the {len(candidates)} {family} candidates is stored for "
                            f"{device.label}", f"build them: aotc build --arch {_target(device)} --filter {family}",
                            family=family, candidates=len(candidates))
    return min(stored, key=lambda p: score(p, problem, sm_count))


def _target(device: Device) -> str:
    targets = device.runnable_targets()
    return targets[0] if targets else f"sm{device.sm}"

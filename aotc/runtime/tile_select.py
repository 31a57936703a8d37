"""aotc.runtime.select(): pick one of several stored tiles of a family for a problem shape, by a
simple, documented heuristic (docs/runtime.md, scored in aotc.runtime.tile_score): least padded work,
then fewer CTA waves wasted, then the larger tile. Candidates come from lookup.stored_candidates
(memoized). Not named select.py: importing a submodule of that name would shadow the function on
aotc.runtime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aotc.families import get_family
from aotc.runtime.device import Device
from aotc.runtime.errors import NO_CANDIDATE, runtime_error
from aotc.runtime.lookup import Found, KernelSource, stored_candidates, typed_params
from aotc.runtime.tile_score import score


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

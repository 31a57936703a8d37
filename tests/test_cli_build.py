"""`aotc build --dry-run`: hits and misses as a build would find them, and a time estimate from the
compile times recorded in the cache, scheduled longest first over the jobs."""

from __future__ import annotations

import json
import statistics

import pytest

from aotc.build.estimate import longest_first, makespan
from aotc.cli import main
from tests.conftest import BUILT_SPEC


def test_longest_first_schedule():
    assert makespan([10, 9, 8, 1], 2) == 17  # 10+1 on one worker, 9+8 on the other
    assert makespan([5, 5, 5], 3) == 5 and makespan([], 4) == 0
    assert longest_first(["a", "b", "c"], {"a": 20.0, "b": None, "c": 90.0}.get) == ["b", "c", "a"]


@pytest.mark.compile
def test_dry_run_counts_hits_and_estimates_from_recorded_times(built_cache, capsys):
    cache, _ = built_cache
    code = main(["build", "--dry-run", "--json", "--arch", "sm90a,sm120a", "--filter", "fmha_fwd_m64n64",
                 "--cache-dir", str(cache.root), "-j", "1"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["dry_run"]
    assert sorted(data["hits"]) == [f"{BUILT_SPEC} (sm120a)", f"{BUILT_SPEC} (sm90a)"]
    recorded = [m["compile_seconds"] for m in cache.entries() if m["family"] == "fmha_fwd"]
    median = statistics.median(recorded)
    assert data["misses"] and all(m["seconds"] == pytest.approx(median) for m in data["misses"])
    assert data["wall_seconds"] == pytest.approx(len(data["misses"]) * median, abs=0.2)  # one job
    assert not list(cache.root.glob("v1/actions/*/*.tmp"))  # nothing was compiled or written
    assert len(list(cache.entries())) == 2

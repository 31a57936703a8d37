"""Peak memory per ninja step of a local FlashInfer-style build (aotc/build/flashinfer/step_memory.py):
measured from outside ninja, attributed to the right step while steps run in parallel, kept across
runs of one workspace, and declared per step by the next Ray build."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aotc.build.executor_ray import recorded_peaks
from aotc.build.flashinfer import ninja
from aotc.cache.manifest import manifest_problems
from tests.ninja_modules import ninja_module as _module

HOG_MB = 400


def _hog() -> str:
    """A command prefix that holds HOG_MB of touched memory for a second, then lets the compile run."""
    code = f"b = bytearray({HOG_MB} << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1)"
    return f"{sys.executable} -c \"{code}\" && "


def test_each_step_gets_its_own_peak_while_steps_run_in_parallel(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    files = [_module(ws, "hog", prefix=_hog()), _module(ws, "plain")]
    workspace = ninja.Workspace(ws / "ninja")
    workspace.write(files)
    objects = [f"{ws}/cached_ops/{m}/{m}.o" for m in ("hog", "plain")]
    run = workspace.run(objects, 2, dict(os.environ))
    assert run.returncode == 0, run.log
    peaks = workspace.step_peaks(objects)
    assert peaks[objects[0]] >= HOG_MB << 20  # the hog's process, counted for its own step
    assert 0 < peaks.get(objects[1], 1) < (HOG_MB // 2) << 20  # the plain compile ran at once, apart
    assert workspace.peak_rss(objects) == peaks[objects[0]]
    assert set(workspace.step_seconds(objects)) == set(objects)
    # another run of the same workspace (a resumed build: nothing left to do) still knows the peaks
    again = ninja.Workspace(ws / "ninja")
    assert again.run(objects, 2, dict(os.environ)).returncode == 0
    assert again.step_peaks(objects) == peaks


def test_a_damaged_memory_record_measures_nothing_and_breaks_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    workspace = ninja.Workspace(ws / "ninja")
    workspace.write([_module(ws, "plain")])
    workspace.memory_file.write_text("{not json")
    obj = f"{ws}/cached_ops/plain/plain.o"
    assert workspace.step_peaks([obj]) == {} and workspace.peak_rss([obj]) == 0
    assert workspace.run([obj], 1, dict(os.environ)).returncode == 0  # rewritten from this run's samples
    assert set(workspace.step_peaks([obj])) <= {obj}


class _Cache:
    def __init__(self, manifests: list[dict]):
        self.manifests = manifests

    def entries(self):
        return iter(self.manifests)


def test_recorded_step_peaks_are_declared_per_step() -> None:
    module = {"name": "fused_moe_120", "arch": "sm120a", "family": "flashinfer", "peak_rss_bytes": 9 << 30,
              "steps": {"a.cuda.o": {"seconds": 50.0, "peak_rss_bytes": 3 << 30},
                        "b.cuda.o": {"seconds": 9.0}}}  # a step built before memory was measured
    per_tu, per_family = recorded_peaks(_Cache([module]))
    assert per_tu[("fused_moe_120", "sm120a", "a.cuda.o")] == 3 << 30
    assert ("fused_moe_120", "sm120a", "b.cuda.o") not in per_tu
    assert per_tu[("fused_moe_120", "sm120a")] == 9 << 30 and per_family["flashinfer"] == 9 << 30


def test_a_malformed_step_record_is_a_manifest_problem() -> None:
    base = {"key": "k", "name": "m", "family": "flashinfer", "params": {}, "arch": "sm120a",
            "target": {"sm": 120, "variant": "a"}, "blobs": {}}
    assert manifest_problems({**base, "steps": {"a.o": {"seconds": 1.5, "peak_rss_bytes": 10}}}) == []
    assert manifest_problems({**base, "steps": {"a.o": "big"}})
    assert manifest_problems({**base, "steps": {"a.o": {"peak_rss_bytes": "10"}}})
    assert manifest_problems({**base, "steps": []})

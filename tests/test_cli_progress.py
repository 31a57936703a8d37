"""The build's progress display as ninja/cargo users expect it: on a terminal one status line cut to
the terminal's width (no wrapping), an elapsed time that ticks, the kernels compiling now, an ETA from
recorded per-family compile times (not the average of what finished first), FAILED lines kept above
the status line; in a log one line per event."""

from __future__ import annotations

import io
import re
import time

from aotc.build.estimate import remaining_wall
from aotc.build.pipeline import _CompileClock
from aotc.build.progress import Progress
from aotc.build.tu_task import TuJob

ESC = "\r\033[K"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def segments(text: str) -> list[str]:
    """What a terminal keeps: each rewrite starts with carriage return + erase line."""
    return [s for s in text.split(ESC) if s]


def test_terminal_status_line_fits_ticks_and_keeps_failures():
    term = Terminal()
    p = Progress(4, stream=term, tty=True, width=lambda: 70)
    p.eta = lambda: 125.0
    p.started("grouped_gemm_blockscaled_sm120/tile=128x256x128,stages=3 (sm120a)")
    p.started("fmha_fwd_m64n128/head_dim=128,dtype=bf16 (sm120a)")
    p.started("gemm_nvfp4/tile=128x128x256 (sm120a)")
    p.note("FAILED moe_w4a4/tile=256x128x128 (sm120a): compile failed")
    p.finished("gemm_nvfp4/tile=128x128x256 (sm120a)")
    p.event("fmha_fwd_m64n128/head_dim=128,dtype=bf16 (sm120a): built")
    time.sleep(1.3)  # the ticker redraws while nothing finishes
    p.close()
    out = term.getvalue()
    lines = segments(out)
    status = [s for s in lines if not s.endswith("\n")]
    assert status and all(len(s) <= 69 for s in status)  # never the last column: no wrap
    assert all("\n" not in s for s in status)
    assert "FAILED moe_w4a4/tile=256x128x128 (sm120a): compile failed\n" in lines  # its own kept line
    assert any("ETA 2m05s" in s and "compiling: grouped_gemm" in s for s in status)
    assert any(re.match(r"\[1/4\] 0m01s", s) for s in status)  # the elapsed time moved on its own
    assert out.endswith(ESC)  # the status line is cleared at the end


def test_log_mode_is_one_line_per_event():
    log = io.StringIO()
    p = Progress(2, stream=log)
    p.eta = lambda: 61.0
    p.started("a (sm120a)")
    p.event("a (sm120a): built", "85.2s")
    p.note("FAILED b (sm120a)")
    p.event("b (sm120a): failed")
    p.close()
    assert log.getvalue().splitlines() == ["[0/2] compiling a (sm120a)", "[1/2] a (sm120a): built (85.2s; ETA 1m01s)",
                                           "FAILED b (sm120a)", "[2/2] b (sm120a): failed (ETA 1m01s)"]
    assert "\r" not in log.getvalue()


def job(name: str) -> TuJob:
    return TuJob(name, "sm120a", f"// {name}", 0, None)


def test_eta_uses_recorded_times_per_family_longest_first():
    # the case: short FMHA compiles finish first; an average of those would say 14 x 20 s / 2
    fmha = [job(f"fmha{i}") for i in range(10)]
    cutlass = [job(f"gemm{i}") for i in range(4)]
    clock = _CompileClock(Progress(enabled=False))
    clock.families = {**dict.fromkeys(fmha, "fmha_fwd"), **dict.fromkeys(cutlass, "gemm_blockscaled_sm120")}
    clock.left, clock.jobs = set(clock.families), 2
    clock.history = {"fmha_fwd": 20.0, "gemm_blockscaled_sm120": 120.0}
    # 2 workers: 120+120 each, then ten 20 s compiles split 5/5
    assert clock.eta() == 2 * 120 + 5 * 20
    assert remaining_wall([30.0], [100.0, 10.0], 2) == 100.0  # 30 then 10 on one worker, 100 on the other
    # a family with no record: after one of its compiles this build's own time stands in
    clock.history = {"fmha_fwd": 20.0}
    assert clock.expected(cutlass[0]) is None
    clock.learned["gemm_blockscaled_sm120"] = [90.0]
    assert clock.expected(cutlass[0]) == 90.0
    # nothing known at all: no ETA rather than a wrong one
    empty = _CompileClock(Progress(enabled=False))
    empty.families, empty.left = {cutlass[0]: "x"}, {cutlass[0]}
    assert empty.eta() is None

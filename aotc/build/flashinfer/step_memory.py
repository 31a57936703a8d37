"""Peak resident memory of each compile step a local ninja run executes, measured from /proc while it
runs. ninja measures no memory, and wrapping its commands would change FlashInfer's command lines
(and with them what the build compares and hashes), so the steps are watched from outside instead:
ninja runs in a session of its own, each of its children is one step (its command line names the
output after `-o`), and every process below a child counts towards that step.

A step's peak is the larger of (a) the summed resident sets of its processes at any sample and (b) the
largest single process's high-water mark (VmHWM, kept by the kernel, so a spike between two samples is
not lost). (b) is what `getrusage` reports for aotc's own compiles (the largest process of the tree),
so local builds, Ray workers and aotc kernels record the same quantity.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

_OUTPUT_FLAG = re.compile(r"(?:^|\s)-o\s+(\S+)")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_S = 0.1


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a process, None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and ')'
    return int(fields[1]), int(fields[3]), int(fields[19])


def _memory(pid: int) -> tuple[int, int]:
    """(resident bytes now, high-water mark bytes) of a process; (0, 0) when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) << 10
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        return 0, 0
    return rss, hwm


def _output(pid: int, cwd: str) -> str | None:
    """The file a step's command writes (its last `-o`), as an absolute path; None if it names none."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    found = _OUTPUT_FLAG.findall(command)
    return os.path.normpath(os.path.join(cwd, found[-1])) if found else None


class StepMemory:
    """Watch the session led by `leader` (ninja started with start_new_session=True) until stop():
    `peaks` maps each step's output (absolute path) to its peak resident bytes."""

    def __init__(self, leader: int, cwd: str, interval_s: float = SAMPLE_S):
        self.leader, self.cwd, self.interval_s = leader, cwd, interval_s
        self.peaks: dict[str, int] = {}
        self._steps: dict[tuple[int, int], str | None] = {}  # ninja's child (pid, start time) -> its output
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aotc-step-memory", daemon=True)

    def __enter__(self) -> Self:
        if os.path.isdir("/proc"):  # elsewhere nothing is measured, and nothing is claimed
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        parents: dict[int, int] = {}
        started: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (st := _stat(name)) is not None and st[1] == self.leader:
                parents[int(name)], started[int(name)] = st[0], st[2]
        totals: dict[str, list[int]] = {}
        for pid in parents:
            step = self._step_of(pid, parents, started)
            if step is None:
                continue
            rss, hwm = _memory(pid)
            total = totals.setdefault(step, [0, 0])
            total[0] += rss
            total[1] = max(total[1], hwm)
        for step, (rss, hwm) in totals.items():
            self.peaks[step] = max(self.peaks.get(step, 0), rss, hwm)

    def _step_of(self, pid: int, parents: dict[int, int], started: dict[int, int]) -> str | None:
        """The output of the step `pid` belongs to: that of its ancestor that is ninja's child."""
        seen = 0
        while pid in parents and parents[pid] != self.leader and seen < 64:
            pid, seen = parents[pid], seen + 1
        if parents.get(pid) != self.leader:
            return None
        child = (pid, started[pid])  # a pid ninja's later step reuses is another step
        if child not in self._steps:
            self._steps[child] = _output(pid, self.cwd)
        return self._steps[child]

"""One progress display for both build pipelines (aotc kernels, FlashInfer's ninja steps), on stderr,
as ninja and cargo show theirs. On a terminal: one status line rewritten in place, cut to the
terminal's width, with done/total, elapsed time (ticking every second), an ETA and the kernels compiling
now; lines that must stay (FAILED ...) are printed above it. Elsewhere (logs, CI): one line per event.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

TICK_S = 1.0


def clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, total: int = 0, stream: TextIO = sys.stderr, enabled: bool = True, unit: str = "step",
                 tty: bool | None = None, width: Callable[[], int] | None = None):
        self.total, self.stream, self.enabled, self.unit = total, stream, enabled, unit
        self.tty = enabled and (stream.isatty() if tty is None else tty)
        self.width = width or (lambda: shutil.get_terminal_size((100, 24)).columns)
        self.done = 0
        self.start = time.perf_counter()
        self.running: dict[str, float] = {}  # what is compiling now -> since when
        self.eta: Callable[[], float | None] | None = None  # remaining wall seconds, from the caller's model
        self._label = ""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.tty:  # the elapsed time moves even while a long compile runs
            self._ticker = threading.Thread(target=self._tick, name="aotc-progress", daemon=True)
            self._ticker.start()

    def elapsed(self) -> str:
        return clock(time.perf_counter() - self.start)

    def _eta_text(self) -> str:
        remaining = self.eta() if self.eta is not None else None
        return f"ETA {clock(remaining)}" if remaining is not None else ""

    # events ------------------------------------------------------------------------------------
    def started(self, name: str) -> None:
        """`name` began compiling (shown on the status line while it runs)."""
        with self._lock:
            self.running[name] = time.perf_counter()
            if self.enabled and not self.tty:  # a log shows when each compile began, as ninja's does
                self._write(f"[{self.done}/{self.total}] compiling {name}\n")
            self._redraw()

    def finished(self, name: str) -> None:
        with self._lock:
            self.running.pop(name, None)

    def event(self, label: str, detail: str = "", done: int | None = None, total: int | None = None) -> None:
        """One finished step: `[done/total] label (detail)`. done/total default to counting events;
        pass them when the steps are counted elsewhere (ninja's own numbering)."""
        with self._lock:
            self.done = self.done + 1 if done is None else done
            self.total = total if total is not None else max(self.total, self.done)
            self._label = label
            if not self.enabled:
                return
            if self.tty:
                self._redraw()
                return
            extra = "; ".join(p for p in (detail, self._eta_text()) if p)
            self._write(f"[{self.done}/{self.total}] {label}" + (f" ({extra})" if extra else "") + "\n")

    def note(self, text: str) -> None:
        """A line that must stay visible (a failure): above the status line on a terminal."""
        if not self.enabled:
            return
        with self._lock:
            self._write(("\r\033[K" if self.tty else "") + text + "\n")
            self._redraw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * TICK_S)
            self._ticker = None
        with self._lock:
            if self.tty:
                self._write("\r\033[K")
                self.tty = False

    # drawing -----------------------------------------------------------------------------------
    def status_line(self, width: int) -> str:
        """`[done/total] elapsed, ETA | compiling: a (1m02s), b (12s), +2 | last: label`, cut to width."""
        now = time.perf_counter()
        head = f"[{self.done}/{self.total}] {self.elapsed()}"
        eta = self._eta_text()
        parts = [head + (f", {eta}" if eta else "")]
        if self.running:
            oldest = sorted(self.running.items(), key=lambda kv: kv[1])
            shown = ", ".join(f"{name} ({clock(now - t0)})" for name, t0 in oldest[:2])
            more = f", +{len(oldest) - 2}" if len(oldest) > 2 else ""
            parts.append(f"compiling: {shown}{more}")
        elif self._label:
            parts.append(self._label)
        line = " | ".join(parts)
        limit = max(10, width - 1)  # never the last column: a terminal would wrap
        return line if len(line) <= limit else line[: limit - 1] + "…"

    def _redraw(self) -> None:
        if self.tty and self.enabled:
            self._write("\r\033[K" + self.status_line(self.width()))

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                self._redraw()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the build itself goes on
            self.enabled = False

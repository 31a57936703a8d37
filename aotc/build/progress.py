"""One progress display for both build pipelines (aotc kernels, FlashInfer's ninja steps): a tqdm
bar on a terminal, one line per event otherwise (logs, CI), all on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int = 0, stream: TextIO = sys.stderr, enabled: bool = True, unit: str = "step"):
        self.total, self.stream, self.enabled, self.unit = total, stream, enabled, unit
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        if enabled and stream.isatty():
            from tqdm import tqdm  # build side only

            self._bar = tqdm(total=total, file=stream, unit=unit, dynamic_ncols=True, leave=True)

    def elapsed(self) -> str:
        secs = int(time.perf_counter() - self.start)
        return f"{secs // 60}m{secs % 60:02d}s"

    def event(self, label: str, detail: str = "", done: int | None = None, total: int | None = None) -> None:
        """One finished step: `[done/total] label (detail)`. done/total default to counting events;
        pass them when the steps are counted elsewhere (ninja's own numbering)."""
        self.done = self.done + 1 if done is None else done
        self.total = total if total is not None else max(self.total, self.done)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.n = self.done
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.refresh()
            return
        self.stream.write(f"[{self.done}/{self.total}] {label}" + (f" ({detail})" if detail else "") + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line that must stay visible (a failure), above the bar on a terminal."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

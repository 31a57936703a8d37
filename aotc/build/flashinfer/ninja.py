"""FlashInfer's build.ninja files, read and run: what a module's build reads and writes, one ninja run
over every module of a build (a top-level file that `subninja`s each module's own file, so all
translation units share one job pool), progress from ninja's `[n/N]` lines, and which modules failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aotc.build.compile import sigterm_interrupts
from aotc.build.flashinfer.step_memory import StepMemory
from aotc.diagnostics import AotcError, Diagnostic

_STEP = re.compile(r"^\[(\d+)/(\d+)\] ")
_FAILED = re.compile(r"^FAILED: (?:\[code=\d+\] )?(.*)$")
_OUTPUT_FLAG = re.compile(r"(?:^|\s)-o\s+(\S+)")
_MISSING_HEADER = re.compile(r"fatal error: ([\w./+-]+\.h(?:pp)?): No such file or directory")
# Headers FlashInfer's SM120 sources include that the pip CUDA toolkit (nvidia-cuda-nvcc & co.)
# lacks, and the pip package that carries each.
HEADER_PACKAGES = {
    "cublasLt.h": "nvidia-cublas", "cublas_v2.h": "nvidia-cublas", "cublas_api.h": "nvidia-cublas",
    "curand_kernel.h": "nvidia-curand", "curand.h": "nvidia-curand",
    "cusparse.h": "nvidia-cusparse", "cufft.h": "nvidia-cufft", "cusolverDn.h": "nvidia-cusolver",
    "nvrtc.h": "nvidia-cuda-nvrtc", "nvml.h": "nvidia-cuda-nvml-dev",
}
# A killed ninja gets this long to stop its compilers and delete their half-written outputs.
_STOP_GRACE_S = 10.0


def edges(ninja_text: str) -> list[tuple[list[str], list[str]]]:
    """(outputs, inputs) of every build line; inputs explicit, implicit and order-only alike."""
    found = []
    for line in ninja_text.splitlines():
        if line.startswith("build "):
            outs, _, rest = line[len("build "):].partition(":")
            found.append((outs.split(), [p for p in rest.split()[1:] if p not in ("|", "||")]))
    return found


def inputs(ninja_text: str) -> list[str]:
    """Explicit and implicit inputs of every build line that no other build line produces."""
    lines = edges(ninja_text)
    outputs = {o for outs, _ in lines for o in outs}
    return [p for p in dict.fromkeys(i for _, ins in lines for i in ins) if p not in outputs]


def objects(ninja_text: str, library: str) -> list[str]:
    """Every build output except the linked module: the objects (and embedded-cubin objects)."""
    return [o for outs, _ in edges(ninja_text) for o in outs if o != library]


def binary() -> str:
    try:
        import ninja  # the pip package FlashInfer depends on

        return str(Path(ninja.BIN_DIR) / "ninja")
    except (ImportError, AttributeError):
        found = shutil.which("ninja")
        if found is None:
            raise AotcError(Diagnostic(code="AOTC-FI-004", message="ninja was not found",
                                       fix="pip install ninja")) from None
        return found


@dataclass
class Run:
    """One ninja run: its whole output, and the outputs named in its FAILED blocks with their text."""

    log: str
    returncode: int
    failures: dict[str, str] = field(default_factory=dict)  # output path -> command and compiler errors
    diagnostics: dict[str, list[Diagnostic]] = field(default_factory=dict)  # coded reasons (a refused worker)

    def failure_text(self, paths: list[str]) -> str:
        return "\n".join(self.failures[p] for p in paths if p in self.failures)


def _failures(lines: list[str]) -> dict[str, str]:
    """ninja -v prints `FAILED: [code=N] OUTPUTS`, the command, then the tool's output, until the
    next `[n/N]` line or ninja's own closing message."""
    failures, current, block = {}, [], []
    for line in [*lines, "[0/0] "]:
        m = _FAILED.match(line)
        if m or _STEP.match(line) or line.startswith("ninja: "):
            for out in current:
                failures[out] = "\n".join(block)
            current, block = (m.group(1).split(), [line]) if m else ([], [])
        elif current:
            block.append(line)
    return failures


class Workspace:
    """A folder with a top-level ninja file over several modules' build.ninja files. Kept between
    runs: ninja's own log there says which objects are done, so an interrupted build resumes; the
    steps' measured peak memory is kept beside it (step-memory.json) for the same reason."""

    def __init__(self, root: Path):
        self.root = root
        self.file = root / "aotc.ninja"
        self.memory_file = root / "step-memory.json"

    def write(self, module_ninja_files: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = "".join(f"subninja {f}\n" for f in module_ninja_files)
        if not self.file.exists() or self.file.read_text() != text:
            self.file.write_text(text)

    def run(self, targets: list[str], jobs: int, env: dict[str, str],
            on_step: Callable[[int, int, str], None] | None = None) -> Run:
        """Build targets, keeping going past failures (-k 0); compilers run in ninja's own process
        group, stopped with ninja on any exception (Ctrl-C, SIGTERM made KeyboardInterrupt)."""
        cmd = [binary(), "-v", "-k", "0", "-C", str(self.root), "-f", self.file.name, "-j", str(jobs), *targets]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        lines = [f"$ {' '.join(cmd)}"]
        memory = StepMemory(proc.pid, str(self.root))
        try:
            assert proc.stdout is not None
            with sigterm_interrupts(), memory:  # SIGTERM: a program calling the build API without the CLI
                for raw in proc.stdout:
                    line = raw.rstrip("\n")
                    lines.append(line)
                    if on_step and (m := _STEP.match(line)):
                        out = _OUTPUT_FLAG.findall(line)
                        on_step(int(m.group(1)), int(m.group(2)), out[-1] if out else "")
                proc.wait()
        except BaseException:
            stop_group(proc)
            raise
        finally:
            self._remember_peaks(memory.peaks)
        return Run("\n".join(lines), proc.returncode, _failures(lines))

    def _peaks(self) -> dict[str, int]:
        try:
            data = json.loads(self.memory_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}

    def _remember_peaks(self, peaks: dict[str, int]) -> None:
        """Merge a run's measured peaks into the workspace's record (a step built again: its new peak)."""
        if not peaks:
            return
        with contextlib.suppress(OSError):  # a measurement lost is no build lost
            tmp = self.memory_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._peaks() | peaks, indent=0, sort_keys=True))
            tmp.replace(self.memory_file)

    def deps(self, outputs: list[str]) -> list[str]:
        """Every header the compiles of these outputs read, from ninja's deps log (deps = gcc)."""
        proc = subprocess.run([binary(), "-C", str(self.root), "-f", self.file.name, "-t", "deps", *outputs],
                              capture_output=True, text=True, check=True)
        return sorted({line.strip() for line in proc.stdout.splitlines() if line.startswith("    ") and line.strip()})

    def command(self, output: str) -> str:
        """The command line that builds `output` (its compiler invocation, flags and all)."""
        proc = subprocess.run([binary(), "-C", str(self.root), "-f", self.file.name, "-t", "commands", output],
                              capture_output=True, text=True, check=True)
        return proc.stdout.strip().splitlines()[-1]

    def step_peaks(self, outputs: list[str]) -> dict[str, int]:
        """Measured peak resident bytes of these outputs' steps (step_memory), where measured."""
        peaks = self._peaks()
        found = {o: peaks.get(os.path.normpath(os.path.join(self.root, o)), 0) for o in outputs}
        return {o: v for o, v in found.items() if v > 0}

    def step_seconds(self, outputs: list[str]) -> dict[str, float]:
        """Command time of each of these outputs from ninja's log (its last build), even when the
        objects were built over several runs."""
        log = self.root / ".ninja_log"
        wanted, last = set(outputs), {}
        if log.exists():
            for line in log.read_text().splitlines()[1:]:
                parts = line.split("\t")
                if len(parts) == 5 and parts[3] in wanted:
                    last[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000.0
        return last

    def peak_rss(self, outputs: list[str]) -> int:
        """Largest measured peak of these outputs' steps; 0 when none was measured."""
        return max(self.step_peaks(outputs).values(), default=0)

    def seconds(self, outputs: list[str]) -> float:
        """Summed command times of these outputs: a module's serial compile time."""
        return sum(self.step_seconds(outputs).values())


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group `proc` leads (a ninja there deletes the outputs of the commands it
    was running), then SIGKILL whatever is left after a grace period: no compiler outlives its build."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def missing_header_fix(text: str) -> str | None:
    """The pip package to install for a `fatal error: X.h: No such file` in a compiler's output."""
    for header in _MISSING_HEADER.findall(text):
        name = Path(header).name
        if name in HEADER_PACKAGES:
            return (f"{name} is not in the CUDA toolkit aotc uses (the pip toolkit carries no {name}): "
                    f"pip install {HEADER_PACKAGES[name]}, or point AOTC_NVCC at a full CUDA toolkit")
    return None

"""Compile one rendered translation unit with nvcc: the device cubin and the host helper .so, plus
the headers each compile actually read (from nvcc's make-style deps) and the ptxas resource lines.
Compile errors, timeouts and kills are results (ok=False with the full log), never exceptions.
Build side only; knows nothing about caching or verification.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aotc.arch import Arch
from aotc.build.toolchain import Toolchain

LAUNCHER_ENV = "AOTC_NVCC_LAUNCHER"
VERBOSE_ENV = "AOTC_VERBOSE"  # set (e.g. by `aotc -v`): every nvcc command line goes to stderr as it starts
SOURCE_NAME = "aotc_kernel.cu"  # fixed name: nothing about the temp dir leaks into the outputs
# ptxas --resource-usage lines, including the indented "N bytes stack frame, N bytes spill stores" ones
_PTXAS_INFO = re.compile(r"^(?:ptxas info\s*:.*|\s+\d+ bytes stack frame.*)$", re.MULTILINE)
_PTXAS_FUNCTION = re.compile(r"^ptxas info\s*: Function properties for (\S+)$")
_PTXAS_FRAME = re.compile(r"^(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def launcher() -> list[str]:
    """AOTC_NVCC_LAUNCHER (e.g. `sccache` or `ccache`), split like a shell would, to run nvcc under.
    It is not part of any cache key: a launcher must not change what nvcc produces."""
    return shlex.split(os.environ.get(LAUNCHER_ENV, ""))


@dataclass
class CompileResult:
    ok: bool
    cubin: bytes | None = None
    helper: bytes | None = None
    headers: list[str] = field(default_factory=list)  # absolute, normalized, sorted; source excluded
    log: str = ""  # every command line and its full stdout/stderr
    seconds: dict[str, float] = field(default_factory=dict)  # {"device": s, "helper": s}
    # Largest resident set of any process of either nvcc run (they run one after the other, and
    # nvcc runs its stages one at a time: this is the TU's peak memory, to within nvcc's own few MB).
    peak_rss_bytes: int = 0
    resource_lines: list[str] = field(default_factory=list)  # ptxas info lines of the device compile
    spills: dict[str, dict[str, int]] = field(default_factory=dict)  # kernel -> ptxas_spills() of it
    warnings: list[str] = field(default_factory=list)  # compiler warnings (e.g. ptxas advisories)
    error: str = ""  # one-line reason when not ok, with what to do


def flags(
    arch: Arch,
    toolchain: Toolchain,
    *,
    include_dirs: Sequence[str] = (),
    defines: Sequence[str] = (),
    extra_flags: Sequence[str] = (),
) -> list[str]:
    """The device compile's exact nvcc flags (no source, output or temp paths): part of the action key.

    `toolchain` is accepted so flags may depend on the nvcc release; none do yet.
    """
    del toolchain
    out = ["-cubin", "-gencode", arch.gencode, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-DNDEBUG"]
    out += ["--resource-usage"]  # ptxas prints registers/spills/SMEM per kernel into the log
    out += [f"-D{d}" for d in defines]
    out += [f"-I{d}" for d in include_dirs]
    out += list(extra_flags)
    return out


# The CUDA runtime the helpers share: the process's one libcudart.so.13 (pip nvidia-cuda-runtime, which
# the runtime loads first), named by soname since the pip wheel ships no unversioned libcudart.so.
# A static cudart made every helper ~0.7 MB (95% of a kernel wheel) and needed GLIBC_2.34.
SHARED_CUDART = "libcudart.so.13"


def helper_flags(device_flags: Sequence[str]) -> list[str]:
    """Host helper flags derived from the device flags: same target/defines/includes, but a shared
    library of host code (the template's AOTC_HOST_HELPER branch) linked against the shared CUDA
    runtime and stripped (-s keeps the dynamic exports)."""
    keep = [f for f in device_flags if f not in ("-cubin", "--resource-usage")]
    return ["-shared", "-Xcompiler", "-fPIC", "-Xlinker", "-s", "-DAOTC_HOST_HELPER", "-cudart", "none",
            "-Xlinker", f"-l:{SHARED_CUDART}", *keep]


def ptxas_spills(resource_lines: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per function, ptxas's own figures from its `--resource-usage` lines: spills_bytes (spill
    stores), spill_loads_bytes, stack_frame_bytes. The only exact spill count: the cubin's LOCAL
    size (cuobjdump -res-usage) stays 0 when ptxas spills to the stack frame."""
    out: dict[str, dict[str, int]] = {}
    function = None
    for line in resource_lines:
        if m := _PTXAS_FUNCTION.match(line.strip()):
            function = m.group(1)
        elif function and (m := _PTXAS_FRAME.match(line.strip())):
            frame, stores, loads = (int(g) for g in m.groups())
            out[function] = {"spills_bytes": stores, "spill_loads_bytes": loads, "stack_frame_bytes": frame}
            function = None
    return out


def parse_deps(text: str, base_dir: str, source: str | None = None) -> list[str]:
    """Prerequisites of a make-style deps file (nvcc -MD -MF): continuation lines joined, `\\ `
    escapes honoured, relative paths resolved against `base_dir` (nvcc's cwd) and normalized;
    `source` itself left out."""
    joined = re.sub(r"\\\r?\n", " ", text)
    paths: list[str] = []
    for line in joined.splitlines():
        # "target : prereqs"; a ':' in a Windows drive letter is not the separator (no space after).
        match = re.search(r"(?<!\\):(\s|$)", line)
        if not match:
            continue
        rest = line[match.end():]
        for token in re.findall(r"(?:\\.|[^\s\\])+", rest):
            paths.append(re.sub(r"\\(.)", r"\1", token).replace("$$", "$"))

    def absolute(p: str) -> str:
        return os.path.normpath(os.path.join(base_dir, p))

    skip = absolute(source) if source else None
    result = {absolute(p) for p in paths}
    result.discard(skip)
    return sorted(result)


@dataclass
class _Run:
    returncode: int | None  # None: timed out
    output: str
    seconds: float
    peak_rss_bytes: int = 0  # largest resident set of nvcc and every process it waited for


_LIVE_GROUPS: set[int] = set()  # process groups of running nvcc invocations
_LIVE_LOCK = threading.Lock()


def kill_running() -> int:
    """SIGKILL every nvcc process group still running (an interrupted build must not leave cicc/ptxas
    behind: they run in their own sessions, out of reach of the terminal's Ctrl-C). Returns how many."""
    with _LIVE_LOCK:
        groups = list(_LIVE_GROUPS)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return len(groups)


def _terminate(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts():
    """Meanwhile SIGTERM raises KeyboardInterrupt, so a terminated build kills its nvcc groups like
    Ctrl-C does (they run in their own sessions: the default SIGTERM death would leave cicc/ptxas
    running). Only in the main thread, and only where SIGTERM still has its default action."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(cmd: list[str], cwd: str, timeout: float | None) -> _Run:
    """Run nvcc in its own process group so a timeout kills cicc/ptxas too."""
    start = time.monotonic()
    # nvcc's own intermediates (tmpxft_*) go to TMPDIR: keep them in our workdir so that a killed
    # compile leaves nothing behind once the workdir is removed.
    env = {**os.environ, "TMPDIR": cwd}
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
    except OSError as exc:  # e.g. an AOTC_NVCC_LAUNCHER that is not installed
        hint = f" (check {LAUNCHER_ENV})" if launcher() else ""
        return _Run(127, f"error: cannot start {cmd[0]}: {exc.strerror}{hint}", time.monotonic() - start)
    with _LIVE_LOCK:
        _LIVE_GROUPS.add(proc.pid)
    try:
        # Read to EOF in a thread and reap with wait4 ourselves: wait4's rusage is this nvcc's own
        # (ru_maxrss = the largest of nvcc and every cicc/ptxas/gcc it waited for), where
        # RUSAGE_CHILDREN would mix in the other compiles of a parallel build.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        reader.join(timeout)
        timed_out = reader.is_alive()
        if timed_out:
            os.killpg(proc.pid, signal.SIGKILL)
            reader.join()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        return _Run(None if timed_out else proc.returncode, "".join(chunks), time.monotonic() - start,
                    usage.ru_maxrss * 1024)  # KiB on Linux
    except BaseException:  # e.g. KeyboardInterrupt: never leave a cicc/ptxas running behind us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.wait()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE_GROUPS.discard(proc.pid)


def _failure_reason(step: str, run: _Run, timeout: float | None) -> str:
    if run.returncode is None:
        return (
            f"{step} compile timed out after {run.seconds:.0f} s (limit {timeout} s); "
            "raise the timeout or run fewer jobs at once"
        )
    killed = run.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or re.search(
        r"died due to signal 9|^Killed\b", run.output, re.MULTILINE
    )
    if killed:
        return (
            f"{step} compile was killed (SIGKILL) after {run.seconds:.0f} s, most likely by the "
            "out-of-memory killer; run fewer parallel jobs (see `aotc doctor` for the memory per job)"
        )
    if run.returncode < 0:
        return f"{step} compile died from signal {-run.returncode} after {run.seconds:.0f} s"
    first = next((ln for ln in run.output.splitlines() if "error" in ln.lower()), "")
    return f"{step} compile failed (nvcc exit {run.returncode}): {first.strip()[:300]}"


def _log_entry(step: str, cmd: list[str], run: _Run) -> str:
    status = "timeout" if run.returncode is None else f"exit {run.returncode}"
    return f"$ {shlex.join(cmd)}\n{run.output.rstrip()}\n[{step}: {status}, {run.seconds:.2f} s]\n"


def _compile_step(
    step: str, toolchain: Toolchain, step_flags: list[str], out_name: str, tmp: Path, timeout: float | None
) -> tuple[list[str], _Run, list[str], bytes | None]:
    deps = tmp / f"{step}.d"
    cmd = [*launcher(), toolchain.nvcc, *step_flags, "-MD", "-MF", str(deps), "-o", str(tmp / out_name), SOURCE_NAME]
    if os.environ.get(VERBOSE_ENV):
        print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    with sigterm_interrupts():
        run = _run(cmd, str(tmp), timeout)
    ok = run.returncode == 0 and (tmp / out_name).is_file()
    headers = parse_deps(deps.read_text(), str(tmp), SOURCE_NAME) if ok and deps.is_file() else []
    return cmd, run, headers, (tmp / out_name).read_bytes() if ok else None


def compile_source(
    source: str,
    arch: Arch,
    toolchain: Toolchain,
    *,
    include_dirs: Sequence[str],
    defines: Sequence[str] = (),
    extra_flags: Sequence[str] = (),
    workdir: str | os.PathLike | None = None,
    with_helper: bool = True,
    timeout: float | None = None,
) -> CompileResult:
    """Compile `source` to a cubin for `arch` (and the host helper .so unless with_helper=False).
    `timeout` (seconds) applies to each nvcc run.

    Runs the two compiles one after the other (each CUTLASS TU may take ~5 GiB). The temp dir under
    `workdir` is removed whatever happens.
    """
    device_flags = flags(arch, toolchain, include_dirs=include_dirs, defines=defines, extra_flags=extra_flags)
    tmp = Path(tempfile.mkdtemp(prefix="aotc-nvcc-", dir=workdir))
    result = CompileResult(ok=False)
    try:
        (tmp / SOURCE_NAME).write_text(source)
        steps = [("device", device_flags, "kernel.cubin")]
        if with_helper:
            steps.append(("helper", helper_flags(device_flags), "helper.so"))
        headers: set[str] = set()
        for step, step_flags, out_name in steps:
            cmd, run, step_headers, data = _compile_step(step, toolchain, step_flags, out_name, tmp, timeout)
            result.log += _log_entry(step, cmd, run)
            result.seconds[step] = round(run.seconds, 3)
            result.peak_rss_bytes = max(result.peak_rss_bytes, run.peak_rss_bytes)
            if data is None:
                result.error = _failure_reason(step, run, timeout)
                return result
            headers.update(step_headers)
            result.warnings += [ln.strip() for ln in run.output.splitlines() if re.search(r"\bwarning\b", ln)]
            if step == "device":
                result.cubin = data
                result.resource_lines = [ln.strip() for ln in _PTXAS_INFO.findall(run.output)]
                result.spills = ptxas_spills(result.resource_lines)
            else:
                result.helper = data
        result.headers = sorted(headers)
        result.ok = True
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

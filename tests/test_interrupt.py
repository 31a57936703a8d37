"""An interrupted build (Ctrl-C or SIGTERM) stops at once, kills its running nvcc/cicc/ptxas (which
run in their own sessions, out of the terminal's reach), and leaves the cache without partial entries;
so does a compile that times out, or one interrupted from a library caller (no CLI handlers)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aotc.arch import get_arch
from aotc.build.compile import compile_source
from aotc.build.toolchain import find_toolchain
from tests.conftest import BUILT_SPEC

pytestmark = pytest.mark.compile


def processes_mentioning(text: str) -> list[int]:
    return list(commands_mentioning(text))


def commands_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every live process (zombies have none) whose command line names text."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and str(os.getpid()) != entry.name:
                pids[int(entry.name)] = cmdline
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_kills_compilers_and_keeps_cache_whole(tmp_path, sig):
    work = tmp_path / "work"
    work.mkdir()
    cache = tmp_path / "cache"
    env = {**os.environ, "TMPDIR": str(work)}  # the compile's workdir, and so nvcc's command line
    # As from a terminal: a runner that starts the tests in the background (`cmd &`) hands them
    # SIGINT ignored, and exec keeps an ignored signal ignored; a caught one is reset to default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "aotc.cli", "build", "--arch", "sm90a", "--filter",
                                 BUILT_SPEC, "--cache-dir", str(cache), "-q"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    while not [p for p in processes_mentioning(str(work)) if p != proc.pid]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "nvcc never started"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    for _ in range(50):  # SIGKILLed process groups are reaped asynchronously
        if not processes_mentioning(str(work)):
            break
        time.sleep(0.1)
    assert processes_mentioning(str(work)) == []
    actions = cache / "v1" / "actions"
    assert not actions.exists() or not any(actions.rglob("*.json"))
    assert list(work.iterdir()) == []  # compile workdirs removed


# A small TU that keeps cicc busy for minutes at ~100 MB (1,024 copies of a branchy statement): every
# test below stops it long before it would finish.
SLOW = """
#define R4(x) x x x x
#define R16(x) R4(R4(x))
#define R256(x) R16(R16(x))
extern "C" __global__ void aotc_kernel(float* out, const float* in, int n) {
  float a = in[threadIdx.x], b = in[threadIdx.x + 1];
  int k = threadIdx.x;
  R4(R256({ a = a * b + in[k]; k = (k * 7 + 3) % n; b = b * a - in[k + 1]; if (a > b) k ^= 5; }))
  out[threadIdx.x] = a + b;
}
"""


def wait_gone(work: Path) -> dict[int, str]:
    for _ in range(50):  # SIGKILLed process groups are reaped asynchronously
        if not commands_mentioning(str(work)):
            break
        time.sleep(0.1)
    return commands_mentioning(str(work))


def test_a_timed_out_compile_of_a_small_tu_leaves_no_child(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    seen: dict[int, str] = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(commands_mentioning(str(work)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = compile_source(SLOW, get_arch("sm120a"), find_toolchain(), include_dirs=[], workdir=work,
                                with_helper=False, timeout=6)
    finally:
        done.set()
        watcher.join()
    assert not result.ok and "timed out" in result.error
    assert any("/cicc " in cmd for cmd in seen.values()), seen  # nvcc had started its own children
    assert wait_gone(work) == {}
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_library_compile_of_a_small_tu_leaves_no_child(tmp_path, sig):
    """compile_source called from a program without aotc's CLI (its own SIGTERM default): the running
    cicc, in nvcc's own session, is killed with it rather than left behind."""
    work = tmp_path / "work"
    work.mkdir()
    source = tmp_path / "slow.cu"
    source.write_text(SLOW)
    code = ("from aotc.arch import get_arch; from aotc.build.compile import compile_source; "
            "from aotc.build.toolchain import find_toolchain; "
            f"compile_source(open({str(source)!r}).read(), get_arch('sm120a'), find_toolchain(), include_dirs=[], "
            f"workdir={str(work)!r}, with_helper=False)")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (see above)
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    while not any("/cicc " in cmd for cmd in commands_mentioning(str(work)).values()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "cicc never started"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert wait_gone(work) == {}
    assert list(work.iterdir()) == []

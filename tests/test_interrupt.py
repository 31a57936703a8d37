"""An interrupted build (Ctrl-C or SIGTERM) stops at once, kills its running nvcc/cicc/ptxas (which
run in their own sessions, out of the terminal's reach), and leaves the cache without partial entries."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUILT_SPEC

pytestmark = pytest.mark.compile


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and str(os.getpid()) != entry.name:
                pids.append(int(entry.name))
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

"""A real local Ray cluster for tests: a head node and worker node processes, loopback only, every
port chosen free, each node started with `ray start --block` in its own session so the test stops
exactly its own processes (never `ray stop`, which would end every Ray on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.redis_server import free_port

GIB = 1 << 30


def _ray_binary() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if found is None:
        pytest.skip("ray is not installed (it is part of the build extra: pip install -e '.[build]')")
    return found


class LocalCluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.nodes: list[subprocess.Popen] = []
        self.address = ""
        # Ray's session folder holds AF_UNIX sockets (paths of at most 107 bytes): keep it short.
        self.ray_tmp = tempfile.mkdtemp(prefix="ray")

    def _ports(self) -> list[str]:
        out = []
        for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                     "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"):
            out += [flag, str(free_port())]
        return [*out, "--min-worker-port", "0", "--max-worker-port", "0"]  # 0: any free port

    def start_node(self, cpus: int, memory: int, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The head first (the cluster's address comes from it), then workers joining it."""
        cmd = [_ray_binary(), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
               "--num-gpus", "0", "--memory", str(memory), "--object-store-memory", str(100 << 20),
               "--disable-usage-stats", *self._ports()]
        if not self.nodes:
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            cmd += ["--head", "--port", str(port), "--include-dashboard", "false",
                    "--ray-client-server-port", str(free_port()), "--temp-dir", self.ray_tmp]
        else:
            cmd += ["--address", self.address]
        log_path = self.tmp / f"node{len(self.nodes)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
        self.nodes.append(proc)
        deadline = time.monotonic() + 300
        while b"Ray runtime started" not in log_path.read_bytes():  # printed before --block blocks
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        return proc

    def wait_for(self, n_nodes: int, timeout: float = 300.0) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, _node_ip_address="127.0.0.1", log_to_driver=False,
                     configure_logging=False)
        deadline = time.monotonic() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < n_nodes:
            dead = [p.args for p in self.nodes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Ray cluster did not come up ({n_nodes} nodes wanted); logs in {self.tmp}")
            time.sleep(0.5)

    def kill_node(self, proc: subprocess.Popen) -> None:
        """SIGKILL a node's whole session: its raylet, its workers, and what they started there."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(self.nodes):  # workers first, the head last
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.nodes):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill_node(proc)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@contextmanager
def two_nodes(folder: Path, memory: int = 3 * GIB) -> Iterator[LocalCluster]:
    """A head and two worker nodes of one CPU and `memory` each, stopped on the way out."""
    c = LocalCluster(folder)
    try:
        c.start_node(cpus=1, memory=memory)
        c.start_node(cpus=1, memory=memory)
        c.wait_for(2)
        yield c
    finally:
        c.stop()


def task_process(name: str, child: str) -> tuple[int, list[int]] | None:
    """(worker pid, children whose command line contains `child`) of the Ray worker running a task
    whose name starts with `name`, once it has such children; else None."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        procs[int(pid)] = (cmd, ppid)
    for pid, (cmd, _) in procs.items():
        if cmd.startswith(f"ray::{name}"):
            kids = [p for p, (c, pp) in procs.items() if pp == pid and child in c]
            if kids:
                return pid, kids
    return None

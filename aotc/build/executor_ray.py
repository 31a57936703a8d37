"""`--executor ray[://ADDRESS]`: each translation unit is one Ray task, declaring the memory its
compile needs (the peak RSS recorded in the cache by earlier builds), so Ray packs nodes by memory.
Workers compile and verify (aotc.build.tu_task); a worker whose toolchain differs from the build's is
refused; the parent stores results exactly as a local build does. Build side only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aotc.build.executor import Executor
from aotc.build.toolchain import CUTLASS_TU_PEAK_RSS_BYTES
from aotc.build.tu_task import TuJob, TuResult
from aotc.cache import Cache
from aotc.diagnostics import AotcError, Diagnostic

# A task lost with its worker or node (OOM kill, preemption, a killed process) is run again this
# many times by Ray before the TU is reported failed.
TASK_RETRIES = 3
CPU_CHECK_S = 10.0  # how often a build waiting on the cluster checks that any node can still run tasks
NO_WORKER_GIVE_UP_S = 120.0  # no node with a CPU for this long: the remaining TUs fail (AOTC-RAY-006)
MIN_DECLARED_BYTES = 256 << 20  # a floor: tiny recorded figures must still leave room for nvcc to start
R = TypeVar("R")


def parse_executor(text: str) -> str | None:
    """`ray` (RAY_ADDRESS, else a local Ray), `ray://HOST:PORT` (Ray Client) or `ray:HOST:PORT`
    (a cluster's GCS address). Returns the address for ray.init; anything else is AOTC-RAY-004."""
    if text == "ray":
        return os.environ.get("RAY_ADDRESS") or None
    if text.startswith("ray://") and len(text) > 6:
        return text
    if text.startswith("ray:") and len(text) > 4:
        return text[4:]
    raise AotcError(Diagnostic(
        "AOTC-RAY-004", f"--executor {text!r} is not understood",
        fix="use `--executor local` (the default), `--executor ray` (RAY_ADDRESS or a local Ray), "
            "`--executor ray://HOST:10001` (Ray Client) or `--executor ray:HOST:PORT` (a cluster's GCS)"))


def recorded_peaks(cache: Cache) -> tuple[dict[tuple[str, ...], int], dict[str, int]]:
    """Peak RSS recorded by earlier builds: per (kernel or module name, arch), per (module name, arch,
    object file name) for the steps of FlashInfer modules, and the largest per family."""
    per_tu: dict[tuple[str, ...], int] = {}
    per_family: dict[str, int] = {}

    def note(tu: tuple[str, ...], family: str, rss: object) -> None:
        if isinstance(rss, int) and not isinstance(rss, bool) and rss > 0:
            per_tu[tu] = max(per_tu.get(tu, 0), rss)
            per_family[family] = max(per_family.get(family, 0), rss)

    for m in cache.entries():
        name, arch, family = m.get("name", ""), m.get("arch", ""), m.get("family", "")
        note((name, arch), family, m.get("peak_rss_bytes"))
        steps = m.get("steps")
        for obj, step in (steps.items() if isinstance(steps, dict) else ()):
            if isinstance(step, dict):
                note((name, arch, obj), family, step.get("peak_rss_bytes"))
    return per_tu, per_family


def worker_location() -> str:
    import ray

    return f"{socket.gethostname()} pid {os.getpid()} (Ray node {ray.get_runtime_context().get_node_id()[:12]})"


def refusal(expected_identity: str, subject: str) -> Diagnostic | None:
    """On a worker: AOTC-RAY-001 when its toolchain is not the build's (or it has none), else None."""
    from aotc.build.toolchain import find_toolchain

    where = worker_location()
    try:
        identity = find_toolchain().identity
    except AotcError as e:
        return Diagnostic("AOTC-RAY-001", f"worker {where} has no usable CUDA toolchain: {e}", subject,
                          fix="install aotc with its build extra on every worker node")
    if identity == expected_identity:
        return None
    return Diagnostic(
        "AOTC-RAY-001",
        f"worker {where} refused: its toolchain identity {identity[:16]}… differs from the build's "
        f"{expected_identity[:16]}… (another nvcc, ptxas, cicc or host compiler); nothing it would "
        "compile can go under this build's keys",
        subject, fix="give every worker node the build's toolchain (`aotc doctor` on each shows it), "
                     "or take the node out of the cluster",
        details={"worker": where, "worker_identity": identity, "build_identity": expected_identity})


def _compile_on_worker(job: TuJob, expected_identity: str) -> TuResult:
    """The Ray task: refuse if this worker's toolchain is not the build's, else compile and verify."""
    from aotc.build.tu_task import compile_tu

    refused = refusal(expected_identity, job.name)
    if refused is not None:
        return TuResult(job, False, diagnostics=[refused])
    result = compile_tu(job)
    result.log = f"[ray worker {worker_location()}]\n" + result.log
    return result


@dataclass(frozen=True)
class RayTask:
    """One remote call: `fn(*args)` on a worker, asking for `memory` bytes; `item` is what it builds
    (handed back to the caller's `failed` when the task is lost), `label` its name in Ray and errors."""

    item: Any
    label: str
    memory: int
    args: tuple


class RayExecutor(Executor):
    """One Ray task per TU (num_cpus=1, memory=declared bytes, retried when its worker dies)."""

    def __init__(self, address: str | None, cache: Cache, toolchain_identity: str,
                 families: Mapping[str, str] | None = None, default_bytes: int = CUTLASS_TU_PEAK_RSS_BYTES,
                 give_up_s: float = NO_WORKER_GIVE_UP_S):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            # A loopback cluster must be joined from loopback too (Ray would announce the host's IP).
            local = address is not None and address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost")
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     **({"_node_ip_address": "127.0.0.1"} if local else {}))
        self.identity = toolchain_identity
        self.families = dict(families or {})
        self.default_bytes = default_bytes
        self.give_up_s = give_up_s
        self.per_tu, self.per_family = recorded_peaks(cache)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.jobs = max(1, int(sum(n["Resources"].get("CPU", 0) for n in nodes)))
        self.node_memory = max((int(n["Resources"].get("memory", 0)) for n in nodes), default=0)
        self.declared: dict[TuJob, int] = {}
        print(f"aotc: Ray cluster: {len(nodes)} node(s), {self.jobs} CPUs, largest node offers "
              f"{self.node_memory / 2**30:.1f} GiB to tasks", file=sys.stderr)

    def declared_bytes(self, job: TuJob) -> int:
        return self.declare(job.name, job.arch, self.families.get(job.name, ""))

    def declare(self, name: str, arch: str, family: str, step: str = "") -> int:
        """The recorded peak RSS of (name, arch[, step]): a FlashInfer step's own, else its module's
        largest; else its family's largest recorded, else the default; never more than the largest
        node offers (a task asking more would wait forever)."""
        want = ((step and self.per_tu.get((name, arch, step))) or self.per_tu.get((name, arch))
                or self.per_family.get(family) or self.default_bytes)
        want = max(MIN_DECLARED_BYTES, want)
        return min(want, self.node_memory) if self.node_memory else want

    def run(self, jobs: Iterable[TuJob]) -> Iterator[TuResult]:
        tasks = []
        for job in jobs:
            self.declared[job] = mem = self.declared_bytes(job)
            tasks.append(RayTask(job, f"aotc:{job.name}:{job.arch}", mem, (job, self.identity)))
        yield from self.map(_compile_on_worker, tasks,
                            lambda job, diag, log: TuResult(job, False, log=log, diagnostics=[diag]))

    def map(self, fn: Callable[..., R], tasks: Iterable[RayTask], failed: Callable[[Any, Diagnostic, str], R]
            ) -> Iterator[R]:
        """Run every task (num_cpus=1, its memory, retried when its worker dies), yielding results as
        they finish; a task lost more often than retried, or left without any node to run on, yields
        `failed(item, diagnostic, log)` instead."""
        ray = self.ray
        remote = ray.remote(fn)
        refs = {}
        for task in tasks:
            ref = remote.options(num_cpus=1, memory=task.memory, max_retries=TASK_RETRIES, retry_exceptions=False,
                                 name=task.label).remote(*task.args)
            refs[ref] = task
        idle_since = None
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=min(CPU_CHECK_S, self.give_up_s))
                for ref in ready:
                    task = refs.pop(ref)
                    yield self._result(ref, task, failed)
                if ready or self._cluster_cpus() > 0:
                    idle_since = None
                    continue
                # No live node can run a task: Ray would wait for one forever; the build must not.
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.give_up_s:
                    for ref, task in list(refs.items()):
                        with contextlib.suppress(Exception):
                            ray.cancel(ref, force=True)
                        del refs[ref]
                        yield failed(task.item, Diagnostic(
                            "AOTC-RAY-006", f"no node of the Ray cluster with a CPU stayed alive for "
                            f"{self.give_up_s:.0f} s; {task.label} was not built", task.label,
                            fix="start worker nodes (`ray start --address HEAD:PORT`) and rerun: "
                                "what finished is cached"), "")
        except BaseException:  # Ctrl-C: stop the cluster's work for this build, then unwind
            for ref in refs:
                with contextlib.suppress(Exception):  # already finished or gone
                    ray.cancel(ref, force=True)
            raise

    def _cluster_cpus(self) -> float:
        return sum(n["Resources"].get("CPU", 0) for n in self.ray.nodes() if n.get("Alive"))

    def _result(self, ref, task: RayTask, failed: Callable[[Any, Diagnostic, str], R]) -> R:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # worker or node lost more often than retried
            return failed(task.item, Diagnostic(
                "AOTC-RAY-003",
                f"the Ray task {task.label} was lost {TASK_RETRIES + 1} times ({type(e).__name__}); "
                "nothing of it was stored", task.label,
                fix="check the cluster's nodes (`ray status`) and their memory; rerun the build: "
                    "what finished is cached"), str(e))

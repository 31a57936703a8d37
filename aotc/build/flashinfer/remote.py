"""FlashInfer module builds on a Ray cluster (`aotc build --flashinfer ... --executor ray`): every
compile step of FlashInfer's build.ninja (one translation unit) is one Ray task; the steps that read
other steps' outputs (device link, the module's link) run here, where the objects come back to.

What travels: a step's command line with install prefixes as roles (`<flashinfer>`, `<cuda>`, `<ws>`,
...), which the worker maps to its own installation (FlashInfer and aotc are installed on every
worker); the module's generated sources (everything FlashInfer wrote under the workspace next to the
step's inputs and include folders), as bytes, put into Ray's object store once per module; back come
the object's bytes, the headers the compile read (its depfile) with their sha256 as read there, its
time and peak RSS. No shared filesystem is needed. A worker whose toolchain differs from the build's
is refused (AOTC-RAY-001), and so is an object whose headers differ from this machine's (another
FlashInfer on the worker): keys hash the headers as found here.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aotc.build.compile import _run, parse_deps, sigterm_interrupts
from aotc.build.executor_ray import RayExecutor, RayTask, refusal, worker_location
from aotc.build.flashinfer import ninja
from aotc.build.path_roles import PathRoles
from aotc.diagnostics import Diagnostic
from aotc.flashinfer.index import FAMILY
from aotc.keys import sha256_file

_NOT_SHIPPED = (".o", ".so", ".d", ".ninja", ".ninja_log", ".ninja_deps")


@dataclass(frozen=True)
class Step:
    """One compile step, every path in it portable."""

    module: str
    output: str  # the object it writes
    command: str  # ninja's command, variables expanded
    cwd: str  # where ninja runs its commands


@dataclass
class StepResult:
    step: Step
    ok: bool
    obj: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # portable path -> sha256 as read on the worker
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    log: str = ""  # portable
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)  # not imported: `import flashinfer` takes seconds (torch)
    if spec is None or spec.origin is None:
        return ""
    return os.path.dirname(spec.origin)


def _worker_roles(ws: str) -> PathRoles:
    """The roles of aotc.build.flashinfer.worker, as this machine has them (its own workspace)."""
    from aotc.build.flashinfer.module_build import cuda_home
    from aotc.build.toolchain import find_toolchain

    return PathRoles({"<ws>": ws, "<flashinfer>": _package_dir("flashinfer"), "<tvm_ffi>": _package_dir("tvm_ffi"),
                      "<cuda>": str(cuda_home(find_toolchain())), "<python-include>": sysconfig.get_path("include"),
                      "<python>": sys.executable}.items())


def compile_step(step: Step, files: dict[str, bytes], expected_identity: str) -> StepResult:
    """The Ray task: refuse if this worker's toolchain is not the build's; else write the module's
    generated sources into a workspace of its own, run the step there, return the object."""
    refused = refusal(expected_identity, step.module)
    if refused is not None:
        return StepResult(step, False, diagnostics=[refused])
    with tempfile.TemporaryDirectory(prefix="aotc-fi-step-") as ws:
        roles = _worker_roles(ws)
        for path, data in files.items():
            real = Path(roles.real(path))
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_bytes(data)
        out, cwd = Path(roles.real(step.output)), roles.real(step.cwd)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.makedirs(cwd, exist_ok=True)
        command = roles.real_text(step.command)
        run = _run(["/bin/sh", "-c", command], cwd, None)
        log = roles.portable(f"[ray worker {worker_location()}] {out}\n$ {command}\n{run.output.rstrip()}\n")
        depfile = Path(f"{out}.d")
        if run.returncode != 0 or not out.is_file() or not depfile.is_file():
            why = f"exit {run.returncode}" if run.returncode != 0 else f"no object or no depfile ({depfile.name})"
            return StepResult(step, False, seconds=run.seconds, peak_rss_bytes=run.peak_rss_bytes,
                              log=log + f"[{why}]\n")
        headers = {roles.portable(p): sha256_file(p) for p in parse_deps(depfile.read_text(), cwd)}
        return StepResult(step, True, out.read_bytes(), headers, run.seconds, run.peak_rss_bytes, log)


def _shipped_files(ws: str, steps: list[tuple[str, list[str]]], commands: dict[str, str]) -> list[str]:
    """Files under the workspace a module's compiles may read: every file in the folders of its
    inputs and of its include flags that lie there (FlashInfer's generated sources and headers)."""
    folders = set()
    for output, ins in steps:
        folders |= {os.path.dirname(p) for p in ins if p.startswith(ws + "/")}
        tokens = shlex.split(commands[output])
        for i, tok in enumerate(tokens):
            path = tok[2:] if tok.startswith("-I") and len(tok) > 2 else (
                tokens[i + 1] if tok in ("-I", "-isystem") and i + 1 < len(tokens) else "")
            if path.startswith(ws + "/"):
                folders.add(path)
    found = set()
    for folder in folders:
        for root, _, names in os.walk(folder):
            found |= {os.path.join(root, n) for n in names if not n.endswith(_NOT_SHIPPED)}
    return sorted(found)


class RayWorkspace(ninja.Workspace):
    """A ninja workspace whose compile steps run as Ray tasks; what reads other steps' outputs (a
    device link, the module's link) runs here, from ninja's own command lines. `deps`, `seconds` and
    `peak_rss` answer from what the tasks reported, as ninja's logs do for a local build."""

    def __init__(self, root: Path, executor: RayExecutor, roles: PathRoles, arch: str, module_files: dict[str, str]):
        super().__init__(root)
        self.executor, self.roles, self.arch = executor, roles, arch
        self.module_files = module_files  # build.ninja -> module name
        self.ws = roles.real("<ws>")
        self._deps: dict[str, list[str]] = {}
        self._seconds: dict[str, float] = {}
        self._rss: dict[str, int] = {}

    def _graph(self) -> dict[str, tuple[str, list[str]]]:
        """output -> (module, inputs), over every module file of this workspace."""
        graph = {}
        for path, module in self.module_files.items():
            for outs, ins in ninja.edges(Path(path).read_text()):
                graph |= {o: (module, ins) for o in outs}
        return graph

    def run(self, targets: list[str], jobs: int, env: dict[str, str],
            on_step: Callable[[int, int, str], None] | None = None) -> ninja.Run:
        graph = self._graph()
        remote = [t for t in targets if not any(i in graph for i in graph[t][1])]
        local = [t for t in targets if t not in remote]
        run = ninja.Run("", 0)
        logs: list[str] = []
        done = 0

        def finished(output: str, ok: bool, text: str, diagnostics: list[Diagnostic]) -> None:
            nonlocal done
            done += 1
            logs.append(text)
            if not ok:
                run.failures[output] = text
                run.diagnostics[output] = diagnostics
            if on_step:
                on_step(done, len(targets), output)

        with sigterm_interrupts():  # SIGTERM, like Ctrl-C, cancels the build's tasks on the cluster
            for result in self.executor.map(compile_step, self._tasks(remote, graph), self._lost):
                output = self.roles.real(result.step.output)
                ok, text, diags = self._accept(output, result)
                finished(output, ok, text, diags)
            for target in _ordered(local, graph):
                ok, text = self._run_here(target, graph[target][1], run.failures, env)
                finished(target, ok, text, [])
        run.log = "\n".join(logs)
        run.returncode = 1 if run.failures else 0
        return run

    def _tasks(self, outputs: list[str], graph: dict[str, tuple[str, list[str]]]) -> list[RayTask]:
        ray = self.executor.ray
        by_module: dict[str, list[str]] = {}
        for o in outputs:
            by_module.setdefault(graph[o][0], []).append(o)
        tasks = []
        for module, outs in by_module.items():
            commands = {o: self.command(o) for o in outs}
            files = _shipped_files(self.ws, [(o, graph[o][1]) for o in outs], commands)
            shipped = ray.put({self.roles.portable(p): Path(p).read_bytes() for p in files})
            for o in outs:
                step = Step(module, self.roles.portable(o), self.roles.portable(commands[o]),
                            self.roles.portable(str(self.root)))
                memory = self.executor.declare(module, self.arch, FAMILY, Path(o).name)
                tasks.append(RayTask(step, f"aotc:{module}:{Path(o).name}", memory,
                                     (step, shipped, self.executor.identity)))
        return tasks

    @staticmethod
    def _lost(step: Step, diagnostic: Diagnostic, log: str) -> StepResult:
        return StepResult(step, False, log=log, diagnostics=[diagnostic])

    def _accept(self, output: str, result: StepResult) -> tuple[bool, str, list[Diagnostic]]:
        """Write a task's object where ninja would have; refuse one compiled from other headers."""
        text = self.roles.real_text(result.log)
        if not result.ok:
            return False, text, result.diagnostics
        differ = [p for p, digest in result.headers.items()
                  if not os.path.isfile(self.roles.real(p)) or sha256_file(self.roles.real(p)) != digest]
        if differ:
            return False, text, [Diagnostic(
                "AOTC-RAY-001", f"the object {Path(output).name} of {result.step.module} was refused: the worker "
                f"read {len(differ)} file(s) that differ from this machine's (another FlashInfer or CUDA "
                f"headers there), e.g. {differ[0]}", result.step.module,
                fix="install the same flashinfer-python and aotc on every worker node",
                details={"differing": differ[:20]})]
        tmp = Path(f"{output}.aotc-tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(result.obj or b"")
        tmp.replace(output)
        self._deps[output] = [self.roles.real(p) for p in result.headers]
        self._seconds[output], self._rss[output] = result.seconds, result.peak_rss_bytes
        return True, text, []

    def _run_here(self, target: str, inputs: list[str], failures: dict[str, str], env: dict[str, str]
                  ) -> tuple[bool, str]:
        if any(i in failures or not os.path.exists(i) for i in inputs):
            return False, f"{target}: not built, an input failed"
        command = self.command(target)
        started = time.perf_counter()
        proc = subprocess.run(command, shell=True, cwd=self.root, env=env, capture_output=True, text=True,
                              check=False)
        self._seconds[target] = time.perf_counter() - started
        text = f"$ {command}\n{proc.stdout}{proc.stderr}".rstrip()
        return proc.returncode == 0 and os.path.exists(target), text

    def deps(self, outputs: list[str]) -> list[str]:
        return sorted({p for o in outputs for p in self._deps.get(o, [])})

    def step_seconds(self, outputs: list[str]) -> dict[str, float]:
        return {o: self._seconds[o] for o in outputs if o in self._seconds}

    def step_peaks(self, outputs: list[str]) -> dict[str, int]:
        return {o: self._rss[o] for o in outputs if self._rss.get(o, 0) > 0}


def _ordered(targets: list[str], graph: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Targets so that each comes after the targets it reads."""
    order: list[str] = []

    def visit(t: str) -> None:
        if t in order:
            return
        for i in graph[t][1]:
            if i in targets:
                visit(i)
        order.append(t)

    for t in targets:
        visit(t)
    return order

"""Build orchestration: for every (spec, arch) job run rules -> render -> (direct-mode cache hit, or
compile -> verify -> store). Jobs run on a small executor interface (a local thread pool now: the
work itself is an nvcc subprocess), capped by cores and free memory. One failing kernel never stops
the others; every failure keeps its log in the cache.
"""

from __future__ import annotations

import datetime as _dt
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from aotc import __version__
from aotc.arch import Arch
from aotc.build.compile import compile_source, helper_flags, kill_running
from aotc.build.compile import flags as compile_flags
from aotc.build.direct_mode import HeaderSnapshot, lookup_prekey, record_prekey
from aotc.build.render import Source, render
from aotc.build.rules import check
from aotc.build.spec import KernelSpec
from aotc.build.toolchain import (
    CUTLASS_TU_PEAK_RSS_BYTES,
    Toolchain,
    cutlass_include_dirs,
    cutlass_version,
    find_toolchain,
    plan_parallel_jobs,
)
from aotc.build.verify import verify_cubin
from aotc.cache import Cache
from aotc.diagnostics import Diagnostic
from aotc.families import get_family
from aotc.keys import action_inputs, action_key, prekey, spec_key
from aotc.resources import templates_dir

HIT, BUILT, FAILED, SKIPPED = "hit", "built", "failed", "skipped"


@dataclass
class JobResult:
    spec: KernelSpec
    arch: Arch
    status: str
    key: str = ""
    seconds: float = 0.0  # wall time of the whole job
    compile_seconds: float = 0.0  # nvcc's share of it (device + helper compiles)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    log_path: str = ""

    def to_json(self) -> dict:
        return {"spec": self.spec.name, "family": self.spec.family, "arch": self.arch.name, "status": self.status,
                "key": self.key, "seconds": round(self.seconds, 4), "compile_seconds": round(self.compile_seconds, 3),
                "log": self.log_path, "diagnostics": [d.to_json() for d in self.diagnostics]}


@dataclass
class BuildSummary:
    results: list[JobResult]
    seconds: float
    jobs: int

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count(FAILED) == 0

    def to_json(self) -> dict:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "jobs": self.jobs,
                **{s: self.count(s) for s in (BUILT, HIT, FAILED, SKIPPED)},
                "results": [r.to_json() for r in self.results]}


class LocalExecutor:
    """Runs jobs on a thread pool; the interface a distributed executor will implement later."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def run(self, fn: Callable, items: Iterable) -> Iterator:
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = [pool.submit(fn, item) for item in items]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:  # Ctrl-C / SIGTERM: drop queued jobs, kill running compiles, stop now
            for fut in futures:
                fut.cancel()
            kill_running()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class Builder:
    def __init__(self, cache: Cache, toolchain: Toolchain | None = None, force: bool = False):
        self.cache = cache
        self.toolchain = toolchain or find_toolchain()
        self.force = force
        self.hash_file = HeaderSnapshot()  # one per run: each header stat'ed and hashed once
        cutlass_dirs = cutlass_include_dirs()
        self.include_dirs = [templates_dir(), *cutlass_dirs]
        self._cutlass_version = cutlass_version()
        # Absolute include paths would make keys machine-specific; keys see them by role instead.
        self._roots = [("<templates>", str(templates_dir())),
                       *((f"<cutlass{i}>", str(d)) for i, d in enumerate(cutlass_dirs)),
                       ("<cuda>", str(Path(self.toolchain.bin_dir).resolve().parent))]  # a venv's pip toolkit too
        self._flags: dict[str, list[str]] = {}

    def _portable(self, text: str) -> str:
        for tag, d in self._roots:
            text = text.replace(d, tag)
        return text

    def flags(self, arch: Arch) -> list[str]:
        """Both compiles' flags, portable: a change to how the host helper is built changes the key too."""
        if arch.name not in self._flags:
            device = compile_flags(arch, self.toolchain, include_dirs=self.include_dirs)
            self._flags[arch.name] = [self._portable(f) for f in (*device, "--host-helper:", *helper_flags(device))]
        return self._flags[arch.name]

    def plan(self, spec: KernelSpec, arch: Arch) -> tuple[Source, list[str], str]:
        """Render and compute the prekey: everything known without running the compiler."""
        source = render(spec, arch)
        flags = self.flags(arch)
        return source, flags, prekey(source.text, self.toolchain.identity, flags, arch.name)

    def safe_build_one(self, spec: KernelSpec, arch: Arch) -> JobResult:
        """build_one, with an unexpected exception turned into a failed job (and its traceback logged)."""
        start = time.perf_counter()
        try:
            return self.build_one(spec, arch)
        except Exception:  # noqa: BLE001 - one kernel's bug must not stop the others
            import traceback

            log = self.cache.write_log(spec_key(spec.family, spec.params, arch.name), traceback.format_exc())
            return JobResult(spec, arch, FAILED, log_path=str(log), seconds=time.perf_counter() - start,
                             diagnostics=[Diagnostic(
                "AOTC-BUILD-002", "internal error while building (a bug in aotc)", spec.name, spec.file,
                f"report it with the log: {log}")])

    def build_one(self, spec: KernelSpec, arch: Arch) -> JobResult:
        start = time.perf_counter()
        verdict = check(spec, arch)
        if not verdict.applicable:
            return JobResult(spec, arch, SKIPPED, diagnostics=verdict.diagnostics)
        if not verdict.ok:
            return JobResult(spec, arch, FAILED, diagnostics=verdict.diagnostics, seconds=time.perf_counter() - start)
        source, flags, pk = self.plan(spec, arch)
        sk = spec_key(spec.family, spec.params, arch.name)
        ref_info = {"name": spec.name, "family": spec.family, "params": spec.params, "arch": arch.name}
        if not self.force:
            key = lookup_prekey(self.cache, pk, self.hash_file)
            if key is not None:
                self.cache.set_ref(sk, key, ref_info)
                return JobResult(spec, arch, HIT, key=key, seconds=time.perf_counter() - start)
        family = get_family(spec.family)
        with tempfile.TemporaryDirectory(prefix="aotc-build-") as workdir:
            result = compile_source(source.text, arch, self.toolchain, include_dirs=self.include_dirs,
                                    workdir=Path(workdir))
        compile_seconds = sum(result.seconds.values())
        if not result.ok:
            log = self.cache.write_log(pk, result.log)
            return JobResult(spec, arch, FAILED, seconds=time.perf_counter() - start, log_path=str(log),
                             compile_seconds=compile_seconds,
                             diagnostics=[Diagnostic("AOTC-BUILD-001", f"nvcc failed: {result.error}", spec.name,
                                                     spec.file, f"read the log: {log}")])
        smem_total = verdict.smem.total if verdict.smem else 0
        report = verify_cubin(result.cubin, arch, family.expected_mma(spec.params, arch), self.toolchain,
                              smem_budget=arch.smem_optin_bytes, smem_dynamic=smem_total)
        if not report.ok:
            log = self.cache.write_log(pk, result.log + "\n\n" + "\n".join(d.format() for d in report.diagnostics))
            return JobResult(spec, arch, FAILED, seconds=time.perf_counter() - start, log_path=str(log),
                             compile_seconds=compile_seconds, diagnostics=report.diagnostics)
        headers = {h: self.hash_file(h) for h in result.headers}
        inputs = action_inputs(source.text, self.toolchain.identity, flags, arch.name,
                               {self._portable(h): d for h, d in headers.items()})
        key = action_key(inputs)
        manifest = {
            "schema": 1, "key": key, "spec_key": sk, "name": spec.name, "family": spec.family,
            "params": spec.params, "arch": arch.name, "target": {"sm": arch.sm, "variant": arch.variant},
            "entry": "aotc_kernel", "resources": report.resources.get("aotc_kernel", {}), "smem_model": verdict.smem.to_json()
            if verdict.smem else None, "sass": {"mma": report.mma_counts, "banned": sorted(report.banned_found)},
            "toolchain": {"identity": self.toolchain.identity, "nvcc_version": self.toolchain.release,
                          "source": self.toolchain.source},
            "cutlass_version": self._cutlass_version, "aotc_version": __version__, "inputs": inputs,
            "flags": flags, "template": source.template,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "compile_seconds": round(compile_seconds, 3), "spec_file": spec.file,
        }
        blobs = {"cubin": result.cubin, "source": source.text.encode()}
        if result.helper is not None:
            blobs["helper"] = result.helper
        self.cache.put_entry(key, blobs, manifest)
        self.cache.write_log(key, result.log)
        record_prekey(self.cache, pk, headers, key)
        self.cache.set_ref(sk, key, ref_info)
        return JobResult(spec, arch, BUILT, key=key, seconds=time.perf_counter() - start,
                         compile_seconds=compile_seconds)


class Progress:
    """kernels done/total, hits, failures and ETA on stderr: one rewritten line on a terminal,
    a line per compiled or failed kernel otherwise."""

    def __init__(self, total: int, jobs: int, stream=sys.stderr, enabled: bool = True):
        self.total, self.jobs, self.stream, self.enabled = total, jobs, stream, enabled
        self.done = self.hits = self.failed = self.skipped = 0
        self.compile_times: list[float] = []
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def eta(self) -> str:
        remaining = self.total - self.done
        if not remaining or not self.compile_times:
            return "--"
        secs = sum(self.compile_times) / len(self.compile_times) * remaining / self.jobs
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"

    def update(self, r: JobResult) -> None:
        self.done += 1
        self.hits += r.status == HIT
        self.failed += r.status == FAILED
        self.skipped += r.status == SKIPPED
        if r.status == BUILT:
            self.compile_times.append(r.compile_seconds)
        if not self.enabled:
            return
        line = (f"[{self.done}/{self.total}] {self.hits} hit, {len(self.compile_times)} built, "
                f"{self.failed} failed, {self.skipped} skipped, ETA {self.eta()}")
        if self.tty:
            self.stream.write(f"\r\033[K{line}  {r.spec.name} ({r.arch.name}): {r.status}")
            if self.done == self.total:
                self.stream.write("\n")
        elif r.status in (BUILT, FAILED):
            self.stream.write(f"{line}  {r.spec.name} ({r.arch.name}): {r.status} in {r.seconds:.1f}s\n")
        self.stream.flush()


def build(specs: list[KernelSpec], archs: list[Arch], cache: Cache, jobs: int | None = None,
          toolchain: Toolchain | None = None, force: bool = False, progress: bool = True) -> BuildSummary:
    start = time.perf_counter()
    builder = Builder(cache, toolchain, force)
    work = [(s, a) for s in specs for a in archs]
    plan = plan_parallel_jobs(jobs, CUTLASS_TU_PEAK_RSS_BYTES)
    n_jobs = plan.jobs
    meter = Progress(len(work), n_jobs, enabled=progress)
    if progress and work:
        print(f"aotc: {len(work)} kernel builds, {plan.reason}", file=sys.stderr)
    results = []
    for r in LocalExecutor(n_jobs).run(lambda job: builder.safe_build_one(*job), work):
        meter.update(r)
        results.append(r)
    results.sort(key=lambda r: (r.spec.name, r.arch.name))
    return BuildSummary(results, time.perf_counter() - start, n_jobs)

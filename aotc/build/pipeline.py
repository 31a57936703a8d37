"""Build orchestration: for every (spec, arch) job run rules -> render -> direct-mode lookup in this
process; the misses go to an Executor as translation-unit tasks (compile -> verify, possibly
elsewhere) and come back here to be stored (aotc.build.store_step). Compiles are capped by cores
and free memory. One failing kernel never stops the others; every failure keeps its log in the cache.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field

from aotc import __version__
from aotc.arch import Arch
from aotc.build import store_step
from aotc.build.direct_mode import HeaderSnapshot, lookup_prekey
from aotc.build.estimate import family_seconds, longest_first, remaining_wall
from aotc.build.executor import Executor, LocalExecutor
from aotc.build.progress import Progress
from aotc.build.render import Source, render
from aotc.build.rules import Verdict, check
from aotc.build.spec import KernelSpec
from aotc.build.toolchain import CUTLASS_TU_PEAK_RSS_BYTES, Toolchain, plan_parallel_jobs
from aotc.build.tu_task import ENTRY, TuCompiler, TuJob, TuResult
from aotc.cache import Cache
from aotc.cache.manifest import Manifest
from aotc.diagnostics import AotcError, Diagnostic
from aotc.families import get_family
from aotc.keys import prekey, spec_key

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


@dataclass
class Pending:
    """A job that missed the cache: what the parent keeps while its TU compiles somewhere."""

    spec: KernelSpec
    arch: Arch
    verdict: Verdict
    source: Source
    flags: list[str]
    prekey: str
    started: float
    tu: TuJob


class Builder:
    def __init__(self, cache: Cache, toolchain: Toolchain | None = None, force: bool = False):
        self.cache = cache
        self.force = force
        self.compiler = TuCompiler(toolchain)
        self.toolchain = self.compiler.toolchain
        # One per run: each header stat'ed and hashed once; recorded paths are portable.
        self.hash_file = HeaderSnapshot(locate=self.compiler.roles.real)

    def plan(self, spec: KernelSpec, arch: Arch) -> tuple[Source, list[str], str]:
        """Render and compute the prekey: everything known without running the compiler."""
        source = render(spec, arch)
        flags = self.compiler.flags(arch.name)
        return source, flags, prekey(source.text, self.toolchain.identity, flags, arch.name)

    def prepare(self, spec: KernelSpec, arch: Arch) -> JobResult | Pending:
        """Rules, render, direct-mode lookup: a finished JobResult (skipped, rejected, cache hit) or
        the TU to compile."""
        start = time.perf_counter()
        verdict = check(spec, arch)
        if not verdict.applicable:
            return JobResult(spec, arch, SKIPPED, diagnostics=verdict.diagnostics)
        if not verdict.ok:
            return JobResult(spec, arch, FAILED, diagnostics=verdict.diagnostics, seconds=time.perf_counter() - start)
        source, flags, pk = self.plan(spec, arch)
        if not self.force:
            key = lookup_prekey(self.cache, pk, self.hash_file)
            if key is not None:
                self.cache.set_ref(spec_key(spec.family, spec.params, arch.name), key,
                                   {"name": spec.name, "family": spec.family, "params": spec.params, "arch": arch.name})
                return JobResult(spec, arch, HIT, key=key, seconds=time.perf_counter() - start)
        tu = TuJob(spec.name, arch.name, source.text, verdict.smem.total if verdict.smem else 0,
                   get_family(spec.family).expected_mma(spec.params, arch))
        return Pending(spec, arch, verdict, source, flags, pk, start, tu)

    def finish(self, job: Pending, tu: TuResult) -> JobResult:
        """Store a compiled and verified TU, or record why it failed (its log stays in the cache)."""
        spec, arch = job.spec, job.arch
        done = JobResult(spec, arch, FAILED, compile_seconds=tu.compile_seconds)
        if not tu.ok:
            log = tu.log + ("\n\n" + "\n".join(d.format() for d in tu.diagnostics) if tu.diagnostics else "")
            done.log_path = str(self.cache.write_log(job.prekey, log))
            done.diagnostics = [Diagnostic("AOTC-BUILD-001", f"nvcc failed: {tu.error}", spec.name, spec.file,
                                           f"read the log: {done.log_path}")] if tu.error else [
                Diagnostic(d.code, d.message, d.spec or spec.name, d.file or spec.file,
                           f"{d.fix} (log: {done.log_path})" if d.code == "AOTC-BUILD-002" else d.fix, d.details)
                for d in tu.diagnostics]
        else:
            done.key = store_step.store(self.cache, self._artifact(job, tu))
            done.status = BUILT
        done.seconds = time.perf_counter() - job.started
        return done

    def _artifact(self, job: Pending, tu: TuResult) -> store_step.Artifact:
        spec, arch = job.spec, job.arch
        manifest = Manifest(
            name=spec.name, family=spec.family, params=spec.params, arch=arch.name,
            target={"sm": arch.sm, "variant": arch.variant}, spec_key=spec_key(spec.family, spec.params, arch.name),
            entry=ENTRY, resources=tu.resources, smem_model=job.verdict.smem.to_json() if job.verdict.smem else None,
            sass={"mma": tu.mma_counts, "banned": tu.banned}, toolchain=tu.toolchain,
            cutlass_version=tu.cutlass_version, aotc_version=__version__, flags=job.flags,
            template=job.source.template, built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            compile_seconds=round(tu.compile_seconds, 3), peak_rss_bytes=tu.peak_rss_bytes or None, spec_file=spec.file)
        blobs = {"cubin": tu.cubin, "source": job.source.text.encode()}
        if tu.helper is not None:
            blobs["helper"] = tu.helper
        return store_step.Artifact(manifest, blobs, job.source.text, job.flags, tu.toolchain["identity"],
                                   job.prekey, tu.headers, tu.log)

    def build_one(self, spec: KernelSpec, arch: Arch) -> JobResult:
        job = self.prepare(spec, arch)
        return job if isinstance(job, JobResult) else self.finish(job, self.compiler(job.tu))

    def safe_build_one(self, spec: KernelSpec, arch: Arch) -> JobResult:
        """build_one, with an unexpected exception turned into a failed job (and its traceback logged)."""
        start = time.perf_counter()
        try:
            return self.build_one(spec, arch)
        except Exception:  # noqa: BLE001 - one kernel's bug must not stop the others
            return self._internal_error(spec, arch, start)

    def _internal_error(self, spec: KernelSpec, arch: Arch, start: float) -> JobResult:
        error = sys.exc_info()[1]
        if isinstance(error, AotcError):  # a coded refusal (e.g. the cache is full): no bug, no log to write
            return JobResult(spec, arch, FAILED, seconds=time.perf_counter() - start,
                             diagnostics=[d if d.spec else Diagnostic(d.code, d.message, spec.name, spec.file, d.fix,
                                                                      d.details) for d in error.diagnostics])
        log = self.cache.write_log(spec_key(spec.family, spec.params, arch.name), traceback.format_exc())
        return JobResult(spec, arch, FAILED, log_path=str(log), seconds=time.perf_counter() - start,
                         diagnostics=[Diagnostic("AOTC-BUILD-002", "internal error while building (a bug in aotc)",
                                                 spec.name, spec.file, f"report it with the log: {log}")])


class _CompileClock:
    """What the progress line's ETA rests on: each queued compile's expected time (its family's median
    on record in the cache, else what this build measured for the family so far, else the median of
    everything known), minus what the running ones have already spent, over the build's jobs."""

    def __init__(self, meter: Progress):
        self.meter = meter
        self.history: dict[str, float] = {}
        self.families: dict[TuJob, str] = {}
        self.learned: dict[str, list[float]] = {}
        self.started: dict[TuJob, float] = {}
        self.left: set[TuJob] = set()
        self.jobs = 1

    def plan(self, cache: Cache, families: dict[TuJob, str], jobs: int) -> None:
        self.families, self.left, self.jobs = families, set(families), jobs
        self.history = family_seconds(cache) if families else {}  # read the manifests only when compiling
        self.meter.eta = self.eta if families else None

    def expected(self, tu: TuJob) -> float | None:
        fam = self.families.get(tu, "")
        if fam in self.history:
            return self.history[fam]
        if self.learned.get(fam):
            return statistics.median(self.learned[fam])
        return None

    def tracked(self, compile_one):
        def run(tu: TuJob):
            self.started[tu] = time.perf_counter()
            self.meter.started(f"{tu.name} ({tu.arch})")
            try:
                return compile_one(tu)
            finally:
                self.meter.finished(f"{tu.name} ({tu.arch})")
        return run

    def done(self, result) -> None:
        self.left.discard(result.job)
        self.started.pop(result.job, None)
        if result.compile_seconds:
            self.learned.setdefault(self.families.get(result.job, ""), []).append(result.compile_seconds)

    def eta(self) -> float | None:
        known = [*self.history.values(), *(v for vals in self.learned.values() for v in vals)]
        typical = statistics.median(known) if known else None
        now = time.perf_counter()
        running, queued = [], []
        for tu in list(self.left):
            secs = self.expected(tu) if self.expected(tu) is not None else typical
            if secs is None:
                return None  # nothing on record yet: no ETA rather than a wrong one
            if tu in self.started:
                running.append(max(0.0, secs - (now - self.started[tu])))
            else:
                queued.append(secs)
        return remaining_wall(running, queued, self.jobs)


def build(specs: list[KernelSpec], archs: list[Arch], cache: Cache, jobs: int | None = None,
          toolchain: Toolchain | None = None, force: bool = False, progress: bool = True,
          executor: Executor | None = None) -> BuildSummary:
    """Build every (spec, arch) into `cache`: cache hits here, misses on `executor` (default: a
    local pool of as many compiles as cores and free memory allow)."""
    start = time.perf_counter()
    builder = Builder(cache, toolchain, force)
    work = [(s, a) for s in specs for a in archs]
    meter = Progress(len(work), enabled=progress, unit="kernel")
    clock = _CompileClock(meter)
    if executor is None:
        plan = plan_parallel_jobs(jobs, CUTLASS_TU_PEAK_RSS_BYTES)
        executor = LocalExecutor(plan.jobs, clock.tracked(builder.compiler))
        reason = plan.reason
    else:
        reason = f"{executor.jobs} jobs on {type(executor).__name__}"
    if progress and work:
        print(f"aotc: {len(work)} kernel builds, {reason}", file=sys.stderr)
    results: list[JobResult] = []
    pending: dict[TuJob, list[Pending]] = {}  # identical TUs compile once

    def report(r: JobResult) -> None:
        results.append(r)
        counts = {s: sum(x.status == s for x in results) for s in (HIT, BUILT, FAILED, SKIPPED)}
        if r.status == FAILED:  # kept on screen: the next status line must not overwrite it
            why = r.diagnostics[0].message if r.diagnostics else ""
            meter.note(f"FAILED {r.spec.name} ({r.arch.name})" + (f": {why}" if why else "")
                       + (f" (log {r.log_path})" if r.log_path else ""))
        meter.event(f"{r.spec.name} ({r.arch.name}): {r.status}",
                    f"{r.seconds:.1f}s; {counts[HIT]} hit, {counts[BUILT]} built, {counts[FAILED]} failed, "
                    f"{counts[SKIPPED]} skipped")

    for spec, arch in work:
        t0 = time.perf_counter()
        try:
            prepared = builder.prepare(spec, arch)
        except Exception:  # noqa: BLE001 - one kernel's bug must not stop the others
            prepared = builder._internal_error(spec, arch, t0)
        if isinstance(prepared, JobResult):
            report(prepared)
        else:
            pending.setdefault(prepared.tu, []).append(prepared)
    families = {tu: jobs_[0].spec.family for tu, jobs_ in pending.items()}
    clock.plan(cache, families, executor.jobs)
    try:
        # longest expected compile first: a 2-minute CUTLASS kernel never starts last on an idle machine
        for tu in executor.run(longest_first(list(pending), clock.expected)):
            clock.done(tu)
            for job in pending[tu.job]:
                try:
                    report(builder.finish(job, tu))
                except Exception:  # noqa: BLE001 - one kernel's bug must not stop the others
                    report(builder._internal_error(job.spec, job.arch, job.started))
    finally:
        meter.close()
    results.sort(key=lambda r: (r.spec.name, r.arch.name))
    return BuildSummary(results, time.perf_counter() - start, executor.jobs)

"""One translation unit as a task: a rendered source in (`TuJob`), compiled and verified into
a `TuResult` (cubin, helper, portable header digests, SASS/resource facts, log). Both are plain
picklable records, so an executor may run the task in another process or on another machine;
storing the result is the parent's job (aotc.build.store_step).
"""

from __future__ import annotations

import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from aotc.arch import get_arch
from aotc.build.compile import compile_source, helper_flags
from aotc.build.compile import flags as compile_flags
from aotc.build.direct_mode import file_sha256
from aotc.build.path_roles import PathRoles
from aotc.build.toolchain import Toolchain, cutlass_include_dirs, cutlass_version, find_toolchain
from aotc.build.verify import verify_cubin
from aotc.diagnostics import Diagnostic
from aotc.resources import templates_dir

ENTRY = "aotc_kernel"


@dataclass(frozen=True)
class TuJob:
    name: str  # the kernel's name (for logs and diagnostics)
    arch: str
    source: str  # the rendered translation unit
    smem_dynamic: int  # the SMEM model's total: checked against the arch budget with the static SMEM
    expected_mma: str | None  # the MMA opcode class the SASS must contain


@dataclass
class TuResult:
    job: TuJob
    ok: bool
    cubin: bytes | None = None
    helper: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # portable path -> sha256
    log: str = ""
    error: str = ""  # nvcc's failure in one line; "" when it compiled
    diagnostics: list[Diagnostic] = field(default_factory=list)  # verification or internal failures
    compile_seconds: float = 0.0
    peak_rss_bytes: int = 0  # largest resident set of the TU's compiles (0: not measured)
    resources: dict = field(default_factory=dict)  # of the entry kernel: registers, spills, SMEM
    mma_counts: dict[str, int] = field(default_factory=dict)
    banned: list[str] = field(default_factory=list)
    toolchain: dict = field(default_factory=dict)  # identity, nvcc_version, source of the compiler used
    cutlass_version: str = ""


class TuCompiler:
    """Compiles and verifies TuJobs with one toolchain and include path (this machine's)."""

    def __init__(self, toolchain: Toolchain | None = None):
        self.toolchain = toolchain or find_toolchain()
        cutlass_dirs = cutlass_include_dirs()
        self.include_dirs = [templates_dir(), *cutlass_dirs]
        self.cutlass_version = cutlass_version()
        # Absolute include paths would make keys machine-specific; keys see them by role instead.
        self.roles = PathRoles([("<templates>", str(templates_dir())),
                                *((f"<cutlass{i}>", str(d)) for i, d in enumerate(cutlass_dirs)),
                                ("<cuda>", str(Path(self.toolchain.bin_dir).resolve().parent))])  # a pip toolkit too
        self._flags: dict[str, list[str]] = {}

    def flags(self, arch: str) -> list[str]:
        """Both compiles' flags, portable: a change to how the host helper is built changes the key too."""
        if arch not in self._flags:
            device = compile_flags(get_arch(arch), self.toolchain, include_dirs=self.include_dirs)
            self._flags[arch] = [self.roles.portable(f) for f in (*device, "--host-helper:", *helper_flags(device))]
        return self._flags[arch]

    def __call__(self, job: TuJob) -> TuResult:
        """Never raises: an unexpected error is a failed result carrying its traceback."""
        try:
            return self._run(job)
        except Exception:  # noqa: BLE001 - one kernel's bug must not stop the others
            return TuResult(job, False, log=traceback.format_exc(), diagnostics=[Diagnostic(
                "AOTC-BUILD-002", "internal error while building (a bug in aotc)", job.name,
                fix="report it with the log")])

    def _run(self, job: TuJob) -> TuResult:
        arch = get_arch(job.arch)
        tc = self.toolchain
        with tempfile.TemporaryDirectory(prefix="aotc-build-") as workdir:
            result = compile_source(job.source, arch, tc, include_dirs=self.include_dirs, workdir=Path(workdir))
        out = TuResult(job, False, log=result.log, compile_seconds=sum(result.seconds.values()),
                       peak_rss_bytes=result.peak_rss_bytes,
                       toolchain={"identity": tc.identity, "nvcc_version": tc.release, "source": tc.source},
                       cutlass_version=self.cutlass_version)
        if not result.ok:
            out.error = result.error
            return out
        report = verify_cubin(result.cubin, arch, job.expected_mma, tc, smem_budget=arch.smem_optin_bytes,
                              smem_dynamic=job.smem_dynamic)
        out.mma_counts, out.banned = report.mma_counts, sorted(report.banned_found)
        out.resources = {**report.resources.get(ENTRY, {}), **result.spills.get(ENTRY, {})}
        if not report.ok:
            out.diagnostics = report.diagnostics
            return out
        out.ok, out.cubin, out.helper = True, result.cubin, result.helper
        out.headers = {self.roles.portable(h): file_sha256(h) for h in result.headers}
        return out


_here: TuCompiler | None = None


def compile_tu(job: TuJob) -> TuResult:
    """The task a remote executor runs on a worker: this machine's TuCompiler, made once per process."""
    global _here
    if _here is None:
        _here = TuCompiler()
    return _here(job)

"""Find the CUDA toolchain (nvcc, ptxas, cicc, cuobjdump, nvdisasm) and the CUTLASS headers, give
the toolchain a stable identity for cache keys, size the build's parallelism to this host, and
report it all for `aotc doctor`. Build side; the runtime imports it only to scan a newly found
kernel wheel (find_disassemblers, which runs nothing).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from aotc.diagnostics import AotcError, Diagnostic
from aotc.keys import sha256_file

PIP_INSTALL_BUILD = "pip install 'aotc[build]'"
# Peak RSS of one nvcc -cubin of a CUTLASS SM120 NVFP4 GEMM TU (example 79a, sm_120a): measured
# with /usr/bin/time -v, see docs/verify.md. Used when the caller has no better figure.
CUTLASS_TU_PEAK_RSS_BYTES = 5_374_452 * 1024  # 5.1 GiB (nvcc 13.5, 2026-11-25)
# Files the pip wheels must provide for nvcc to compile a .cu (package that ships each one).
_PIP_REQUIRED = {
    "bin/nvcc": "nvidia-cuda-nvcc",
    "bin/ptxas": "nvidia-cuda-nvcc",
    "nvvm/bin/cicc": "nvidia-nvvm",
    "include/crt/host_config.h": "nvidia-cuda-crt",
    "include/cuda_runtime.h": "nvidia-cuda-runtime",
    "lib/libcudart_static.a": "nvidia-cuda-runtime",
    "include/cccl/cuda/std/cstdint": "nvidia-cuda-cccl",
}


@dataclass(frozen=True)
class Toolchain:
    nvcc: str  # the nvcc we run (may be a wrapper script)
    source: str  # "explicit" | "pip" | "CUDA_HOME" | "PATH"
    bin_dir: str  # the toolkit's real bin/ (nvcc's _HERE_): ptxas lives here
    release: str  # "13.5"
    version_text: str  # full `nvcc --version`
    host_compiler: str  # first line of `<host c++> --version`
    cuobjdump: str | None
    nvdisasm: str | None
    identity: str  # sha256 over everything that determines nvcc's output

    def to_json(self) -> dict:
        return asdict(self)


def _pip_cuda_root() -> Path | None:
    """nvidia/cu13 of the pip CUDA wheels, if the `nvidia` namespace package is importable."""
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        root = Path(base) / "cu13"
        if root.is_dir():
            return root
    return None


def _missing_pip_files(root: Path) -> list[str]:
    return [f"{rel} (from {pkg})" for rel, pkg in _PIP_REQUIRED.items() if not (root / rel).exists()]


def _candidates(explicit: str | None, searched: list[str]) -> list[tuple[str, str]]:
    """(nvcc path, source) in search order; appends what was looked at (and why not) to `searched`."""
    if explicit is not None:
        return [(explicit, "explicit")]
    env = os.environ.get("AOTC_NVCC")
    if env:
        return [(env, "explicit")]
    found: list[tuple[str, str]] = []
    # A CUDA_HOME the user set is a choice and wins over the pip wheels (as in torch's cpp_extension);
    # the pip toolkit comes before a bare nvcc on PATH.
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if home := os.environ.get(var):
            found.append((str(Path(home) / "bin" / "nvcc"), "CUDA_HOME"))
            break
    else:
        searched.append("CUDA_HOME/CUDA_PATH: not set")
    root = _pip_cuda_root()
    if root is None:
        searched.append("pip: no nvidia/cu13 package (nvidia-cuda-nvcc not installed)")
    elif missing := _missing_pip_files(root):
        searched.append(f"pip: {root} lacks {', '.join(missing)}")
    else:
        found.append((str(root / "bin" / "nvcc"), "pip"))
    on_path = shutil.which("nvcc")
    if on_path:
        found.append((on_path, "PATH"))
    else:
        searched.append("PATH: no nvcc")
    return found


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _probe_nvcc(nvcc: str) -> tuple[str, str] | str:
    """(version text, real bin dir) of a working nvcc, or why it does not work."""
    if os.path.isdir(nvcc):
        return f"{nvcc} is a directory; point at the nvcc executable (e.g. {nvcc}/bin/nvcc)"
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        return f"{nvcc} does not exist or is not executable"
    try:
        version = _run([nvcc, "--version"])
        dry = _run([nvcc, "-dryrun", "--version"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{nvcc} could not run: {exc}"
    if version.returncode != 0 or "release" not in version.stdout:
        return f"{nvcc} --version failed (exit {version.returncode}): {version.stderr.strip()[:200]}"
    # nvcc may be a wrapper script; its _HERE_ is the toolkit's real bin/, where ptxas lives.
    here = re.search(r"_HERE_=(\S+)", dry.stdout + dry.stderr)
    bin_dir = here.group(1) if here else str(Path(nvcc).resolve().parent)
    return version.stdout.strip(), str(Path(bin_dir).resolve())


def _host_compiler_version() -> str:
    cxx = os.environ.get("NVCC_CCBIN") or "gcc"
    try:
        out = _run([cxx, "--version"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return f"{cxx}: not found"
    return out.stdout.splitlines()[0].strip() if out.stdout else f"{cxx}: no version output"


def _find_tool(name: str, bin_dir: str) -> str | None:
    """pip nvidia/cu13/bin first (the wheels named in aotc[build]), then next to nvcc, then PATH."""
    dirs = []
    if (root := _pip_cuda_root()) is not None:
        dirs.append(root / "bin")
    if bin_dir:
        dirs.append(Path(bin_dir))
    for d in dirs:
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return str(d / name)
    return shutil.which(name)


def find_disassemblers() -> Toolchain | None:
    """cuobjdump/nvdisasm without nvcc (a serving machine may have only these): the pip nvidia wheels,
    then $CUDA_HOME (or $CUDA_PATH)/bin, then PATH. A Toolchain holding only them (all the SASS scan
    reads), or None when neither is found. Runs nothing: a few stats."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    bin_dir = str(Path(home) / "bin") if home else ""
    tools = {name: _find_tool(name, bin_dir) for name in ("cuobjdump", "nvdisasm")}
    if not any(tools.values()):
        return None
    return Toolchain(nvcc="", source="disassemblers only", bin_dir=bin_dir, release="unknown", version_text="",
                     host_compiler="", cuobjdump=tools["cuobjdump"], nvdisasm=tools["nvdisasm"], identity="")


_FILE_DIGESTS: dict[str, str] = {}


def _digest_memo_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aotc" / "binary-digests.json"


def _load_digest_memo() -> None:
    """Digests of compiler binaries persist across runs (hashing nvcc+ptxas+cicc costs ~0.5 s, which
    would dominate a no-op build); entries are keyed by path, size and mtime, so a change re-hashes."""
    if _FILE_DIGESTS:
        return
    try:
        _FILE_DIGESTS.update(json.loads(_digest_memo_path().read_text()))
    except (OSError, ValueError):
        pass


def _save_digest_memo() -> None:
    path = _digest_memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_FILE_DIGESTS, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the re-hash next time


def _file_sha256(path: Path) -> str:
    """sha256 of a compiler binary, memoized by (path, size, mtime) in process and on disk."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    _load_digest_memo()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
        _save_digest_memo()
    return _FILE_DIGESTS[key]


def _identity(version_text: str, host: str, bin_dir: str) -> str:
    top = Path(bin_dir).parent
    parts = [version_text, host]
    for binary in (Path(bin_dir) / "nvcc", Path(bin_dir) / "ptxas", top / "nvvm" / "bin" / "cicc"):
        parts.append(f"{binary.name}={_file_sha256(binary)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _tool_error(searched: list[str], explicit: bool) -> AotcError:
    fix = (
        "fix the path in AOTC_NVCC (or the explicit setting) so it names an nvcc executable"
        if explicit
        else f"{PIP_INSTALL_BUILD} (brings nvcc, ptxas, headers and CUTLASS), "
        "or set AOTC_NVCC=/path/to/nvcc or CUDA_HOME=/path/to/cuda"
    )
    return AotcError(
        Diagnostic(
            "AOTC-TOOL-001",
            "no usable CUDA toolchain; searched: " + "; ".join(searched),
            fix=fix,
            details={"searched": searched},
        )
    )


_TOOLCHAINS: dict[str | None, Toolchain] = {}


def find_toolchain(explicit: str | None = None) -> Toolchain:
    """First working nvcc in order: explicit argument / AOTC_NVCC, CUDA_HOME (or CUDA_PATH), pip
    wheels, PATH.

    An explicit setting that does not work is an error (no silent fallback). Memoized per process.
    """
    env = "|".join(os.environ.get(v, "") for v in ("AOTC_NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"))
    memo_key = explicit if explicit is not None else f"env:{env}"
    if memo_key in _TOOLCHAINS:
        return _TOOLCHAINS[memo_key]
    searched: list[str] = []
    candidates = _candidates(explicit, searched)
    for nvcc, source in candidates:
        probed = _probe_nvcc(nvcc)
        if isinstance(probed, str):
            searched.append(f"{source}: {probed}")
            continue
        version_text, bin_dir = probed
        release = re.search(r"release (\d+\.\d+)", version_text)
        host = _host_compiler_version()
        tc = Toolchain(
            nvcc=nvcc,
            source=source,
            bin_dir=bin_dir,
            release=release.group(1) if release else "unknown",
            version_text=version_text,
            host_compiler=host,
            cuobjdump=_find_tool("cuobjdump", bin_dir),
            nvdisasm=_find_tool("nvdisasm", bin_dir),
            identity=_identity(version_text, host, bin_dir),
        )
        _TOOLCHAINS[memo_key] = tc
        return tc
    raise _tool_error(searched, explicit=bool(candidates) and candidates[0][1] == "explicit")


def _cutlass_source() -> Path:
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        raise AotcError(
            Diagnostic(
                "AOTC-TOOL-002",
                "CUTLASS headers not found: the nvidia-cutlass package (module cutlass_library) is not installed",
                fix=f"{PIP_INSTALL_BUILD} (installs nvidia-cutlass==4.2.0.0)",
            )
        )
    source = Path(next(iter(spec.submodule_search_locations))) / "source"
    if not (source / "include" / "cutlass" / "cutlass.h").is_file():
        raise AotcError(
            Diagnostic(
                "AOTC-TOOL-002",
                f"nvidia-cutlass is installed but ships no C++ headers under {source}/include",
                fix="reinstall it: pip install --force-reinstall nvidia-cutlass==4.2.0.0",
            )
        )
    return source


def cutlass_include_dirs() -> list[str]:
    """-I directories for CUTLASS/CuTe from the pip nvidia-cutlass package."""
    source = _cutlass_source()
    return [str(source / "include"), str(source / "tools" / "util" / "include")]


def cutlass_version() -> str:
    """CUTLASS version of the headers that compile (from cutlass/version.h), e.g. "4.2.0"."""
    text = (_cutlass_source() / "include" / "cutlass" / "version.h").read_text()
    parts = [re.search(rf"#define CUTLASS_{p}\s+(\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "?" for m in parts)


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields:
                    info[key] = int(fields[0]) * (1024 if len(fields) > 1 else 1)
    except OSError:
        pass
    return info


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _max_jobs_env() -> int:
    text = os.environ["MAX_JOBS"].strip()
    if not text.isdigit() or int(text) < 1:
        raise AotcError(Diagnostic("AOTC-TOOL-003", f"MAX_JOBS={text[:40]!r} is not a positive whole number",
                                   fix="set MAX_JOBS to the number of parallel compiles (e.g. MAX_JOBS=4), or unset it"))
    return int(text)


@dataclass(frozen=True)
class JobPlan:
    jobs: int
    cores: int
    mem_available_bytes: int | None
    mem_per_job_bytes: int
    reason: str  # what capped the number, in words with the numbers


def plan_parallel_jobs(requested: int | None, mem_per_job_bytes: int) -> JobPlan:
    """How many nvcc processes to run at once: min(requested, cores, MemAvailable // per job), >= 1.
    Without an explicit request, MAX_JOBS (the variable torch and FlashInfer builds honour) is one."""
    requested_by = "requested"
    if requested is None and os.environ.get("MAX_JOBS", "").strip():
        requested, requested_by = _max_jobs_env(), "MAX_JOBS"
    cores = _cores()
    avail = _meminfo().get("MemAvailable")
    by_mem = max(1, avail // mem_per_job_bytes) if avail is not None and mem_per_job_bytes > 0 else None
    limits = {"cores": cores}
    if requested is not None:
        limits[requested_by] = max(1, requested)
    if by_mem is not None:
        limits["memory"] = by_mem
    jobs = min(limits.values())
    gib = 1024**3
    mem_text = (
        f"{avail / gib:.1f} GiB available / {mem_per_job_bytes / gib:.1f} GiB per job = {by_mem}"
        if by_mem is not None
        else "available memory unknown"
    )
    binding = [name for name, v in limits.items() if v == jobs]
    reason = f"{jobs} job(s), limited by {' and '.join(binding)} ({cores} cores; {mem_text}"
    reason += f"; {requested_by} {requested})" if requested is not None else ")"
    return JobPlan(jobs, cores, avail, mem_per_job_bytes, reason)


def max_parallel_jobs(requested: int | None, mem_per_job_bytes: int = CUTLASS_TU_PEAK_RSS_BYTES) -> int:
    return plan_parallel_jobs(requested, mem_per_job_bytes).jobs


def _gpu_report() -> dict:
    """Driver and GPUs through cuda.bindings, if importable; no GPU is a normal answer."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        return {"available": False, "why": f"cuda.bindings not importable: {exc}"}
    try:
        (err,) = driver.cuInit(0)
    except (RuntimeError, OSError) as exc:  # cuda.bindings raises when libcuda.so is absent
        return {"available": False, "why": f"no NVIDIA driver: {exc}"}
    if err != driver.CUresult.CUDA_SUCCESS:
        return {"available": False, "why": f"cuInit failed: {err.name} (no NVIDIA driver or no GPU)"}
    err, version = driver.cuDriverGetVersion()
    err, count = driver.cuDeviceGetCount()
    devices = []
    attr = driver.CUdevice_attribute
    for i in range(count):
        _, dev = driver.cuDeviceGet(i)
        _, name = driver.cuDeviceGetName(64, dev)
        _, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        _, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        _, optin = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev)
        devices.append(
            {"name": name.split(b"\0")[0].decode(), "cc": f"{major}.{minor}", "smem_optin_bytes": optin}
        )
    return {"available": count > 0, "driver_version": version, "devices": devices}


def doctor(explicit: str | None = None) -> dict:
    """Everything `aotc doctor` shows: toolchain, tools, CUTLASS, host resources, GPU."""
    report: dict = {}
    try:
        tc = find_toolchain(explicit)
        report["toolchain"] = {k: v for k, v in tc.to_json().items() if k != "version_text"}
        missing = [n for n in ("cuobjdump", "nvdisasm") if getattr(tc, n) is None]
        if missing:
            report["toolchain"]["warning"] = (
                f"{' and '.join(missing)} not found: SASS verification cannot run; "
                "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"
            )
    except AotcError as exc:
        report["toolchain"] = {"error": [d.to_json() for d in exc.diagnostics]}
    try:
        report["cutlass"] = {"version": cutlass_version(), "include_dirs": cutlass_include_dirs()}
    except AotcError as exc:
        report["cutlass"] = {"error": [d.to_json() for d in exc.diagnostics]}
    mem = _meminfo()
    plan = plan_parallel_jobs(None, CUTLASS_TU_PEAK_RSS_BYTES)
    report["host"] = {
        "cores": plan.cores,
        "mem_total_bytes": mem.get("MemTotal"),
        "mem_available_bytes": mem.get("MemAvailable"),
        "max_parallel_jobs": plan.jobs,
        "jobs_reason": plan.reason,
    }
    report["gpu"] = _gpu_report()
    return report

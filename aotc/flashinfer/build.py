"""Build FlashInfer's own modules ahead of time into the aotc cache: a worker process per arch
writes FlashInfer's build.ninja for every preset module; here each module is keyed by content
(sources, flags, toolchain, headers read), compiled with ninja on aotc's toolchain, every embedded
cubin verified like aotc's own kernels (target, tcgen05/wgmma scan, SMEM), and the .so stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arch import ARCHES, Arch, get_arch
from ..build import BUILT, FAILED, HIT, BuildSummary
from ..cache import Cache, file_sha256
from ..diagnostics import AotcError, Diagnostic
from ..elf import cubin_target
from ..keys import action_inputs, action_key, canonical_json, prekey, sha256_hex
from ..toolchain import Toolchain, find_toolchain, max_parallel_jobs
from ..verify import verify_cubin
from .index import FAMILY, SO_BLOB, flashinfer_arch_list, module_key
from .presets import DEFAULT_PRESETS, load_preset

# Peak RSS of one FlashInfer CUTLASS TU is of the order of aotc's own (docs/flashinfer.md).
MEM_PER_JOB_BYTES = 3 * 1024**3
WORKER_TIMEOUT_S = 1800  # generator calls only; fused MoE's generator writes ~100 sources
_DRIVER_SYMBOL = re.compile(r"cu[A-Z]\w*")


@dataclass
class ModuleResult:
    preset: str
    call: str
    arch: str
    module: str = ""
    status: str = FAILED
    key: str = ""
    seconds: float = 0.0
    so_bytes: int = 0
    cubins: int = 0
    diagnostics: list[Diagnostic] = field(default_factory=list)
    log_path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "call": self.call, "arch": self.arch, "module": self.module,
                "status": self.status, "key": self.key, "seconds": round(self.seconds, 3),
                "so_bytes": self.so_bytes, "cubins": self.cubins, "log": self.log_path,
                "diagnostics": [d.to_json() for d in self.diagnostics]}


@dataclass
class FlashInferBuildSummary(BuildSummary):
    """aotc's build summary (counts, ok, json) plus the FlashInfer version the modules came from."""

    flashinfer_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "flashinfer_version": self.flashinfer_version}


def _diag(number: int, message: str, fix: str, module: str = "", **details: Any) -> Diagnostic:
    return Diagnostic(code=f"AOTC-FI-{number:03d}", message=message, spec=module, fix=fix, details=details)


# --- environment of FlashInfer's build ------------------------------------------------------------

def _cuda_home(tc: Toolchain) -> Path:
    return Path(tc.bin_dir).resolve().parent


def _find_cudart(cuda_home: Path) -> Path | None:
    for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
        for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
            if (cuda_home / sub / name).exists():
                return cuda_home / sub / name
    return None


def _link_dir(ws: Path, tc: Toolchain) -> Path:
    """-L folder with what FlashInfer's `-lcudart -lcuda` need where the toolkit lacks it: the pip
    toolkit has only libcudart.so.13, and a machine without a driver has no libcuda stub."""
    d = ws / "link"
    d.mkdir(parents=True, exist_ok=True)
    cudart = _find_cudart(_cuda_home(tc))
    if cudart is None:
        raise AotcError(_diag(2, f"no libcudart in the CUDA toolkit at {_cuda_home(tc)} (looked in lib64/ and lib/)",
                              "pip install nvidia-cuda-runtime, or point AOTC_NVCC at a full CUDA toolkit"))
    (d / "libcudart.so").symlink_to(cudart)
    return d


def _write_cuda_stub(link_dir: Path, objects: list[Path]) -> None:
    """libcuda.so for the link: a linker script naming a stub (soname libcuda.so.1) that defines the
    driver symbols the objects use, AS_NEEDED so modules that use no driver call do not depend on
    libcuda (they then load on machines without a driver, as FlashInfer's JIT modules cannot)."""
    used: set[str] = set()
    for obj in objects:
        out = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=False).stdout
        used |= {parts[-1] for line in out.splitlines() if (parts := line.split())
                 and _DRIVER_SYMBOL.fullmatch(parts[-1])}
    stub_c = link_dir / "cuda_stub.c"
    stub_c.write_text("".join(f"void {s}(void) {{}}\n" for s in sorted(used)) or "int aotc_cuda_stub;\n")
    stub = link_dir / "libcuda_stub.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub), str(stub_c)],
                   check=True, capture_output=True)
    (link_dir / "libcuda.so").write_text(f"INPUT ( AS_NEEDED ( {stub} ) )\n")


def _worker_env(ws: Path, arch: Arch, tc: Toolchain, link_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("FLASHINFER_EXTRA_CFLAGS", "FLASHINFER_EXTRA_CUDAFLAGS", "FLASHINFER_JIT_DEBUG",
                "FLASHINFER_JIT_VERBOSE", "FLASHINFER_JIT_LINEINFO", "FLASHINFER_NVCC_LAUNCHER",
                "FLASHINFER_CXX_LAUNCHER", "FLASHINFER_DISABLE_JIT"):
        env.pop(var, None)  # a user's debug/launcher settings must not leak into stored modules
    env |= {
        "FLASHINFER_CUDA_ARCH_LIST": flashinfer_arch_list(arch.name),
        "FLASHINFER_WORKSPACE_BASE": str(ws),
        "CUDA_HOME": str(_cuda_home(tc)),
        "CUDA_PATH": str(_cuda_home(tc)),  # fmha_v2's generator compiles a traits printer with $CUDA_PATH/bin/nvcc
        "FLASHINFER_NVCC": tc.nvcc,
        "FLASHINFER_EXTRA_LDFLAGS": f"-L{link_dir}",
    }
    return env


def _run_worker(presets: list[str], arch: Arch, env: dict[str, str]) -> dict[str, Any]:
    request = json.dumps({"presets": presets, "arch": arch.name})
    proc = subprocess.run([sys.executable, "-m", "aotc.flashinfer.worker"], input=request, env=env,
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AotcError(_diag(3, f"FlashInfer could not generate the modules of presets {presets} for {arch.name} "
                              f"(worker exit {proc.returncode}): {proc.stderr.strip()[-1500:]}",
                              "check that flashinfer-python is installed (pip install 'aotc[flashinfer]') and "
                              "that `python -c 'import flashinfer'` works"))
    return json.loads(lines[-1])


# --- keys -----------------------------------------------------------------------------------------

class Portable:
    """Absolute prefixes -> role tags, so keys do not depend on where things are installed."""

    def __init__(self, roots: dict[str, str]):
        pairs = [(tag, path) for tag, path in roots.items() if path and path.startswith("/")]
        self.pairs = sorted(pairs, key=lambda p: -len(p[1]))

    def __call__(self, text: str) -> str:
        for tag, path in self.pairs:
            text = text.replace(path, tag)
        return text

    def real(self, text: str) -> str:
        """Inverse for one path: the tagged role -> where it is in this build."""
        for tag, path in self.pairs:
            if text.startswith(tag):
                return path + text[len(tag):]
        return text


def _ninja_inputs(ninja_text: str) -> list[str]:
    """Explicit and implicit inputs of every build line that no other build line produces."""
    outputs, inputs = set(), []
    for line in ninja_text.splitlines():
        if not line.startswith("build "):
            continue
        outs, _, rest = line[len("build "):].partition(":")
        outputs |= set(outs.split())
        parts = rest.split()[1:]
        inputs += [p for p in parts if p not in ("|", "||")]
    return [p for p in dict.fromkeys(inputs) if p not in outputs]


def _ninja_objects(ninja_text: str, library: str) -> list[str]:
    """Every build output except the linked module: the objects (and embedded-cubin objects)."""
    outs = [line[len("build "):].partition(":")[0].split() for line in ninja_text.splitlines()
            if line.startswith("build ")]
    return [o for group in outs for o in group if o != library]


def _hash_files(paths: list[str], portable: Portable) -> dict[str, str]:
    digests = {}
    for p in paths:
        digests[portable(p)] = sha256_hex(Path(p).read_bytes())
    return dict(sorted(digests.items()))


def _ninja_deps(ninja: str, entry: dict[str, Any]) -> list[str]:
    """Every header the compile read, from ninja's deps log (depfiles with deps = gcc)."""
    out = subprocess.run([ninja, "-C", entry["build_dir"], "-f", entry["ninja"], "-t", "deps"],
                         capture_output=True, text=True, check=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.startswith("    ") and line.strip()})


# --- one module -----------------------------------------------------------------------------------

def _ninja_binary() -> str:
    try:
        import ninja  # the pip package FlashInfer depends on

        return str(Path(ninja.BIN_DIR) / "ninja")
    except (ImportError, AttributeError):
        found = shutil.which("ninja")
        if found is None:
            raise AotcError(_diag(4, "ninja was not found", "pip install ninja")) from None
        return found


def _run_ninja(ninja: str, entry: dict[str, Any], jobs: int, targets: list[str], env: dict[str, str]) -> str:
    cmd = [ninja, "-v", "-C", entry["build_dir"], "-f", entry["ninja"], "-j", str(jobs), *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    log = f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    if proc.returncode != 0:
        raise _BuildFailed(log)
    return log


class _BuildFailed(Exception):
    def __init__(self, log: str):
        super().__init__("ninja failed")
        self.log = log


def needed_libraries(so: Path) -> list[str]:
    """DT_NEEDED sonames of the module (the runtime hook preloads libcudart from pip wheels by them)."""
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=False).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def extract_cubins(so: Path, tc: Toolchain) -> list[bytes]:
    """Every ELF (cubin) embedded in the module's fatbins, via `cuobjdump -xelf all`."""
    if not tc.cuobjdump:
        raise AotcError(_diag(5, "cuobjdump was not found: the embedded cubins cannot be verified",
                              "pip install nvidia-cuda-cuobjdump (part of aotc[build])"))
    with tempfile.TemporaryDirectory(prefix="aotc-fi-xelf-") as tmp:
        proc = subprocess.run([tc.cuobjdump, "-xelf", "all", str(so)], cwd=tmp, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0 and "does not contain" not in proc.stderr + proc.stdout:
            raise AotcError(_diag(5, f"cuobjdump -xelf all {so.name} failed (exit {proc.returncode}): "
                                  f"{(proc.stderr or proc.stdout).strip()[:400]}",
                                  "check the toolchain with `aotc doctor`"))
        return [p.read_bytes() for p in sorted(Path(tmp).glob("*.cubin"))]


def verify_module_cubins(cubins: list[bytes], arch: Arch, tc: Toolchain, module: str
                         ) -> tuple[list[dict], list[Diagnostic]]:
    """verify_cubin on every cubin, against the arch the cubin was built for (an sm120f cubin in an
    sm120a build is legal: it runs on the same devices); a cubin the target cannot run is an error."""
    records, diags = [], []
    for data in cubins:
        sm, variant = cubin_target(data)
        # An f build without a ptxas note reads as plain; it runs where the f target runs.
        cubin_arch = ARCHES.get(f"sm{sm}{variant}") or (ARCHES.get(f"sm{sm}f") if not variant else None)
        device_cc = (arch.sm // 10, arch.sm % 10)
        if cubin_arch is None or not cubin_arch.runs_on(device_cc):
            diags.append(_diag(6, f"module {module} embeds a cubin for sm_{sm}{variant}, which {arch.name} devices "
                               "cannot run", f"build it for sm{sm}{variant} instead, or fix the module's -gencode",
                               module, cubin_target=f"sm_{sm}{variant}", arch=arch.name))
            continue
        report = verify_cubin(data, cubin_arch, None, tc, smem_budget=cubin_arch.smem_optin_bytes, smem_dynamic=0)
        records.append({"sha256": sha256_hex(data), "size": len(data), "target": f"sm_{sm}{variant}",
                        "ok": report.ok, "sass": {"mma": report.mma_counts, "banned": sorted(report.banned_found)},
                        "kernels": report.resources})
        diags += [Diagnostic(d.code, f"module {module}: {d.message}", module, d.file, d.fix, d.details)
                  for d in report.diagnostics]
    return records, diags


class ModuleBuilder:
    def __init__(self, cache: Cache, tc: Toolchain, arch: Arch, version: str, roots: dict[str, str],
                 env: dict[str, str], link_dir: Path, jobs: int, force: bool):
        self.cache, self.tc, self.arch, self.version = cache, tc, arch, version
        self.portable = Portable(roots)
        self.env, self.link_dir, self.jobs, self.force = env, link_dir, jobs, force
        self.ninja = _ninja_binary()

    def plan(self, entry: dict[str, Any]) -> tuple[str, str, list[str]]:
        """(described sources, prekey, portable flags): everything known before compiling."""
        text = Path(entry["ninja"]).read_text()
        flags = [self.portable(line) for line in text.splitlines() if line.strip()]
        source = canonical_json({"module": entry["name"], "flashinfer_version": self.version,
                                 "inputs": _hash_files(_ninja_inputs(text), self.portable)})
        return source, prekey(source, self.tc.identity, flags, self.arch.name), flags

    def build(self, entry: dict[str, Any], result: ModuleResult) -> None:
        source, pre, flags = self.plan(entry)
        # Recorded header paths are portable; check them where they are in this build.
        key = None if self.force else self.cache.lookup_prekey(pre, lambda p: file_sha256(self.portable.real(p)))
        if key is not None:
            manifest = self.cache.get_manifest(key)
            if manifest is not None:
                self._ref(entry["name"], key)
                result.status, result.key = HIT, key
                result.so_bytes = manifest["blobs"][SO_BLOB]["size"]
                result.cubins = len(manifest.get("cubins", []))
                return
        started = time.perf_counter()
        objects = _ninja_objects(Path(entry["ninja"]).read_text(), entry["library"])
        try:
            log = _run_ninja(self.ninja, entry, self.jobs, objects, self.env)
            _write_cuda_stub(self.link_dir, [Path(o) for o in objects])
            log += _run_ninja(self.ninja, entry, self.jobs, [], self.env)
        except _BuildFailed as failed:
            path = self.cache.write_log(pre, failed.log)
            result.log_path = str(path)
            tail = "\n".join([ln[:400] for ln in failed.log.strip().splitlines() if not ln.startswith("$ ")][-15:])
            result.diagnostics.append(_diag(7, f"compiling FlashInfer module {entry['name']} for {self.arch.name} "
                                            f"failed:\n{tail}", f"read the full log: {path}", entry["name"]))
            return
        compile_s = time.perf_counter() - started
        headers = _hash_files([p for p in _ninja_deps(self.ninja, entry) if os.path.isfile(p)], self.portable)
        inputs = action_inputs(source, self.tc.identity, flags, self.arch.name, headers)
        key = action_key(inputs)
        so = Path(entry["library"])
        so_bytes = so.read_bytes()
        cubins, diags = verify_module_cubins(extract_cubins(so, self.tc), self.arch, self.tc, entry["name"])
        self.cache.write_log(key, log)
        result.key, result.so_bytes, result.cubins = key, len(so_bytes), len(cubins)
        if diags:
            result.diagnostics += diags
            return
        self.cache.put_entry(key, {SO_BLOB: so_bytes}, self._manifest(entry, key, inputs, flags, cubins, compile_s))
        self.cache.record_prekey(pre, headers, key)
        self._ref(entry["name"], key)
        result.status = BUILT

    def _ref(self, module: str, key: str) -> None:
        self.cache.set_ref(module_key(module, self.version, self.arch.name), key,
                           {"family": FAMILY, "name": module, "arch": self.arch.name,
                            "params": {"module": module, "flashinfer_version": self.version}})

    def _manifest(self, entry: dict[str, Any], key: str, inputs: dict, flags: list[str], cubins: list[dict],
                  compile_s: float) -> dict[str, Any]:
        return {
            "spec_key": module_key(entry["name"], self.version, self.arch.name),
            "name": entry["name"], "family": FAMILY, "arch": self.arch.name,
            "params": {"module": entry["name"], "flashinfer_version": self.version},
            "target": {"sm": self.arch.sm, "variant": self.arch.variant},
            "entry": "", "cubins": cubins, "needed": needed_libraries(Path(entry["library"])),
            "toolchain": {"identity": self.tc.identity, "nvcc_version": self.tc.release, "source": self.tc.source},
            "flashinfer_version": self.version, "inputs": inputs, "flags": flags,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "compile_seconds": round(compile_s, 3),
            "spec_file": f"flashinfer_presets/{entry['preset']}.toml",
        }


def store_artifacts(paths: list[str | os.PathLike[str]], cache: Cache | None = None) -> dict[str, str]:
    """Put FlashInfer cubin-loader artifacts (cubins, headers, checksums from its cubin directory)
    into the blob store; the hook serves them by the sha256 FlashInfer asks for. Returns name -> sha256."""
    cache = cache or Cache()
    stored = {}
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            stored[str(f.relative_to(p) if p.is_dir() else f.name)] = cache.store.put(f.read_bytes())
    return stored


# --- entry point ----------------------------------------------------------------------------------

def _build_arch(presets: list[str], arch: Arch, cache: Cache, tc: Toolchain, jobs: int, force: bool,
                results: list[ModuleResult]) -> str:
    cache.tmp_dir.mkdir(parents=True, exist_ok=True)
    ws = Path(tempfile.mkdtemp(prefix="flashinfer-build-", dir=cache.tmp_dir)).resolve()
    try:
        link_dir = _link_dir(ws, tc)
        env = _worker_env(ws, arch, tc, link_dir)
        generated = _run_worker(presets, arch, env)
        version = generated["flashinfer_version"]
        builder = ModuleBuilder(cache, tc, arch, version, generated["roots"], env, link_dir, jobs, force)
        for entry in generated["modules"]:
            result = ModuleResult(entry["preset"], entry["call"], arch.name, entry.get("name", ""))
            started = time.perf_counter()
            if "error" in entry:
                result.diagnostics.append(_diag(8, f"FlashInfer's generator {entry['call']} failed for {arch.name}: "
                                                f"{entry['error']}", "fix or remove this entry of the preset",
                                                entry.get("name", "")))
            else:
                builder.build(entry, result)
            result.seconds = time.perf_counter() - started
            results.append(result)
        return version
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def format_summary(summary: FlashInferBuildSummary, cache: Cache) -> str:
    """Text report for the CLI: counts, then every failure with its diagnostics."""
    head = (f"FlashInfer {summary.flashinfer_version}: built {summary.count(BUILT)}, cache hits "
            f"{summary.count(HIT)}, failed {summary.count(FAILED)} in {summary.seconds:.1f}s with "
            f"{summary.jobs} jobs; cache: {cache.root}")
    lines = [head]
    for r in summary.results:
        if r.status == FAILED:
            lines.append(f"FAILED {r.module or r.call} ({r.arch}, preset {r.preset})"
                         + (f": log {r.log_path}" if r.log_path else ""))
            lines.extend("  " + d.format().replace("\n", "\n  ") for d in r.diagnostics)
    return "\n".join(lines)


def build_modules(preset_names: list[str], archs: list[str] | None, cache: Cache | None = None,
                  jobs: int | None = None, *, toolchain: Toolchain | None = None,
                  force: bool = False) -> FlashInferBuildSummary:
    """Build every module of the presets for every arch into `cache`; see docs/flashinfer.md.

    archs=None uses each preset's own `archs`; no preset names = DEFAULT_PRESETS. One failing module
    never stops the others.
    """
    started = time.perf_counter()
    preset_names = list(preset_names) or list(DEFAULT_PRESETS)
    cache = cache or Cache()
    tc = toolchain or find_toolchain()
    for name in preset_names:
        load_preset(name)  # a bad preset fails before anything compiles
    n_jobs = max_parallel_jobs(jobs, MEM_PER_JOB_BYTES)
    plan: dict[str, list[str]] = {}
    for name in preset_names:
        for a in archs or list(load_preset(name).archs) or ["sm120a"]:
            plan.setdefault(get_arch(a).name, []).append(name)
    results: list[ModuleResult] = []
    version = ""
    for arch_name, names in plan.items():
        version = _build_arch(names, ARCHES[arch_name], cache, tc, n_jobs, force, results)
    return FlashInferBuildSummary(results, time.perf_counter() - started, n_jobs, flashinfer_version=version)

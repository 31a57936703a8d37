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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aotc.arch import ARCHES, Arch, get_arch
from aotc.build import store_step
from aotc.build.direct_mode import HeaderSnapshot, lookup_prekey
from aotc.build.flashinfer import ninja, smem_probe
from aotc.build.flashinfer.workspaces import lock_workspace, workspace_dir
from aotc.build.path_roles import PathRoles
from aotc.build.pipeline import BUILT, FAILED, HIT, BuildSummary
from aotc.build.progress import Progress
from aotc.build.toolchain import Toolchain, find_toolchain, max_parallel_jobs
from aotc.build.verify import verify_cubin
from aotc.cache import Cache
from aotc.cache.manifest import Manifest
from aotc.diagnostics import AotcError, Diagnostic
from aotc.elf import cubin_target, kernel_symbols
from aotc.flashinfer.index import FAMILY, SO_BLOB, flashinfer_arch_list, module_key
from aotc.flashinfer.presets import DEFAULT_PRESETS, load_preset
from aotc.keys import canonical_json, prekey, sha256_file, sha256_hex

if TYPE_CHECKING:
    from aotc.build.executor_ray import RayExecutor

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
    seconds: float = 0.0  # this module's own steps: cache lookup, or verify + store
    compile_seconds: float = 0.0  # summed compile and link command times of its translation units
    smem_probe: dict[str, Any] = field(default_factory=dict)  # dynamic SMEM of its CUTLASS kernels
    so_bytes: int = 0
    cubins: int = 0
    diagnostics: list[Diagnostic] = field(default_factory=list)
    log_path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "call": self.call, "arch": self.arch, "module": self.module,
                "status": self.status, "key": self.key, "seconds": round(self.seconds, 3),
                "compile_seconds": round(self.compile_seconds, 3), "smem_probe": self.smem_probe,
                "so_bytes": self.so_bytes, "cubins": self.cubins, "log": self.log_path,
                "diagnostics": [d.to_json() for d in self.diagnostics]}


@dataclass
class FlashInferBuildSummary(BuildSummary):
    """aotc's build summary (counts, ok, json) plus the FlashInfer version the modules came from."""

    flashinfer_version: str = ""
    kept_workspaces: list[str] = field(default_factory=list)  # resumable builds of archs with a failure

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "flashinfer_version": self.flashinfer_version,
                "kept_workspaces": self.kept_workspaces}


def _diag(number: int, message: str, fix: str, module: str = "", **details: Any) -> Diagnostic:
    return Diagnostic(code=f"AOTC-FI-{number:03d}", message=message, spec=module, fix=fix, details=details)


# --- environment of FlashInfer's build ------------------------------------------------------------

def cuda_home(tc: Toolchain) -> Path:
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
    cudart = _find_cudart(cuda_home(tc))
    if cudart is None:
        raise AotcError(_diag(2, f"no libcudart in the CUDA toolkit at {cuda_home(tc)} (looked in lib64/ and lib/)",
                              "pip install nvidia-cuda-runtime, or point AOTC_NVCC at a full CUDA toolkit"))
    (d / "libcudart.so").unlink(missing_ok=True)  # a resumed workspace: the toolkit may have moved
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
        "CUDA_HOME": str(cuda_home(tc)),
        "CUDA_PATH": str(cuda_home(tc)),  # fmha_v2's generator compiles a traits printer with $CUDA_PATH/bin/nvcc
        "FLASHINFER_NVCC": tc.nvcc,
        "FLASHINFER_EXTRA_LDFLAGS": f"-L{link_dir}",
    }
    return env


def _run_worker(presets: list[str], arch: Arch, env: dict[str, str]) -> dict[str, Any]:
    request = json.dumps({"presets": presets, "arch": arch.name})
    proc = subprocess.run([sys.executable, "-m", "aotc.build.flashinfer.worker"], input=request, env=env,
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AotcError(_diag(3, f"FlashInfer could not generate the modules of presets {presets} for {arch.name} "
                              f"(worker exit {proc.returncode}): {proc.stderr.strip()[-1500:]}",
                              "check that flashinfer-python is installed (pip install 'aotc[flashinfer]') and "
                              "that `python -c 'import flashinfer'` works"))
    return json.loads(lines[-1])


# --- keys -----------------------------------------------------------------------------------------

def _hash_files(paths: list[str], roles: PathRoles, module: str = "") -> dict[str, str]:
    hashed = {}
    for p in paths:
        try:
            hashed[roles.portable(p)] = sha256_file(p)
        except OSError as exc:  # an incomplete FlashInfer install (its data/csrc sources stripped)
            raise AotcError(_diag(13, f"module {module or '?'}: FlashInfer's build lists the source {p}, which "
                                  f"cannot be read ({exc.strerror or exc})",
                                  "reinstall flashinfer-python with its JIT sources (pip install --force-reinstall "
                                  "'aotc[flashinfer]'); a FlashInfer without data/csrc can serve prebuilt modules "
                                  "but not build them", module, path=str(p))) from exc
    return dict(sorted(hashed.items()))


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


def verify_module_cubins(cubins: list[bytes], arch: Arch, tc: Toolchain, module: str, jobs: int = 1
                         ) -> tuple[list[dict], list[Diagnostic]]:
    """verify_cubin on every cubin, against the arch the cubin was built for (an sm120f cubin in an
    sm120a build is legal: it runs on the same devices); a cubin the target cannot run is an error.
    Cubins are verified `jobs` at a time: fused MoE embeds 90 cubins (5,000 kernels), whose
    disassembly took 5 minutes one at a time."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        verified = list(pool.map(lambda data: _verify_module_cubin(data, arch, tc, module), cubins))
    return [r for r, _ in verified if r is not None], [d for _, diags in verified for d in diags]


def _verify_module_cubin(data: bytes, arch: Arch, tc: Toolchain, module: str
                         ) -> tuple[dict | None, list[Diagnostic]]:
    sm, variant = cubin_target(data)
    # An f build without a ptxas note reads as plain; it runs where the f target runs.
    cubin_arch = ARCHES.get(f"sm{sm}{variant}") or (ARCHES.get(f"sm{sm}f") if not variant else None)
    device_cc = (arch.sm // 10, arch.sm % 10)
    if cubin_arch is None or not cubin_arch.runs_on(device_cc):
        return None, [_diag(6, f"module {module} embeds a cubin for sm_{sm}{variant}, which {arch.name} devices "
                            "cannot run", f"build it for sm{sm}{variant} instead, or fix the module's -gencode",
                            module, cubin_target=f"sm_{sm}{variant}", arch=arch.name)]
    report = verify_cubin(data, cubin_arch, None, tc, smem_budget=cubin_arch.smem_optin_bytes, smem_dynamic=0)
    record = {"sha256": sha256_hex(data), "size": len(data), "target": f"sm_{sm}{variant}",
              "ok": report.ok, "sass": {"mma": report.mma_counts, "banned": sorted(report.banned_found)},
              "kernels": report.resources}
    return record, [Diagnostic(d.code, f"module {module}: {d.message}", module, d.file, d.fix, d.details)
                    for d in report.diagnostics]


class ModuleBuilder:
    """Builds the modules one arch needs: cache hits first, then every missing module's translation
    units in one ninja run (one job pool for all of them), then the links, then verify and store."""

    def __init__(self, cache: Cache, tc: Toolchain, arch: Arch, version: str, roots: dict[str, str],
                 env: dict[str, str], link_dir: Path, workspace: ninja.Workspace, jobs: int, force: bool,
                 on_step: Callable[[int, int, str], None] | None = None):
        self.cache, self.tc, self.arch, self.version = cache, tc, arch, version
        self.roles = PathRoles(roots.items())
        self.headers = HeaderSnapshot(locate=self.roles.real)  # recorded paths are portable
        self.env, self.link_dir, self.workspace, self.jobs, self.force = env, link_dir, workspace, jobs, force
        self.on_step = on_step
        self._plans: dict[str, tuple[str, str, list[str]]] = {}

    def plan(self, entry: dict[str, Any]) -> tuple[str, str, list[str]]:
        """(described sources, prekey, portable flags): everything known before compiling. Hashed
        once per module (fused MoE has ~100 sources); lookup, failure logs and store reuse it."""
        if entry["name"] not in self._plans:
            self._plans[entry["name"]] = self._plan(entry)
        return self._plans[entry["name"]]

    def _plan(self, entry: dict[str, Any]) -> tuple[str, str, list[str]]:
        text = Path(entry["ninja"]).read_text()
        flags = [self.roles.portable(line) for line in text.splitlines() if line.strip()]
        source = canonical_json({"module": entry["name"], "flashinfer_version": self.version,
                                 "inputs": _hash_files(ninja.inputs(text), self.roles, entry["name"])})
        return source, prekey(source, self.tc.identity, flags, self.arch.name), flags

    def lookup(self, entry: dict[str, Any], result: ModuleResult) -> bool:
        """A stored module with the same sources, flags, toolchain and headers: a hit (True)."""
        started = time.perf_counter()
        _, pre, _ = self.plan(entry)
        key = None if self.force else lookup_prekey(self.cache, pre, self.headers)
        manifest = self.cache.get_manifest(key) if key is not None else None
        if manifest is None:
            return False
        self._ref(entry["name"], key)
        result.status, result.key = HIT, key
        result.so_bytes = manifest["blobs"][SO_BLOB]["size"]
        result.cubins = len(manifest.get("cubins", []))
        result.seconds = time.perf_counter() - started
        return True

    def build(self, todo: list[tuple[dict[str, Any], ModuleResult]]) -> None:
        """Compile, link, verify and store every module of `todo`; one module's failure only marks
        that module failed."""
        if not todo:
            return
        self.workspace.write([entry["ninja"] for entry, _ in todo])
        objs = {entry["name"]: ninja.objects(Path(entry["ninja"]).read_text(), entry["library"])
                for entry, _ in todo}
        compiled = self.workspace.run([o for entry, _ in todo for o in objs[entry["name"]]], self.jobs, self.env,
                                      self.on_step)
        todo = [(e, r) for e, r in todo if not self._failed(e, r, compiled, objs[e["name"]])]
        if not todo:  # ninja with no target would build every default, the failed modules' links too
            return
        _write_cuda_stub(self.link_dir, [Path(o) for entry, _ in todo for o in objs[entry["name"]]])
        linked = self.workspace.run([entry["library"] for entry, _ in todo], self.jobs, self.env, self.on_step)
        for entry, result in todo:
            if not self._failed(entry, result, linked, [entry["library"]]):
                log = "\n".join(ln for ln in f"{compiled.log}\n{linked.log}".splitlines() if entry["build_dir"] in ln)
                self._store(entry, result, objs[entry["name"]], log)

    def _failed(self, entry: dict[str, Any], result: ModuleResult, run: ninja.Run, outputs: list[str]) -> bool:
        """Did any of the module's outputs fail (or not appear)? Then record why, with a fix."""
        bad = [o for o in outputs if o in run.failures or not os.path.exists(o)]
        if not bad:
            return False
        text = run.failure_text(bad) or run.log[-20_000:]
        _, pre, _ = self.plan(entry)
        path = self.cache.write_log(pre, text)
        result.log_path = str(path)
        coded = [d for o in bad for d in run.diagnostics.get(o, [])]
        if coded:  # a Ray worker refused or lost: its own diagnostics say why
            result.diagnostics += list({d.message: d for d in coded}.values())
            return True
        tail = "\n".join([ln[:400] for ln in text.strip().splitlines() if not ln.startswith("$ ")][-15:])
        result.diagnostics.append(_diag(7, f"compiling FlashInfer module {entry['name']} for {self.arch.name} failed "
                                        f"({len(bad)} of {len(outputs)} outputs):\n{tail}",
                                        ninja.missing_header_fix(text) or f"read the full log: {path}",
                                        entry["name"]))
        return True

    def _store(self, entry: dict[str, Any], result: ModuleResult, objects: list[str], log: str) -> None:
        started = time.perf_counter()
        source, pre, flags = self.plan(entry)
        compile_s = self.workspace.seconds([*objects, entry["library"]])
        deps = self.workspace.deps(objects)
        so = Path(entry["library"])
        so_bytes = so.read_bytes()
        cubins, diags = verify_module_cubins(extract_cubins(so, self.tc), self.arch, self.tc, entry["name"],
                                            self.jobs)
        smem, smem_diags = self._probe_dynamic_smem(entry, objects, cubins)
        diags += smem_diags
        artifact = store_step.Artifact(self._manifest(entry, cubins, compile_s, smem, objects), {SO_BLOB: so_bytes}, source,
                                       flags, self.tc.identity, pre,
                                       _hash_files([p for p in deps if os.path.isfile(p)], self.roles), log)
        result.smem_probe = smem
        result.so_bytes, result.cubins, result.compile_seconds = len(so_bytes), len(cubins), compile_s
        if diags:
            result.key = artifact.key()
            self.cache.write_log(result.key, log)
            result.diagnostics += diags
        else:
            result.key = store_step.store(self.cache, artifact)
            result.status = BUILT
        result.seconds = time.perf_counter() - started

    def _probe_dynamic_smem(self, entry: dict[str, Any], objects: list[str], cubins: list[dict]
                            ) -> tuple[dict[str, Any], list[Diagnostic]]:
        """Dynamic SMEM of every CUTLASS kernel (`smem_probe.py`), written into the cubin records and
        checked with the static SMEM against the budget. A probe that cannot be built is reported in
        the manifest and on stderr, and does not fail the module: its kernels keep static-only checks."""
        names = [name for c in cubins for name in c["kernels"]]
        try:
            types = smem_probe.cutlass_kernel_types(names)
            if not types:
                return {"cutlass_kernels": 0}, []
            with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:  # cuobjdump and ninja processes
                defined = list(pool.map(self._object_kernels, [o for o in objects if o.endswith(".cuda.o")]))
            sizes = smem_probe.probe_by_source(types, defined, self.jobs)
            if not sizes:
                raise smem_probe.ProbeError("no compiled object of the module defines its CUTLASS kernels")
        except (smem_probe.ProbeError, subprocess.SubprocessError, OSError, AotcError) as exc:
            print(f"aotc: {entry['name']}: dynamic SMEM not probed: {exc}", file=sys.stderr)
            return {"cutlass_kernels": len(names), "probed": 0, "error": str(exc)[:2000]}, []
        diags = []
        for record in cubins:
            budget = self.arch.smem_optin_bytes
            for name, kernel in record["kernels"].items():
                if name not in sizes:
                    continue
                kernel["smem_dynamic"] = sizes[name]
                total = kernel["smem_static"] + sizes[name]
                if total > budget:
                    diags.append(_diag(12, f"module {entry['name']}: CUTLASS kernel {name[:120]}... asks for "
                                       f"{kernel['smem_static']} B static + {sizes[name]} B dynamic = {total} B of "
                                       f"shared memory at launch; {self.arch.name} allows {budget} B "
                                       f"({total - budget} B over): it would fail at initialize()",
                                       "drop this tile configuration from the module, or pick fewer stages",
                                       entry["name"], kernel=name, dynamic=sizes[name], budget=budget))
        return {"cutlass_kernels": len(types), "probed": len(sizes), "max_dynamic": max(sizes.values())}, diags

    def _object_kernels(self, obj: str) -> tuple[str, list[str]]:
        """An object's compile command and the kernels its embedded cubins define."""
        return self.workspace.command(obj), [n for c in extract_cubins(Path(obj), self.tc) for n in kernel_symbols(c)]

    def _ref(self, module: str, key: str) -> None:
        self.cache.set_ref(module_key(module, self.version, self.arch.name), key,
                           {"family": FAMILY, "name": module, "arch": self.arch.name,
                            "params": {"module": module, "flashinfer_version": self.version}})

    def _manifest(self, entry: dict[str, Any], cubins: list[dict], compile_s: float, smem: dict,
                  objects: list[str]) -> Manifest:
        _, _, flags = self.plan(entry)
        return Manifest(
            name=entry["name"], family=FAMILY, arch=self.arch.name,
            params={"module": entry["name"], "flashinfer_version": self.version},
            target={"sm": self.arch.sm, "variant": self.arch.variant},
            spec_key=module_key(entry["name"], self.version, self.arch.name), entry="", cubins=cubins,
            needed=needed_libraries(Path(entry["library"])),
            toolchain={"identity": self.tc.identity, "nvcc_version": self.tc.release, "source": self.tc.source},
            flashinfer_version=self.version, flags=flags,
            built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            compile_seconds=round(compile_s, 3), spec_file=f"flashinfer_presets/{entry['preset']}.toml",
            smem_probe=smem, peak_rss_bytes=self.workspace.peak_rss(objects) or None, steps=self._steps(objects))

    def _steps(self, objects: list[str]) -> dict[str, dict[str, Any]] | None:
        """Each compile step's time and measured peak memory, by object file name: what a Ray build
        declares per task the next time (aotc.build.executor_ray.recorded_peaks)."""
        seconds, peaks = self.workspace.step_seconds(objects), self.workspace.step_peaks(objects)
        steps: dict[str, dict[str, Any]] = {}
        for o in objects:
            step = steps.setdefault(os.path.basename(o), {})
            if o in seconds:
                step["seconds"] = round(seconds[o], 3)
            if o in peaks:  # two objects of one name: the larger peak
                step["peak_rss_bytes"] = max(step.get("peak_rss_bytes", 0), peaks[o])
        return {k: v for k, v in steps.items() if v} or None


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

def step_reporter(progress: Progress, arch: str, module_dirs: dict[str, str]) -> Callable[[int, int, str], None]:
    """ninja's on_step -> `[n/N] arch module: file (elapsed)` on the build's progress display (a
    fused-MoE build runs ~100 steps over many minutes)."""

    def on_step(n: int, total: int, output: str) -> None:
        module = next((name for d, name in module_dirs.items() if output.startswith(d.rstrip("/") + "/")), "")
        progress.event(f"{arch} {module}: {Path(output).name}", progress.elapsed(), done=n, total=total)

    return on_step


def _build_arch(presets: list[str], arch: Arch, cache: Cache, tc: Toolchain, jobs: int, force: bool,
                progress: bool, results: list[ModuleResult], executor: RayExecutor | None = None) -> tuple[str, str]:
    """Build one arch's modules; returns (FlashInfer version, the workspace if it was kept).

    The workspace (FlashInfer's generated sources and ninja's objects) is removed once every module
    is stored; after a failure or an interruption it stays, and the next build resumes from it."""
    ws = workspace_dir(cache, arch.name)
    ws.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_workspace(ws, arch.name)
    try:
        if force:
            shutil.rmtree(ws, ignore_errors=True)
        link_dir = _link_dir(ws, tc)
        env = _worker_env(ws, arch, tc, link_dir)
        generated = _run_worker(presets, arch, env)
        version = generated["flashinfer_version"]
        modules = generated["modules"]
        meter = Progress(enabled=progress, unit="step")
        on_step = step_reporter(meter, arch.name, {m["build_dir"]: m["name"] for m in modules if "build_dir" in m})
        if executor is None:
            workspace = ninja.Workspace(ws / "ninja")
        else:  # compile steps on the cluster, links here (aotc/build/flashinfer/remote.py)
            from aotc.build.flashinfer.remote import RayWorkspace

            workspace = RayWorkspace(ws / "ninja", executor, PathRoles(generated["roots"].items()), arch.name,
                                     {m["ninja"]: m["name"] for m in modules if "ninja" in m})
        builder = ModuleBuilder(cache, tc, arch, version, generated["roots"], env, link_dir, workspace, jobs, force,
                                on_step)
        arch_results, todo = [], []
        for entry in modules:
            result = ModuleResult(entry["preset"], entry["call"], arch.name, entry.get("name", ""))
            arch_results.append(result)
            if "error" in entry:
                result.diagnostics.append(_diag(8, f"FlashInfer's generator {entry['call']} failed for {arch.name}: "
                                                f"{entry['error']}", ninja.missing_header_fix(entry.get(
                                                    "traceback", "")) or "fix or remove this entry of the preset",
                                                entry.get("name", "")))
            else:
                try:
                    if not builder.lookup(entry, result):
                        todo.append((entry, result))
                except AotcError as exc:  # this module cannot be planned; the others still build
                    result.diagnostics.extend(exc.diagnostics)
        try:
            builder.build(todo)
        finally:
            meter.close()
        results += arch_results
        if all(r.status != FAILED for r in arch_results):
            shutil.rmtree(ws, ignore_errors=True)
            return version, ""
        return version, str(ws)
    finally:
        lock.release()


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
    for ws in summary.kept_workspaces:
        lines.append(f"kept {ws}: run the same command again to resume from the objects already compiled")
    return "\n".join(lines)


def build_modules(preset_names: list[str], archs: list[str] | None, cache: Cache | None = None,
                  jobs: int | None = None, *, toolchain: Toolchain | None = None,
                  force: bool = False, progress: bool = True, executor: RayExecutor | None = None
                  ) -> FlashInferBuildSummary:
    """Build every module of the presets for every arch into `cache`; see docs/flashinfer.md.

    archs=None uses each preset's own `archs`; no preset names = DEFAULT_PRESETS. One failing module
    never stops the others; the translation units of all modules an arch misses share one pool of
    `jobs` compilers. An interrupted or failed build keeps its workspace and resumes from it.
    With a Ray `executor`, every compile step is a task on the cluster instead (links, verification
    and storing stay here; aotc/build/flashinfer/remote.py); `jobs` then bounds only the local work.
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
    version, kept = "", []
    for arch_name, names in plan.items():
        version, ws = _build_arch(names, ARCHES[arch_name], cache, tc, n_jobs, force, progress, results, executor)
        kept += [ws] if ws else []
    return FlashInferBuildSummary(results, time.perf_counter() - started, executor.jobs if executor else n_jobs,
                                  flashinfer_version=version,
                                  kept_workspaces=kept)

"""Is aotc's build of a FlashInfer module FlashInfer's build? One preset call built both ways
(`aotc build --flashinfer` into a cache; FlashInfer's own JIT, `own_jit`), then every embedded
cubin compared (`aotc.build.sass_compare`): byte-identical, normalised-equal or different.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aotc.arch import Arch
from aotc.build.flashinfer import own_jit
from aotc.build.flashinfer.module_build import build_modules
from aotc.build.sass_compare import compare_libraries
from aotc.build.toolchain import Toolchain
from aotc.cache import Cache
from aotc.diagnostics import AotcError, Diagnostic
from aotc.flashinfer.index import SO_BLOB
from aotc.flashinfer.presets import ModuleCall

_RDC = re.compile(r"(?:-rdc|--relocatable-device-code)[= ](?:true|1)\b")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:120]


def aotc_library(preset: Path, arch: Arch, cache: Cache, tc: Toolchain, jobs: int, out: Path) -> dict[str, Any]:
    """Build the preset's one module with aotc and write the stored .so (from the cache) to `out`."""
    started = time.perf_counter()
    summary = build_modules([str(preset)], [arch.name], cache, jobs, toolchain=tc, progress=False)
    result = summary.results[0]
    entry: dict[str, Any] = {"name": result.module, "status": result.status,
                             "compile_seconds": result.compile_seconds,
                             "seconds": round(time.perf_counter() - started, 1)}
    if not summary.ok:
        entry["error"] = "; ".join(d.message[:800] for d in result.diagnostics)
        return entry
    manifest = cache.get_manifest(result.key)
    assert manifest is not None
    out.write_bytes(cache.read_blob(manifest["blobs"][SO_BLOB]["sha256"]))
    entry["library"] = str(out)
    return entry


def compare_call(call: ModuleCall, arch: Arch, work: Path, tc: Toolchain, jobs: int = 1,
                 sides: tuple[str, ...] = ("aotc", "flashinfer")) -> dict[str, Any]:
    """Build one generator call both ways under `work` and compare their cubins. `sides` builds only
    one way (two processes can then build both ways at once; each resumes where an interrupted run
    stopped: aotc's cache workspace and FlashInfer's ninja workspace are both kept under `work`)."""
    work = work / _slug(call.describe().split(":")[-1])
    work.mkdir(parents=True, exist_ok=True)
    preset = own_jit.write_single_call_preset(call, work / "module.toml")
    record: dict[str, Any] = {"preset": call.preset, "call": call.describe(), "arch": arch.name}
    if "aotc" in sides:
        record["aotc"] = aotc_library(preset, arch, Cache(work / "cache"), tc, jobs, work / "aotc.so")
    if "flashinfer" in sides:
        record["flashinfer"] = own_jit.build([str(preset)], arch, work / "flashinfer", tc, jobs)[0]
    record["module"] = record.get("aotc", {}).get("name") or record.get("flashinfer", {}).get("name", "")
    if "library" in record.get("aotc", {}) and "library" in record.get("flashinfer", {}):
        record["comparison"] = compare_libraries(record["flashinfer"]["library"], record["aotc"]["library"],
                                                 tc, jobs).to_json()
    return record


def completed_objects(root: Path) -> dict[str, Path]:
    """Object files ninja finished under `root` (each workspace's .ninja_log names a step's outputs
    once it succeeded; a compile stopped midway is not there), by file name."""
    done: dict[str, Path] = {}
    for log in root.rglob(".ninja_log"):
        for line in log.read_text(errors="replace").splitlines():
            fields = line.split("\t")
            if line.startswith("#") or len(fields) < 4 or not fields[3].endswith(".o"):
                continue
            path = Path(fields[3]) if Path(fields[3]).is_absolute() else log.parent / fields[3]
            if path.is_file():
                done[path.name] = path
    return done


def object_targets(root: Path) -> set[str]:
    """Every object a module's ninja files under `root` declare (what a whole build compiles).
    Refuses relocatable device code: its library holds device-linked cubins, not its objects'."""
    names: set[str] = set()
    for build_file in root.rglob("build.ninja"):
        text = build_file.read_text(errors="replace")
        if _RDC.search(text):
            raise AotcError(Diagnostic(
                "AOTC-SASS-002", f"{build_file.parent.name} compiles relocatable device code (-rdc): its library's "
                "cubins come from a device link, so its objects cannot stand in for it",
                fix="build both ways to the end and compare the libraries (--side both)"))
        for line in text.splitlines():
            if line.startswith("build ") and ":" in line:
                out = line[len("build "):line.index(":")].strip()
                if out.endswith(".o"):
                    names.add(Path(out).name)
    return names


def compare_objects(call: ModuleCall, work: Path, tc: Toolchain, known: dict[str, Any] | None = None,
                    jobs: int = 1) -> dict[str, Any]:
    """One generator call's translation units compared object by object, for builds stopped before
    they linked: each object both sides completed, every cubin in it (a module's library embeds
    exactly its objects' cubins: whole-program device code, no device link). Objects in `known`
    (name -> earlier result) are kept, not compared again. Objects holding no cubin (host code) are
    counted, not compared."""
    work = work / _slug(call.describe().split(":")[-1])
    aotc_root, fi_root = work / "cache", work / "flashinfer"
    results = dict(known or {})
    a_done, b_done = completed_objects(fi_root), completed_objects(aotc_root)
    todo = sorted((a_done.keys() & b_done.keys()) - results.keys())
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # the work is in cuobjdump processes
        compared = pool.map(lambda name: compare_libraries(a_done[name], b_done[name], tc), todo)
        for name, comparison in zip(todo, compared, strict=True):
            if not comparison.cubins and not any(comparison.unmatched):
                results[name] = {"host_only": True}
            else:
                results[name] = {"equal": comparison.equal, "counts": comparison.counts(),
                                 "kernels": sum(c.kernels for c in comparison.cubins)}
    targets = object_targets(fi_root) | object_targets(aotc_root)
    return {"objects": results, "targets": len(targets),
            "not_compared": sorted(targets - results.keys())}

"""Is aotc's build of a FlashInfer module FlashInfer's build? One preset call built both ways
(`aotc build --flashinfer` into a cache; FlashInfer's own JIT, `own_jit`), then every embedded
cubin compared (`aotc.build.sass_compare`): byte-identical, normalised-equal or different.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from aotc.arch import Arch
from aotc.build.flashinfer import own_jit
from aotc.build.flashinfer.module_build import build_modules
from aotc.build.sass_compare import compare_libraries
from aotc.build.toolchain import Toolchain
from aotc.cache import Cache
from aotc.flashinfer.index import SO_BLOB
from aotc.flashinfer.presets import ModuleCall


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
                                                 tc).to_json()
    return record

"""FlashInfer integration: build FlashInfer's own modules ahead of time into the aotc cache
(`build_modules`, build side: nvcc, ninja) and serve them in place of FlashInfer's JIT (`install`,
runtime side). Names resolve lazily, so a serving process never imports the build side.
"""

from __future__ import annotations

from typing import Any

_RUNTIME = {"install", "uninstall", "installed", "status", "activate_from_env", "miss_diagnostic"}
_BUILD = {"build_modules", "format_summary", "store_artifacts", "FlashInferBuildSummary", "ModuleResult"}
__all__ = ["FlashInferBuildSummary", "ModuleResult", "activate_from_env", "build_modules", "format_summary", "install",
           "installed",
           "miss_diagnostic", "status", "store_artifacts", "uninstall"]


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from aotc.flashinfer import hook

        return getattr(hook, name)
    if name in _BUILD:
        from aotc.build.flashinfer import module_build as build

        return getattr(build, name)
    raise AttributeError(f"module 'aotc.flashinfer' has no attribute {name!r}")

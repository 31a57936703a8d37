"""Build-side worker, run as `python -m aotc.build.flashinfer.worker` in a fresh process per arch: FlashInfer
fixes its target archs and workspace paths at import time, so each arch gets its own process. It
runs the presets' generator calls and writes FlashInfer's own build.ninja for every module; it
compiles nothing. Input and output are JSON (stdin -> stdout).
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import traceback
from typing import Any

from aotc.flashinfer.presets import load_preset


def _roots() -> dict[str, str]:
    """Absolute prefixes that appear in build lines, by role (the build makes keys portable with them)."""
    import tvm_ffi
    from flashinfer.jit import env as jit_env
    from flashinfer.jit.cpp_ext import get_cuda_path

    return {
        "<ws>": os.environ["FLASHINFER_WORKSPACE_BASE"],
        "<flashinfer>": str(jit_env._package_root),
        "<tvm_ffi>": str(os.path.dirname(tvm_ffi.__file__)),
        "<cuda>": get_cuda_path(),
        "<python-include>": sysconfig.get_path("include"),
        "<python>": sys.executable,
    }


def _describe(spec: Any) -> dict[str, Any]:
    from flashinfer.jit.core import JitSpecNvcc

    if not isinstance(spec, JitSpecNvcc):
        return {"name": spec.name, "error": f"{type(spec).__name__} is not an nvcc module; aotc builds "
                "FlashInfer's nvcc (ninja) modules only"}
    spec.write_ninja()
    return {
        "name": spec.name,
        "ninja": str(spec.ninja_path),
        "build_dir": str(spec.build_dir),
        "library": str(spec.jit_library_path),
        "sources": [str(p.resolve()) for p in spec.sources],
        "needs_device_linking": bool(spec.needs_device_linking),
    }


def run(request: dict[str, Any]) -> dict[str, Any]:
    arch = request["arch"]
    modules = []
    for name in request["presets"]:
        preset = load_preset(name)
        for call in preset.calls:
            if call.archs and arch not in call.archs:
                continue
            entry: dict[str, Any] = {"preset": preset.name, "call": call.describe()}
            try:
                entry |= _describe(call.spec())
                if call.module and entry["name"] != call.module:
                    entry["error"] = (f"the preset says this call yields module {call.module!r}, but FlashInfer "
                                      f"named it {entry['name']!r}; correct `module` in the preset")
            except Exception as exc:  # noqa: BLE001 - one generator's failure must not stop the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["traceback"] = traceback.format_exc()
            modules.append(entry)
    import flashinfer

    return {"arch": arch, "flashinfer_version": flashinfer.__version__, "roots": _roots(), "modules": modules}


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = run(request)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

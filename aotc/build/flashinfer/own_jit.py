"""FlashInfer's own JIT build of preset modules, as a reference for aotc's builds: a fresh process
configured for one arch (FLASHINFER_CUDA_ARCH_LIST, CUDA_HOME = the toolkit aotc uses) runs each
generator and `JitSpec.build()` (FlashInfer's ninja file, flags and ninja run). No GPU is needed;
the link gets libcudart and an empty libcuda stub through FlashInfer's FLASHINFER_EXTRA_LDFLAGS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aotc.arch import Arch
from aotc.build.compile import sigterm_interrupts
from aotc.build.flashinfer.ninja import stop_group
from aotc.build.toolchain import Toolchain
from aotc.diagnostics import AotcError, Diagnostic
from aotc.flashinfer.index import flashinfer_arch_list
from aotc.flashinfer.presets import ModuleCall, load_preset

# Every FlashInfer variable that changes what its JIT compiles or how: a reference build uses none.
_FLASHINFER_VARS = ("FLASHINFER_EXTRA_CFLAGS", "FLASHINFER_EXTRA_CUDAFLAGS", "FLASHINFER_JIT_DEBUG",
                    "FLASHINFER_JIT_VERBOSE", "FLASHINFER_JIT_LINEINFO", "FLASHINFER_NVCC_LAUNCHER",
                    "FLASHINFER_CXX_LAUNCHER", "FLASHINFER_DISABLE_JIT", "FLASHINFER_NVCC")
TIMEOUT_S = 4 * 3600


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_single_call_preset(call: ModuleCall, path: Path) -> Path:
    """A preset file holding exactly one generator call (one module), so aotc's build and
    FlashInfer's can be run on the same module alone."""
    args = ", ".join(f"{k} = {_toml_value(v)}" for k, v in call.args)
    lines = [f"description = {json.dumps('one module of preset ' + call.preset)}", "",
             "[[module]]", f"generator = {json.dumps(call.generator)}"]
    if args:
        lines.append(f"args = {{ {args} }}")
    if call.module:
        lines.append(f"module = {json.dumps(call.module)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _link_dir(root: Path, tc: Toolchain) -> Path:
    """-L folder for FlashInfer's `-lcudart -lcuda`: libcudart from the toolkit (the pip toolkit has
    only libcudart.so.13) and an empty libcuda.so (a shared library may keep undefined symbols)."""
    d = root / "link"
    d.mkdir(parents=True, exist_ok=True)
    cuda = Path(tc.bin_dir).resolve().parent
    cudart = next((p for sub in ("lib64", "lib", "targets/x86_64-linux/lib")
                   for p in sorted((cuda / sub).glob("libcudart.so*"))), None)
    if cudart is None:
        raise AotcError(Diagnostic("AOTC-FI-002", f"no libcudart in the CUDA toolkit at {cuda}",
                                   fix="pip install nvidia-cuda-runtime, or point AOTC_NVCC at a full toolkit"))
    (d / "libcudart.so").unlink(missing_ok=True)
    (d / "libcudart.so").symlink_to(cudart)
    (d / "empty.c").write_text("int flashinfer_reference_cuda_stub;\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(d / "libcuda.so"),
                    str(d / "empty.c")], check=True, capture_output=True)
    return d


def environment(root: Path, arch: Arch, tc: Toolchain, jobs: int) -> dict[str, str]:
    """What a user sets to make FlashInfer JIT-build for `arch` on a machine without that GPU."""
    env = {k: v for k, v in os.environ.items() if k not in _FLASHINFER_VARS}
    cuda = str(Path(tc.bin_dir).resolve().parent)
    env |= {"FLASHINFER_CUDA_ARCH_LIST": flashinfer_arch_list(arch.name),
            "FLASHINFER_WORKSPACE_BASE": str(root / "workspace"),
            "CUDA_HOME": cuda, "CUDA_PATH": cuda, "MAX_JOBS": str(jobs),
            "FLASHINFER_EXTRA_LDFLAGS": f"-L{_link_dir(root, tc)}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}  # FlashInfer runs `ninja`
    return env


def build(presets: list[str], arch: Arch, root: Path, tc: Toolchain, jobs: int = 1) -> list[dict[str, Any]]:
    """Build every module of the presets with FlashInfer's JIT under `root`. One entry per call:
    name, library (the .so), seconds, or error (FlashInfer's message)."""
    root = root.resolve()  # FlashInfer's workspace and ninja's -C must not depend on the cwd
    root.mkdir(parents=True, exist_ok=True)
    request = json.dumps({"presets": presets})
    # its own session: stopping this build (Ctrl-C, SIGTERM, the timeout) stops FlashInfer's ninja and
    # its compilers too, leaving ninja's workspace resumable, instead of orphaning them
    proc = subprocess.Popen([sys.executable, "-m", "aotc.build.flashinfer.own_jit"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(root, arch, tc, jobs), start_new_session=True)
    try:
        with sigterm_interrupts():
            stdout, stderr = proc.communicate(request, timeout=TIMEOUT_S)
    except BaseException:
        stop_group(proc)
        raise
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AotcError(Diagnostic("AOTC-FI-003", f"FlashInfer's JIT process failed (exit {proc.returncode}): "
                                   f"{stderr.strip()[-1500:]}",
                                   fix="check that `python -c 'import flashinfer'` works"))
    return json.loads(lines[-1])


def _child(request: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for name in request["presets"]:
        for call in load_preset(name).calls:
            entry: dict[str, Any] = {"preset": name, "call": call.describe()}
            started = time.perf_counter()
            try:
                spec = call.spec()
                entry["name"] = spec.name
                spec.build(verbose=True)
                entry["library"] = str(spec.jit_library_path)
            except Exception as exc:  # noqa: BLE001 - report each module's failure, build the others
                entry["error"] = f"{type(exc).__name__}: {str(exc)[-3000:]}"
            entry["seconds"] = round(time.perf_counter() - started, 1)
            results.append(entry)
    return results


if __name__ == "__main__":
    out = _child(json.loads(sys.stdin.read()))
    sys.stdout.write("\n" + json.dumps(out) + "\n")

"""nvcc outputs of the tests' tiny kernels, built once and read back by every later test process.

Only what nvcc writes is kept (a cubin, a shared library); what the tests check from it (packing,
`aotc wheel --check`, discovery) runs in every process. The mutation run of bench/mutation.py starts
one test process per mutant, each of which would otherwise compile the same kernels again.

A build is kept under a folder named by the digest of everything that decides its bytes: the
toolchain's identity (nvcc's version, host compiler, toolkit folder), the nvcc command or aotc's
flags for the arch, the source, and the code that runs nvcc (aotc/build/compile.py, this file). A
cold folder builds for real. Filled under a file lock, written to a temporary folder and renamed, so
processes running at once build it once and never read half of it. AOTC_TEST_BUILDS names the folder
(default: one per user under the system's temporary folder); AOTC_TEST_BUILDS=off builds every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from aotc.arch import get_arch
from aotc.build import compile as _compile
from aotc.build.compile import compile_source, flags
from aotc.build.toolchain import Toolchain

# Bump when what a kept folder holds changes shape.
LAYOUT = 1


def _root() -> Path | None:
    chosen = os.environ.get("AOTC_TEST_BUILDS", "")
    if chosen.lower() in ("off", "0", "no"):
        return None
    root = Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"aotc-test-builds-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:  # another user could plant outputs: build instead
        return None
    return root


def _digest(what: dict) -> str:
    code = [Path(_compile.__file__).read_bytes(), Path(__file__).read_bytes()]
    h = hashlib.sha256(json.dumps({"layout": LAYOUT, **what}, sort_keys=True).encode())
    for data in code:
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def built(what: dict, build: Callable[[Path], None], name: str) -> bytes:
    """The file `name` build(folder) writes for `what` (which must name everything that decides the
    outputs), built now if no earlier process kept it."""
    root = _root()
    if root is None:
        with tempfile.TemporaryDirectory(prefix="aotc-test-build-") as tmp:
            build(Path(tmp))
            return (Path(tmp) / name).read_bytes()
    final = root / _digest(what)
    with FileLock(str(final) + ".lock"):
        if not final.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=".filling-", dir=root))
            try:
                build(tmp)
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return (final / name).read_bytes()


def cubin(source: str, arch: str, tc: Toolchain) -> bytes:
    """compile_source(source, arch, no include dirs, no helper)'s cubin."""

    def build(out: Path) -> None:
        result = compile_source(source, get_arch(arch), tc, include_dirs=[], workdir=out, with_helper=False)
        assert result.ok, result.log
        (out / "kernel.cubin").write_bytes(result.cubin)

    what = {"kind": "cubin", "toolchain": tc.identity, "source": source, "arch": arch,
            "flags": flags(get_arch(arch), tc, include_dirs=[])}
    return built(what, build, "kernel.cubin")


def shared_library(source: str, suffix: str, args: list[str], tc: Toolchain) -> bytes:
    """`nvcc -shared -Xcompiler -fPIC <args> -o lib.so src<suffix>`'s library."""
    cmd = ["-shared", "-Xcompiler", "-fPIC", *args]

    def build(out: Path) -> None:
        (out / f"src{suffix}").write_text(source)
        subprocess.run([tc.nvcc, *cmd, "-o", str(out / "lib.so"), str(out / f"src{suffix}")], check=True,
                       capture_output=True)

    what = {"kind": "shared", "toolchain": tc.identity, "source": source, "suffix": suffix, "cmd": cmd}
    return built(what, build, "lib.so")

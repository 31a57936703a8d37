"""Dynamic shared memory of the CUTLASS kernels inside a built FlashInfer module.

A CUTLASS kernel is `cutlass::device_kernel<Kernel>` and is launched with `sizeof(Kernel::SharedStorage)`
bytes of dynamic SMEM, which the cubin does not record. Its mangled symbol, demangled, spells the
whole `Kernel` type, so a host-only program that includes the module's own headers and prints
`sizeof(Kernel::SharedStorage)` for every such type gives the number the kernel will ask for at
launch, on a machine without the GPU. No device code is instantiated: it compiles in about a minute.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_DEVICE_KERNEL = re.compile(r"void cutlass::device_kernel<(.*)>\(.*\)$")
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"][^>"]+[>"]')
TYPES_PER_PROBE = 32  # one probe program per chunk, chunks in parallel
PROBE_TIMEOUT_S = 900


class ProbeError(Exception):
    """The probe could not be built or run (a demangled type that is not valid C++, a missing header)."""


def cutlass_kernel_types(mangled_names: Iterable[str]) -> dict[str, str]:
    """mangled kernel name -> the `Kernel` type of `cutlass::device_kernel<Kernel>`, for those that are."""
    names = sorted(set(mangled_names))
    if not names:
        return {}
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        raise ProbeError("c++filt (binutils) was not found: kernel names cannot be demangled")
    # CUTLASS 3 kernel names nest deeper than c++filt's default recursion limit.
    out = subprocess.run([cxxfilt, "--no-recurse-limit"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    types = {}
    for name, demangled in zip(names, out, strict=True):
        m = _DEVICE_KERNEL.match(demangled)
        if m:
            types[name] = m.group(1).strip()
    return types


def include_lines(sources: Iterable[str | Path]) -> list[str]:
    """The #include lines of the module's sources, first occurrence order (what the types need)."""
    seen: dict[str, None] = {}
    for src in sources:
        for line in Path(src).read_text(errors="replace").splitlines():
            if _INCLUDE.match(line):
                seen.setdefault(line.strip())
    return list(seen)


def probe_source(types: list[str], includes: list[str]) -> str:
    lines = ["#include <cstdio>", "#include <cstddef>", *includes, ""]
    lines += [f"using aotc_probe_kernel_{i} = {t};" for i, t in enumerate(types)]
    lines += ["", "int main() {"]
    lines += [f'  std::printf("%zu\\n", sizeof(typename aotc_probe_kernel_{i}::SharedStorage));'
              for i in range(len(types))]
    lines += ["  return 0;", "}", ""]
    return "\n".join(lines)


def probe_command(compile_command: str, source_dirs: Iterable[str | Path]) -> list[str]:
    """A module's own nvcc command for one object, turned into a command that builds a probe
    program: same flags and include paths, no -c, no depfile, no input or output (appended later);
    the sources' folders are added for their quoted includes."""
    args = shlex.split(compile_command)
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-MF", "-o"):
            skip = True
            continue
        if a in ("-c", "--generate-dependencies-with-compile") or Path(a).suffix in (".cu", ".cpp", ".cc"):
            continue
        kept.append(a)
    return kept + [f"-I{d}" for d in dict.fromkeys(str(Path(d)) for d in source_dirs)]


def _run_chunk(types: list[str], includes: list[str], command: list[str]) -> list[int]:
    with tempfile.TemporaryDirectory(prefix="aotc-smem-probe-") as tmp:
        src, exe = Path(tmp) / "probe.cu", Path(tmp) / "probe"
        src.write_text(probe_source(types, includes))
        built = subprocess.run([*command, str(src), "-o", str(exe)], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, check=False, cwd=tmp)
        if built.returncode != 0:
            errors = [ln for ln in built.stderr.splitlines() if "error" in ln][:5]
            raise ProbeError("the SMEM probe did not compile: " + " | ".join(errors or built.stderr.splitlines()[-5:]))
        ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=False)
        values = ran.stdout.split()
        if ran.returncode != 0 or len(values) != len(types):
            raise ProbeError(f"the SMEM probe failed (exit {ran.returncode}): {ran.stderr.strip()[:300]}")
        return [int(v) for v in values]


def compiled_source(command: str) -> str:
    """The translation unit a compile command compiles (its .cu/.cpp/.cc argument)."""
    found = [a for a in shlex.split(command) if Path(a).suffix in (".cu", ".cpp", ".cc")]
    if not found:
        raise ProbeError(f"no source file in the compile command {command[:200]!r}")
    return found[-1]


def probe_by_source(types: dict[str, str], objects: Iterable[tuple[str, Iterable[str]]], jobs: int = 1
                    ) -> dict[str, int]:
    """mangled kernel name -> sizeof(Kernel::SharedStorage), each kernel probed with the includes and
    flags of a source that defines it. `objects`: (compile command, kernel names its cubins define)
    per object. The includes of all a module's sources at once can clash where no one source does
    (FlashInfer 0.7's fused MoE: `TensorView` ambiguous in its binding header, whose global using-
    declaration meets another source's headers' names), so sources with the same include lines form one
    group, one probe each."""
    groups: dict[tuple[str, ...], tuple[str, dict[str, str], set[str]]] = {}
    for command, names in objects:
        wanted = {n: types[n] for n in names if n in types}
        if not wanted:
            continue
        source = compiled_source(command)
        _, members, dirs = groups.setdefault(tuple(include_lines([source])), (command, {}, set()))
        members.update(wanted)
        dirs.add(str(Path(source).parent))
    sizes: dict[str, int] = {}
    for includes, (command, members, dirs) in groups.items():
        sizes.update(probe(members, list(includes), probe_command(command, sorted(dirs)), jobs))
    return sizes


def probe(types: dict[str, str], includes: list[str], command: list[str], jobs: int = 1) -> dict[str, int]:
    """mangled kernel name -> sizeof(Kernel::SharedStorage), by host programs built with `command`."""
    distinct = sorted(set(types.values()))
    chunks = [distinct[i:i + TYPES_PER_PROBE] for i in range(0, len(distinct), TYPES_PER_PROBE)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        sizes = [v for chunk_sizes in pool.map(lambda c: _run_chunk(c, includes, command), chunks)
                 for v in chunk_sizes]
    by_type = dict(zip(distinct, sizes, strict=True))
    return {name: by_type[t] for name, t in types.items()}

"""Dynamic-SMEM probe of CUTLASS-style kernels in a built module (aotc/flashinfer/smem_probe.py):
a real nvcc-built cubin with a `cutlass::device_kernel<Kernel>` instantiation, real c++filt, and a
real probe program whose answer is the C++ layout of `Kernel::SharedStorage`."""

from __future__ import annotations

import subprocess

import pytest

from aotc.build.flashinfer import smem_probe
from aotc.build.toolchain import find_toolchain
from aotc.elf import kernel_symbols

HEADER = """
#pragma once
namespace demo {
template <int N> struct Kernel {
  struct Params { int x; };
  struct SharedStorage { float a[N]; double b; };  // 4*N bytes, then a double at an 8-byte boundary
};
}  // namespace demo
namespace cutlass {
template <class K> __global__ void device_kernel(typename K::Params p) {
  extern __shared__ char smem[];
  smem[threadIdx.x] = (char)p.x;
}
}  // namespace cutlass
"""

SOURCE = """
#include "demo_kernel.h"
template __global__ void cutlass::device_kernel<demo::Kernel<1000>>(demo::Kernel<1000>::Params);
template __global__ void cutlass::device_kernel<demo::Kernel<3>>(demo::Kernel<3>::Params);
__global__ void not_a_cutlass_kernel(int* p) { *p = 1; }
"""


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe-module")
    (d / "demo_kernel.h").write_text(HEADER)
    src = d / "kernels.cu"
    src.write_text(SOURCE)
    nvcc = find_toolchain().nvcc
    subprocess.run([nvcc, "-cubin", "-arch=sm_120a", "-std=c++17", "-o", str(d / "k.cubin"), str(src)], check=True,
                   capture_output=True, text=True, cwd=d)
    # The module's own compile line, as ninja would run it (probe_command strips what it must).
    compile_line = (f"{nvcc} --generate-dependencies-with-compile -MF {d}/k.o.d -std=c++17 "
                    f"-gencode=arch=compute_120a,code=sm_120a -c {src} -o {d}/k.o")
    return d, src, kernel_symbols((d / "k.cubin").read_bytes()), compile_line


@pytest.mark.compile
def test_probe_gives_each_cutlass_kernels_shared_storage_size(module):
    d, src, names, compile_line = module
    types = smem_probe.cutlass_kernel_types(names)
    assert sorted(types.values()) == ["demo::Kernel<1000>", "demo::Kernel<3>"]  # the plain kernel is not one
    command = smem_probe.probe_command(compile_line, [d])
    assert "-c" not in command and "-MF" not in command and str(src) not in command
    sizes = smem_probe.probe(types, smem_probe.include_lines([src]), command, jobs=2)
    by_type = {types[n]: size for n, size in sizes.items()}
    assert by_type == {"demo::Kernel<1000>": 4008, "demo::Kernel<3>": 24}


@pytest.mark.compile
def test_probe_that_cannot_compile_says_why(module):
    d, src, names, compile_line = module
    types = {name: "demo::NoSuchKernel<1>" for name in names[:1]}
    with pytest.raises(smem_probe.ProbeError, match="did not compile"):
        smem_probe.probe(types, smem_probe.include_lines([src]), smem_probe.probe_command(compile_line, [d]))


# A binding header as FlashInfer's are: a global using-declaration of a name CUTLASS's headers also
# declare. With a using-directive from a kernel's header in front of it (as in a probe that includes
# every source's headers at once), its own unqualified uses are ambiguous.
KERNEL_SIDE = """
#pragma once
#include "demo_kernel.h"
namespace cutlass { struct TensorView { int rank; }; }
using namespace cutlass;
"""
BINDING_SIDE = """
#pragma once
namespace ffi { struct TensorView { long data; }; }
using ffi::TensorView;
inline long first(const TensorView& t) { return t.data; }
"""


@pytest.mark.compile
def test_each_kernel_is_probed_with_its_own_sources_headers(module, tmp_path):
    d, _, names, compile_line = module
    (d / "kernel_side.h").write_text(KERNEL_SIDE)
    (d / "binding_side.h").write_text(BINDING_SIDE)
    kernels, binding = d / "kernels_ns.cu", d / "binding.cu"
    kernels.write_text(SOURCE.replace('"demo_kernel.h"', '"kernel_side.h"'))
    binding.write_text('#include "binding_side.h"\nlong call(const TensorView& t) { return first(t); }\n')
    types = smem_probe.cutlass_kernel_types(names)
    # every source's headers at once: the clash this guards against
    with pytest.raises(smem_probe.ProbeError, match="ambiguous"):
        smem_probe.probe(types, smem_probe.include_lines([kernels, binding]),
                         smem_probe.probe_command(compile_line, [d]))
    objects = [(compile_line.replace(str(d / "kernels.cu"), str(kernels)), names),
               (compile_line.replace(str(d / "kernels.cu"), str(binding)), [])]  # the binding defines no kernel
    sizes = smem_probe.probe_by_source(types, objects, jobs=2)
    assert {types[n]: size for n, size in sizes.items()} == {"demo::Kernel<1000>": 4008, "demo::Kernel<3>": 24}
    assert smem_probe.compiled_source(objects[1][0]) == str(binding)
    with pytest.raises(smem_probe.ProbeError, match="no source file"):
        smem_probe.compiled_source("nvcc -c -o x.o")

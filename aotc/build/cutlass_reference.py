"""NVIDIA's own SM120 block-scaled GEMM examples (CUTLASS 79a dense, 79d grouped, from the pinned
nvidia-cutlass package) re-targeted to one catalog spec: the example's text with the spec's tile,
stages, schedules, operand types and aotc's output (BF16 D, no C) substituted, cut after its
`GemmKernel`, plus one line that instantiates `cutlass::device_kernel<GemmKernel>` as the example's
GemmUniversalAdapter launches it. Compiled with aotc's own nvcc flags; the SASS is then compared
with aotc's build of the spec (tests/test_sass_equal_cutlass.py, tools/sass_equal_cutlass.py).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aotc.build.toolchain import _cutlass_source
from aotc.diagnostics import AotcError, Diagnostic
from aotc.families.gemm_blockscaled_sm120 import OPERANDS, alignment_elems, uses_f8f6f4

EXAMPLE_DIR = "examples/79_blackwell_geforce_gemm"
EXAMPLES = {"gemm_blockscaled_sm120": "79a_blackwell_geforce_nvfp4_bf16_gemm.cu",
            "grouped_gemm_blockscaled_sm120": "79d_blackwell_geforce_nvfp4_grouped_gemm.cu"}
# How the SM120 builder's Auto schedules resolve (cooperative) and what aotc names explicitly.
KERNEL_SCHEDULE_AUTO = "cutlass::gemm::collective::KernelScheduleAuto"
EPILOGUE_SCHEDULE_AUTO = "cutlass::epilogue::collective::EpilogueScheduleAuto"
INSTANTIATE = """
// Added for the comparison: instantiate the kernel the example's GemmUniversalAdapter launches, and
// check its dynamic SMEM (what the adapter launches it with) against aotc's model of the spec.
void const* const aotc_reference_kernel = reinterpret_cast<void const*>(&cutlass::device_kernel<GemmKernel>);
static_assert(sizeof(typename GemmKernel::SharedStorage) == SMEM_BYTES,
              "the example's SharedStorage differs from aotc's SMEM model of this spec");
// aotc's entry point, as its template writes it, over the example's kernel type.
ENTRY
#endif
"""
# aotc's entry point in the rendered kernel TU (templates/gemm/blockscaled_sm120.cu.j2).
_ENTRY = re.compile(r'extern "C" __global__ void\s.*?\naotc_kernel\(.*?\n}\n', re.DOTALL)


def example_path(family: str) -> Path:
    return _cutlass_source() / EXAMPLE_DIR / EXAMPLES[family]


def include_dirs() -> list[str]:
    """The examples' own include folder (helper.h) on top of CUTLASS's."""
    return [str(_cutlass_source() / "examples" / "common")]


def _sub(text: str, pattern: str, replacement: str, what: str, count: int = 1) -> str:
    new, n = re.subn(pattern, lambda _m: replacement, text, flags=re.DOTALL)
    if n < count:
        raise AotcError(Diagnostic("AOTC-REF-001", f"the CUTLASS example has no {what} to substitute "
                                   f"(pattern {pattern!r} matched {n} times, expected at least {count})",
                                   fix="the pinned nvidia-cutlass example changed; update aotc.build.cutlass_reference"))
    return new


def _cut_after_kernel(text: str) -> str:
    """Everything up to the end of the first `using GemmKernel = ...;` statement."""
    m = re.search(r"using GemmKernel\s*=\s*cutlass::gemm::kernel::GemmUniversal<.*?>;", text, flags=re.DOTALL)
    if m is None:
        raise AotcError(Diagnostic("AOTC-REF-001", "the CUTLASS example defines no `using GemmKernel = ...;`",
                                   fix="the pinned nvidia-cutlass example changed; update aotc.build.cutlass_reference"))
    return text[:m.end()]


def aotc_entry(rendered: str) -> str:
    """aotc's `extern "C" aotc_kernel` wrapper out of a rendered TU, over an unqualified GemmKernel."""
    m = _ENTRY.search(rendered)
    if m is None:
        raise AotcError(Diagnostic("AOTC-REF-001", "the rendered aotc source has no extern \"C\" aotc_kernel entry",
                                   fix="update aotc.build.cutlass_reference to the template's entry point"))
    return m.group(0).replace("aotc::GemmKernel", "GemmKernel")


def reference_source(family: str, params: dict, schedules: tuple[str, str], smem_bytes: int, entry: str) -> str:
    """The example re-targeted to `params` (a catalog spec's expanded params); `schedules` =
    (kernel schedule, epilogue schedule) as aotc renders them (family.render_context); the source
    only compiles if the kernel's SharedStorage is `smem_bytes` (aotc's SMEM model of the spec).
    `entry` (aotc_entry) is added so the example's kernel type also exists under aotc's entry point."""
    kernel_schedule, epilogue_schedule = schedules
    m, n, k = params["tile"]
    f8 = uses_f8f6f4(params)
    text = example_path(family).read_text()
    text = _sub(text, r"using\s+ThreadBlockShape\s*=\s*Shape<[^;]*>;",
                f"using ThreadBlockShape = Shape<_{m},_{n},_{k}>;", "ThreadBlockShape")
    text = _sub(text, r"(?<=\n)using\s+ElementC\s*=[^;]*;", "using ElementC = void;", "ElementC")
    text = _sub(text, r"constexpr int AlignmentC\s*=[^;]*;",
                "constexpr int AlignmentC = 128 / cutlass::sizeof_bits<ElementD>::value;", "AlignmentC")
    # Operand types and alignments: the spec's (for NVFP4 specs these are the example's own).
    for side, dtype in (("A", params["a_dtype"]), ("B", params["b_dtype"])):
        text = _sub(text, rf"(?<=\n)using\s+Element{side}\s*=[^;]*;", f"using Element{side} = {OPERANDS[dtype].cutlass};",
                    f"Element{side}")
        text = _sub(text, rf"constexpr int Alignment{side}\s*=[^;]*;",
                    f"constexpr int Alignment{side} = {alignment_elems(dtype, f8)};", f"Alignment{side}")
    if family == "grouped_gemm_blockscaled_sm120":
        # aotc's MoE GEMM writes BF16 D with a plain alpha/beta epilogue (79d writes NVFP4 D + scale factors).
        text = _sub(text, r"(?<=\n)using\s+ElementD\s*=[^;]*;", "using ElementD = cutlass::bfloat16_t;", "ElementD")
        text = _sub(text, r"using FusionOperation\s*=.*?>;",
                    "using FusionOperation = cutlass::epilogue::fusion::LinearCombination<"
                    "ElementD, ElementAccumulator, ElementC, ElementAccumulator>;", "FusionOperation")
    text = _cut_after_kernel(text)
    text = _sub(text, re.escape(KERNEL_SCHEDULE_AUTO), kernel_schedule, "KernelScheduleAuto")
    text = _sub(text, re.escape(EPILOGUE_SCHEDULE_AUTO), epilogue_schedule, "EpilogueScheduleAuto")
    if params["stages"]:
        text = _sub(text, r"cutlass::gemm::collective::StageCountAutoCarveout<\s*static_cast<int>\(sizeof\("
                    r"typename CollectiveEpilogue::SharedStorage\)\)>",
                    f"cutlass::gemm::collective::StageCount<{params['stages']}>", "StageCountAutoCarveout")
    return text + INSTANTIATE.replace("SMEM_BYTES", str(int(smem_bytes))).replace("ENTRY", entry.rstrip())


def reference_kernel_symbol(names: list[str]) -> str:
    """The `cutlass::device_kernel<...>` symbol among a cubin's functions."""
    found = [n for n in names if n.startswith("_ZN7cutlass13device_kernel")]
    if len(found) != 1:
        raise AotcError(Diagnostic("AOTC-REF-002", f"expected one cutlass::device_kernel in the reference "
                                   f"cubin, found {len(found)}: {', '.join(n[:80] for n in found)}",
                                   fix="check the generated reference source"))
    return found[0]


def compare_with_example(spec, arch, tc, workdir: Path | None = None, keep: Path | None = None) -> dict:
    """Build `spec` (a catalog KernelSpec of a block-scaled family) the way aotc does and the
    re-targeted example with the same flags; compare aotc's aotc_kernel with the example's kernel
    type under the same entry point ("comparison") and with cutlass::device_kernel ("entry_point_effect").
    `keep`: a folder to write both sources and cubins to (aotc.cu/.cubin, cutlass.cu/.cubin)."""
    from aotc.build.compile import compile_source
    from aotc.build.render import render
    from aotc.build.sass_compare import compare_kernel, disassemble
    from aotc.build.toolchain import cutlass_include_dirs, max_parallel_jobs
    from aotc.families import get_family
    from aotc.resources import templates_dir

    family = get_family(spec.family)
    ctx = family.render_context(spec.params, arch)
    smem = family.smem(spec.params, arch).total
    rendered = render(spec, arch).text
    reference = reference_source(spec.family, spec.params, (ctx["kernel_schedule"], ctx["epilogue_schedule"]),
                                 smem, aotc_entry(rendered))
    cutlass = cutlass_include_dirs()
    record: dict = {"spec": spec.name, "family": spec.family, "arch": arch.name, "params": spec.params,
                    "example": EXAMPLES[spec.family], "smem_dynamic_both": smem}
    sides = {"aotc": (rendered, [str(templates_dir()), *cutlass]),
             "cutlass": (reference, [*cutlass, *include_dirs()])}

    def build(side: str):
        text, dirs = sides[side]
        return compile_source(text, arch, tc, include_dirs=dirs, workdir=workdir, with_helper=False)

    # The two translation units are independent: side by side where cores and memory allow.
    with ThreadPoolExecutor(max_workers=max_parallel_jobs(2)) as pool:
        results = dict(zip(sides, pool.map(build, sides)))
    built = {}
    for side, result in results.items():
        record[f"{side}_compile_seconds"] = result.seconds.get("device")
        if not result.ok:
            record["error"] = f"{side}: {result.error}"
            return record
        built[side] = result.cubin
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{side}.cu").write_text(sides[side][0])
            (keep / f"{side}.cubin").write_bytes(result.cubin)
    ref_name = reference_kernel_symbol(list(disassemble(built["cutlass"], tc)))
    # The claim: aotc's shipped kernel is the example's kernel type under aotc's entry point.
    record["comparison"] = compare_kernel(built["cutlass"], "aotc_kernel", built["aotc"], "aotc_kernel", tc).to_json()
    # What the entry point itself changes: the example's own device_kernel vs aotc's kernel.
    record["entry_point_effect"] = compare_kernel(built["cutlass"], ref_name, built["aotc"], "aotc_kernel",
                                                  tc).to_json()
    return record

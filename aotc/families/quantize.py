"""Block-scaled quantize family: bf16/fp16 rows -> NVFP4 (packed e2m1 + ue4m3 per 16) or MXFP8
(e4m3 + ue8m0 per 32), scale factors in the layout the SM120 block-scaled GEMMs read. Owns the schema,
SMEM model (none), rules, render context and args ABI of templates/quantize/. Pure Python.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aotc.abi import QuantizeArgs
from aotc.arch import Arch
from aotc.diagnostics import Diagnostic
from aotc.families.base import Family, Field, SmemModel

FORMATS = {"nvfp4": 16, "mxfp8": 32}  # format -> elements per scale factor
IN_DTYPES = ("bf16", "fp16")
# Targets whose PTX has cvt.rn.satfinite.e2m1x2.f32 (arch-specific and family-specific Blackwell).
HW_E2M1_SMS = (100, 120, 121)


def hardware_e2m1(arch: Arch) -> bool:
    return arch.sm in HW_E2M1_SMS and arch.variant in ("a", "f")




class BlockScaledQuantize(Family):
    name = "quantize_blockscaled"
    doc = ("bf16/fp16 -> NVFP4 (e2m1 + ue4m3/16, per-tensor global scale) or MXFP8 (e4m3 + ue8m0/32), "
           "scale factors in CUTLASS's SM1xx interleaved layout; torchao reference rounding")
    template = "quantize/blockscaled_quantize.cu.j2"
    probe_template = "quantize/blockscaled_quantize.cu.j2"  # no shared memory: nothing to probe
    args_struct = QuantizeArgs
    fields: ClassVar[dict[str, Field]] = {
        "format": Field(str, "output: nvfp4 (packed e2m1, ue4m3 per 16) or mxfp8 (e4m3, ue8m0 per 32)",
                        choices=tuple(FORMATS)),
        "in_dtype": Field(str, "input element type", default="bf16", choices=IN_DTYPES),
        "threads": Field(int, "threads per CTA (one scale-factor block each)", default=256, min=32, max=1024,
                         multiple_of=32),
    }

    def requires(self, p: dict) -> frozenset[str]:
        return frozenset()  # plain loads, stores and conversions: every target has them

    def smem(self, p: dict, arch: Arch) -> SmemModel:
        return SmemModel((("none", 0),))  # registers only

    def check(self, p: dict, arch: Arch) -> list[Diagnostic]:
        if arch.sm < 80:
            return [Diagnostic("AOTC-ARCH-001", f"{self.name} targets sm_80 and newer; {arch.name} is older",
                               fix="build it for sm80, sm90a or an SM120 target", details={"arch": arch.name})]
        return []

    def render_context(self, p: dict, arch: Arch) -> dict:
        return {
            "family": self.name, "arch_name": arch.name, "format": p["format"], "nvfp4": p["format"] == "nvfp4",
            "sf_vec": FORMATS[p["format"]], "in_dtype": p["in_dtype"], "threads": p["threads"],
            "hw_e2m1": p["format"] == "nvfp4" and hardware_e2m1(arch), "smem_budget": arch.smem_optin_bytes,
        }

    def expected_mma(self, p: dict, arch: Arch) -> str | None:
        return None  # no MMA: verification checks target, banned opcodes and SMEM only


FAMILIES: dict[str, Any] = {BlockScaledQuantize.name: BlockScaledQuantize()}

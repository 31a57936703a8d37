"""Rules: KernelSpec x Arch -> Verdict. Small pure functions, no compiler, milliseconds per spec:
(a) the arch has every instruction family the kernel uses, and SM12x gets nothing of the tcgen05 /
TMEM / UMMA / wgmma / multicast world; (b) family legality (shapes, alignment, dtypes); (c) the
byte-exact SMEM model fits the arch's opt-in budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from aotc.arch import SM12X_BANNED, Arch
from aotc.build.spec import KernelSpec
from aotc.diagnostics import Diagnostic
from aotc.families import SmemModel, get_family

NOT_APPLICABLE = "AOTC-ARCH-001"  # the arch lacks an instruction family: skip, not a failure


@dataclass
class Verdict:
    spec: KernelSpec
    arch: Arch
    diagnostics: list[Diagnostic]
    smem: SmemModel | None

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    @property
    def applicable(self) -> bool:
        """False when the arch simply lacks the kernel's instructions (e.g. FP4 MMA on sm_90a)."""
        return not any(d.code == NOT_APPLICABLE for d in self.diagnostics)

    def to_json(self) -> dict:
        return {
            "spec": self.spec.name,
            "family": self.spec.family,
            "arch": self.arch.name,
            "ok": self.ok,
            "applicable": self.applicable,
            "smem": self.smem.to_json() if self.smem else None,
            "budget": self.arch.smem_optin_bytes,
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }


def feature_diagnostics(spec: KernelSpec, arch: Arch, required: frozenset[str]) -> list[Diagnostic]:
    where = {"spec": spec.name, "file": spec.file}
    if arch.sm // 10 == 12 and required & SM12X_BANNED:
        banned = ", ".join(sorted(required & SM12X_BANNED))
        return [Diagnostic("AOTC-ARCH-002", f"uses {banned}, which {arch.name} does not have (SM12x has no "
                           "tcgen05/TMEM/UMMA, no wgmma and clusters of 1x1x1 only)",
                           fix="use an SM120 collective (mma.sync, block-scaled kinds) instead", **where)]
    missing = required - arch.features
    if missing:
        return [Diagnostic(NOT_APPLICABLE, f"{arch.name} lacks {', '.join(sorted(missing))}",
                           fix=f"build this spec for an arch that has them, or drop {arch.name} from its archs",
                           details={"missing": sorted(missing)}, **where)]
    return []


def smem_diagnostic(spec: KernelSpec, arch: Arch, model: SmemModel, hint: str) -> Diagnostic | None:
    budget = arch.smem_optin_bytes
    if model.total <= budget:
        return None
    width = max(len(n) for n, _ in model.components)
    lines = "\n".join(f"    {n:<{width}} {b:>9,} B" for n, b in model.components)
    chosen = ", ".join(f"{k}={v}" for k, v in model.chosen)
    message = (f"shared memory {model.total:,} B exceeds the {arch.name} budget of {budget:,} B by "
               f"{model.total - budget:,} B" + (f" ({chosen})" if chosen else "") + f"\n{lines}")
    return Diagnostic("AOTC-SMEM-001", message, spec=spec.name, file=spec.file, fix=hint,
                      details={"total": model.total, "budget": budget, "overshoot": model.total - budget,
                               "components": dict(model.components), "chosen": dict(model.chosen)})


def check(spec: KernelSpec, arch: Arch) -> Verdict:
    family = get_family(spec.family)
    if spec.archs and arch.name not in spec.archs:
        return Verdict(spec, arch, [Diagnostic(NOT_APPLICABLE, f"spec lists archs {', '.join(spec.archs)}",
                                               spec=spec.name, file=spec.file)], None)
    diags = feature_diagnostics(spec, arch, family.requires(spec.params))
    if diags:
        return Verdict(spec, arch, diags, None)
    # The SMEM verdict comes first and always: it is the rule users hit most, and it is numeric.
    model = family.smem(spec.params, arch)
    over = smem_diagnostic(spec, arch, model, family.fit_hint(spec.params, arch))
    diags = [over] if over else []
    # Family checks speak of parameters, not specs (and leave the SMEM verdict to this module): name the spec.
    diags += [Diagnostic(d.code, d.message, spec.name, spec.file, d.fix, d.details)
              for d in family.check(spec.params, arch)]
    return Verdict(spec, arch, diags, model)

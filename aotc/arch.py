"""Arch catalog: what each compile target offers (SMEM budget, instruction families) and which
devices can run a binary built for it. Pure data and small functions; no CUDA, no I/O.
Used by the rules (build side) and by target selection (runtime side).
"""

from __future__ import annotations

import re

from aotc.frozen import Frozen  # not aotc.diagnostics: only an unknown name needs it (get_arch)

# Instruction families a kernel may need. A family module lists the ones its template uses.
MMA_SYNC = "mma_sync"  # warp-level mma.sync (SM80 class: bf16/fp16)
MMA_SYNC_FP8 = "mma_sync_fp8"  # mma.sync with e4m3/e5m2 operands (sm_89+)
MMA_BLOCKSCALED = "mma_blockscaled"  # mma.sync kind::mxf8f6f4 / mxf4nvf4 with block scales (sm_120/121)
LDMATRIX = "ldmatrix"
CP_ASYNC = "cp_async"
TMA = "tma"
WGMMA = "wgmma"
TCGEN05 = "tcgen05"  # tcgen05.* / TMEM / UMMA
CLUSTER_MULTICAST = "cluster_multicast"

ALL_FEATURES = frozenset(
    {MMA_SYNC, MMA_SYNC_FP8, MMA_BLOCKSCALED, LDMATRIX, CP_ASYNC, TMA, WGMMA, TCGEN05, CLUSTER_MULTICAST}
)


class Arch(Frozen):
    """One compile target (immutable record, see aotc.frozen)."""

    __slots__ = ("name", "sm", "variant", "smem_optin_bytes", "features", "max_cluster_size")  # noqa: RUF023
    name: str  # aotc spelling: "sm120a"
    sm: int  # 120
    variant: str  # "" (plain), "a" (arch-specific), "f" (family-portable)
    smem_optin_bytes: int  # opt-in dynamic shared memory per block
    features: frozenset[str]
    max_cluster_size: int

    def __init__(self, name: str, sm: int, variant: str, smem_optin_bytes: int, features: frozenset[str],
                 max_cluster_size: int):
        super().__init__(name=name, sm=sm, variant=variant, smem_optin_bytes=smem_optin_bytes, features=features,
                         max_cluster_size=max_cluster_size)

    @property
    def gencode(self) -> str:
        """nvcc -gencode value, e.g. arch=compute_120a,code=sm_120a."""
        suffix = f"{self.sm}{self.variant}"
        return f"arch=compute_{suffix},code=sm_{suffix}"

    @property
    def nvcc_name(self) -> str:
        return f"sm_{self.sm}{self.variant}"

    @property
    def family_major(self) -> int:
        """Family of an `f` target: sm_120f runs on 120 and 121, i.e. same major (12)."""
        return self.sm // 10

    def runs_on(self, device_cc: tuple[int, int]) -> bool:
        """Can a cubin built for this target run on a device of compute capability `device_cc`?

        SASS is not forward compatible across majors, `a` targets run only on the exact SM, `f`
        targets on every member of their family (same major, equal or newer minor), plain targets
        on the same major with equal or newer minor.
        """
        return target_runs_on(self.sm, self.variant, device_cc)


def target_runs_on(sm: int, variant: str, device_cc: tuple[int, int]) -> bool:
    """Arch.runs_on for any (sm, variant), also targets outside the catalog (e.g. a foreign cubin)."""
    device_sm = device_cc[0] * 10 + device_cc[1]
    if variant == "a":
        return device_sm == sm
    return device_cc[0] == sm // 10 and device_sm >= sm


_SM80_FEATURES = frozenset({MMA_SYNC, LDMATRIX, CP_ASYNC})
_SM89_FEATURES = _SM80_FEATURES | {MMA_SYNC_FP8}
_SM90_FEATURES = _SM89_FEATURES | {TMA, CLUSTER_MULTICAST}
_SM100_FEATURES = _SM90_FEATURES | {TCGEN05, MMA_BLOCKSCALED}
# SM120: mma.sync (incl. block-scaled kinds), ldmatrix, cp.async and TMA; no wgmma, no tcgen05/TMEM/UMMA,
# clusters of 1x1x1 only.
_SM120_FEATURES = _SM89_FEATURES | {TMA, MMA_BLOCKSCALED}

SM120_SMEM_OPTIN = 101_376  # 99 KiB, measured on RTX PRO 6000, RTX 5080 and GB10

ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("sm80", 80, "", 166_912, _SM80_FEATURES, 1),
        Arch("sm86", 86, "", 101_376, _SM80_FEATURES, 1),
        Arch("sm89", 89, "", 101_376, _SM89_FEATURES, 1),
        Arch("sm90a", 90, "a", 232_448, _SM90_FEATURES | {WGMMA}, 16),
        Arch("sm100a", 100, "a", 232_448, _SM100_FEATURES, 16),
        Arch("sm120a", 120, "a", SM120_SMEM_OPTIN, _SM120_FEATURES, 1),
        Arch("sm120f", 120, "f", SM120_SMEM_OPTIN, _SM120_FEATURES, 1),
        Arch("sm121a", 121, "a", SM120_SMEM_OPTIN, _SM120_FEATURES, 1),
    )
}

# Everything an SM12x target lacks that SM100 kernels rely on: the "tcgen05 ban" of the rules.
SM12X_BANNED = frozenset({TCGEN05, WGMMA, CLUSTER_MULTICAST})


class UnknownArchError(ValueError):
    pass


def _normalize_arch_name(name: str) -> str:
    """Every common spelling to aotc's: sm_120a, 120a, compute_120a, and TORCH_CUDA_ARCH_LIST's
    12.0a (major.minor) all become sm120a."""
    key = name.strip().lower().replace("compute_", "sm").replace("sm_", "sm")
    key = key.removeprefix("sm")
    dotted = re.fullmatch(r"(\d+)\.(\d)([af]?)", key)
    if dotted:  # 12.0a -> 120a, 9.0a -> 90a
        key = f"{dotted.group(1)}{dotted.group(2)}{dotted.group(3)}"
    return "sm" + key


def get_arch(name: str) -> Arch:
    """Look up an arch by aotc name; accepts nvcc and torch spellings too (sm_120a, 120a, compute_120a,
    12.0a). An unknown name is refused with the closest known ones."""
    key = _normalize_arch_name(name)
    try:
        return ARCHES[key]
    except KeyError:
        from aotc.diagnostics import did_you_mean

        hint = did_you_mean(key, ARCHES)
        known = ", ".join(ARCHES)
        raise UnknownArchError(f"unknown arch {name!r}{hint} (known: {known}; also spelled sm_120a, 120a, "
                               f"12.0a)") from None


def parse_arch_list(text: str) -> list[Arch]:
    """`sm120a,sm120f` -> [Arch, Arch], in order, without duplicates. Semicolons and spaces separate
    too, so a TORCH_CUDA_ARCH_LIST value ("9.0a;12.0a") reads as it is."""
    seen: dict[str, Arch] = {}
    for part in re.split(r"[,;\s]+", text):
        if part.strip():
            arch = get_arch(part)
            seen.setdefault(arch.name, arch)
    if not seen:
        raise UnknownArchError("empty arch list")
    return list(seen.values())


def target_preference(device_cc: tuple[int, int], available: list[str]) -> list[str]:
    """Order stored targets by preference for a device: exact `a` target > `f` family > plain.

    Targets the device cannot run are dropped.
    """
    rank = {"a": 0, "f": 1, "": 2}
    runnable = [ARCHES[n] for n in available if n in ARCHES and ARCHES[n].runs_on(device_cc)]
    runnable.sort(key=lambda a: (rank[a.variant], -a.sm))
    return [a.name for a in runnable]

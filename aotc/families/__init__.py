"""Registry of kernel families: family name -> Family instance. Imported lazily by name so a
serving process only loads the families it launches."""

from __future__ import annotations

import importlib

from aotc.families.base import Family, Field, SmemModel

__all__ = ["FAMILY_MODULES", "Family", "Field", "SmemModel", "all_families", "get_family"]

# family name -> module defining `FAMILY` (an instance of a Family subclass)
FAMILY_MODULES: dict[str, str] = {
    "gemm_blockscaled_sm120": "aotc.families.gemm_blockscaled_sm120",
    "grouped_gemm_blockscaled_sm120": "aotc.families.gemm_blockscaled_sm120",
    "grouped_gemm_sm80": "aotc.families.grouped_gemm_sm80",
    "fmha_fwd": "aotc.families.fmha",
    "fmha_decode": "aotc.families.fmha",
    "fmha_fwd_paged": "aotc.families.fmha",
    "fmha_decode_paged": "aotc.families.fmha",
    "quantize_blockscaled": "aotc.families.quantize",
}

_loaded: dict[str, Family] = {}


class UnknownFamilyError(KeyError):
    pass


def get_family(name: str) -> Family:
    if name in _loaded:
        return _loaded[name]
    module_name = FAMILY_MODULES.get(name)
    if module_name is None:
        raise UnknownFamilyError(f"unknown kernel family {name!r}; known: {', '.join(FAMILY_MODULES)}")
    module = importlib.import_module(module_name)
    family = module.FAMILIES[name]
    _loaded[name] = family
    return family


def all_families() -> dict[str, Family]:
    return {name: get_family(name) for name in FAMILY_MODULES}

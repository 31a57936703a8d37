"""Discovery of installed kernel wheels (runtime side: stdlib only). Each wheel made by `aotc wheel`
registers an `aotc.kernels` entry point naming its package; the package holds a read-only cache
tree in `store/` and its metadata in aotc_wheel.json. Wheels of another aotc ABI are refused.
Precedence (docs/runtime.md): the local cache first, then installed wheels in distribution-name order.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from aotc import ABI_VERSION

ENTRY_POINT_GROUP = "aotc.kernels"
METADATA_FILE = "aotc_wheel.json"
STORE_DIR = "store"


@dataclass(frozen=True)
class InstalledKernels:
    distribution: str
    root: Path  # a cache root (holds v1/...)
    meta: dict


@dataclass(frozen=True)
class RefusedKernels:
    distribution: str
    reason: str


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def discover() -> tuple[list[InstalledKernels], list[RefusedKernels]]:
    """Installed kernel wheels this aotc can use, and the ones it refuses (with why)."""
    found, refused = [], []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist else ep.name
        pkg_dir = _package_dir(ep.value.split(":")[0])
        meta_path = pkg_dir / METADATA_FILE if pkg_dir else None
        if meta_path is None or not meta_path.is_file():
            refused.append(RefusedKernels(dist, f"package {ep.value!r} has no {METADATA_FILE}"))
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            refused.append(RefusedKernels(dist, f"unreadable {meta_path}: {e}"))
            continue
        if meta.get("abi") != ABI_VERSION:
            refused.append(RefusedKernels(
                dist, f"built for aotc ABI {meta.get('abi')} (aotc {meta.get('aotc_version')}), this aotc speaks "
                f"ABI {ABI_VERSION}: reinstall a wheel built with this aotc version"))
            continue
        found.append(InstalledKernels(dist, pkg_dir / STORE_DIR, meta))
    return found, refused

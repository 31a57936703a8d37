"""Discovery of installed kernel wheels (runtime side: stdlib only). Each wheel made by `aotc wheel`
registers an `aotc.kernels` entry point naming its package; the package holds a read-only cache
tree in `store/` and its metadata in aotc_wheel.json. Wheels of another aotc ABI, with bad metadata,
or whose files differ from RECORD are refused, each on its own; so is a wheel that fails `aotc wheel
--check`'s content checks, run once per wheel content and memoized (aotc.runtime.wheel_verdicts).
Precedence (docs/runtime.md): the local cache first, then installed wheels in distribution-name order.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import stat
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from aotc import ABI_VERSION
from aotc.diagnostics import AotcError

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


def _record(dist) -> dict[str, str] | None:
    """RECORD of an installed distribution: path -> "sha256=..." (None when it has none)."""
    text = dist.read_text("RECORD") if dist is not None else None
    if text is None:
        return None
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2}


def _digest(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def _refusal(pkg_dir: Path, record: dict[str, str] | None) -> tuple[str, dict]:
    """(why the wheel is refused or "", its metadata). What `aotc wheel --check` refuses without a
    disassembler: bad metadata, a foreign ABI, anything not a regular file, metadata, manifests or
    refs that differ from RECORD, files RECORD does not list. Blobs are verified on every read."""
    meta_path = pkg_dir / METADATA_FILE
    if record is None:
        return "its distribution has no RECORD to check the files against", {}
    try:
        if not stat.S_ISREG(os.lstat(meta_path).st_mode):
            return f"{meta_path} is not a regular file", {}
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        return f"unreadable {meta_path}: {e}", {}
    if not isinstance(meta, dict):
        return f"{meta_path} is not a JSON object", {}
    if meta.get("abi") != ABI_VERSION:
        return (f"built for aotc ABI {str(meta.get('abi'))[:20]} (aotc {str(meta.get('aotc_version'))[:20]}), this "
                f"aotc speaks ABI {ABI_VERSION}: reinstall a wheel built with this aotc version"), {}
    base = pkg_dir.parent
    store = pkg_dir / STORE_DIR
    if not stat.S_ISDIR(os.lstat(store).st_mode):
        return f"{store} is not a directory", {}
    checked = [meta_path]
    for top, dirs, files in os.walk(store):
        for name in dirs + files:
            path = Path(top) / name
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and name in dirs)):
                return f"{path} is not a regular file or folder", {}
            if name in files:
                if path.relative_to(base).as_posix() not in record:
                    return f"{path} is not listed in the wheel's RECORD", {}
                if name.endswith(".json"):
                    checked.append(path)
    for path in checked:
        if record.get(path.relative_to(base).as_posix()) != _digest(path):
            return f"{path} differs from the wheel's RECORD: the installed wheel was modified", {}
    return "", meta


def discover() -> tuple[list[InstalledKernels], list[RefusedKernels]]:
    """Installed kernel wheels this aotc can use, and the ones it refuses (with why). One broken or
    foreign wheel is refused on its own; it never hides the others."""
    found, refused = [], []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist else ep.name
        try:
            pkg_dir = _package_dir(ep.value.split(":")[0])
        except (ImportError, ValueError) as e:
            refused.append(RefusedKernels(dist, f"package {ep.value!r} cannot be found: {e}"))
            continue
        if pkg_dir is None or not (pkg_dir / METADATA_FILE).is_file():
            refused.append(RefusedKernels(dist, f"package {ep.value!r} has no {METADATA_FILE}"))
            continue
        try:
            record = _record(ep.dist)
            why, meta = _refusal(pkg_dir, record)
            if not why:  # what `aotc wheel --check` refuses beyond that, SASS scan included (memoized)
                from aotc.runtime.wheel_verdicts import refusal

                why = refusal(pkg_dir, record)
        except OSError as e:
            why, meta = f"unreadable files in {pkg_dir}: {e}", {}
        except AotcError as e:  # e.g. a runtime folder others can write: no verdict can be kept or trusted
            why, meta = e.diagnostics[0].format(), {}
        if why:
            refused.append(RefusedKernels(dist, why))
            continue
        found.append(InstalledKernels(dist, pkg_dir / STORE_DIR, meta))
    return found, refused

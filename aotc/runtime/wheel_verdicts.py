"""The runtime's `aotc wheel --check` of installed kernel wheels. The first time discovery finds a wheel
(by its content identity: the RECORD rows of its package files), the runtime runs the check's own
content checks on the installed files (aotc.build.wheel_check.check_tree: manifests, refs, every blob's
digest, every cubin's ELF target and, where cuobjdump or nvdisasm is found, the SASS scan) and keeps
the verdict in the private runtime folder; later processes pay a stat and a small read. A changed wheel
has another identity, so another verdict. Without a disassembler the other checks still run; what
happens then (used with a warning; under AOTC_STRICT_WHEELS=1 scanned once one is found, else refused)
is in docs/wheels.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from aotc import ABI_VERSION, __version__

STRICT_ENV = "AOTC_STRICT_WHEELS"
VERDICT_DIR = "wheel-verdicts"
FAILED = "AOTC-WHEEL-015"  # the runtime's check refused an installed wheel
UNSCANNED = "AOTC-WHEEL-016"  # no disassembler: the SASS of an installed wheel was not scanned
_warned: set[str] = set()


def wheel_identity(record: dict[str, str], pkg: str) -> str:
    """sha256 over the RECORD rows (path, file digest) of the package's files: the same for a wheel
    and its installed copy (pip adds only .pyc files and dist-info rows), another for any change of
    content. Discovery checks the installed metadata, manifests and refs against these rows, and every
    blob is checked against its manifest's digest."""
    rows = sorted(f"{path},{digest}\n" for path, digest in record.items()
                  if path.startswith(pkg + "/") and "/__pycache__/" not in path)
    return hashlib.sha256("".join(rows).encode()).hexdigest()


def verdict_path(identity: str) -> Path:
    from aotc.runtime_folder import helper_dir  # the private (user-owned, not shared-writable) folder

    return helper_dir() / VERDICT_DIR / f"{identity}.json"


def _read(path: Path) -> dict | None:
    try:
        verdict = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("aotc") != __version__ or verdict.get("abi") != ABI_VERSION \
            or not isinstance(verdict.get("problems"), list) or not isinstance(verdict.get("scanned"), bool):
        return None  # another aotc's check (its banned opcodes may differ), or unreadable: check again
    return verdict


def compute(pkg_dir: Path, identity: str) -> dict:
    """Run the check on the installed files (the slow path: disassembles every cubin) and keep it."""
    from aotc.build.wheel_check import NO_SCAN, InstalledTree, check_tree
    from aotc.runtime_folder import write_atomic

    _, _, diags = check_tree(InstalledTree(pkg_dir.parent, pkg_dir.name), pkg_dir.name)
    unscanned = f"AOTC-WHEEL-{NO_SCAN:03d}"
    verdict = {"identity": identity, "aotc": __version__, "abi": ABI_VERSION,
               "scanned": not any(d.code == unscanned for d in diags),
               "problems": [d.format() for d in diags if d.code != unscanned]}
    path = verdict_path(identity)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(path.parent, path, json.dumps(verdict, indent=1).encode())
    except OSError:
        pass  # a read-only runtime folder: the verdict holds for this process only
    return verdict


def refusal(pkg_dir: Path, record: dict[str, str]) -> str:
    """Why the installed wheel at pkg_dir is refused (a coded reason), "" to use it."""
    identity = wheel_identity(record, pkg_dir.name)
    strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    verdict = _read(verdict_path(identity))
    # An unscanned verdict is checked again only in strict mode (which would refuse it): looking for a
    # disassembler imports the build side (~20 ms), too much for every process of a serving machine.
    if verdict is None or (strict and not verdict["scanned"] and _can_scan()):
        verdict = compute(pkg_dir, identity)
    if verdict["problems"]:
        more = f" (and {len(verdict['problems']) - 1} more)" if len(verdict["problems"]) > 1 else ""
        return (f"{FAILED}: `aotc wheel --check` refuses it: {verdict['problems'][0][:600]}{more}; reinstall a "
                "wheel built and checked by `aotc wheel`")
    if not verdict["scanned"]:
        why = (f"{UNSCANNED}: no cuobjdump or nvdisasm here, so the SASS of {pkg_dir.name}'s cubins was not "
               "scanned (digests, manifests and ELF targets were checked)")
        if strict:
            return f"{why}; {STRICT_ENV} is set: pip install nvidia-cuda-cuobjdump (then it is scanned), or unset it"
        if identity not in _warned:
            _warned.add(identity)
            warnings.warn(f"{why}; used anyway. To scan it: pip install nvidia-cuda-cuobjdump and set "
                          f"{STRICT_ENV}=1 (unscanned wheels are then scanned, or refused)", RuntimeWarning,
                          stacklevel=2)
    return ""


def _can_scan() -> bool:
    from aotc.build.toolchain import find_disassemblers

    return find_disassemblers() is not None

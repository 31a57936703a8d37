"""Keys: the spec key (what the runtime looks up: family + params + target) and the action key
(what the build caches: everything that determines the compiler's output). Pure functions."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from aotc import ABI_VERSION


def _json_default(value: Any) -> Any:
    # Sets are sorted: list(set) follows hash order, which varies between processes (PYTHONHASHSEED).
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return list(value)


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, tuples as lists, sets as sorted lists, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


_HEX = "0123456789abcdef"


def is_digest(value: object) -> bool:
    """A sha256 hex digest: a str of 64 lowercase hex chars (a str test rather than a regex: no
    re.compile on the serving path)."""
    return isinstance(value, str) and len(value) == 64 and not value.strip(_HEX)


def check_digest(digest: str) -> str:
    """A digest is 64 lowercase hex chars; anything else could name a path outside the store."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 hex digest (64 lowercase hex chars): {digest!r}")
    return digest


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_key(family: str, params: dict[str, Any], arch: str) -> str:
    """Lookup key of a kernel: the same family, params and target always give the same key."""
    return sha256_hex(canonical_json({"abi": ABI_VERSION, "family": family, "params": params, "arch": arch}))


def action_inputs(
    source: str, toolchain_identity: str, flags: list[str], arch: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Everything that determines the compiler's output. `headers`: path -> sha256 of every header
    the compile actually read (from nvcc's dependency output)."""
    return {
        "abi": ABI_VERSION,
        "source_sha256": sha256_hex(source),
        "toolchain": toolchain_identity,
        "flags": list(flags),
        "arch": arch,
        "headers": dict(sorted(headers.items())),
    }


def action_key(inputs: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(inputs))


def prekey(source: str, toolchain_identity: str, flags: list[str], arch: str) -> str:
    """Key of everything known before compiling; maps to the header sets seen for it (ccache's
    direct mode), from which the action key is recomputed without running the compiler."""
    return sha256_hex(
        canonical_json({"abi": ABI_VERSION, "source_sha256": sha256_hex(source), "toolchain": toolchain_identity,
                        "flags": list(flags), "arch": arch})
    )

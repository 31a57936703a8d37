"""An entry's header map: {portable header path: sha256} of every header its compile read, part of
what its action key hashes (aotc.keys.action_inputs). Stored as a blob of its own (role `headers`,
the map's canonical JSON), not inline in the manifest: the kernels that read the same CUTLASS headers
share one blob, and a manifest shrinks from ~89 KB to ~2 KB. Manifests written before carry the map
inline as `inputs.headers`; they stay readable and are rewritten when stored again or verified.
The action key is unchanged: it is still the sha256 of the inputs with the map in them (inputs()).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aotc.keys import canonical_json

ROLE = "headers"
# Blobs of what the build read, which no runtime loads: kernel wheels leave them out (docs/wheels.md).
BUILD_ONLY_ROLES = ("headers", "source")


def encode(headers: dict[str, str]) -> bytes:
    """The blob: canonical JSON, so the same map is the same blob (and its digest is the header-set
    digest direct mode records)."""
    return canonical_json(headers).encode()


def is_inline(manifest: dict) -> bool:
    """A manifest in the old form, its header map in `inputs.headers`."""
    inputs = manifest.get("inputs")
    return isinstance(inputs, dict) and isinstance(inputs.get("headers"), dict)


def split(manifest: dict) -> tuple[dict, bytes | None]:
    """(the manifest without its inline header map, the map's blob bytes); (manifest, None) when it
    carries none inline."""
    if not is_inline(manifest):
        return manifest, None
    inputs = {k: v for k, v in manifest["inputs"].items() if k != "headers"}
    return {**manifest, "inputs": inputs}, encode(manifest["inputs"]["headers"])


def inputs(manifest: dict, read_blob: Callable[[str], bytes]) -> dict:
    """The inputs the manifest's action key is the sha256 of: its `inputs` with the header map read
    back from its blob (KeyError if that blob is absent, ValueError if it is no JSON object)."""
    found = dict(manifest.get("inputs") or {})
    blob = (manifest.get("blobs") or {}).get(ROLE)
    if "headers" not in found and isinstance(blob, dict):
        headers = json.loads(read_blob(blob["sha256"]))
        if not isinstance(headers, dict):
            raise ValueError(f"header map blob {blob['sha256']} is not a JSON object")
        found["headers"] = headers
    return found

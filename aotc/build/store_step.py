"""The one step both producers (aotc kernels, FlashInfer modules) end with: a verified artifact ->
action key -> manifest + blobs (put_entry) -> compile log -> direct-mode record -> spec-key ref.
Everything machine-specific is already portable in the artifact, so the parent process can store
what a worker elsewhere compiled.
"""

from __future__ import annotations

from dataclasses import dataclass

from aotc.build.direct_mode import record_prekey
from aotc.cache import Cache
from aotc.cache.manifest import Manifest
from aotc.keys import action_inputs, action_key


@dataclass
class Artifact:
    """A compile output that passed verification, with what its action key is made of."""

    manifest: Manifest  # everything but key and inputs, which store() fills
    blobs: dict[str, bytes]  # role -> bytes ("cubin", "helper", "source"; "so" for a module)
    source: str  # the text the prekey was computed from (a TU, or a module's described sources)
    flags: list[str]  # portable
    toolchain_identity: str
    prekey: str
    headers: dict[str, str]  # portable header path -> sha256, every header the compile read
    log: str = ""

    def inputs(self) -> dict:
        return action_inputs(self.source, self.toolchain_identity, self.flags, self.manifest.arch, self.headers)

    def key(self) -> str:
        return action_key(self.inputs())


def store(cache: Cache, artifact: Artifact) -> str:
    """Store a verified artifact; returns its action key. Idempotent: a second writer of the same key
    keeps the first manifest (put_entry) and only refreshes the ref and the direct-mode record."""
    manifest = artifact.manifest
    manifest.inputs = artifact.inputs()
    manifest.key = key = action_key(manifest.inputs)
    cache.put_entry(key, artifact.blobs, manifest.to_json())
    cache.write_log(key, artifact.log)
    record_prekey(cache, artifact.prekey, artifact.headers, key)
    cache.set_ref(manifest.spec_key, key, {"name": manifest.name, "family": manifest.family,
                                          "params": manifest.params, "arch": manifest.arch})
    return key

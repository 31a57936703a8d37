"""What a lookup found (`Found`), and records of it kept in the private runtime folder: what find()
answered for (family, params, arch, device capability) under the default kernel sources, so that a
later process loads the same kernel without searching again; and what an op's choice among a
family's stored kernels read (the candidates, their tiles, the device's tune table), so that a later
process chooses without listing the stored refs (`*.choices.json`, kept while the folders the listing
read are unchanged). The search itself (the family's parameter rules, spec
keys, the cache's record checks) costs a dozen module imports and ~1-2 ms of Python per process.

A record is used only while every ref file it depends on is unchanged: the answering ref has the same
stamp (device, inode, size, mtime, ctime: runtime_folder.stamp), and no more preferred target or
earlier source has gained the spec key since. Anything else (no record, an unreadable or stale one) takes the full lookup, which
writes a fresh record once the kernel loaded. Blobs are still read from digest-named files and hashed
against the record's manifest, and a blob a record cannot supply comes from a full lookup's source.
Writing a record is best-effort: a read-only or full runtime folder only costs later processes the
search.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import aotc
from aotc.runtime_folder import helper_dir, stamp, stamps_hold, write_atomic

if TYPE_CHECKING:
    from aotc.runtime.device import Device
    from aotc.runtime.sources import KernelSource


class Found:
    """What a lookup located: typed params, the target, the spec key, the manifest and its source.
    (A plain slotted class: a dataclass costs milliseconds to create at import.)"""

    __slots__ = ("arch", "family", "manifest", "params", "source", "spec_key")

    def __init__(self, family: str, params: dict, arch: str, spec_key: str, manifest: dict, source: KernelSource):
        self.family = family
        self.params = params
        self.arch = arch
        self.spec_key = spec_key
        self.manifest = manifest
        self.source = source

    def __eq__(self, other: object) -> bool:
        return type(other) is Found and all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None  # type: ignore[assignment] - holds dicts, like the dataclass it replaces

    def __repr__(self) -> str:
        return (f"Found(family={self.family!r}, params={self.params!r}, arch={self.arch!r}, "
                f"spec_key={self.spec_key!r}, source={getattr(self.source, 'name', self.source)!r})")


RECORD_FORMAT = 1
SUFFIX = ".lookup.json"

def record_path(family: str, params: dict, arch: str | None, cc: tuple[int, int]) -> Any:
    """Where the record of this lookup lives. The name covers everything find() depends on besides the
    stored files: aotc's version and location (which pick the default cache), the cache settings in
    the environment, and the call's own arguments (params as given; keys sorted)."""
    return _named((family, sorted(params.items()), arch, tuple(cc)), SUFFIX)


def _named(call: tuple, suffix: str) -> Any:
    """<runtime folder>/<sha256 of aotc's identity, the cache settings and `call`><suffix>."""
    env = os.environ
    ident = repr((RECORD_FORMAT, aotc.__version__, aotc.ABI_VERSION, aotc.__file__, env.get("AOTC_CACHE_DIR", ""),
                  env.get("XDG_CACHE_HOME", ""), env.get("HOME", ""), *call))
    return helper_dir() / (hashlib.sha256(ident.encode()).hexdigest() + suffix)


class RecalledSource:
    """The source a record names. Its blobs are needed only when a kept file is missing or fails its
    digest; then one full lookup finds the real source, and it answers from then on."""

    def __init__(self, name: str, redo: Any):
        self.name = name
        self._redo = redo
        self._real: Any = None

    def _source(self) -> Any:
        if self._real is None:
            self._real = self._redo().source
        return self._real

    def resolve(self, spec_key: str) -> dict | None:
        return self._source().resolve(spec_key)

    def read_blob(self, digest: str) -> bytes:
        return self._source().read_blob(digest)


def recall(family: str, params: dict, arch: str | None, device: Device) -> tuple[Found, tuple[int, str]] | None:
    """(what find() answered, the cubin's checked ELF target) from a current record, else None."""
    path = record_path(family, params, arch, device.cc)
    try:
        record = json.loads(path.read_bytes())
        probes = record["probes"]
        if record["format"] != RECORD_FORMAT or not probes or probes[-1][1] is None:  # the answer's ref exists
            return None
        if not stamps_hold(probes):
            return None
        manifest, target = record["manifest"], record["target"]
        typed, spec_key, arch_name, source = record["params"], record["spec_key"], record["arch"], record["source"]
        if not (isinstance(manifest, dict) and isinstance(typed, dict) and isinstance(spec_key, str)
                and isinstance(arch_name, str) and isinstance(source, str) and isinstance(target, list)
                and len(target) == 2 and isinstance(target[0], int) and isinstance(target[1], str)
                and all(isinstance(manifest["blobs"][role]["sha256"], str) for role in ("cubin", "helper"))):
            return None
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or malformed: search
        return None

    def redo() -> Found:
        from aotc.runtime.lookup import find

        return find(family, params, device, arch=arch)

    typed = {k: tuple(v) if type(v) is list else v for k, v in typed.items()}  # typed shapes are tuples; JSON made lists
    found = Found(family, typed, arch_name, spec_key, manifest, RecalledSource(source, redo))
    return found, (target[0], target[1])


def remember(family: str, params: dict, arch: str | None, device: Device, found: Found,
             target: tuple[int, str]) -> None:
    """Keep what the full lookup answered, once its kernel loaded and passed the target check for this
    device's capability; nothing when the lookup depends on a source that has no ref files."""
    from aotc.runtime.lookup import ref_probes

    probes = ref_probes(found, device, arch)
    if probes is None:
        return
    path = record_path(family, params, arch, device.cc)
    record = {"format": RECORD_FORMAT, "family": family, "params": found.params, "arch": found.arch,
              "spec_key": found.spec_key, "manifest": found.manifest, "source": found.source.name,
              "target": list(target), "probes": [[p, stamp(p)] for p in probes]}
    if record["probes"][-1][1] is None:  # the answering ref went away meanwhile: nothing to keep
        return
    try:
        write_atomic(path.parent, path, json.dumps(record, sort_keys=True).encode())
    except OSError:  # read-only or full: later processes search, nothing is lost
        pass


# ---- choices: what the search among a family's stored kernels found ---------------------------------
CHOICES_SUFFIX = ".choices.json"


def choices_path(family: str, device: Device) -> Any:
    """Where the record of `family`'s stored candidates for this device lives (a tune table is keyed
    by the device's name, capability and driver version, the heuristic reads its SM count; installed
    kernel wheels are found on the import path, so a process with another one keeps its own record)."""
    from aotc.runtime.tuned import driver_version

    return _named(("choices", family, tuple(device.cc), device.name, device.sm_count, driver_version(device),
                   tuple(sys.path)), CHOICES_SUFFIX)


def recall_choices(family: str, device: Device) -> tuple[list[dict], dict] | None:
    """(candidates in the sources' order, each {"params", "spec_key", "tile"}; the tune table's
    bucket -> spec key, {} when there is none) from a current record, else None."""
    try:
        record = json.loads(choices_path(family, device).read_bytes())
        if record["format"] != RECORD_FORMAT or record["family"] != family or not stamps_hold(record["probes"]):
            return None
        entries, table = record["candidates"], record["table"]
        if not (isinstance(entries, list) and isinstance(table, dict)
                and all(isinstance(e, dict) and isinstance(e.get("params"), dict) and isinstance(e.get("spec_key"), str)
                        and (e.get("tile") is None or isinstance(e.get("tile"), list)) for e in entries)):
            return None
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or malformed: search
        return None
    return entries, table


def remember_choices(family: str, device: Device, candidates: list[dict], table: dict | None,
                     probes: list[str] | None) -> None:
    """Keep what the search found (best-effort, as remember); nothing without probes (a source that
    has no folders to watch)."""
    if probes is None:
        return
    record = {"format": RECORD_FORMAT, "family": family, "candidates": candidates, "table": table or {},
              "probes": [[p, stamp(p)] for p in probes]}
    path = choices_path(family, device)
    try:
        write_atomic(path.parent, path, json.dumps(record, sort_keys=True).encode())
    except OSError:
        pass

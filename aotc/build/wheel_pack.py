"""Kernel wheels: a filtered view of the cache packed as an installable platform wheel, and the
check of such a wheel. The wheel holds a read-only cache tree (same layout as the cache: refs,
manifests, zstd blobs) under its package, metadata in aotc_wheel.json, and an `aotc.kernels`
entry point the runtime discovers (aotc/runtime/installed_wheels.py); the check is aotc/build/wheel_check.py. Byte-reproducible: fixed timestamps,
sorted entries, stored blobs copied as they are.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from aotc import ABI_VERSION, __version__
from aotc.arch import Arch
from aotc.build.wheel_check import WheelCheck, check_wheel  # noqa: F401 - the check lives there
from aotc.cache import Cache, CacheFormatError, header_map
from aotc.cache.manifest import manifest_problems
from aotc.diagnostics import AotcError, Diagnostic
from aotc.runtime.installed_wheels import ENTRY_POINT_GROUP, METADATA_FILE, STORE_DIR
from aotc.runtime.tuned import KIND as TUNE_KIND
from aotc.runtime.tuned import stored_tables

PLATFORMS = ("x86_64", "aarch64")
# manylinux floor: glibc 2.17 (manylinux2014) unless a host object needs newer symbol versions.
_GLIBC_FLOOR = (2, 17)
# GLIBCXX / CXXABI symbol version -> glibc of the oldest manylinux image whose libstdc++ provides it
# (auditwheel's policy: the tag is the oldest policy whose symbol versions cover what is needed).
_LIBSTDCXX_GLIBC = {
    "GLIBCXX": [((3, 4, 19), (2, 17)), ((3, 4, 22), (2, 24)), ((3, 4, 24), (2, 27)), ((3, 4, 25), (2, 28)),
                ((3, 4, 28), (2, 31)), ((3, 4, 29), (2, 34)), ((3, 4, 30), (2, 35))],
    "CXXABI": [((1, 3, 7), (2, 17)), ((1, 3, 10), (2, 24)), ((1, 3, 11), (2, 27)), ((1, 3, 12), (2, 31)),
               ((1, 3, 13), (2, 34))],
}
_ELF_MACHINE = {62: "x86_64", 183: "aarch64"}  # e_machine of the native host helpers
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def glibc_needed(needs: dict[str, list[str]]) -> tuple[tuple[int, int] | None, list[str]]:
    """The oldest glibc (major, minor) a host object with these symbol-version needs loads on, and the
    versions that decided it; None when a libstdc++ version is newer than any manylinux image knows."""
    floor, why = _GLIBC_FLOOR, []
    for versions in needs.values():
        for v in versions:
            prefix, _, number = v.partition("_")
            if prefix == "GLIBC" and number:
                needed = _version_tuple(number)[:2]
            elif prefix in _LIBSTDCXX_GLIBC and number:
                wanted = _version_tuple(number)
                needed = next((g for have, g in _LIBSTDCXX_GLIBC[prefix] if wanted <= have), None)
                if needed is None:
                    return None, [v]
            else:
                continue
            if needed > floor:
                floor, why = needed, [v]
            elif needed == floor and needed > _GLIBC_FLOOR:
                why.append(v)
    return floor, sorted(set(why))


def platform_tag(host_objects: dict[str, bytes], machine: str) -> tuple[str, dict]:
    """auditwheel's rule: manylinux_X_Y for the newest glibc any host object (helper .so, FlashInfer
    module) needs, from its ELF version-needed section; plain linux_<machine> if beyond every policy.
    Returns the tag and what decided it (for aotc_wheel.json)."""
    from aotc.elf import version_needs

    newest, decided_by = _GLIBC_FLOOR, {}
    for name, data in host_objects.items():
        glibc, why = glibc_needed(version_needs(data))
        if glibc is None:
            return f"linux_{machine}", {"glibc": None, "decided_by": {name: why}}
        if glibc > newest:
            newest, decided_by = glibc, {name: why}
    return f"manylinux_{newest[0]}_{newest[1]}_{machine}", {"glibc": f"{newest[0]}.{newest[1]}",
                                                             "decided_by": decided_by}


def content_version(manifests: list[dict], tables: list[dict] = ()) -> str:
    """aotc's version + a local label from the newest build (or `aotc tune`) time and the digest of
    the selected entries and tune tables, e.g. 0.1.0+20261201020345.3f2a9c1b: a rebuilt catalog or a
    re-tuned table gets a higher version (so pip upgrades), the same content the same version (so
    the wheel stays byte-reproducible)."""
    newest = max([m.get("built_at", "") for m in manifests] + [t.get("tuned_at", "") for t in tables], default="")
    stamp = re.sub(r"\D", "", newest)[:14] or "0"
    content = "\n".join(sorted(m["key"] for m in manifests))
    content += "".join(sorted("\n" + json.dumps(t, sort_keys=True) for t in tables))  # nothing without tables
    digest = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"{__version__}+{stamp}.{digest}"


_PEP440 = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?",
                     re.IGNORECASE)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def select_entries(cache: Cache, archs: list[Arch], patterns: list[str] | None = None) -> list[tuple[dict, dict]]:
    """(ref, manifest) of every current kernel for the archs, optionally filtered by name/family."""
    from aotc.build.spec import KernelSpec, filter_specs

    wanted = {a.name for a in archs}
    chosen = []
    for ref in cache.refs():
        if ref.get("arch") not in wanted:
            continue
        try:
            manifest = cache.get_manifest(ref["key"])
        except CacheFormatError:
            continue  # unreadable: left to `aotc verify`, never shipped
        if manifest is None or manifest_problems(manifest, ref["key"]):
            continue
        if patterns:
            probe = KernelSpec(manifest["name"], manifest["family"], {}, ())
            if not filter_specs([probe], patterns):
                continue
        chosen.append((ref, manifest))
    chosen.sort(key=lambda rm: (rm[1]["name"], rm[1]["arch"]))
    return chosen


@dataclass
class _ZipWriter:
    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def record_line(self, name: str) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(self.files[name]).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(self.files[name])}"

    def write(self, path: Path, dist_info: str) -> None:
        record = f"{dist_info}/RECORD"
        body = "".join(self.record_line(n) + "\n" for n in sorted(self.files)) + f"{record},,\n"
        self.files[record] = body.encode()
        # dist-info last, RECORD very last (wheel convention); everything else sorted.
        order = sorted(n for n in self.files if not n.startswith(dist_info + "/"))
        order += sorted(n for n in self.files if n.startswith(dist_info + "/") and n != record) + [record]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in order:
                info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                # zstd blobs are already compressed; deflate the small JSON/Python files.
                info.compress_type = zipfile.ZIP_STORED if name.endswith(".zst") else zipfile.ZIP_DEFLATED
                zf.writestr(info, self.files[name], compresslevel=9)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)


def build_wheel(cache: Cache, entries: list[tuple[dict, dict]], dist_name: str, out_dir: Path,
                version: str | None = None, machine: str = "x86_64", sources: bool = False) -> Path:
    """Write one kernel wheel of `entries`; version None = content_version (see there). The blobs
    only a build reads (header_map.BUILD_ONLY_ROLES: sources, header maps) stay in the cache unless
    `sources`; the manifests still name them, so the wheel says what it was built from."""
    if not entries:
        raise AotcError(Diagnostic("AOTC-WHEEL-002", f"no cache entries selected for wheel {dist_name!r}",
                                   fix="build kernels first (`aotc build --arch ...`) or widen --arch/--filter"))
    if machine not in PLATFORMS:
        raise AotcError(Diagnostic("AOTC-WHEEL-003", f"unknown machine {machine!r}",
                                   fix=f"use one of {', '.join(PLATFORMS)}"))
    packed = {ref["spec_key"] for ref, _ in entries}  # `aotc tune` tables that time only these kernels go too
    tables = [(p, t) for p, t in stored_tables(cache) if set(t["kernels"]) <= packed]
    if version is None:
        version = content_version([m for _, m in entries], [t for _, t in tables])
    elif not _PEP440.fullmatch(version):
        raise AotcError(Diagnostic("AOTC-WHEEL-020", f"wheel version {version!r} is not a PEP 440 version",
                                   fix="give e.g. 1.2.0 or 1.2.0+local.label, or leave it out for a content version"))
    pkg = _normalize(dist_name)
    dist_info = f"{pkg}-{version}.dist-info"
    zw = _ZipWriter()
    store_prefix = f"{pkg}/{STORE_DIR}/v1"
    digests: set[str] = set()
    left_out = () if sources else header_map.BUILD_ONLY_ROLES
    for ref, manifest in entries:
        key, sk = manifest["key"], ref["spec_key"]
        zw.add(f"{store_prefix}/actions/{key[:2]}/{key}.json", cache.manifest_path(key).read_bytes())
        zw.add(f"{store_prefix}/refs/{sk[:2]}/{sk}.json", cache.ref_path(sk).read_bytes())
        digests.update(b["sha256"] for role, b in manifest["blobs"].items() if role not in left_out)
    for path, table in tables:
        zw.add(f"{store_prefix}/{TUNE_KIND}/{table['key'][:2]}/{table['key']}.json", path.read_bytes())
    raw_total = stored_total = 0
    helpers = {m["blobs"]["helper"]["sha256"]: m["name"] for _, m in entries if "helper" in m["blobs"]}
    host_objects: dict[str, bytes] = {}  # what decides the manylinux tag: helpers and FlashInfer modules
    modules = {m["blobs"]["so"]["sha256"]: m["name"] for _, m in entries if "so" in m["blobs"]}
    for digest in sorted(digests):
        data = cache.read_blob(digest)  # verify before shipping: a corrupt blob must not reach users
        if digest in helpers:
            built_for = _ELF_MACHINE.get(int.from_bytes(data[18:20], "little"), "unknown")
            if built_for != machine:
                raise AotcError(Diagnostic(
                    "AOTC-WHEEL-007", f"{helpers[digest]}: its host helper is a {built_for} binary, but the wheel "
                    f"is tagged for {machine}", fix=f"build the kernels on a {machine} machine, or use --machine "
                    f"{built_for}"))
        if digest in helpers or digest in modules:
            host_objects[helpers.get(digest) or modules[digest]] = data
        stored = cache.store.path(digest).read_bytes()
        zw.add(f"{store_prefix}/blobs/{digest[:2]}/{digest}.zst", stored)
        stored_total += len(stored)
        raw_total += cache.store.stat(digest).raw_bytes
    manifests = [m for _, m in entries]
    meta = {
        "abi": ABI_VERSION, "aotc_version": __version__, "name": dist_name, "version": version,
        "targets": sorted({m["arch"] for m in manifests}),
        "toolchains": sorted({m["toolchain"]["nvcc_version"] for m in manifests}),
        "cutlass_versions": sorted({str(m["cutlass_version"]) for m in manifests if m.get("cutlass_version")}),
        "flashinfer_versions": sorted({m["flashinfer_version"] for m in manifests if m.get("flashinfer_version")}),
        "kernels": len(manifests), "blob_bytes_raw": raw_total, "blob_bytes_stored": stored_total,
        "tune_tables": len(tables),
        "blobs_left_out": sorted(left_out),
    }
    platform, meta["platform"] = platform_tag(host_objects, machine)
    zw.add(f"{pkg}/{METADATA_FILE}", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    zw.add(f"{pkg}/__init__.py", b'"""Prebuilt aotc kernels (data only); found through the aotc.kernels entry point."""\n')
    tag = f"py3-none-{platform}"
    zw.add(f"{dist_info}/METADATA", (
        f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
        f"Summary: aotc prebuilt kernels for {', '.join(meta['targets'])}\nRequires-Python: >=3.10\n"
        f"Requires-Dist: aotc>={__version__.rsplit('.', 1)[0]}\n").encode())
    zw.add(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: aotc {__version__}\nRoot-Is-Purelib: false\n"
           f"Tag: {tag}\n".encode())
    zw.add(f"{dist_info}/entry_points.txt", f"[{ENTRY_POINT_GROUP}]\n{pkg} = {pkg}\n".encode())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{pkg}-{version}-{tag}.whl"
    zw.write(path, dist_info)
    return path

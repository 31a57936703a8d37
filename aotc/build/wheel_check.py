"""`aotc wheel --check`: prove a kernel wheel is whole and safe before anyone installs it. Every zip
entry must be a regular file inside the package or its dist-info and match RECORD; metadata,
manifests and refs must parse as what they are; every blob in it must match its digest (only the
sources and header maps, which only a build reads, may be absent); every cubin
(and every cubin inside a FlashInfer module) must target what its manifest says, run on --arch, and
pass the SASS scan the build runs. Build side: needs cuobjdump or nvdisasm for the scan.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from aotc import ABI_VERSION
from aotc.arch import ARCHES, Arch, target_runs_on
from aotc.cache import header_map
from aotc.cache.store import is_digest
from aotc.diagnostics import AotcError, Diagnostic
from aotc.runtime.installed_wheels import METADATA_FILE, STORE_DIR

_MAX_BLOB_BYTES = 1 << 31
NO_SCAN = 13  # AOTC-WHEEL-013: no disassembler, so the SASS scan did not run
_MISSING = "missing from the wheel"


class Tree(Protocol):
    """What the content checks read: a wheel's zip, or an installed wheel's folder (InstalledTree)."""

    def namelist(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...  # KeyError when absent


@dataclass
class WheelCheck:
    path: str
    meta: dict
    kernels: list[dict]
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def to_json(self) -> dict:
        return {"path": self.path, "ok": self.ok, "meta": self.meta, "kernels": self.kernels,
                "diagnostics": [d.to_json() for d in self.diagnostics]}


def _diag(number: int, message: str, fix: str = "do not install this wheel; rebuild it from a verified cache "
          "(`aotc verify`, then `aotc wheel`)") -> Diagnostic:
    return Diagnostic(f"AOTC-WHEEL-{number:03d}", message, fix=fix)


def _record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _json_object(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _record(tree: Tree, name: str, what: str) -> dict | None:
    """A manifest or ref of the wheel's cache tree, checksum verified as the cache reads it."""
    from aotc.cache.entries import CacheFormatError, parse_record

    try:
        return parse_record(tree.read(name), Path(name), what)
    except CacheFormatError:
        return None


def _layout(zf: zipfile.ZipFile, path: Path) -> tuple[str, str]:
    """(package folder, dist-info folder) of an aotc kernel wheel; AotcError if it is none."""
    names = zf.namelist()
    metas = [n for n in names if n.count("/") == 1 and n.endswith("/" + METADATA_FILE)]
    records = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
    if len(metas) != 1 or len(records) != 1:
        raise AotcError(_diag(4, f"{path} is not an aotc kernel wheel: {len(metas)} top-level {METADATA_FILE} and "
                              f"{len(records)} dist-info RECORD files (one each expected)",
                              "pass a wheel made by `aotc wheel`"))
    return metas[0].split("/")[0], records[0].split("/")[0]


def _check_entries(zf: zipfile.ZipFile, pkg: str, dist_info: str) -> list[Diagnostic]:
    """Only regular files, only inside the package or its dist-info, no path tricks."""
    diags = []
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        mode = info.external_attr >> 16
        if name.startswith("/") or "\\" in name or ".." in parts or not parts or parts[0] not in (pkg, dist_info):
            diags.append(_diag(8, f"entry {name!r} lies outside {pkg}/ and {dist_info}/"))
        elif info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # no type bits: a plain file
            diags.append(_diag(8, f"entry {name!r} is not a regular file (mode {mode:o})"))
    return diags


def _check_record(zf: zipfile.ZipFile, dist_info: str) -> list[Diagnostic]:
    """Every file listed in RECORD with its sha256 and size, and nothing in RECORD that is absent."""
    record_name = f"{dist_info}/RECORD"
    try:
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as e:
        return [_diag(9, f"{record_name} is unreadable: {e}")]
    listed = {}
    for row in rows:
        if row:
            listed[row[0]] = row[1:]
    diags = []
    present = {info.filename: info for info in zf.infolist() if not info.is_dir()}
    for name in sorted(present):
        if name == record_name:
            continue
        entry = listed.get(name)
        if entry is None:
            diags.append(_diag(9, f"{name} is not listed in RECORD"))
            continue
        data = zf.read(name)
        if len(entry) != 2 or entry[0] != _record_digest(data) or entry[1] != str(len(data)):
            diags.append(_diag(9, f"{name} does not match RECORD ({len(data):,} B, {_record_digest(data)[:20]}..., "
                                  f"RECORD says {','.join(entry)[:60]})"))
    diags += [_diag(9, f"RECORD lists {name}, which the wheel does not contain")
              for name in sorted(set(listed) - set(present))]
    return diags


def _read_blob(tree: Tree, prefix: str, digest: str, size: object) -> tuple[bytes | None, str]:
    """(raw bytes, "") of a blob whose content matches its digest and size, else (None, why)."""
    import zstandard

    try:
        stored = tree.read(f"{prefix}blobs/{digest[:2]}/{digest}.zst")
        # Read as the cache's store reads it: a frame must carry its content size (the store writes it
        # and its one-shot decompress reads no other), so --check passes only what the runtime can load.
        declared = zstandard.frame_content_size(stored)
        if declared < 0:
            return None, "unreadable (a zstd frame without its content size, which aotc's store cannot read)"
        if declared > _MAX_BLOB_BYTES:
            return None, f"unreadable (its zstd frame declares {declared:,} B, over {_MAX_BLOB_BYTES:,} B)"
        raw = zstandard.ZstdDecompressor().decompress(stored)
    except KeyError:
        return None, _MISSING
    except zstandard.ZstdError as e:
        return None, f"unreadable ({e})"
    if hashlib.sha256(raw).hexdigest() != digest:
        return None, f"content does not match its sha256 {digest[:16]}...: the wheel was modified"
    if size != len(raw):
        return None, f"is {len(raw):,} B, the manifest says {size}"
    return raw, ""


def _manifest_problem(m: dict | None, key: str) -> str:
    """The cache's one manifest check, plus what a wheel's entry needs: a cubin or a module to ship."""
    from aotc.cache.manifest import manifest_problems

    if m is None:
        return "not a JSON object, or its content differs from its checksum"
    problems = manifest_problems(m, key) if is_digest(key) else ["its file name is no digest"]
    if not problems and not ("cubin" in m["blobs"] or "so" in m["blobs"]):
        problems = ["`blobs` holds no cubin or module"]
    return "; ".join(problems)


class _SassScanner:
    """The build's own cubin checks (target, banned opcodes, budget), with the toolchain found once."""

    def __init__(self):
        from aotc.build.toolchain import find_disassemblers

        self.toolchain = find_disassemblers()

    def cubin(self, data: bytes, arch: Arch) -> list[Diagnostic]:
        from aotc.build.verify import verify_cubin

        if self.toolchain is None:
            return [_diag(NO_SCAN, "no cuobjdump or nvdisasm found: the SASS scan cannot run, so the cubins are "
                          "unproven", "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (part of aotc[build])")]
        report = verify_cubin(data, arch, None, self.toolchain, arch.smem_optin_bytes, 0)
        return report.diagnostics

    def module(self, so: bytes, arch: Arch, name: str, listed: list[str]) -> list[Diagnostic]:
        """The SASS scan of every cubin the library embeds; `listed`: the targets its manifest names,
        which a library embedding no cubin at all contradicts (nothing would be scanned)."""
        from aotc.build.flashinfer.module_build import extract_cubins, verify_module_cubins

        if self.toolchain is None:
            return self.cubin(b"", arch)
        with tempfile.TemporaryDirectory(prefix="aotc-wheel-check-") as tmp:
            path = Path(tmp) / "module.so"
            path.write_bytes(so)
            try:
                cubins = extract_cubins(path, self.toolchain)
            except AotcError as e:
                return e.diagnostics
        if not cubins and listed:
            return [_diag(6, f"module {name[:100]}: its manifest lists cubins for {', '.join(listed)}, but its "
                             "library embeds no cubin")]
        return verify_module_cubins(cubins, arch, self.toolchain, name)[1]


def _check_kernel(tree: Tree, prefix: str, m: dict, arch: Arch | None, scanner: _SassScanner,
                  diags: list[Diagnostic]) -> dict | None:
    from aotc.elf import cubin_target

    label = f"{m['name'][:100]} ({m['arch'][:20]})"
    raws = {}
    for kind, b in sorted(m["blobs"].items()):
        raw, why = _read_blob(tree, prefix, b["sha256"], b["size"])
        if raw is None and kind in header_map.BUILD_ONLY_ROLES and why == _MISSING:
            continue  # a source or header map: only a build reads them, wheels leave them out
        if raw is None:
            diags.append(_diag(5, f"{label}: {kind} blob {why}"))
            return None
        raws[kind] = raw
    built_for = ARCHES.get(m["arch"])
    if built_for is None:
        diags.append(_diag(11, f"{label}: unknown arch {m['arch'][:20]!r}"))
        return None
    if "cubin" in raws:
        try:
            targets = [cubin_target(raws["cubin"])]
        except AotcError as e:
            diags.extend(e.diagnostics)
            return None
        if targets[0] != (built_for.sm, built_for.variant):
            diags.append(_diag(6, f"{label}: the cubin's ELF says sm_{targets[0][0]}{targets[0][1]}, its manifest "
                                  f"{built_for.nvcc_name}"))
        diags.extend(Diagnostic(d.code, f"{label}: {d.message}", fix=d.fix, details=d.details)
                     for d in scanner.cubin(raws["cubin"], built_for))
    else:
        listed = m.get("cubins") if isinstance(m.get("cubins"), list) else []
        targets = []
        for c in listed:
            t = str(c.get("target", "")) if isinstance(c, dict) else ""
            digits = t.removeprefix("sm_")
            sm, variant = (digits[:-1], digits[-1]) if digits[-1:] in ("a", "f") else (digits, "")
            if not (sm.isascii() and sm.isdigit()):  # e.g. sm_120X: refused, not a ValueError from int()
                diags.append(_diag(11, f"{label}: cubin target {t[:20]!r} is not sm_NNN[af]"))
                return None
            targets.append((int(sm), variant))
        diags.extend(scanner.module(raws["so"], built_for, m["name"], [f"sm_{sm}{v}" for sm, v in targets]))
    device_cc = divmod(arch.sm, 10) if arch else None
    runs = all(target_runs_on(sm, v, device_cc) for sm, v in targets) if device_cc else None
    shown = ",".join(sorted({f"sm{sm}{v}" for sm, v in targets})) or "none"
    return {"name": m["name"], "family": m["family"], "arch": m["arch"], "elf_target": shown,
            "sizes": {k: m["blobs"][k]["size"] for k in raws}, "left_out": sorted(set(m["blobs"]) - set(raws)),
            "runs_on_arch": runs}


def _check_tables(tree: Tree, prefix: str, names: list[str]) -> list[Diagnostic]:
    """`aotc tune` selection tables: checksum, content key = file name, every kernel packed here."""
    from aotc.runtime.tuned import KIND, table_problem

    spec_keys = {PurePosixPath(n).stem for n in names if n.startswith(prefix + "refs/")}
    diags = []
    for name in (n for n in names if n.startswith(f"{prefix}{KIND}/")):
        table = _record(tree, name, "tune table")
        problem = ("not a JSON object, or its content differs from its checksum" if table is None
                   else table_problem(table, PurePosixPath(name).stem))
        if not problem and not set(table["kernels"]) <= spec_keys:
            problem = "it names kernels this wheel does not hold"
        if problem:
            diags.append(_diag(14, f"tune table {name}: {problem}"))
    return diags


def check_wheel(path: Path, arch: Arch | None = None) -> WheelCheck:
    """Every check of the module docstring; `arch` also flags kernels its devices cannot run."""
    try:
        try:
            zf = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise AotcError(_diag(4, f"{path} is not a readable wheel: {e}", "pass a wheel made by `aotc wheel`")) \
                from None
        with zf:
            encrypted = [info.filename for info in zf.infolist() if info.flag_bits & 0x1]
            if encrypted:  # zipfile would raise RuntimeError (password required) on the first read
                raise AotcError(_diag(4, f"{path} is a damaged zip: {len(encrypted)} member(s) marked encrypted, "
                                         f"e.g. {encrypted[0][:120]}", "download or rebuild the wheel"))
            return _check_open(zf, path, arch)
    except _DAMAGED_ZIP as e:  # opening (e.g. a zip version zipfile does not read) or reading a member
        raise AotcError(_diag(4, f"{path} is a damaged zip: {e}", "download or rebuild the wheel")) from None


# What zipfile raises on damaged archives and members; OSError: a member's header offset points
# outside the file (EINVAL on seek); NotImplementedError: a zip version or compression it lacks
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError)


def _check_open(zf: zipfile.ZipFile, path: Path, arch: Arch | None) -> WheelCheck:
    pkg, dist_info = _layout(zf, path)
    diags = _check_entries(zf, pkg, dist_info) + _check_record(zf, dist_info)
    meta, kernels, content = check_tree(zf, pkg, arch)
    diags += content
    diags += [_diag(6, f"{k['name']}: cubin target {k['elf_target']} cannot run on {arch.name} devices",
                    f"rebuild the wheel with --arch {arch.name}") for k in kernels if arch and not k["runs_on_arch"]]
    return WheelCheck(str(path), meta, kernels, diags)


def check_tree(tree: Tree, pkg: str, arch: Arch | None = None) -> tuple[dict, list[dict], list[Diagnostic]]:
    """(metadata, kernels, diagnostics) of a kernel wheel's package folder `pkg` in `tree`: a zip, or
    an installed wheel (InstalledTree); anything with namelist() and read(name), KeyError when absent.
    The checks that do not depend on --arch: metadata and ABI, every manifest and ref, every blob's
    digest, every cubin's ELF target and SASS scan, the tune tables. The runtime runs exactly this on
    a kernel wheel it finds installed (aotc.runtime.wheel_verdicts)."""
    diags = []
    meta = _json_object(tree.read(f"{pkg}/{METADATA_FILE}"))
    if meta is None:
        diags.append(_diag(10, f"{pkg}/{METADATA_FILE} is not a JSON object"))
        meta = {}
    elif meta.get("abi") != ABI_VERSION:
        diags.append(_diag(1, f"built for aotc ABI {str(meta.get('abi'))[:20]} (aotc "
                              f"{str(meta.get('aotc_version'))[:20]}); this aotc speaks ABI {ABI_VERSION}",
                           "rebuild the wheel with this aotc version"))
    prefix = f"{pkg}/{STORE_DIR}/v1/"
    names = sorted(n for n in tree.namelist() if n.endswith(".json"))
    keys, kernels, scanner = set(), [], _SassScanner()
    for name in (n for n in names if n.startswith(prefix + "actions/")):
        key = PurePosixPath(name).stem
        m = _record(tree, name, "manifest")
        problem = _manifest_problem(m, key)
        if problem:
            diags.append(_diag(11, f"manifest {name}: {problem}"))
            continue
        keys.add(key)
        kernel = _check_kernel(tree, prefix, m, arch, scanner, diags)
        if kernel is not None:
            kernels.append(kernel)
    for name in (n for n in names if n.startswith(prefix + "refs/")):
        ref = _record(tree, name, "ref")
        key = ref.get("key") if ref is not None else None
        if ref is None or ref.get("spec_key") != PurePosixPath(name).stem or not isinstance(key, str) \
                or key not in keys:
            diags.append(_diag(11, f"ref {name}: not a JSON object naming its spec key and a manifest of "
                                   "this wheel"))
    diags += _check_tables(tree, prefix, names)
    return meta, kernels, diags


class InstalledTree:
    """An installed wheel's files as check_tree reads them: names relative to site-packages."""

    def __init__(self, base: Path, pkg: str):
        self.base, self.pkg = base, pkg

    def namelist(self) -> list[str]:
        return [(Path(top) / f).relative_to(self.base).as_posix()
                for top, _, files in os.walk(self.base / self.pkg) for f in files]

    def read(self, name: str) -> bytes:
        try:
            return (self.base / name).read_bytes()
        except FileNotFoundError:
            raise KeyError(name) from None

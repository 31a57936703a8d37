"""Hostile kernel wheels: `aotc wheel --check` refuses every tampered, relabelled, misplaced or
malformed part (RECORD, every blob, the SASS of every cubin), and runtime discovery refuses each bad
wheel on its own without hiding the good ones. Real cubins from nvcc (a few seconds: tiny kernels)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import zstandard

from aotc import ABI_VERSION
from aotc.arch import ARCHES, get_arch
from aotc.build.toolchain import find_toolchain
from aotc.build.wheel_check import check_wheel
from aotc.build.wheel_pack import build_wheel, select_entries
from aotc.cache import Cache
from aotc.diagnostics import AotcError
from aotc.keys import sha256_hex

pytestmark = pytest.mark.compile
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reused_builds import cubin, shared_library
from test_verify import MMA_KERNEL, TCGEN05_KERNEL


def relabel_as_sm120a(cubin: bytes) -> bytes:
    """A real sm_100a cubin made to claim sm_120a everywhere aotc.elf looks (e_flags, ptxas note)."""
    data = bytearray(cubin)
    assert data[0x31] == 100
    data[0x31] = 120
    data = bytearray(bytes(data).replace(b"-arch sm_100a", b"-arch sm_120a"))
    return bytes(data)


def add_entry(cache: Cache, name: str, cubin: bytes, arch: str = "sm120a") -> None:
    a = get_arch(arch)
    key, sk = sha256_hex(name.encode() + b"key"), sha256_hex(name.encode() + b"spec")
    manifest = {"name": name, "family": "fmha_fwd", "params": {"n": name}, "arch": arch, "spec_key": sk,
                "target": {"sm": a.sm, "variant": a.variant}, "toolchain": {"nvcc_version": "13.0"},
                "inputs": {"headers": {"<cuda>/cuda_runtime.h": sha256_hex(name)}}}  # stored as a blob
    cache.put_entry(key, {"cubin": cubin, "source": f"// {name}\n".encode()}, manifest)
    cache.set_ref(sk, key, {"family": "fmha_fwd", "params": {"n": name}, "arch": arch, "name": name})


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fault-wheel")
    tc = find_toolchain()
    # the cubins nvcc wrote for an earlier test process (tests/reused_builds.py); the rest runs here
    good_cache, bad_cache = Cache(tmp / "good"), Cache(tmp / "bad")
    add_entry(good_cache, "mma_a", cubin(MMA_KERNEL, "sm120a", tc))
    add_entry(bad_cache, "tcgen05_relabelled", relabel_as_sm120a(cubin(TCGEN05_KERNEL, "sm100a", tc)))
    arch = [ARCHES["sm120a"]]
    good = build_wheel(good_cache, select_entries(good_cache, arch), "kgood", tmp / "good-dist")
    bad = build_wheel(bad_cache, select_entries(bad_cache, arch), "kbad", tmp / "bad-dist")
    return good, bad, tmp


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def rewrite(src: Path, dst: Path, edit=None, add=None, drop=(), fix_record=True, modes=None) -> Path:
    """Copy a wheel, replacing/adding/dropping entries; RECORD recomputed unless fix_record=False
    (an attacker who makes every hash consistent)."""
    edit, add, modes = edit or {}, add or {}, modes or {}
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    for name, fn in edit.items():
        files[name] = fn(files[name])
    files.update(add)
    for name in drop:
        files.pop(name)
    if fix_record:
        files[record] = ("".join(record_line(n, d) + "\n" for n, d in sorted(files.items()) if n != record)
                         + f"{record},,\n").encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = modes.get(name, 0o100644) << 16
            zf.writestr(info, data)
    return dst


def names(whl: Path, part: str) -> list[str]:
    with zipfile.ZipFile(whl) as zf:
        return [n for n in zf.namelist() if part in n]


def codes(report) -> list[str]:
    return sorted({d.code for d in report.diagnostics})


def test_a_whole_wheel_passes_every_check(wheels):
    good, _, _ = wheels
    report = check_wheel(good, ARCHES["sm120a"])
    assert report.ok, [d.format() for d in report.diagnostics]
    assert [k["name"] for k in report.kernels] == ["mma_a"]
    assert report.meta["abi"] == ABI_VERSION and report.path == str(good)


def test_a_relabelled_sm100a_tcgen05_cubin_is_refused_by_the_sass_scan(wheels):
    _, bad, _ = wheels
    from aotc.elf import cubin_target

    with zipfile.ZipFile(bad) as zf:
        blobs = [zstandard.ZstdDecompressor().decompress(zf.read(n), max_output_size=1 << 24)
                 for n in zf.namelist() if n.endswith(".zst")]
    assert any(b[:4] == b"\x7fELF" and cubin_target(b) == (120, "a") for b in blobs)  # the ELF lies well
    report = check_wheel(bad, ARCHES["sm120a"])
    assert not report.ok
    assert set(codes(report)) & {"AOTC-VERIFY-002", "AOTC-VERIFY-006"}, [d.format() for d in report.diagnostics]


def test_every_file_is_checked_against_record(wheels):
    good, _, tmp = wheels
    manifest = names(good, "/actions/")[0]
    changed = rewrite(good, tmp / "changed.whl", edit={manifest: lambda b: b.replace(b'"mma_', b'"mmx_')},
                      fix_record=False)
    assert "AOTC-WHEEL-009" in codes(check_wheel(changed))
    extra = rewrite(good, tmp / "extra.whl", add={"kgood/extra.py": b"import os\n"}, fix_record=False)
    assert "AOTC-WHEEL-009" in codes(check_wheel(extra))
    # an unlisted file does not end the check: the changed manifest after it (in name order) is named too
    both = rewrite(good, tmp / "both.whl", add={"kgood/extra.py": b"import os\n"},
                   edit={manifest: lambda b: b.replace(b'"mma_', b'"mmx_')}, fix_record=False)
    named = sorted(n for n in ("kgood/extra.py", manifest) for d in check_wheel(both).diagnostics
                   if d.code == "AOTC-WHEEL-009" and d.message.startswith(n + " "))
    assert named == sorted(["kgood/extra.py", manifest]), named
    ref = names(good, "/refs/")[0]
    missing = rewrite(good, tmp / "missing.whl", drop=[ref], fix_record=False)
    assert [ref in d.message for d in check_wheel(missing).diagnostics if d.code == "AOTC-WHEEL-009"] == [True]
    # a mismatch names what the file is (its size, the first 20 characters of its digest) and at most 60
    # characters of what RECORD says
    record = names(good, "RECORD")[0]
    with zipfile.ZipFile(good) as zf:
        data = zf.read(manifest)
    said = f"sha256={'A' * 80},{len(data)}"
    lying = rewrite(good, tmp / "lying.whl", fix_record=False, edit={record: lambda b: b"".join(
        (f"{manifest},{said}".encode() if line.startswith(manifest.encode() + b",") else line) + b"\n"
        for line in b.splitlines())})
    (d,) = [d for d in check_wheel(lying).diagnostics if d.code == "AOTC-WHEEL-009"]
    digest = record_line(manifest, data).split(",")[1]
    assert d.message.startswith(manifest + " ") and f"{len(data):,} B" in d.message and f"{digest[:20]}..." in d.message
    assert said[:60] in d.message and said[:61] not in d.message


@pytest.fixture(scope="module")
def full(wheels) -> Path:
    """The good wheel with what only a build reads packed too, as `aotc wheel --with-sources` writes it
    (built once: the tests only read it)."""
    _, _, tmp = wheels
    out = subprocess.run([sys.executable, "-m", "aotc.cli", "wheel", "--cache-dir", str(tmp / "good"), "--arch",
                          "sm120a", "--name", "kgood", "--layout", "combined", "--with-sources", "--out",
                          str(tmp / "full-dist"), "--json"], capture_output=True, text=True, check=True).stdout
    (made,) = json.loads(out)["wheels"]
    return Path(made["wheel"])


def blob_name(whl: Path, kind: str) -> str:
    with zipfile.ZipFile(whl) as zf:
        m = json.loads(zf.read(names(whl, "/actions/")[0]))
    (blob,) = names(whl, m["blobs"][kind]["sha256"] + ".zst")
    return blob


@pytest.mark.parametrize("kind", ["cubin", "source", "headers"])
def test_every_blob_is_checked_even_with_a_consistent_record(wheels, full, kind):
    _, _, tmp = wheels

    def flip(data: bytes) -> bytes:
        raw = bytearray(zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 24))
        raw[len(raw) // 2] ^= 0x01
        return zstandard.ZstdCompressor().compress(bytes(raw))

    report = check_wheel(rewrite(full, tmp / f"flip-{kind}.whl", edit={blob_name(full, kind): flip}))
    digest = Path(blob_name(full, kind)).name.removesuffix(".zst")
    assert codes(report) == ["AOTC-WHEEL-005"] and kind in report.diagnostics[0].message
    assert f"sha256 {digest[:16]}..." in report.diagnostics[0].message  # which digest, 16 characters of it
    if kind != "cubin":  # a build-only blob that is absent does not end the check of the others
        other = "headers" if kind == "source" else "source"
        report = check_wheel(rewrite(full, tmp / f"flip-{kind}-without-{other}.whl", drop=[blob_name(full, other)],
                                     edit={blob_name(full, kind): flip}))
        assert codes(report) == ["AOTC-WHEEL-005"] and kind in report.diagnostics[0].message
    # without it: a cubin is missed, a source or header map is only reported as left out
    report = check_wheel(rewrite(full, tmp / f"drop-{kind}.whl", drop=[blob_name(full, kind)]))
    if kind == "cubin":
        assert codes(report) == ["AOTC-WHEEL-005"] and "cubin blob missing" in report.diagnostics[0].message
    else:
        assert report.ok and report.kernels[0]["left_out"] == [kind]


def test_a_blob_whose_frame_lacks_its_content_size_is_refused_as_the_store_refuses_it(wheels, tmp_path):
    """The same bytes, recompressed without the frame's content size, every hash consistent: the
    cache's store cannot read such a frame, so --check (and the runtime, which runs it) refuses it;
    a frame declaring more than 2 GiB is refused before anything is decompressed."""
    from aotc.cache.store import CorruptBlobError, LocalBlobStore

    good, _, tmp = wheels

    def unsized(data: bytes) -> bytes:
        raw = zstandard.ZstdDecompressor().decompress(data)
        return zstandard.ZstdCompressor(write_content_size=False).compress(raw)

    blob = blob_name(good, "cubin")
    report = check_wheel(rewrite(good, tmp / "unsized.whl", edit={blob: unsized}))
    (d,) = report.diagnostics
    assert d.code == "AOTC-WHEEL-005" and "content size" in d.message, d
    assert "cubin blob unreadable (a zstd frame without its content size" in d.message, d
    with zipfile.ZipFile(good) as zf:
        frame = unsized(zf.read(blob))
    digest = Path(blob).name.removesuffix(".zst")
    store = LocalBlobStore(tmp_path, read_only=True)
    store.path(digest).parent.mkdir(parents=True)
    store.path(digest).write_bytes(frame)
    with pytest.raises(CorruptBlobError):
        store.get(digest)
    # a frame header declaring 4 GiB (single segment, 8-byte size): refused from the header alone
    huge = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (4 << 30).to_bytes(8, "little") + b"\x01\x00\x00"
    report = check_wheel(rewrite(good, tmp / "huge.whl", edit={blob: lambda _: huge}))
    (d,) = report.diagnostics
    assert d.code == "AOTC-WHEEL-005" and "4,294,967,296 B" in d.message, d
    # exactly 2 GiB is within the limit: decompressed (and found truncated), not refused from the header
    # (the allocation is never touched: the frame's one block is empty)
    at_limit = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2 << 30).to_bytes(8, "little") + b"\x01\x00\x00"
    report = check_wheel(rewrite(good, tmp / "at-limit.whl", edit={blob: lambda _: at_limit}))
    (d,) = report.diagnostics
    assert d.code == "AOTC-WHEEL-005" and "cubin blob unreadable (" in d.message and "declares" not in d.message, d


def test_an_empty_blob_is_read_as_the_store_reads_it(wheels, full, tmp_path):
    """A zero-byte source, stored as the store writes it (a frame declaring 0 B): the store reads it
    back, so --check passes it; only a frame without a content size is unreadable."""
    from aotc.cache.entries import RECORD_SUM, _json_bytes
    from aotc.cache.store import LocalBlobStore

    _, _, tmp = wheels
    frame, digest = zstandard.ZstdCompressor().compress(b""), sha256_hex(b"")
    assert zstandard.frame_content_size(frame) == 0
    store = LocalBlobStore(tmp_path, read_only=True)
    store.path(digest).parent.mkdir(parents=True)
    store.path(digest).write_bytes(frame)
    assert store.get(digest) == b""
    old = blob_name(full, "source")
    new = old.rsplit("/blobs/", 1)[0] + f"/blobs/{digest[:2]}/{digest}.zst"

    def empty_source(data: bytes) -> bytes:
        m = json.loads(data)
        m.pop(RECORD_SUM)
        m["blobs"]["source"] = {"sha256": digest, "size": 0}
        return _json_bytes(m)

    whl = rewrite(full, tmp / "empty-source.whl", edit={names(full, "/actions/")[0]: empty_source},
                  add={new: frame}, drop=[old])
    report = check_wheel(whl)
    assert report.ok and report.kernels[0]["left_out"] == [], [d.format() for d in report.diagnostics]


def test_a_wheel_leaves_out_what_only_a_build_reads_and_says_so(wheels, full):
    good, _, _ = wheels
    with zipfile.ZipFile(good) as zf:
        m = json.loads(zf.read(names(good, "/actions/")[0]))
        meta = json.loads(zf.read("kgood/aotc_wheel.json"))
    assert sorted(m["blobs"]) == ["cubin", "headers", "source"]  # the manifest still names all three
    assert names(good, ".zst") == [blob_name(good, "cubin")]  # only the cubin travels
    assert meta["blobs_left_out"] == ["headers", "source"]
    report = check_wheel(good, ARCHES["sm120a"])
    assert report.ok and report.kernels[0]["left_out"] == ["headers", "source"]
    assert len(names(full, ".zst")) == 3
    report = check_wheel(full, ARCHES["sm120a"])
    assert report.ok and report.kernels[0]["left_out"] == [] and set(report.kernels[0]["sizes"]) == set(m["blobs"])


def test_entries_outside_the_package_and_non_regular_files_are_refused(wheels):
    good, _, tmp = wheels
    for name in ("../evil.py", "/abs.py", "otherpkg/__init__.py", "kgood/../x.py"):
        report = check_wheel(rewrite(good, tmp / "outside.whl", add={name: b"x = 1\n"}))
        assert [name in d.message for d in report.diagnostics if d.code == "AOTC-WHEEL-008"] == [True], name
    link = "kgood/link"
    report = check_wheel(rewrite(good, tmp / "link.whl", add={link: b"/etc/passwd"},
                                 modes={link: stat.S_IFLNK | 0o777}))
    (d,) = [d for d in report.diagnostics if d.code == "AOTC-WHEEL-008"]
    assert link in d.message and f"{stat.S_IFLNK | 0o777:o}" in d.message  # the entry and its mode


@pytest.mark.parametrize("meta", [b"[1, 2]", b"not json", b"[" * 100_000, b'{"abi": 999, "aotc_version": "9"}'])
def test_malformed_or_foreign_metadata_is_refused(wheels, meta, capsys):
    from aotc.cli import main

    good, _, tmp = wheels
    report = check_wheel(rewrite(good, tmp / "meta.whl", edit={"kgood/aotc_wheel.json": lambda _: meta}))
    assert codes(report) == (["AOTC-WHEEL-001"] if meta.startswith(b"{") else ["AOTC-WHEEL-010"])
    (d,) = report.diagnostics
    if meta.startswith(b"{"):  # both ABIs and the aotc version that wrote it
        assert "999" in d.message and str(ABI_VERSION) in d.message and "(aotc 9)" in d.message
        assert "aotc verify" not in d.fix  # a wheel of another aotc: no cache of the user's at fault
    else:
        assert "kgood/aotc_wheel.json" in d.message
        assert report.meta == {}  # metadata that is no object reads as none
    # `aotc wheel --check` prints the refusal (a report whose metadata is no object included) and fails
    capsys.readouterr()
    assert main(["wheel", "--check", str(tmp / "meta.whl")]) == 1
    assert d.code in capsys.readouterr().out


def test_a_foreign_abi_is_named_at_most_20_characters_of_each_value(wheels):
    good, _, tmp = wheels
    meta = json.dumps({"abi": "a" * 30, "aotc_version": "v" * 30}).encode()
    (d,) = check_wheel(rewrite(good, tmp / "meta.whl", edit={"kgood/aotc_wheel.json": lambda _: meta})).diagnostics
    assert d.code == "AOTC-WHEEL-001" and "a" * 20 in d.message and "a" * 21 not in d.message
    assert "v" * 20 in d.message and "v" * 21 not in d.message


@pytest.mark.parametrize("patch", [
    lambda m: {**m, "blobs": None}, lambda m: {**m, "blobs": {"cubin": {"sha256": "../../x", "size": 1}}},
    lambda m: {k: v for k, v in m.items() if k != "arch"}, lambda m: {**m, "key": "0" * 64}, lambda m: [m],
])
def test_malformed_manifests_are_refused_not_crashed_on(wheels, patch):
    good, _, tmp = wheels
    name = names(good, "/actions/")[0]
    bad = rewrite(good, tmp / "manifest.whl", edit={name: lambda b: json.dumps(patch(json.loads(b))).encode()})
    assert any(d.code == "AOTC-WHEEL-011" and name in d.message for d in check_wheel(bad).diagnostics)


def test_a_manifest_without_a_cubin_or_module_blob_is_refused(wheels, full):
    """A well-formed manifest whose blobs are a source alone: nothing to ship, refused by name."""
    _, _, tmp = wheels
    name = names(full, "/actions/")[0]
    report = check_wheel(with_manifest(full, tmp / "source-only.whl",
                                       lambda m: {**m, "blobs": {"source": m["blobs"]["source"]}}))
    manifest, ref = report.diagnostics  # the ref naming it then names no manifest of the wheel
    assert (manifest.code, manifest.message) == ("AOTC-WHEEL-011", f"manifest {name}: `blobs` holds no cubin or module")
    assert ref.code == "AOTC-WHEEL-011" and "/refs/" in ref.message and not report.kernels


def test_a_manifest_whose_file_name_is_no_digest_is_refused_by_that_name(wheels):
    """A whole manifest stored under a name that is no digest: refused for the name, whatever it holds."""
    good, _, tmp = wheels
    name = names(good, "/actions/")[0]
    odd = name.rsplit("/", 2)[0] + "/no/not-a-digest.json"
    report = check_wheel(rewrite(good, tmp / "odd-name.whl", add={odd: whl_bytes(good, name)}))
    assert [(d.code, d.message) for d in report.diagnostics] == [
        ("AOTC-WHEEL-011", f"manifest {odd}: its file name is no digest")]
    assert [k["name"] for k in report.kernels] == ["mma_a"]


def test_a_bad_manifest_does_not_end_the_check_of_the_others(wheels):
    """A copy of the manifest under another key, in name order before the real one: refused (its key is
    not its file name), and the real one is still checked, its kernel listed and its ref resolved."""
    good, _, tmp = wheels
    name = names(good, "/actions/")[0]
    first = name.rsplit("/", 2)[0] + "/00/" + "0" * 64 + ".json"
    report = check_wheel(rewrite(good, tmp / "two-manifests.whl", add={first: whl_bytes(good, name)}))
    assert [(d.code, first in d.message) for d in report.diagnostics] == [("AOTC-WHEEL-011", True)]
    assert [k["name"] for k in report.kernels] == ["mma_a"]


@pytest.mark.parametrize("field", ["key", "spec_key"])
def test_a_whole_ref_naming_another_manifest_or_spec_is_refused(wheels, field):
    """Checksum recomputed: the ref reads well, but names a manifest the wheel lacks, or a spec key
    other than its file name."""
    from aotc.cache.entries import RECORD_SUM, _json_bytes

    good, _, tmp = wheels
    name = names(good, "/refs/")[0]

    def edit(data: bytes) -> bytes:
        ref = json.loads(data)
        ref.pop(RECORD_SUM)
        return _json_bytes({**ref, field: "f" * 64})

    report = check_wheel(rewrite(good, tmp / "ref-whole.whl", edit={name: edit}))
    assert [(d.code, name in d.message) for d in report.diagnostics] == [("AOTC-WHEEL-011", True)]


def test_a_ref_to_a_missing_manifest_is_refused(wheels):
    good, _, tmp = wheels
    name = names(good, "/refs/")[0]
    bad = rewrite(good, tmp / "ref.whl", edit={name: lambda b: b.replace(b'"key": "', b'"key": "f')})
    assert codes(check_wheel(bad)) == ["AOTC-WHEEL-011"]


def test_not_a_wheel_is_a_coded_error(wheels, tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"PK\x03\x04 not really")
    for path in (junk, tmp_path / "absent.whl"):
        with pytest.raises(AotcError) as e:
            check_wheel(path)
        (d,) = e.value.diagnostics
        assert d.code == "AOTC-WHEEL-004" and str(path) in d.message and "damaged" not in d.message
        assert "`aotc wheel`" in d.fix and "aotc verify" not in d.fix  # pass another file: nothing to rebuild


def test_a_kernel_the_devices_of_arch_cannot_run_is_flagged_for_that_arch(wheels):
    good, _, _ = wheels
    with zipfile.ZipFile(good) as zf:
        cubin_size = json.loads(zf.read(names(good, "/actions/")[0]))["blobs"]["cubin"]["size"]
    for arch, runs in ((None, None), (ARCHES["sm120a"], True), (ARCHES["sm120f"], True), (ARCHES["sm121a"], False)):
        report = check_wheel(good, arch)
        (k,) = report.kernels
        assert (k["name"], k["family"], k["arch"], k["elf_target"]) == ("mma_a", "fmha_fwd", "sm120a", "sm120a")
        assert k["runs_on_arch"] is runs and k["sizes"] == {"cubin": cubin_size}
        assert report.ok is (runs is not False)
        j = report.to_json()
        assert (j["path"], j["ok"], j["kernels"], j["meta"]) == (str(good), report.ok, report.kernels, report.meta)
        assert [d["code"] for d in j["diagnostics"]] == [d.code for d in report.diagnostics]
    (d,) = check_wheel(good, ARCHES["sm121a"]).diagnostics
    assert d.code == "AOTC-WHEEL-006" and "sm120a" in d.message and "sm121a" in d.message
    assert "--arch sm121a" in d.fix


def test_a_zip_that_is_not_one_kernel_wheel_and_odd_entries_are_refused(wheels):
    good, _, tmp = wheels
    with pytest.raises(AotcError) as e:
        check_wheel(rewrite(good, tmp / "two.whl", add={"other/aotc_wheel.json": b"{}"}))
    assert e.value.diagnostics[0].code == "AOTC-WHEEL-004" and "2 top-level" in e.value.diagnostics[0].message
    assert str(tmp / "two.whl") in e.value.diagnostics[0].message
    # the fix names what to pass instead; there is no cache of this wheel's to verify
    assert "`aotc wheel`" in e.value.diagnostics[0].fix and "aotc verify" not in e.value.diagnostics[0].fix
    for name in ("kgood\\x.py", "kgood/sub\\x.py", "kgood/sub/"):  # a backslash in the package or deeper
        report = check_wheel(rewrite(good, tmp / "odd.whl", add={name: b""}))
        assert "AOTC-WHEEL-008" in codes(report), name
    record = names(good, "RECORD")[0]
    report = check_wheel(rewrite(good, tmp / "record.whl", edit={record: lambda _: b"\xff\xfe"}, fix_record=False))
    assert any(d.code == "AOTC-WHEEL-009" and "unreadable" in d.message for d in report.diagnostics)


def test_without_a_disassembler_check_says_the_cubins_are_unproven(wheels, monkeypatch):
    from aotc.build import toolchain

    good, _, _ = wheels
    monkeypatch.setattr(toolchain, "find_disassemblers", lambda: None)  # as on a machine without them
    (d,) = check_wheel(good, ARCHES["sm120a"]).diagnostics
    assert d.code == "AOTC-WHEEL-013" and d.message.startswith("mma_a (sm120a): ") and "cuobjdump" in d.message
    assert "pip install nvidia-cuda-cuobjdump" in d.fix


def test_tune_tables_must_be_whole_and_time_only_kernels_of_the_wheel(wheels):
    """`aotc tune` tables travel with the kernels they time: each must read as a table (checksum, content
    key = file name) and name only kernels the wheel holds."""
    from aotc.cache.entries import _json_bytes
    from aotc.runtime import tuned

    _, _, tmp = wheels
    shutil.copytree(tmp / "good", tmp / "tuned-cache")
    cache = Cache(tmp / "tuned-cache")
    device = {"name": "NVIDIA RTX PRO 6000 Blackwell", "cc": [12, 0], "driver": 13000}

    def table(kernels: list[str]) -> dict:
        return {"schema": tuned.SCHEMA, "family": "fmha_fwd", "device": device, "kernels": kernels,
                "choices": {"n=mma_a|": kernels[0]}, "key": tuned.table_key("fmha_fwd", device, kernels)}

    spec_key = sha256_hex(b"mma_aspec")  # add_entry's
    tuned.write_table(cache, table([spec_key]))
    whl = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "ktuned", tmp / "tuned-dist")
    (packed,) = names(whl, f"/{tuned.KIND}/")
    report = check_wheel(whl, ARCHES["sm120a"])
    assert report.ok, [d.format() for d in report.diagnostics]
    foreign = table([spec_key, "f" * 64])  # times a kernel this wheel does not hold
    edited = packed  # its checksum no longer matches
    renamed = packed.replace(".json", "0.json")  # its file name is not its content key
    cases = {
        "foreign": {"add": {f"ktuned/store/v1/{tuned.KIND}/ff/{foreign['key']}.json": _json_bytes(foreign)}},
        "edited": {"edit": {edited: lambda b: b.replace(b"n=mma_a", b"n=mmx_a")}},
        "renamed": {"add": {renamed: whl_bytes(whl, packed)}},
    }
    for case, change in cases.items():
        bad = rewrite(whl, tmp / f"table-{case}.whl", **change)
        flagged = check_wheel(bad).diagnostics
        named = {"foreign": f"/{foreign['key']}.json", "edited": packed, "renamed": renamed}[case]
        assert [(d.code, named in d.message) for d in flagged] == [("AOTC-WHEEL-014", True)], (case, flagged)


def whl_bytes(whl: Path, name: str) -> bytes:
    with zipfile.ZipFile(whl) as zf:
        return zf.read(name)


# ---- runtime discovery ----------------------------------------------------------------------------
def install(whl: Path, site: Path) -> None:
    """What pip does with a wheel's files: unpack them into one site folder."""
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)


def discover_in(site: Path) -> dict:
    """discover() as a process with `site` on its path sees it (in this process: the mutation run
    of bench/mutation.py sees which tests reach discovery)."""
    from aotc.runtime.installed_wheels import discover

    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        found, refused = discover()
    finally:
        sys.path.remove(str(site))
    assert all(isinstance(x.reason, str) and x.reason for x in refused)  # every refusal says why
    assert all(k.root == site / k.distribution / "store" and k.meta["abi"] == ABI_VERSION for k in found)
    return {"found": [k.distribution for k in found], "refused": {x.distribution: x.reason for x in refused}}


def test_discovery_refuses_each_bad_wheel_on_its_own(wheels, tmp_path):
    good, _, _ = wheels
    site = tmp_path / "site"
    install(good, site)
    renamed = {}
    for n in names(good, ""):
        renamed[n] = n.replace("kgood", "kforeign")
    foreign = tmp_path / "foreign.whl"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(foreign, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith(("entry_points.txt", "METADATA")):
                data = data.replace(b"kgood", b"kforeign")
            if n.endswith("aotc_wheel.json"):
                data = json.dumps({"abi": ABI_VERSION + 1, "aotc_version": "9.9"}).encode()
            dst.writestr(renamed[n], data)
    install(rewrite(foreign, tmp_path / "foreign2.whl"), site)
    result = discover_in(site)
    assert result["found"] == ["kgood"]
    assert "ABI" in result["refused"]["kforeign"]


def renamed(whl: Path, name: str, dst: Path) -> Path:
    """The wheel as distribution and package `name` (paths, entry point, METADATA; RECORD recomputed)."""
    plain = dst.with_name(dst.stem + "-renamed.whl")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(plain, "w") as out:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith(("entry_points.txt", "METADATA")):
                data = data.replace(b"kgood", name.encode())
            out.writestr(n.replace("kgood", name), data)
    return rewrite(plain, dst)


def test_no_kind_of_refusal_stops_discovery_of_the_wheels_after_it(wheels, tmp_path):
    """Wheels are discovered in distribution-name order; each way discovery refuses one (an entry point
    naming no findable package, a package without aotc_wheel.json, a store that cannot be read) refuses
    that wheel alone, before and after the good one."""
    good, _, _ = wheels
    site = tmp_path / "site"
    install(good, site)
    for name in ("kanon", "kbare", "kgone", "kzbare"):
        install(renamed(good, name, tmp_path / f"{name}.whl"), site)
    (ep,) = site.glob("kanon-*.dist-info/entry_points.txt")
    ep.write_text(ep.read_text().replace("= kanon", "= ..kanon"))  # relative: find_spec raises ImportError
    for name in ("kbare", "kzbare"):
        (site / name / "aotc_wheel.json").unlink()
    shutil.rmtree(site / "kgone" / "store")  # metadata reads well; the store's lstat raises FileNotFoundError
    result = discover_in(site)
    assert result["found"] == ["kgood"], result
    refused = result["refused"]
    assert list(refused) == ["kanon", "kbare", "kgone", "kzbare"], refused
    assert "'..kanon'" in refused["kanon"] and "cannot be found" in refused["kanon"]
    assert all(f"'{n}'" in refused[n] and "aotc_wheel.json" in refused[n] for n in ("kbare", "kzbare"))
    assert str(site / "kgone" / "store") in refused["kgone"] and "unreadable" in refused["kgone"]


@pytest.mark.parametrize("damage", ["meta-list", "meta-text", "meta-edit", "meta-link", "no-meta", "meta-abi",
                                    "store-file", "manifest-edit", "manifest-unsummed", "extra-file", "symlink", "dir-link", "no-record",
                                    "plain-module", "no-package", "relative-name"])
def test_discovery_refuses_what_check_refuses(wheels, tmp_path, damage):
    good, _, _ = wheels
    pristine = hashlib.sha256(good.read_bytes()).hexdigest()
    site = tmp_path / "site"
    install(good, site)
    store = site / "kgood" / "store" / "v1"
    meta = site / "kgood" / "aotc_wheel.json"
    if damage == "meta-list":
        meta.write_text("[1]")
    elif damage == "meta-text":
        meta.write_text("not json")
    elif damage == "meta-edit":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "name": "other"}))
    elif damage == "meta-link":
        (site / "meta.json").write_bytes(meta.read_bytes())
        meta.unlink()
        meta.symlink_to(site / "meta.json")
    elif damage == "no-meta":
        meta.unlink()
    elif damage == "manifest-unsummed":  # parses as a record from before checksums: only RECORD tells
        from aotc.cache.entries import RECORD_SUM

        path = next((store / "actions").rglob("*.json"))
        m = json.loads(path.read_bytes())
        m.pop(RECORD_SUM)
        path.write_text(json.dumps({**m, "note": "edited"}))
    elif damage == "meta-abi":  # a foreign ABI is named in the refusal, at most 20 characters of each value
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "abi": "a" * 30, "aotc_version": "v" * 30}))
    elif damage == "dir-link":
        os.symlink(store / "refs", store / "blobs" / "linked-folder")
    elif damage in ("plain-module", "no-package", "relative-name"):  # the entry point names no package folder
        (ep,) = site.glob("*.dist-info/entry_points.txt")
        named = {"plain-module": "json", "no-package": "no_such_pkg", "relative-name": "..kgood"}[damage]
        ep.write_text(ep.read_text().replace("= kgood", f"= {named}"))
    elif damage == "store-file":
        import shutil

        shutil.rmtree(site / "kgood" / "store")
        (site / "kgood" / "store").write_text("")
    elif damage == "manifest-edit":
        path = next((store / "actions").rglob("*.json"))
        path.write_bytes(path.read_bytes().replace(b'"mma_', b'"mmx_'))
    elif damage == "extra-file":
        (store / "refs" / "extra.json").write_text("{}")
    elif damage == "symlink":
        os.symlink("/etc/hostname", store / "blobs" / "link.zst")
    else:
        next(site.glob("*.dist-info/RECORD")).unlink()
    result = discover_in(site)
    assert result["found"] == [] and list(result["refused"]) == ["kgood"], result
    if damage == "meta-abi":
        assert f"ABI {'a' * 20} (aotc {'v' * 20})" in result["refused"]["kgood"]
    # only the installed copy was damaged: the wheel is the one test_a_whole_wheel_passes_every_check passes
    assert hashlib.sha256(good.read_bytes()).hexdigest() == pristine


def test_a_flashinfer_module_embedding_a_wrong_target_cubin_is_refused(tmp_path):
    from aotc.build.flashinfer.module_build import verify_module_cubins

    tc = find_toolchain()
    cubins = {arch: cubin(MMA_KERNEL, arch, tc) for arch in ("sm90a", "sm120a")}
    records, diags = verify_module_cubins([cubins["sm120a"]], ARCHES["sm120a"], tc, "mod")
    assert diags == [] and records[0]["target"] == "sm_120a"
    records, diags = verify_module_cubins([cubins["sm120a"], cubins["sm90a"]], ARCHES["sm120a"], tc, "mod")
    assert [r["target"] for r in records] == ["sm_120a"]
    assert len(diags) == 1 and "sm_90a" in diags[0].message and "cannot run" in diags[0].message


# ---- a wheel shipping a module (a shared library with embedded cubins, as FlashInfer's are) --------
def add_module(cache: Cache, name: str, so: bytes, targets: list[str], arch: str = "sm120a") -> None:
    a = get_arch(arch)
    key, sk = sha256_hex(name.encode() + b"key"), sha256_hex(name.encode() + b"spec")
    manifest = {"name": name, "family": "flashinfer", "params": {"module": name}, "arch": arch, "spec_key": sk,
                "target": {"sm": a.sm, "variant": a.variant}, "toolchain": {"nvcc_version": "13.0"},
                "cubins": [{"target": t} for t in targets]}
    cache.put_entry(key, {"so": so}, manifest)
    cache.set_ref(sk, key, {"family": "flashinfer", "params": {"module": name}, "arch": arch, "name": name})


@pytest.fixture(scope="module")
def module_wheels(tmp_path_factory):
    """Two real modules from nvcc -shared: one whose fatbin holds an sm_120a cubin, one that also
    embeds an sm_90a cubin (which sm120a devices cannot run), each in a wheel of its own."""
    tmp = tmp_path_factory.mktemp("module-wheel")
    tc = find_toolchain()
    wheels = {}
    for name, archs in (("mod_sm120a", ["sm_120a"]), ("mod_mixed", ["sm_120a", "sm_90a"])):
        gencode = [a for sm in archs for a in ("-gencode", f"arch=compute_{sm[3:]},code={sm}")]
        so = shared_library(MMA_KERNEL, ".cu", gencode, tc)  # nvcc -shared, once (tests/reused_builds.py)
        cache = Cache(tmp / name)
        add_module(cache, name, so, archs)
        wheels[name] = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), f"k{name}", tmp / "dist")
    return wheels, tmp


def test_every_cubin_a_shipped_module_embeds_is_scanned(module_wheels):
    wheels, _ = module_wheels
    report = check_wheel(wheels["mod_sm120a"], ARCHES["sm120a"])
    assert report.ok, [d.format() for d in report.diagnostics]
    (k,) = report.kernels
    assert (k["name"], k["elf_target"], k["runs_on_arch"], list(k["sizes"])) == ("mod_sm120a", "sm120a", True, ["so"])
    report = check_wheel(wheels["mod_mixed"], ARCHES["sm120a"])
    embedded = [d for d in report.diagnostics if d.code == "AOTC-FI-006"]  # found in the library itself
    assert embedded and all("mod_mixed" in d.message and "sm_90a" in d.message for d in embedded)
    assert all(d.details == {"cubin_target": "sm_90a", "arch": "sm120a"} for d in embedded)
    listed = [d for d in report.diagnostics if d.code == "AOTC-WHEEL-006"]  # from the manifest's cubins
    assert len(listed) == 1 and report.kernels[0]["elf_target"] == "sm120a,sm90a"
    assert len(report.diagnostics) == len(embedded) + 1 and report.kernels[0]["runs_on_arch"] is False


def test_a_module_without_a_disassembler_is_unproven(module_wheels, monkeypatch):
    from aotc.build import toolchain

    wheels, _ = module_wheels
    monkeypatch.setattr(toolchain, "find_disassemblers", lambda: None)
    (d,) = check_wheel(wheels["mod_mixed"], ARCHES["sm120a"]).diagnostics[:1]
    assert d.code == "AOTC-WHEEL-013" and "pip install nvidia-cuda-cuobjdump" in d.fix
    assert [x.code for x in check_wheel(wheels["mod_sm120a"], ARCHES["sm120a"]).diagnostics] == ["AOTC-WHEEL-013"]


def test_a_module_the_disassembler_cannot_read_is_refused(module_wheels):
    """Every hash consistent (blob name, manifest and its record checksum, RECORD): only cuobjdump tells."""
    from aotc.cache.entries import RECORD_SUM, _json_bytes

    wheels, tmp = module_wheels
    whl = wheels["mod_sm120a"]
    junk = b"\x7fELF junk"  # cuobjdump: "Invalid fatbin header"
    digest = sha256_hex(junk)
    manifest = names(whl, "/actions/")[0]

    def swap(data: bytes) -> bytes:
        m = json.loads(data)
        m.pop(RECORD_SUM)
        m["blobs"]["so"] = {"sha256": digest, "size": len(junk)}
        return _json_bytes(m)

    (old,) = names(whl, ".zst")
    store = old[:old.index("/blobs/") + len("/blobs/")]
    bad = rewrite(whl, tmp / "junk-module.whl", edit={manifest: swap}, drop=[old],
                  add={f"{store}{digest[:2]}/{digest}.zst": zstandard.ZstdCompressor().compress(junk)})
    report = check_wheel(bad, ARCHES["sm120a"])
    assert codes(report) == ["AOTC-FI-005"] and "cuobjdump" in report.diagnostics[0].message, \
        [d.format() for d in report.diagnostics]
    assert report.kernels[0]["name"] == "mod_sm120a"


def with_manifest(whl: Path, dst: Path, change) -> Path:
    """The wheel with its one manifest replaced by change(manifest), record checksum and RECORD consistent."""
    from aotc.cache.entries import RECORD_SUM, _json_bytes

    def edit(data: bytes) -> bytes:
        m = json.loads(data)
        m.pop(RECORD_SUM)
        return _json_bytes(change(m))

    return rewrite(whl, dst, edit={names(whl, "/actions/")[0]: edit})


def test_the_cubin_targets_a_module_lists_are_read_or_refused(module_wheels):
    wheels, tmp = module_wheels
    whl = wheels["mod_sm120a"]
    listing = {"plain": (["sm_120"], "sm120"), "none": ([], "none"), "both": (["sm_120f", "sm_120a"], "sm120a,sm120f")}
    for case, (targets, shown) in listing.items():
        report = check_wheel(with_manifest(whl, tmp / f"targets-{case}.whl",
                                           lambda m, targets=targets: {**m, "cubins": [{"target": t} for t in targets]}),
                             ARCHES["sm120a"])
        assert report.ok and report.kernels[0]["elf_target"] == shown, (case, report.diagnostics)
    unlisted = with_manifest(whl, tmp / "targets-unlisted.whl", lambda m: {k: v for k, v in m.items() if k != "cubins"})
    report = check_wheel(unlisted, ARCHES["sm120a"])  # no `cubins` field: nothing listed, the library still scanned
    assert report.ok and report.kernels[0]["elf_target"] == "none"
    long = "sm_9" + "x" * 30
    for bad in ("sm_120X", "sm_12xa", "sm_", "sm_a", "sm_\u00b2", long, None):
        listed = [{"target": bad} if bad is not None else {}]  # None: an entry without a target
        report = check_wheel(with_manifest(whl, tmp / "targets-bad.whl", lambda m, listed=listed: {**m, "cubins": listed}),
                             ARCHES["sm120a"])
        (d,) = report.diagnostics
        shown = repr((bad or "")[:20])  # at most 20 characters of what the manifest says
        assert d.code == "AOTC-WHEEL-011" and shown in d.message and report.kernels == [], (bad, d)
        assert d.message.startswith("mod_sm120a (sm120a): ")
    assert repr(long[:21]) not in d.message


def test_a_module_library_without_the_cubins_its_manifest_lists_is_refused(tmp_path):
    """A library with host code only: nothing to scan, which contradicts a manifest listing cubins."""
    tc = find_toolchain()
    host = "extern \"C\" int host_only(int x) { return x + 1; }\n"
    host_so = shared_library(host, ".cpp", ["-cudart", "none"], tc)
    name = "hostmod_" + "m" * 120  # FlashInfer's module names run past 100 characters; messages show 100
    for listed, refused in ((["sm_120a", "sm_120f"], True), ([], False)):
        cache = Cache(tmp_path / f"cache{len(listed)}")
        add_module(cache, name, host_so, listed)
        whl = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), f"khost{len(listed)}", tmp_path / "dist")
        report = check_wheel(whl, ARCHES["sm120a"])
        if refused:
            (d,) = report.diagnostics
            assert d.code == "AOTC-WHEEL-006" and d.message == (
                f"module {name[:100]}: its manifest lists cubins for sm_120a, sm_120f, but its library embeds "
                "no cubin"), d
        else:
            assert report.ok, [d.format() for d in report.diagnostics]


def test_a_cubin_whose_elf_says_another_target_than_its_manifest_is_refused(wheels):
    good, _, tmp = wheels
    report = check_wheel(with_manifest(good, tmp / "sm121a.whl", lambda m: {**m, "arch": "sm121a"}))
    (d,) = [d for d in report.diagnostics if d.code == "AOTC-WHEEL-006"]
    assert d.message.startswith("mma_a (sm121a): ") and "sm_120a" in d.message and "sm_121a" in d.message
    assert report.kernels[0]["elf_target"] == "sm120a"
    # the SASS scan against the manifest's arch says so too: its diagnostic passes through whole
    (v,) = [d for d in report.diagnostics if d.code == "AOTC-VERIFY-001"]
    assert v.message.startswith("mma_a (sm121a): ") and v.details == {"got": "sm_120a", "expected": "sm_121a"}
    assert "sm121a" in v.fix


def test_a_manifest_naming_an_unknown_arch_is_refused_and_long_values_are_cut(wheels):
    good, _, tmp = wheels
    name, arch = "n" * 150, "sm" + "9" * 30
    report = check_wheel(with_manifest(good, tmp / "unknown.whl", lambda m: {**m, "name": name, "arch": arch}))
    (d,) = report.diagnostics
    assert d.code == "AOTC-WHEEL-011" and report.kernels == []
    assert name[:100] in d.message and name[:101] not in d.message  # the name: at most 100 characters
    assert arch[:20] in d.message and arch[:21] not in d.message  # the arch: at most 20


# ---- the runtime runs --check's content checks once per wheel content ------------------------------
@pytest.fixture(autouse=True)
def private_runtime_folder(tmp_path, monkeypatch):
    """Verdicts on installed wheels are kept in the runtime folder: one per test, never the user's."""
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "runtime"))


NO_DISASSEMBLER = "import aotc.build.toolchain as t; t.find_disassemblers = lambda: None"


def discover_apart(site: Path, runtime: Path, before: str = "pass", env: dict | None = None) -> dict:
    """discover() in a fresh process (`before` runs first) with `runtime` as its runtime folder; also
    whether the check's code was imported, and what it wrote to stderr."""
    code = (f"{before}; import json, sys; from aotc.runtime.installed_wheels import discover; f, r = discover(); "
            "print(json.dumps({'found': [k.distribution for k in f], 'refused': {x.distribution: x.reason "
            "for x in r}, 'checked': 'aotc.build.wheel_check' in sys.modules}))")
    env = {**os.environ, **(env or {}), "AOTC_RUNTIME_DIR": str(runtime),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout), "stderr": out.stderr}


def sass_refused(reason: str) -> bool:
    """Refused by the SASS scan: banned opcodes found, or the disassembler refusing the lying cubin
    (as for --check, test_a_relabelled_sm100a_tcgen05_cubin_is_refused_by_the_sass_scan)."""
    return "AOTC-VERIFY-002" in reason or "AOTC-VERIFY-006" in reason


def verdicts(runtime: Path) -> list[Path]:
    return sorted((runtime / "wheel-verdicts").glob("*.json"))


def test_the_runtime_refuses_what_check_refuses_and_remembers_it(wheels, tmp_path):
    good, bad, _ = wheels
    site, runtime = tmp_path / "site", tmp_path / "runtime"
    install(good, site)
    install(bad, site)
    first = discover_apart(site, runtime)
    assert first["found"] == ["kgood"] and list(first["refused"]) == ["kbad"], first
    reason = first["refused"]["kbad"]
    assert reason.startswith("AOTC-WHEEL-015") and sass_refused(reason), reason
    assert first["checked"] and len(verdicts(runtime)) == 2
    # A later process reads the verdicts: the check's code is not even imported, and a check that would
    # now run without a disassembler (and so could not see the tcgen05) is never asked.
    again = discover_apart(site, runtime, before=NO_DISASSEMBLER)
    assert again["found"] == ["kgood"] and again["refused"] == first["refused"] and not again["checked"]
    assert not check_wheel(bad).ok and check_wheel(good).ok  # the same verdicts as --check


def test_a_changed_wheel_gets_a_new_verdict(wheels, tmp_path):
    """The good wheel's kernel made to carry the tcgen05 cubin, every hash consistent (blob name,
    manifest and its record checksum, RECORD): another content, so a verdict of its own."""
    from aotc.cache.entries import _json_bytes

    good, bad, _ = wheels
    site, runtime = tmp_path / "site", tmp_path / "runtime"
    install(good, site)
    assert discover_apart(site, runtime)["found"] == ["kgood"]
    (kept,) = verdicts(runtime)
    with zipfile.ZipFile(bad) as zf:
        cubin = json.loads(zf.read(names(bad, "/actions/")[0]))["blobs"]["cubin"]
        (tcgen05,) = names(bad, cubin["sha256"] + ".zst")
        blob = zf.read(tcgen05)
    manifest = names(good, "/actions/")[0]

    def swap(data: bytes) -> bytes:
        from aotc.cache.entries import RECORD_SUM

        m = json.loads(data)
        m.pop(RECORD_SUM)
        m["blobs"]["cubin"] = cubin
        return _json_bytes(m)

    swapped = rewrite(good, tmp_path / "swapped.whl", edit={manifest: swap},
                      add={tcgen05.replace("kbad/", "kgood/"): blob})
    assert not check_wheel(swapped).ok
    shutil.rmtree(site)
    install(swapped, site)
    result = discover_apart(site, runtime)
    assert result["found"] == [] and sass_refused(result["refused"]["kgood"]), result
    assert len(verdicts(runtime)) == 2 and kept in verdicts(runtime)


def test_without_a_disassembler_the_other_checks_run_and_strict_mode_refuses(wheels, tmp_path):
    good, bad, _ = wheels
    site, runtime = tmp_path / "site", tmp_path / "runtime"
    install(bad, site)
    lax = discover_apart(site, runtime, before=NO_DISASSEMBLER)
    assert lax["found"] == ["kbad"] and "AOTC-WHEEL-016" in lax["stderr"] and "not scanned" in lax["stderr"], lax
    assert discover_apart(site, runtime)["found"] == ["kbad"]  # the unscanned verdict is kept...
    strict = discover_apart(site, runtime, before=NO_DISASSEMBLER, env={"AOTC_STRICT_WHEELS": "1"})
    assert strict["found"] == [] and strict["refused"]["kbad"].startswith("AOTC-WHEEL-016"), strict
    # ...until strict mode finds a disassembler: scanned, refused, and so from then on.
    scanned = discover_apart(site, runtime, env={"AOTC_STRICT_WHEELS": "1"})
    assert scanned["found"] == [] and sass_refused(scanned["refused"]["kbad"]), scanned
    assert discover_apart(site, runtime)["refused"] == scanned["refused"]
    # Without one, the other checks still run: a cubin that does not match its digest is refused.
    shutil.rmtree(site)
    install(good, site)
    with zipfile.ZipFile(good) as zf:
        digest = json.loads(zf.read(names(good, "/actions/")[0]))["blobs"]["cubin"]["sha256"]
    blob = site / names(good, digest + ".zst")[0]
    raw = bytearray(zstandard.ZstdDecompressor().decompress(blob.read_bytes(), max_output_size=1 << 24))
    raw[len(raw) // 2] ^= 1
    blob.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    flipped = discover_apart(site, runtime, before=NO_DISASSEMBLER)
    assert flipped["found"] == [] and "AOTC-WHEEL-005" in flipped["refused"]["kgood"], flipped


@pytest.mark.parametrize("part", ["actions", "refs"])
def test_a_kept_verdict_never_covers_a_manifest_or_ref_edited_since(wheels, tmp_path, part):
    """In this process, as a user's program runs it: the check refuses the tcgen05 wheel and keeps a
    verdict per RECORD content. A manifest or ref edited afterwards, RECORD untouched, has the same
    identity, so the verdict would pass it: discovery itself checks them against RECORD."""
    good, bad, _ = wheels
    site, runtime = tmp_path / "site", tmp_path / "runtime"
    install(good, site)
    install(bad, site)
    first = discover_in(site)
    assert first["found"] == ["kgood"] and list(first["refused"]) == ["kbad"], first
    reason = first["refused"]["kbad"]
    assert reason.startswith("AOTC-WHEEL-015") and sass_refused(reason), reason
    assert len(verdicts(runtime)) == 2
    path = next((site / "kgood" / "store" / "v1" / part).rglob("*.json"))
    data = path.read_bytes()
    assert b'"mma_a"' in data
    path.write_bytes(data.replace(b'"mma_a"', b'"mmx_a"'))
    again = discover_in(site)
    assert again["found"] == [] and again["refused"]["kbad"] == first["refused"]["kbad"], again
    assert str(path) in again["refused"]["kgood"] and "RECORD" in again["refused"]["kgood"], again
    assert len(verdicts(runtime)) == 2  # the same identity: no verdict of its own


def test_a_runtime_folder_others_can_write_refuses_each_wheel_and_discovery_goes_on(wheels, tmp_path,
                                                                                    monkeypatch):
    """No verdict can be kept or trusted in a folder others can write: every wheel that needs one is
    refused with the folder's diagnostic, and discovery returns."""
    good, _, _ = wheels
    site, shared = tmp_path / "site", tmp_path / "shared"
    install(good, site)
    install(renamed(good, "kother", tmp_path / "kother.whl"), site)
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(shared))
    result = discover_in(site)
    assert result["found"] == [] and list(result["refused"]) == ["kgood", "kother"], result
    for reason in result["refused"].values():
        assert reason.startswith("AOTC-RT-005") and str(shared) in reason and "0o777" in reason, reason


def _three_member_wheel(tmp_path):
    """A small zip laid out like a kernel wheel (package init, metadata, RECORD), for zip-level damage."""
    whl = tmp_path / "k-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("k/__init__.py", "")
        zf.writestr("k/aotc_wheel.json", "{}")
        zf.writestr("k-0.1.0.dist-info/RECORD", "k/__init__.py,,\nk/aotc_wheel.json,,\n")
    return whl


def test_a_central_directory_pointing_before_the_file_is_a_damaged_zip(tmp_path):
    """Found by fuzzing: when the end record claims the central directory starts later than it does,
    zipfile places every member before byte 0 and reading one fails with EINVAL (an OSError), which
    must be the damaged-zip diagnostic, not a traceback."""
    whl = _three_member_wheel(tmp_path)
    data = bytearray(whl.read_bytes())
    eocd = data.rindex(b"PK\x05\x06")
    offset = int.from_bytes(data[eocd + 16:eocd + 20], "little")
    data[eocd + 16:eocd + 20] = (offset + 4096).to_bytes(4, "little")  # the claim; the bytes stay where they are
    whl.write_bytes(bytes(data))
    with pytest.raises(AotcError) as e:
        check_wheel(whl)
    (d,) = e.value.diagnostics
    assert d.code == "AOTC-WHEEL-004" and "damaged zip" in d.message and str(whl) in d.message
    assert "aotc verify" not in d.fix  # a damaged download: no cache of the user's to verify


def test_a_central_directory_asking_for_an_unknown_zip_version_is_a_damaged_zip(tmp_path):
    """Found by fuzzing: a central directory entry whose "version needed to extract" is 8.4 makes
    zipfile.ZipFile itself fail with NotImplementedError; that failure is the damaged-zip diagnostic too."""
    whl = tmp_path / "k-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("k/__init__.py", "")
        zf.writestr("k-0.1.0.dist-info/RECORD", "k/__init__.py,,\n")
    data = bytearray(whl.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    data[entry + 6:entry + 8] = (84).to_bytes(2, "little")  # version needed to extract: 8.4
    whl.write_bytes(bytes(data))
    with pytest.raises(AotcError) as e:
        check_wheel(whl)
    (d,) = e.value.diagnostics
    assert d.code == "AOTC-WHEEL-004" and "damaged zip" in d.message and "8.4" in d.message and str(whl) in d.message
    assert "aotc verify" not in d.fix


def test_a_member_marked_encrypted_is_a_damaged_zip(tmp_path):
    """Found by fuzzing: a flipped bit 0 of a member's general-purpose flags (central directory) marks it
    encrypted, and zipfile's read of it raises RuntimeError (password required); the check names the
    member in the damaged-zip diagnostic instead."""
    whl = _three_member_wheel(tmp_path)
    data = bytearray(whl.read_bytes())
    entry = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)  # the second member's directory entry
    data[entry + 8] |= 0x1  # general-purpose flag bit 0: encrypted
    whl.write_bytes(bytes(data))
    with pytest.raises(AotcError) as e:
        check_wheel(whl)
    (d,) = e.value.diagnostics
    assert d.code == "AOTC-WHEEL-004" and "damaged zip" in d.message and "marked encrypted" in d.message
    assert "k/aotc_wheel.json" in d.message and str(whl) in d.message and "aotc verify" not in d.fix

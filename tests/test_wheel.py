"""Kernel wheels: reproducible bytes, contents check, tamper detection, and an install into a
fresh virtual environment with no nvcc and no CUTLASS that finds and loads a kernel."""

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from aotc.arch import ARCHES
from aotc.build.wheel_pack import build_wheel, check_wheel, select_entries
from aotc.diagnostics import AotcError

pytestmark = pytest.mark.compile
ROOT = Path(__file__).resolve().parent.parent


def test_wheel_is_byte_reproducible_and_checked(built_cache, tmp_path):
    cache, _ = built_cache
    entries = select_entries(cache, [ARCHES["sm120a"], ARCHES["sm90a"]])
    assert len(entries) == 2
    a = build_wheel(cache, entries, "aotc-kernels", tmp_path / "a").read_bytes()
    b = build_wheel(cache, entries, "aotc-kernels", tmp_path / "b").read_bytes()
    assert a == b
    whl = next((tmp_path / "a").glob("*.whl"))
    # platform tag: the newest GLIBC the host helpers need, read here by binutils' readelf
    helpers = [cache.read_blob(m["blobs"]["helper"]["sha256"]) for _, m in entries]
    glibc = max(readelf_glibc(h, tmp_path) for h in helpers)
    tag = f"manylinux_{max(glibc, (2, 17))[0]}_{max(glibc, (2, 17))[1]}_x86_64"
    version = re.fullmatch(rf"aotc_kernels-(0\.1\.0\+\d{{14}}\.[0-9a-f]{{8}})-py3-none-{tag}\.whl", whl.name)
    assert version, whl.name
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        assert names[-1].endswith(".dist-info/RECORD")
        assert "aotc.kernels" in zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    report = check_wheel(whl, ARCHES["sm120a"])
    targets = {k["elf_target"]: k["runs_on_arch"] for k in report.kernels}
    assert targets == {"sm120a": True, "sm90a": False}  # the sm90a cubin is flagged for SM120
    assert [d.code for d in report.diagnostics] == ["AOTC-WHEEL-006"]
    per_arch = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "k-sm120a", tmp_path / "c")
    assert check_wheel(per_arch, ARCHES["sm120a"]).ok


def readelf_glibc(data: bytes, tmp_path) -> tuple[int, int]:
    """Newest GLIBC_x.y in an ELF's version-needed section, as `readelf -V` lists it."""
    so = tmp_path / "probe.so"
    so.write_bytes(data)
    out = subprocess.run(["readelf", "-V", "--wide", str(so)], capture_output=True, text=True, check=True).stdout
    return max((tuple(int(x) for x in v.split(".")[:2]) for v in re.findall(r"Name: GLIBC_([\d.]+)", out)),
               default=(2, 0))


def test_wheel_version_follows_content(built_cache, tmp_path):
    from packaging.version import Version

    cache, _ = built_cache
    both = select_entries(cache, [ARCHES["sm120a"], ARCHES["sm90a"]])
    one = select_entries(cache, [ARCHES["sm120a"]])
    version = {n: re.match(r"k-(.+?)-py3", build_wheel(cache, e, "k", tmp_path / n).name).group(1)
               for n, e in (("both", both), ("both-again", both), ("one", one))}
    assert version["both"] == version["both-again"]  # same content, same version: byte-reproducible
    assert version["one"] != version["both"]  # other content, another version: pip replaces it
    newest = max(m["built_at"] for _, m in both)
    assert Version(version["both"]).local.startswith(re.sub(r"\D", "", newest)[:14])
    fixed = build_wheel(cache, one, "k", tmp_path / "fixed", version="2.0.0")
    assert fixed.name.startswith("k-2.0.0-py3-none-")
    with pytest.raises(AotcError) as err:
        build_wheel(cache, one, "k", tmp_path / "bad", version="not a version")
    assert err.value.diagnostics[0].code == "AOTC-WHEEL-020"


def test_wheel_platform_must_match_the_host_helpers(built_cache, tmp_path):
    cache, _ = built_cache
    with pytest.raises(AotcError) as err:
        build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "k", tmp_path, machine="aarch64")
    assert err.value.diagnostics[0].code == "AOTC-WHEEL-007" and "x86_64" in str(err.value)
    assert not list(tmp_path.glob("*.whl"))


def test_tampered_wheel_is_refused(built_cache, tmp_path):
    cache, _ = built_cache
    whl = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "k", tmp_path)
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/blobs/" in info.filename:
                import zstandard

                raw = bytearray(zstandard.ZstdDecompressor().decompress(data))
                if raw[:4] == b"\x7fELF" and len(raw) < 200_000:  # the cubin
                    raw[-100] ^= 0xFF
                    data = zstandard.ZstdCompressor().compress(bytes(raw))
            dst.writestr(info, data)
    report = check_wheel(bad, ARCHES["sm120a"])
    blob = [d for d in report.diagnostics if d.code == "AOTC-WHEEL-005"]
    assert not report.ok and blob and "modified" in blob[0].message


@pytest.mark.skipif(os.environ.get("AOTC_SKIP_VENV_TESTS") == "1", reason="venv tests disabled by env")
def test_installed_wheel_in_fresh_venv_without_toolchain(built_cache, tmp_path):
    cache, _ = built_cache
    whl = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"], ARCHES["sm90a"]]), "aotc-kernels-test",
                      tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # aotc itself without the [build] extra: no jinja2, no CUTLASS, no nvcc in this environment
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(ROOT), str(whl)], check=True, cwd=tmp_path)
    # a rebuilt wheel (other content, so another version) replaces the installed one
    newer = build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "aotc-kernels-test", tmp_path / "dist2")
    subprocess.run([*pip, str(newer)], check=True, cwd=tmp_path)
    shown = subprocess.run([py, "-m", "pip", "show", "aotc-kernels-test"], capture_output=True, text=True,
                           check=True).stdout
    assert f"Version: {newer.name.split('-')[1]}" in shown
    subprocess.run([*pip, str(whl)], check=True, cwd=tmp_path)  # back to both archs for the checks below
    script = textwrap.dedent("""
        import importlib.util, json
        from aotc.runtime.installed_wheels import discover
        found, refused = discover()
        assert refused == [], refused
        (k,) = found
        assert k.meta["targets"] == ["sm120a", "sm90a"], k.meta
        from aotc.cache import Cache
        cache = Cache(k.root)
        refs = list(cache.refs())
        assert len(refs) == 2
        for ref in refs:
            m = cache.resolve_ref(ref["spec_key"])
            cubin = cache.read_blob(m["blobs"]["cubin"]["sha256"])   # digest-verified read
            from aotc.elf import cubin_target
            assert cubin_target(cubin) == (m["target"]["sm"], m["target"]["variant"])
        # the runtime finds kernels in the wheel, verifies and loads them up to the device check
        from aotc.diagnostics import AotcError
        from aotc.runtime import device_from_capability, find, host_kernel
        from aotc.runtime.loader import check_cubin_target
        params = refs[0]["params"]
        h100, rtx = device_from_capability((9, 0)), device_from_capability((12, 0))
        f90, f120 = find("fmha_fwd", params, h100), find("fmha_fwd", params, rtx)
        assert (f90.arch, f120.arch) == ("sm90a", "sm120a"), (f90.arch, f120.arch)
        assert "wheel" in f90.source.name, f90.source.name  # not the (empty) local cache
        assert host_kernel(f90).helper is not None
        try:
            check_cubin_target(host_kernel(f120).cubin, h100, f120)
            raise SystemExit("an sm120a cubin was accepted for an H100")
        except AotcError as e:
            assert "sm120a" in str(e) and "9.0" in str(e), str(e)
        import sys, pathlib
        present = [m for m in ("jinja2", "cutlass_library") if importlib.util.find_spec(m)]
        present += [str(p) for p in pathlib.Path(sys.prefix).rglob("nvcc")]
        import importlib.resources
        assert importlib.resources.files("aotc").joinpath("py.typed").is_file()  # typed package
        print(json.dumps({"ok": True, "toolchain_modules_present": present}))
    """)
    env = {**os.environ, "AOTC_CACHE_DIR": str(tmp_path / "empty-cache")}
    out = subprocess.run([py, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert '"toolchain_modules_present": []' in out.stdout

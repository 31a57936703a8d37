"""Hostile environments, made real: a read-only cache (a read-only bind mount: root ignores permission
bits), a full disk (a small tmpfs) and lost permissions (a process that drops root). Each gives a
coded error, keeps nothing partial and loses nothing. Mounts need root with CAP_SYS_ADMIN; where
the machine cannot mount, those tests skip and say so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BUILT_ARCHS, BUILT_SPEC

from aotc.cache import Cache
from aotc.cache.maintenance import verify
from aotc.cache.store import CacheWriteError, CorruptBlobError
from aotc.diagnostics import AotcError
from aotc.keys import sha256_hex


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


@contextmanager
def mounted(*steps: list[str], target: Path):
    """Run mount commands, skipping the test when this machine cannot mount; unmount afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8): not available here")
    done = 0
    try:
        for step in steps:
            out = _run(*step)
            if out.returncode != 0:
                pytest.skip(f"this machine cannot mount ({' '.join(step)}: {out.stderr.strip()})")
            done += 1
        yield target
    finally:
        for _ in range(done if done else 0):
            if _run("umount", str(target)).returncode != 0:
                break


@contextmanager
def read_only_view(src: Path, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    with mounted(["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,ro,bind", str(dst)],
                 target=dst) as view:
        yield view


def aotc(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aotc", *args], capture_output=True, text=True, check=False,
                          timeout=600, env={**os.environ, "NO_COLOR": "1", **env})


def commit(cache: Cache, name: str, payload: bytes) -> None:
    key, sk = sha256_hex(name.encode()), sha256_hex(b"spec-" + name.encode())
    cache.put_entry(key, {"cubin": payload, "source": name.encode()}, {
        "name": name, "family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a", "spec_key": sk,
        "target": {"sm": 120, "variant": "a"}})
    cache.set_ref(sk, key, {"family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a", "name": name})


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.compile
def test_read_only_cache_serves_a_cache_hit_build_and_verify(built_cache, tmp_path):
    cache, _ = built_cache
    before = files_under(cache.root)
    with read_only_view(cache.root, tmp_path / "ro") as ro:
        build = aotc("build", "--arch", BUILT_ARCHS, "--filter", BUILT_SPEC, "-q", "--cache-dir", str(ro))
        assert build.returncode == 0, build.stdout + build.stderr
        assert "cache hits 2" in build.stdout and "Traceback" not in build.stderr
        check = aotc("verify", "--cache-dir", str(ro), "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout)["read_only"] is True
        ls = aotc("ls", "--cache-dir", str(ro))
        assert ls.returncode == 0 and BUILT_SPEC in ls.stdout
    assert files_under(cache.root) == before  # nothing written through the view, nothing lost


def test_read_only_cache_refuses_a_corrupt_blob_without_moving_it(tmp_path):
    src = tmp_path / "cache"
    cache = Cache(src)
    commit(cache, "a", b"cubin bytes of a")
    digest = cache.get_manifest(sha256_hex(b"a"))["blobs"]["cubin"]["sha256"]
    blob = cache.store.path(digest)
    blob.write_bytes(blob.read_bytes()[:-2])
    with read_only_view(src, tmp_path / "ro") as ro:
        view = Cache(ro)
        with pytest.raises(CorruptBlobError) as e:
            view.read_blob(digest)
        assert e.value.moved_to is None  # refused and left in place: the mount cannot change
        out = aotc("verify", "--cache-dir", str(ro), "--json")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        report = json.loads(out.stdout)
        assert report["read_only"] and len(report["corrupt_blobs"]) == 1 and report["refs_dropped"]
        write = Cache(ro)
        with pytest.raises(CacheWriteError) as w:
            commit(write, "b", b"new")
        assert w.value.diagnostics[0].code == "AOTC-CACHE-007" and w.value.diagnostics[0].fix
    assert blob.exists() and not (src / "v1" / "quarantine").exists()


def test_full_disk_is_a_coded_error_and_keeps_nothing_partial(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    with mounted(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(root)], target=root):
        cache = Cache(root)
        committed, error = [], None
        for i in range(200):
            try:
                commit(cache, f"k{i}", os.urandom(48 << 10))  # incompressible: fills 512 KiB in ~10
            except AotcError as e:
                error = e
                break
            committed.append(f"k{i}")
        assert error is not None and committed, "the tmpfs never filled"
        d = error.diagnostics[0]
        assert d.code == "AOTC-CACHE-006" and "full" in d.message and "aotc gc" in d.fix
        assert list((root / "v1" / "tmp").glob("*.tmp")) == []  # no partial temp file left
        for name in committed:  # every entry committed before the disk filled is whole
            m = cache.resolve_ref(sha256_hex(b"spec-" + name.encode()))
            assert m is not None and cache.read_blob(m["blobs"]["cubin"]["sha256"])
        report = verify(cache)
        assert report.ok, report.to_json()


def test_lost_permissions_are_a_coded_error_and_reads_still_work(tmp_path):
    root = tmp_path / "cache"
    cache = Cache(root)
    commit(cache, "a", b"cubin a")
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)  # the write permission is lost, for the owner too
    code = (
        "import json, sys\n"
        "from aotc.cache import Cache\n"
        "from aotc.keys import sha256_hex\n"
        "from aotc.diagnostics import AotcError\n"
        f"c = Cache({str(root)!r})\n"
        "m = c.resolve_ref(sha256_hex(b'spec-a'))\n"
        "out = {'read': c.read_blob(m['blobs']['cubin']['sha256']).decode()}\n"
        "try:\n"
        "    c.put_entry(sha256_hex(b'b'), {'cubin': b'b'}, {'name': 'b', 'family': 'f', 'params': {}, "
        "'arch': 'sm120a', 'target': {'sm': 120, 'variant': 'a'}})\n"
        "except AotcError as e:\n"
        "    out['code'] = e.diagnostics[0].code\n"
        "print(json.dumps(out))\n")
    # without CAP_DAC_OVERRIDE even root obeys the permission bits (a plain user always does)
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if os.geteuid() == 0 else []
    out = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         timeout=120)
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"read": "cubin a", "code": "AOTC-CACHE-007"}
    assert verify(cache).ok and len(list(cache.entries())) == 1

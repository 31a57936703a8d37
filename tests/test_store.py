"""LocalBlobStore on a real directory: content addressing, zstd frames, dedup, verified reads with
quarantine, temp-file sweeping of a killed writer, and the AOTC_BLOB_STORE selection hook."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from aotc.cache.store import BlobStore, CorruptBlobError, LocalBlobStore, blob_store_class, open_blob_store
from aotc.diagnostics import AotcError

REPO = Path(__file__).resolve().parent.parent


def cubin_like(n: int, seed: int = 0) -> bytes:
    """Compressible but not trivial bytes (repeated instruction-like words with varying fields)."""
    words = [hashlib.sha256(f"{seed}:{i % 97}".encode()).digest()[:8] for i in range(n // 8)]
    return b"".join(words)[:n]


def test_put_names_blob_by_sha256_in_sharded_zstd_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = cubin_like(200_000)
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = tmp_path / "v1" / "blobs" / digest[:2] / f"{digest}.zst"
    assert path.is_file()
    raw = path.read_bytes()
    assert zstandard.ZstdDecompressor().decompress(raw) == data  # a plain zstd frame
    assert len(raw) < len(data) / 4
    assert store.get(digest) == data
    st = store.stat(digest)
    assert st is not None and st.raw_bytes == len(data) and st.stored_bytes == len(raw)
    assert list(store.iter_digests()) == [digest]


def test_put_is_deterministic_and_deduplicated(tmp_path: Path) -> None:
    a, b = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    data = cubin_like(100_000, seed=3)
    digest = a.put(data)
    b.put(data)
    pa, pb = a.path(digest), b.path(digest)
    assert pa.read_bytes() == pb.read_bytes()
    os.utime(pa, (1_000_000, 1_000_000))  # pretend it is old; a dedup hit refreshes its age for gc
    inode = pa.stat().st_ino
    assert a.put(data) == digest
    assert pa.stat().st_ino == inode  # not rewritten
    assert pa.stat().st_mtime > time.time() - 60
    assert list(a.iter_digests()) == [digest]
    assert not any((tmp_path / "a" / "v1" / "tmp").iterdir())  # no temp files left


def test_empty_blob_round_trips(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert store.get(store.put(b"")) == b""


def test_missing_blob_is_keyerror_and_bad_digest_is_rejected(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(KeyError):
        store.get("0" * 64)
    assert not store.has("0" * 64) and store.stat("0" * 64) is None and not store.delete("0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
        with pytest.raises(ValueError, match="sha256 hex digest"):
            store.get(bad)


def test_flipped_byte_raises_corrupt_blob_error_and_quarantines(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = cubin_like(20_000)
    digest = store.put(data)
    path = store.path(digest)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptBlobError) as info:
        store.get(digest)
    err = info.value
    text = str(err)
    assert isinstance(err, AotcError) and err.diagnostics[0].code == "AOTC-CACHE-001"
    assert digest in text and str(path) in text and "aotc verify" in text
    assert err.moved_to is not None and Path(err.moved_to).parent == tmp_path / "v1" / "quarantine"
    assert f"moved to {err.moved_to}" in text and err.diagnostics[0].details["quarantined"] == err.moved_to
    assert Path(err.moved_to).read_bytes() == bytes(raw)  # kept for inspection, not deleted
    assert not store.has(digest)
    assert store.put(data) == digest and store.get(digest) == data  # a rebuild restores it


def test_wrong_content_under_a_valid_frame_reports_actual_hash(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"good bytes")
    other = b"other bytes"
    store.path(digest).write_bytes(zstandard.ZstdCompressor().compress(other))
    with pytest.raises(CorruptBlobError) as info:
        store.get(digest)
    assert info.value.actual == hashlib.sha256(other).hexdigest()
    assert f"expected sha256 {digest}, got {info.value.actual}" in str(info.value)


def test_truncated_blob_is_corrupt(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(os.urandom(50_000))
    path = store.path(digest)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptBlobError, match="undecodable zstd frame"):
        store.get(digest)
    assert not path.exists()


def test_iter_digests_ignores_stray_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"x")
    (store.path(digest).parent / "notes.txt").write_text("stray")
    (store.blob_dir / "README").write_text("stray")
    assert list(store.iter_digests()) == [digest]


def slow_to_compress(n: int, seed: int) -> bytes:
    """4-bit random symbols: zstd level 19 works at ~0.3 MB/s on them (measured), so a put of
    16 MB takes about a minute: plenty of time to kill the writer mid-write."""
    import random

    return random.Random(seed).randbytes(n).translate(bytes(i & 15 for i in range(256)))


_KILLED_WRITER = """
import sys
from aotc.cache.store import LocalBlobStore
from tests.test_store import slow_to_compress
LocalBlobStore(sys.argv[1], level=19).put(slow_to_compress(16 << 20, seed=7))
print("finished")
"""


def test_writer_killed_mid_put_leaves_no_blob_and_its_temp_file_is_swept(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tmp_dir = tmp_path / "v1" / "tmp"
    deadline = time.monotonic() + 120

    def partly_written() -> bool:
        return tmp_dir.is_dir() and any(p.stat().st_size > 0 for p in tmp_dir.glob("*.tmp"))

    while not partly_written():  # kill only once part of the compressed frame is on disk
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "writer never started writing its temp file"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    store = LocalBlobStore(tmp_path)
    digest = hashlib.sha256(slow_to_compress(16 << 20, seed=7)).hexdigest()
    assert not store.has(digest) and list(store.iter_digests()) == []
    leftovers = list(tmp_dir.glob("*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # it really was mid-write
    assert store.sweep_tmp(dry_run=True) == [str(leftovers[0])] and leftovers[0].exists()
    assert store.sweep_tmp() == [str(leftovers[0])]
    assert not leftovers[0].exists()
    assert store.get(store.put(b"still usable")) == b"still usable"


def test_sweep_keeps_temp_files_of_live_writers(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.tmp_dir.mkdir(parents=True)
    import socket

    live = store.tmp_dir / f"{socket.gethostname()}.{os.getpid()}.abc.tmp"
    other_host = store.tmp_dir / "some-other-host.1.abc.tmp"
    live.write_bytes(b"x")
    other_host.write_bytes(b"x")
    assert store.sweep_tmp() == []
    os.utime(other_host, (time.time() - 2 * 86_400,) * 2)  # a day-old file of any writer is dead
    assert store.sweep_tmp() == [str(other_host)]


def test_blob_store_env_selects_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mystores.py").write_text(
        "from aotc.cache.store import LocalBlobStore\n"
        "class CountingStore(LocalBlobStore):\n"
        "    puts = 0\n"
        "    def put(self, data):\n"
        "        type(self).puts += 1\n"
        "        return super().put(data)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("AOTC_BLOB_STORE", raising=False)
    assert blob_store_class() is LocalBlobStore
    monkeypatch.setenv("AOTC_BLOB_STORE", "mystores:CountingStore")
    store = open_blob_store(tmp_path / "cache")
    assert type(store).__name__ == "CountingStore" and isinstance(store, BlobStore)
    store.put(b"abc")
    assert type(store).puts == 1


@pytest.mark.parametrize(
    "value", ["nocolon", "aotc.cache.store:NoSuchClass", "no_such_module_xyz:C", "pathlib:Path"]
)
def test_bad_blob_store_env_is_a_clear_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOTC_BLOB_STORE", value)
    with pytest.raises(AotcError) as info:
        blob_store_class()
    d = info.value.diagnostics[0]
    assert d.code == "AOTC-CACHE-003" and value in d.message and "unset it" in d.fix


# ---- invariants a mutation pass asked for: levels, names, refusals, stats --------------------------
def test_small_blobs_get_level_19_and_large_ones_level_9(tmp_path: Path) -> None:
    from aotc.cache.store import LARGE_BLOB_BYTES

    auto, l19, l9 = (LocalBlobStore(tmp_path / n, level=lv) for n, lv in (("a", None), ("b", 19), ("c", 9)))
    for size, same, other in ((LARGE_BLOB_BYTES, l19, l9), (LARGE_BLOB_BYTES + 1, l9, l19)):
        data = cubin_like(size + 8, seed=size)[:size]  # (cubin_like rounds down to whole words)
        d = auto.put(data)
        same.put(data)
        other.put(data)
        frame = auto.path(d).read_bytes()
        assert frame == same.path(d).read_bytes() != other.path(d).read_bytes(), size
        params = zstandard.get_frame_parameters(frame)
        assert params.content_size == size and not params.has_checksum


def test_blob_stat_is_a_named_tuple_of_sizes_and_age(tmp_path: Path) -> None:
    import copy
    import pickle

    from aotc.cache.store import BlobStat

    s = BlobStat(stored_bytes=10, raw_bytes=30, mtime=5.5)
    assert tuple(s) == (10, 30, 5.5) and (s.stored_bytes, s.raw_bytes, s.mtime) == (10, 30, 5.5)
    assert pickle.loads(pickle.dumps(s)) == s and type(copy.copy(s)) is BlobStat and copy.deepcopy(s) == s
    assert repr(s) == "BlobStat(stored_bytes=10, raw_bytes=30, mtime=5.5)"
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"abc" * 100)
    os.utime(store.path(digest), (1_000_000, 1_000_000))
    st = store.stat(digest)
    assert st.mtime == 1_000_000 and st.raw_bytes == 300 and st.stored_bytes == store.path(digest).stat().st_size
    store.path(digest).write_bytes(b"\x00" * 4)  # not a zstd header: size unknown, not an error
    assert store.stat(digest).raw_bytes == -1


def test_digests_are_exactly_64_lowercase_hex(tmp_path: Path) -> None:
    from aotc.cache.store import check_digest

    good = "0123456789abcdef" * 4
    assert check_digest(good) == good
    for bad in (good[:-1], good + "0", good.upper(), good[:-1] + "g", good[:-1] + " ", None, good.encode()):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            check_digest(bad)
    store = LocalBlobStore(tmp_path)
    digest = store.put(b"y")
    shard = store.path(digest).parent
    for stray in (good[:-1] + ".zst", good.upper() + ".zst", good + ".zst.tmp", good + "0.zst"):
        (shard / stray).write_bytes(b"")
    (shard / (good + ".zst")).mkdir()  # iter_digests lists names; has() wants a regular file
    assert sorted(store.iter_digests()) == sorted([digest, good])
    assert store.has(digest) and not store.has(good)
    assert store.delete(digest) and not store.delete(digest) and list(store.iter_digests()) == [good]


def test_temp_file_names_say_who_wrote_them_and_when_they_are_stale() -> None:
    import socket

    from aotc.cache.store import tmp_is_stale, tmp_name

    host = socket.gethostname()
    name = tmp_name(".tmp")
    h, pid, rand, suffix = name.rsplit(".", 3)
    assert (h, pid, suffix) == (host, str(os.getpid()), "tmp") and len(rand) == 12 and tmp_name(".tmp") != name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    now = 1_000_000.0
    assert not tmp_is_stale(name, now, now, 10)  # a live writer of this host
    assert tmp_is_stale(name, now - 10.5, now, 10) and not tmp_is_stale(name, now - 10, now, 10)  # age > max_age
    assert tmp_is_stale(f"{host}.{dead}.ab.tmp", now, now, 10)  # its writer is gone
    for other in (f"otherhost.{dead}.ab.tmp", f"{host}.x{dead}.ab.tmp", f"{host}.{dead}"):
        assert not tmp_is_stale(other, now, now, 10), other  # cannot tell: only age removes it


def test_asking_whether_a_writer_lives_sends_it_no_signal() -> None:
    """The liveness probe is signal 0: a live writer (here a child that dies on SIGHUP, as a process
    without a handler does) is reported alive and keeps running."""
    import socket

    from aotc.cache.store import tmp_is_stale

    child = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('up', flush=True); time.sleep(30)"
    writer = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "up"
        now = 1_000_000.0
        assert not tmp_is_stale(f"{socket.gethostname()}.{writer.pid}.ab.tmp", now, now, 10)
        time.sleep(0.2)
        assert writer.poll() is None  # still running: nothing was delivered to it
    finally:
        writer.kill()
        writer.wait()


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert store.sweep_tmp() == []  # no temp folder yet
    store.tmp_dir.mkdir(parents=True)
    old = time.time() - 2 * 86_400
    stale, note, folder = store.tmp_dir / "h.1.ab.tmp", store.tmp_dir / "h.1.ab.txt", store.tmp_dir / "d.1.ab.tmp"
    stale.write_bytes(b"x")
    note.write_bytes(b"x")
    folder.mkdir()
    for p in (stale, note, folder):
        os.utime(p, (old, old))
    assert store.sweep_tmp(dry_run=True) == [str(stale)] and stale.exists()
    assert store.sweep_tmp(max_age=3 * 86_400) == []
    assert store.sweep_tmp() == [str(stale)] and not stale.exists() and note.exists() and folder.exists()


@pytest.mark.parametrize("err, code", [("ENOSPC", "AOTC-CACHE-006"), ("EDQUOT", "AOTC-CACHE-006"),
                                       ("EROFS", "AOTC-CACHE-007"), ("EACCES", "AOTC-CACHE-007"),
                                       ("EPERM", "AOTC-CACHE-007")])
def test_a_refused_write_is_a_coded_error_and_leaves_nothing(tmp_path: Path, err: str, code: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from aotc.cache import store as store_module
    from aotc.cache.store import CacheWriteError, atomic_write

    number = getattr(errno, err)
    real_replace = os.replace

    def refuse(src, dst):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(store_module.os, "replace", refuse)
    target = tmp_path / "out" / "f.bin"
    with pytest.raises(CacheWriteError) as info:
        atomic_write(target, [b"abc"], tmp_path / "tmp")
    d = info.value.diagnostics[0]
    assert d.code == code and d.details == {"file": str(target), "errno": number} and str(target) in d.message
    assert info.value.errno == number and CacheWriteError.covers(OSError(number, "x")) and d.fix
    assert not target.exists() and list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(store_module.os, "replace", lambda s, t: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(OSError) as other:  # any other error is not the user's to fix: raised as it is
        atomic_write(target, [b"abc"], tmp_path / "tmp")
    assert type(other.value) is OSError and other.value.errno == errno.EIO and not CacheWriteError.covers(other.value)
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    atomic_write(target, iter([b"a", b"bc"]), tmp_path / "tmp")
    assert target.read_bytes() == b"abc" and list((tmp_path / "tmp").iterdir()) == []


def test_quarantine_keeps_the_file_under_a_new_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from aotc.cache import store as store_module
    from aotc.cache.store import quarantine_file

    bad = tmp_path / "ab.json"
    bad.write_bytes(b"bad")
    moved = quarantine_file(bad, tmp_path / "v1" / "quarantine")  # its folders are made as needed
    stem, stamp, suffix = Path(moved).name.split(".")
    assert Path(moved).parent == tmp_path / "v1" / "quarantine" and (stem, suffix) == ("ab", "json")
    assert stamp.isdigit() and Path(moved).read_bytes() == b"bad" and not bad.exists()
    assert quarantine_file(bad, tmp_path / "q") is None  # already gone
    bad.write_bytes(b"bad")

    def refuse(number):
        def replace(src, dst):
            raise OSError(number, os.strerror(number))
        return replace

    monkeypatch.setattr(store_module.os, "replace", refuse(errno.EROFS))
    assert quarantine_file(bad, tmp_path / "q") is None and bad.exists()  # a read-only cache: left in place
    monkeypatch.setattr(store_module.os, "replace", refuse(errno.EIO))
    with pytest.raises(OSError) as e:  # anything else is not the medium refusing: raised
        quarantine_file(bad, tmp_path / "q")
    assert e.value.errno == errno.EIO


def test_a_read_only_store_leaves_a_corrupt_blob_in_place_and_says_so(tmp_path: Path) -> None:
    digest = LocalBlobStore(tmp_path).put(b"data" * 50)
    path = LocalBlobStore(tmp_path).path(digest)
    path.write_bytes(zstandard.ZstdCompressor().compress(b"else"))
    with pytest.raises(CorruptBlobError) as info:
        LocalBlobStore(tmp_path, read_only=True).get(digest)
    e = info.value
    assert e.moved_to is None and "left in place" in str(e) and path.exists()
    assert (e.digest, e.path, e.actual) == (digest, str(path), hashlib.sha256(b"else").hexdigest())
    assert e.diagnostics[0].details == {"digest": digest, "file": str(path), "expected": digest,
                                        "actual": e.actual, "quarantined": None}


def test_remote_setting_selects_the_redis_layer_and_spacing_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOTC_BLOB_STORE", raising=False)
    monkeypatch.setenv("AOTC_REMOTE", "  ")
    assert blob_store_class() is LocalBlobStore
    monkeypatch.setenv("AOTC_REMOTE", "redis://127.0.0.1:1")
    assert blob_store_class().__name__ == "RedisBlobStore"
    monkeypatch.setenv("AOTC_BLOB_STORE", " aotc.cache.store:LocalBlobStore ")  # the explicit setting wins
    assert blob_store_class() is LocalBlobStore
    for value in (":LocalBlobStore", "aotc.cache.store:", "aotc.cache.store"):
        monkeypatch.setenv("AOTC_BLOB_STORE", value)
        with pytest.raises(AotcError, match="module:Class"):
            blob_store_class()


def test_staleness_edges_and_a_sweep_racing_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from aotc.cache import store as store_module
    from aotc.cache.store import is_digest, tmp_is_stale

    assert is_digest("ab" * 32) and not is_digest("xyz") and not is_digest(64) and not is_digest(["a"] * 64)
    host, now = socket.gethostname(), time.time()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert tmp_is_stale(f"{host}.{dead}.ab", now, now, 10)  # three parts are enough to name the writer

    def owned_by_someone_else(pid, sig):
        raise PermissionError(1, "not permitted")

    monkeypatch.setattr(store_module.os, "kill", owned_by_someone_else)
    assert not tmp_is_stale(f"{host}.{dead}.ab.tmp", now, now, 10)  # alive (we may not signal it)
    monkeypatch.undo()
    store = LocalBlobStore(tmp_path)
    store.tmp_dir.mkdir(parents=True)
    day_old = time.time() - 86_400.6
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"x")
    os.utime(target, (day_old, day_old))
    (store.tmp_dir / "h.1.link.tmp").symlink_to(target)  # only regular files are temp files
    stale = store.tmp_dir / "h.1.stale.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (day_old, day_old))
    real_scandir = os.scandir

    class Gone:  # an entry another sweeper removed between listing and stat/unlink
        name, path = "h.1.gone.tmp", str(store.tmp_dir / "h.1.gone.tmp")

        def __init__(self, stat_fails):
            self.stat_fails = stat_fails

        def is_file(self, follow_symlinks=True):
            return True

        def stat(self):
            if self.stat_fails:
                raise FileNotFoundError(self.path)
            return os.stat_result((0,) * 7 + (day_old,) * 3)

    for stat_fails in (True, False):
        monkeypatch.setattr(store_module.os, "scandir", lambda p, s=stat_fails: iter([Gone(s), *real_scandir(p)]))
        swept = store.sweep_tmp(dry_run=True)
        assert str(stale) in swept and (store.tmp_dir / "h.1.link.tmp").is_symlink() and target.exists()
        assert (Gone.path in swept) is not stat_fails
    swept = store.sweep_tmp()  # the vanished file counts as swept; the sweep goes on to the others
    assert swept == [Gone.path, str(stale)] and not stale.exists() and target.exists()


def test_iteration_skips_stray_files_before_the_shards(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digests = sorted(store.put(bytes([i])) for i in range(8))
    (store.blob_dir / "00").write_text("a file where a shard folder would be")
    assert sorted(store.iter_digests()) == digests


def test_refused_reads_name_the_blob_and_the_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, read_only=True)  # refused, not moved: the file can be inspected
    digest = LocalBlobStore(tmp_path).put(b"bytes" * 10)
    with pytest.raises(KeyError) as missing:
        store.get("f" * 64)
    assert missing.value.args == ("f" * 64,)
    path = store.path(digest)
    outside = tmp_path / "outside.zst"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    for make in ("link", "fifo"):
        if make == "fifo":
            path.unlink()
            os.mkfifo(path)
        with pytest.raises(CorruptBlobError) as e:
            store.get(digest)
        assert (e.value.digest, e.value.path) == (digest, str(path)) and e.value.actual, make
        assert str(path) in e.value.diagnostics[0].message


def test_a_blob_store_setting_names_what_is_wrong_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, problem in (("nocolon", "module:Class"), ("aotc.cache.store:", "module:Class"),
                           ("pathlib:Path", "not a subclass"), ("no_such_module_xyz:C", "cannot load it (ModuleNotFoundError")):
        monkeypatch.setenv("AOTC_BLOB_STORE", value)
        with pytest.raises(AotcError) as info:
            blob_store_class()
        assert problem in info.value.diagnostics[0].message, value

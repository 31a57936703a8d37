"""Crash consistency with real processes: 8 writers/readers on overlapping entries, SIGKILLed at
random (mid-write included), while `verify` and `gc` processes run (and are killed) alongside.
Afterwards: 0 corrupt blobs or half-written records, 0 committed entries lost, 0 refs of live
entries dropped, every read returned the right bytes or a miss. Counts go to bench/results/."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from reliability_results import record

from aotc.cache import Cache
from aotc.cache.maintenance import verify
from aotc.keys import sha256_hex

WORKERS = 8
NAMES = 24  # entries the workers share: writes and reads collide
DURATION_S = float(os.environ.get("AOTC_CRASH_SECONDS", "30"))

# One worker: commit and read random entries of the shared pool, forever; every commit that
# returned is appended (and fsynced) to its log before the next step: that is a "committed" entry.
WORKER = r"""
import os, random, sys
from aotc.cache import Cache
from aotc.keys import sha256_hex
root, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
cache = Cache(root)
def payload(i):
    return random.Random(f"p{i}").randbytes(20_000 + 3_000 * i)
log = open(log_path, "a")
while True:
    i = rng.randrange(POOL)
    key, sk = sha256_hex(b"key%d" % i), sha256_hex(b"spec%d" % i)
    if rng.random() < 0.5:
        cache.put_entry(key, {"cubin": payload(i), "source": b"// shared source"}, {
            "name": f"n{i}", "family": "fmha_fwd", "params": {"i": i}, "arch": "sm120a", "spec_key": sk,
            "target": {"sm": 120, "variant": "a"}})
        cache.set_ref(sk, key, {"family": "fmha_fwd", "params": {"i": i}, "arch": "sm120a", "name": f"n{i}"})
        log.write(f"commit {i}\n")
    else:
        try:
            m = cache.resolve_ref(sk)
            ok = m is None or cache.read_blob(m["blobs"]["cubin"]["sha256"]) == payload(i)
        except KeyError:
            ok = True  # a miss: the blob went to quarantine or was never there
        log.write(f"read {i} {'ok' if ok else 'WRONG'}\n")
    log.flush()
    os.fsync(log.fileno())
""".replace("POOL", str(NAMES))

MAINTENANCE = r"""
import sys, time
from aotc.cache import Cache
from aotc.cache.maintenance import gc, verify
cache, what = Cache(sys.argv[1]), sys.argv[2]
while True:
    if what == "verify":
        report = verify(cache)
        if not report.ok:
            print("VERIFY-FOUND", report.to_json(), flush=True)
    else:
        gc(cache, older_than_seconds=86_400)
    time.sleep(0.05)
"""


def payload(i: int) -> bytes:
    return random.Random(f"p{i}").randbytes(20_000 + 3_000 * i)


def spawn(code: str, *args: str, out=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT)


def test_random_sigkills_with_concurrent_verify_and_gc_lose_nothing(tmp_path):
    root, logs = tmp_path / "cache", tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(14)
    verify_out = open(tmp_path / "verify.out", "wb")  # noqa: SIM115 - shared by respawned verifiers
    procs: dict[str, subprocess.Popen] = {}
    counts = {"rounds": 0, "kills": 0, "kills_mid_write": 0, "workers": WORKERS, "maintenance_kills": 0}

    def start(name: str) -> None:
        if name.startswith("w"):
            procs[name] = spawn(WORKER, str(root), str(logs / f"{name}.log"), str(rng.randrange(1 << 30)))
        else:
            procs[name] = spawn(MAINTENANCE, str(root), name, out=verify_out)

    for n in range(WORKERS):
        start(f"w{n}")
    start("verify")
    start("gc")
    deadline = time.monotonic() + DURATION_S
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.05, 0.4))
        victim = rng.choice(sorted(procs))
        mid_write = any((root / "v1" / "tmp").glob("*.tmp")) if (root / "v1" / "tmp").is_dir() else False
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        counts["rounds"] += 1
        if victim.startswith("w"):
            counts["kills"] += 1
            counts["kills_mid_write"] += mid_write
        else:
            counts["maintenance_kills"] += 1
        start(victim)
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
        p.wait()
    verify_out.close()

    committed, reads, wrong = set(), 0, 0
    for log in logs.glob("*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue  # the last line of a killed writer may be cut short
            if parts[0] == "commit":
                committed.add(int(parts[1]))
            elif parts[0] == "read" and len(parts) == 3:
                reads += 1
                wrong += parts[2] == "WRONG"
    cache = Cache(root)
    lost = [i for i in sorted(committed)
            if (m := cache.resolve_ref(sha256_hex(b"spec%d" % i))) is None
            or cache.read_blob(m["blobs"]["cubin"]["sha256"]) != payload(i)]
    report = verify(cache)
    found_by_live_verify = (tmp_path / "verify.out").read_bytes().count(b"VERIFY-FOUND")
    counts.update(committed_entries=len(committed), reads=reads, wrong_reads=wrong, lost_entries=len(lost),
                  corrupt_blobs=len(report.corrupt_blobs), bad_records=len(report.bad_files),
                  broken_entries=len(report.broken_entries), dropped_refs=len(report.refs_dropped),
                  live_verify_findings=found_by_live_verify, seconds=int(DURATION_S))
    passed = counts["kills"] >= 8 and bool(committed) and wrong == 0 and not lost and report.ok \
        and found_by_live_verify == 0
    record("crash consistency", passed=passed, **counts)
    assert passed, json.dumps(counts)
    locks = cache.lock_dir
    assert cache.put_entry(sha256_hex(b"key0"), {"cubin": payload(0), "source": b"// shared source"},
                           {"name": "n0", "family": "fmha_fwd", "params": {"i": 0}, "arch": "sm120a",
                            "target": {"sm": 120, "variant": "a"}}) and locks.is_dir()  # no lock stuck
    assert isinstance(Path(root).stat().st_mode, int)

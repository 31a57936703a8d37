"""Corruption, every kind: single bit flips and truncations in blobs, manifests, refs and header
sets are all detected (a coded error), never loaded as good bytes, quarantined by `aotc verify`,
and healed by the next store of the entry. Counts go to bench/results/reliability.*."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from reliability_results import record

from aotc.build.direct_mode import lookup_prekey, record_prekey
from aotc.cache import Cache, CacheFormatError
from aotc.cache.maintenance import verify
from aotc.cache.store import CorruptBlobError
from aotc.diagnostics import AotcError
from aotc.keys import sha256_hex

ENTRIES = 6
TRIALS = {"blob": 100, "manifest": 100, "ref": 100, "headerset": 40}


def k(name: str) -> str:
    return sha256_hex(name.encode())


def payload(name: str) -> bytes:
    return random.Random(name).randbytes(3000) + name.encode() * 50


def commit(cache: Cache, name: str) -> dict:
    key = k(name)
    stored = cache.put_entry(key, {"cubin": payload(name), "source": f"// {name}\n".encode()}, {
        "name": name, "family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a", "spec_key": k("spec-" + name),
        "target": {"sm": 120, "variant": "a"}, "resources": {"registers": 96, "smem_static": 1024}})
    cache.set_ref(k("spec-" + name), key, {"family": "fmha_fwd", "params": {"n": name}, "arch": "sm120a",
                                           "name": name})
    return stored


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    cache = Cache(root)
    manifests = {f"e{i}": commit(cache, f"e{i}") for i in range(ENTRIES)}
    record_prekey(cache, k("prekey"), {"cutlass/a.h": k("a.h"), "cutlass/b.h": k("b.h")}, k("e0"))
    return root, manifests


def damage(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.25:  # a cut inside the content (cutting a record's trailing newline changes nothing)
        cut = rng.randrange(len(data.rstrip()) if path.suffix == ".json" else len(data))
        path.write_bytes(bytes(data[:cut]))
        return "truncation"
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    return "flip"


def files_of(cache: Cache, kind: str) -> list[Path]:
    if kind == "blob":
        return [cache.store.path(d) for d in sorted(cache.store.iter_digests())]
    return list(cache.record_paths({"manifest": "actions", "ref": "refs", "headerset": "headersets"}[kind]))


def loads_as_pristine(cache: Cache, manifests: dict) -> tuple[int, int]:
    """(entries that load exactly as stored, coded refusals); fails on any wrong result or crash."""
    good = refused = 0
    for name, stored in manifests.items():
        try:
            m = cache.resolve_ref(k("spec-" + name))
            if m is None:
                refused += 1
                continue
            assert m == stored, f"{name}: a damaged manifest was read as another one"
            for role, blob in m["blobs"].items():
                data = cache.read_blob(blob["sha256"])
                assert data == (payload(name) if role == "cubin" else f"// {name}\n".encode())
            good += 1
        except (AotcError, KeyError) as e:
            assert not isinstance(e, AotcError) or e.diagnostics[0].code.startswith("AOTC-"), e
            refused += 1
    return good, refused


@pytest.mark.parametrize("kind", list(TRIALS))
def test_every_damaged_file_is_detected_never_loaded_and_healed(pristine, tmp_path, kind):
    root, manifests = pristine
    rng = random.Random(f"corrupt-{kind}")
    outcomes = {"flip": 0, "truncation": 0, "detected_on_read": 0, "detected_by_verify": 0, "healed": 0}
    for trial in range(TRIALS[kind]):
        work = tmp_path / f"t{trial}"
        shutil.copytree(root, work)
        cache = Cache(work)
        target = rng.choice(files_of(cache, kind))
        outcomes[damage(target, rng)] += 1
        if kind == "headerset":  # a damaged header set: the direct-mode hint is a miss, never a wrong key
            with pytest.raises(CacheFormatError):
                cache.read_record("headersets", target.stem, "header set")
            assert lookup_prekey(cache, k("prekey")) is None
            outcomes["detected_on_read"] += 1
        else:
            good, refused = loads_as_pristine(cache, manifests)
            assert refused >= 1 and good + refused == ENTRIES, (kind, target)
            outcomes["detected_on_read"] += 1
            if kind == "blob":
                with pytest.raises((CorruptBlobError, KeyError)):
                    cache.read_blob(target.name.removesuffix(".zst"))
        report = verify(cache)
        assert not report.ok, (kind, target)
        outcomes["detected_by_verify"] += 1
        assert verify(cache).ok  # quarantined: the cache is consistent again
        for name in manifests:  # the next build stores what is missing
            commit(cache, name)
        if kind == "headerset":
            record_prekey(cache, k("prekey"), {"cutlass/a.h": k("a.h"), "cutlass/b.h": k("b.h")}, k("e0"))
        assert loads_as_pristine(cache, manifests) == (ENTRIES, 0)
        outcomes["healed"] += 1
        shutil.rmtree(work)
    assert outcomes["detected_on_read"] == outcomes["detected_by_verify"] == outcomes["healed"] == TRIALS[kind]
    record(f"corruption: {kind}", passed=True, trials=TRIALS[kind], **outcomes)  # every assertion above held

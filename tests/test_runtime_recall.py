"""Lookup records (aotc.runtime.recall): a later process takes what an earlier one's lookup found,
without importing the lookup, the families, spec keys or the cache, for as long as the stored files
it depends on are unchanged; a stale, corrupt or foreign record is never used."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aotc import runtime as rt
from aotc.runtime import lookup, recall, registry
from aotc.runtime.device import device_from_capability

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime import FAMILY, axpy_blobs, axpy_family, make_cache, serving_processes, store_entry  # noqa: F401

H100 = device_from_capability((9, 0))


@pytest.fixture
def blobs(axpy_blobs):  # noqa: F811 - test_runtime's fixture, by name
    """The axpy kernel compiled for every test target, and its helper."""
    return axpy_blobs


@pytest.fixture
def default_cache(tmp_path, monkeypatch):
    """The process's default sources pointed at a fresh cache through $AOTC_CACHE_DIR, as a server sets it."""
    monkeypatch.setenv("AOTC_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(lookup, "_sources", None)
    monkeypatch.setattr(lookup, "_default", None)
    return tmp_path / "c"


def first_load(params: dict | None = None, device=H100):
    """What get_kernel does before the driver: locate, read and check, then keep the record."""
    found, checked = registry.locate(FAMILY, params or {}, device)
    host = registry.host_kernel(found, checked)
    if checked is None:
        registry.remember(FAMILY, params or {}, None, device, found, host.target)
    return found, checked, host


def test_a_recorded_lookup_is_recalled_with_its_checked_target(default_cache, blobs):
    make_cache(default_cache, blobs, ("sm90a",))
    found, checked, host = first_load()
    assert checked is None  # the first process searched
    registry.clear()
    again, target = registry.locate(FAMILY, {}, H100)
    assert target == (90, "a") == host.target
    assert (again.family, again.params, again.arch, again.spec_key, again.manifest) == (
        found.family, found.params, found.arch, found.spec_key, found.manifest)
    assert registry.host_kernel(again, target).cubin == blobs["sm90a"]


def test_a_later_process_imports_no_lookup_family_or_cache_module(tmp_path, blobs):
    make_cache(tmp_path / "c", blobs, ("sm90a",))
    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "if sys.argv[2] == 'first':\n"
        "    from aotc.families import FAMILY_MODULES\n"
        "    FAMILY_MODULES['rt_test_axpy'] = 'axpy_family_mod'\n"
        "from aotc.runtime import registry\n"
        "from aotc.runtime.device import device_from_capability\n"
        "dev = device_from_capability((9, 0))\n"
        "found, checked = registry.locate('rt_test_axpy', {}, dev)\n"
        "host = registry.host_kernel(found, checked)\n"
        "if checked is None:\n"
        "    registry.remember('rt_test_axpy', {}, None, dev, found, host.target)\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('aotc.cache', 'aotc.families', 'aotc.keys',\n"
        "               'aotc.arch', 'aotc.runtime.lookup', 'aotc.diagnostics', 'zstandard', 'aotc.elf')))\n"
        "print(len(host.cubin), checked, ','.join(heavy) or '-')\n"
    )
    first, later = serving_processes(tmp_path, script, ("first",), ("later",))
    assert first[0] == later[0] == str(len(blobs["sm90a"]))
    assert first[1] == "None" and "aotc.runtime.lookup" in first[2]  # searched, and wrote the record
    assert later[1:] == ["(90,", "'a')", "-"]  # recalled: none of the search's modules imported


def test_a_rebuilt_kernel_makes_the_record_stale(default_cache, blobs):
    cache, _ = make_cache(default_cache, blobs, ("sm90a",))
    first_load()
    # a rebuild re-points the ref (another cubin under the same spec key): the record must not serve the old one
    store_entry(cache, {}, "sm90a", blobs["sm80"], blobs["helper"], b"rebuilt source")
    registry.clear()
    found, checked = registry.locate(FAMILY, {}, H100)
    assert checked is None
    assert found.manifest["blobs"]["cubin"]["sha256"] == cache.resolve_ref(found.spec_key)["blobs"]["cubin"]["sha256"]


def test_a_more_preferred_target_built_later_is_found(default_cache, blobs):
    rtx = device_from_capability((12, 0))
    cache, _ = make_cache(default_cache, blobs, ("sm120f",))
    found, _, _ = first_load(device=rtx)
    assert found.arch == "sm120f"
    registry.clear()
    assert registry.locate(FAMILY, {}, rtx)[1] == (120, "f")  # recalled while nothing changed
    store_entry(cache, {}, "sm120a", blobs["sm120a"], blobs["helper"], blobs["source"])
    registry.clear()
    found, checked = registry.locate(FAMILY, {}, rtx)
    assert (found.arch, checked) == ("sm120a", None)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong types", "other format", "empty", "no probes",
                                    "no helper digest"])
def test_a_damaged_record_is_ignored_and_rewritten(default_cache, blobs, damage):
    make_cache(default_cache, blobs, ("sm90a",))
    first_load()
    path = recall.record_path(FAMILY, {}, None, H100.cc)
    text = path.read_text()
    record = json.loads(text)
    damaged = {"garbage": "\x00not json", "truncated": text[: len(text) // 2], "empty": "",
               "wrong types": json.dumps({**record, "manifest": [], "target": "sm90a"}),
               "other format": json.dumps({**record, "format": 0}), "no probes": json.dumps({**record, "probes": []}),
               "no helper digest": json.dumps({**record, "manifest": {**record["manifest"], "blobs": {
                   "cubin": record["manifest"]["blobs"]["cubin"]}}})}[damage]
    path.write_text(damaged)
    registry.clear()
    _, checked, host = first_load()
    assert checked is None and host.cubin == blobs["sm90a"]
    assert json.loads(path.read_text()) == record  # the full lookup wrote it again


def test_a_lost_kept_cubin_is_read_again_through_a_full_lookup(default_cache, blobs):
    make_cache(default_cache, blobs, ("sm90a",))
    found, _, _ = first_load()
    kept = rt.loader.helper_dir() / f"{found.manifest['blobs']['cubin']['sha256']}.sm90a.cubin"
    kept.write_bytes(b"\x7fELF tampered")  # fails its digest: the source supplies the verified bytes
    registry.clear()
    again, checked = registry.locate(FAMILY, {}, H100)
    assert checked == (90, "a")
    assert registry.host_kernel(again, checked).cubin == blobs["sm90a"] == kept.read_bytes()


def test_records_serve_only_the_default_sources(default_cache, tmp_path, blobs):
    make_cache(default_cache, blobs, ("sm90a",))
    first_load()
    other, sources = make_cache(tmp_path / "other", blobs, ("sm90a",), cubin_for={"sm90a": "sm120a"})
    rt.set_sources(sources)  # a server pointed elsewhere: the record describes another source list
    registry.clear()
    found, checked = registry.locate(FAMILY, {}, H100)
    assert checked is None and not lookup.uses_default_sources()
    assert found.manifest == other.resolve_ref(found.spec_key) and "other" in found.source.name
    lookup._sources = None  # back to the default list; adding a source leaves it too
    rt.add_source(sources[0])
    assert not lookup.uses_default_sources()


def test_an_unwritable_record_costs_only_the_search(default_cache, blobs):
    make_cache(default_cache, blobs, ("sm90a",))
    recall.record_path(FAMILY, {}, None, H100.cc).mkdir(parents=True)  # os.replace onto a folder fails
    _, _, host = first_load()
    registry.clear()
    assert registry.locate(FAMILY, {}, H100)[1] is None and host.cubin == blobs["sm90a"]


def test_records_are_per_params_capability_and_cache(default_cache, blobs, monkeypatch, tmp_path):
    base = recall.record_path(FAMILY, {"tile": (64, 64)}, None, (9, 0))
    assert base == recall.record_path(FAMILY, {"tile": (64, 64)}, None, (9, 0))
    assert len({base, recall.record_path(FAMILY, {"tile": (128, 64)}, None, (9, 0)),
                recall.record_path(FAMILY, {"tile": (64, 64)}, None, (12, 0)),
                recall.record_path(FAMILY, {"tile": (64, 64)}, "sm80", (9, 0))}) == 4
    monkeypatch.setenv("AOTC_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert recall.record_path(FAMILY, {"tile": (64, 64)}, None, (9, 0)) != base


# ---- choices: an op called without params -------------------------------------------------------
CHOOSE = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "if sys.argv[2] == 'search':\n"
    "    from aotc.families import FAMILY_MODULES\n"
    "    FAMILY_MODULES['rt_test_axpy'] = 'axpy_family_mod'\n"
    "from aotc.runtime import ops\n"
    "from aotc.runtime.device import Device\n"
    "dev = Device(0, (9, 0), 'test GPU', 0, 132)  # no driver is asked: a capability, a name, 132 SMs\n"
    "out = []\n"
    "for m in (64, 4096):\n"
    "    params, found = ops.choice('rt_test_axpy', dev, {'needs_blockscaled': False}, {'m': m, 'n': m})\n"
    "    out.append(f\"{params['tile'][0]}x{params['tile'][1]}:{'searched' if found else 'recalled'}\")\n"
    "heavy = sorted(m for m in sys.modules if m.startswith(('aotc.cache', 'aotc.families', 'aotc.keys',\n"
    "               'aotc.runtime.lookup', 'aotc.runtime.tile_select', 'aotc.diagnostics')))\n"
    "print(','.join(out), ','.join(heavy) or '-')\n"
)


def store_tiles(root: Path, blobs: dict, *tiles: tuple[int, int]) -> None:
    from aotc.cache import Cache

    for tile in tiles:
        store_entry(Cache(root), {"tile": tile}, "sm90a", blobs["sm90a"], blobs["helper"], blobs["source"])


def test_a_later_process_chooses_from_the_record_of_the_search(tmp_path, blobs):
    """The first call of an op without params lists the stored kernels and records what it read; a
    later process makes the same choices per problem (the tile scores kept in the record: 64x64 for a
    64x64 problem, 128x128 for a large one) without the lookup, the families or the cache."""
    store_tiles(tmp_path / "c", blobs, (128, 128), (64, 64))
    first, later = serving_processes(tmp_path, CHOOSE, ("search",), ("later",))
    assert first[0] == "64x64:searched,128x128:recalled"  # the second problem already took the new record
    assert "aotc.runtime.lookup" in first[1]
    assert later == ["64x64:recalled,128x128:recalled", "-"]


def test_a_kernel_built_since_or_a_damaged_record_makes_the_next_process_search(tmp_path, blobs):
    """The record stands for the cache's ref folders as they were: a kernel stored since (here a 32x32
    tile, which the heuristic prefers for both problems: fewer idle SMs in the last wave) is seen by the next
    process, which searches again; a damaged record is searched past, never an error."""
    store_tiles(tmp_path / "c", blobs, (128, 128), (64, 64))
    serving_processes(tmp_path, CHOOSE, ("search",))
    store_tiles(tmp_path / "c", blobs, (32, 32))
    (searched,) = serving_processes(tmp_path, CHOOSE, ("search",))
    assert searched[0] == "32x32:searched,32x32:recalled"
    (record,) = (tmp_path / "rt").glob("*.choices.json")
    record.write_text('{"format": 1, "family": "rt_test_axpy", "candidates": "not a list"')
    (again,) = serving_processes(tmp_path, CHOOSE, ("search",))
    assert again[0] == "32x32:searched,32x32:recalled"


def test_explicit_sources_neither_use_nor_write_a_choices_record(tmp_path, blobs, monkeypatch):
    from aotc.cache import Cache
    from aotc.runtime import ops
    from aotc.runtime.device import Device

    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "rt"))
    (tmp_path / "rt").mkdir(mode=0o700)
    store_tiles(tmp_path / "c", blobs, (128, 128), (64, 64))
    rt.set_sources([rt.CacheSource(Cache(tmp_path / "c"))])
    try:
        dev = Device(0, (9, 0), "test GPU", 0, 132)
        params, found = ops.choice(FAMILY, dev, {"needs_blockscaled": False}, {"m": 64, "n": 64})
        assert found is not None and params["tile"] == [64, 64]
        assert not list((tmp_path / "rt").glob("*.choices.json"))
    finally:
        lookup._sources = None
        registry.clear()

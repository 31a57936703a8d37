"""The build pipeline end to end with real nvcc and real templates: compile, verify, store; a
rebuild is all cache hits with no compiler run; one failing kernel never stops the others."""

import shutil
from pathlib import Path

import pytest

import aotc.build.pipeline
import aotc.build.tu_task
from aotc.arch import ARCHES, parse_arch_list
from aotc.build.executor import Executor
from aotc.build.pipeline import BUILT, FAILED, HIT, build
from aotc.build.render import Source
from aotc.build.spec import load_specs
from aotc.build.tu_task import compile_tu
from aotc.cache import Cache, header_map
from aotc.cache.manifest import Manifest
from aotc.elf import cubin_target
from aotc.keys import action_key
from tests.conftest import BUILT_ARCHS, BUILT_SPEC

pytestmark = pytest.mark.compile


def spec():
    return next(s for s in load_specs().specs if s.name == BUILT_SPEC)


def test_first_build_stores_verified_entries(built_cache):
    cache, summary = built_cache
    assert [r.status for r in summary.results] == [BUILT, BUILT]
    for r in summary.results:
        m = cache.get_manifest(r.key)
        assert Manifest.from_json(m).key == r.key  # the typed record the runtime parses
        assert m["peak_rss_bytes"] > 100 << 20 and m["compile_seconds"] > 0  # nvcc's tree, measured
        arch = ARCHES[m["arch"]]
        assert m["target"] == {"sm": arch.sm, "variant": arch.variant}
        assert cubin_target(cache.read_blob(m["blobs"]["cubin"]["sha256"])) == (arch.sm, arch.variant)
        assert m["sass"]["mma"].get("HMMA", 0) > 0 and m["sass"]["banned"] in ([], {})
        assert m["resources"]["registers"] > 0
        assert m["smem_model"]["total"] <= arch.smem_optin_bytes
        assert cache.read_blob(m["blobs"]["helper"]["sha256"])[:4] == b"\x7fELF"
        assert b"aotc_kernel" in cache.read_blob(m["blobs"]["source"]["sha256"])
        # keys are portable: templates, CUTLASS and the toolkit appear by role, only system headers by path
        # the header map is a blob of its own, and the key is still the sha256 of the inputs with it in them
        assert "headers" not in m["inputs"] and m["blobs"]["headers"]["sha256"] in cache.store.iter_digests()
        assert action_key(header_map.inputs(m, cache.read_blob)) == r.key
        headers = header_map.inputs(m, cache.read_blob)["headers"]
        assert any(h.startswith("<cutlass") for h in headers) and any(h.startswith("<cuda>") for h in headers)
        assert all(h.startswith(("<", "/usr/include", "/usr/lib")) for h in headers), sorted(headers)[:5]


def test_rebuild_is_all_hits_without_compiling(built_cache, monkeypatch):
    cache, first = built_cache

    def no_compile(*a, **k):
        raise AssertionError("a cache hit must not run the compiler")

    monkeypatch.setattr(aotc.build.tu_task, "compile_source", no_compile)
    again = build([spec()], parse_arch_list(BUILT_ARCHS), cache, progress=False)
    assert [r.status for r in again.results] == [HIT, HIT]
    assert [r.key for r in again.results] == [r.key for r in first.results]


def test_one_failure_does_not_stop_the_others(built_cache, tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c")
    shutil.copytree(built_cache[0].root, cache.root, dirs_exist_ok=True)
    real_render = aotc.build.pipeline.render

    def render(s, arch):
        src = real_render(s, arch)
        if arch.name == "sm120a":  # a real nvcc error on one of the two jobs
            return Source(src.text + "\nstatic_assert(false, \"deliberately broken\");\n", src.template,
                          src.template_sha256)
        return src

    monkeypatch.setattr(aotc.build.pipeline, "render", render)
    summary = build([spec()], parse_arch_list(BUILT_ARCHS), cache, progress=False)
    by_arch = {r.arch.name: r for r in summary.results}
    assert by_arch["sm90a"].status == HIT
    failed = by_arch["sm120a"]
    assert failed.status == FAILED and not summary.ok
    assert failed.diagnostics[0].code == "AOTC-BUILD-001"
    assert "deliberately broken" in Path(failed.log_path).read_text()
    # the good sm120a entry built earlier is still there and intact
    good = next(r for r in built_cache[1].results if r.arch.name == "sm120a")
    assert cache.get_manifest(good.key) is not None


class ProcessExecutor(Executor):
    """TUs compiled in a separate worker process (what a distributed executor does on another
    machine): only the picklable TuJob goes out and the TuResult comes back; the parent stores."""

    jobs = 1

    def run(self, jobs):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield from pool.map(compile_tu, jobs)


def test_tus_compile_in_another_process_and_the_parent_stores_them(built_cache, tmp_path):
    first = next(r for r in built_cache[1].results if r.arch.name == "sm90a")
    cache = Cache(tmp_path / "c")
    summary = build([spec()], parse_arch_list("sm90a"), cache, progress=False, executor=ProcessExecutor())
    (r,) = summary.results
    assert r.status == BUILT and r.key == first.key  # same inputs, same action key, whichever process compiled
    assert Manifest.from_json(cache.get_manifest(r.key)).blobs.keys() == {"cubin", "helper", "source", "headers"}

    class Refuses(Executor):
        jobs = 1

        def run(self, jobs):
            assert not list(jobs), "a direct-mode hit must not reach the executor"
            return iter(())

    again = build([spec()], parse_arch_list("sm90a"), cache, progress=False, executor=Refuses())
    assert [x.status for x in again.results] == [HIT], [d.format() for x in again.results for d in x.diagnostics]
    assert again.results[0].key == first.key

"""Measured tile choice without a GPU: selection tables are stored under a content key of (device,
driver, candidates), read back checksum-verified, packed into kernel wheels, and override the
heuristic in ops.choose only for the exact device, driver and candidate set they were measured on;
bad shapes files and a missing GPU are coded errors with exit status 2."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from aotc import runtime as rt
from aotc.arch import ARCHES, get_arch
from aotc.build.spec import load_specs
from aotc.build.wheel_pack import build_wheel, check_wheel, select_entries
from aotc.cache import Cache
from aotc.cache.store import LocalBlobStore
from aotc.cli import main
from aotc.diagnostics import AotcError
from aotc.keys import spec_key
from aotc.runtime import lookup, ops, registry, tuned
from aotc.runtime.device import Device, device_from_capability
from aotc.runtime.tile_select import best
from aotc.tune import DEFAULT_SHAPES, choice_inputs, complete_shape, load_shapes, measure, pick, round_order

GEMM = "grouped_gemm_sm80"
ARCH = "sm120a"
CARD = "NVIDIA RTX PRO 6000 Blackwell"


def store_gemms(cache: Cache) -> None:
    """Catalog grouped GEMMs stored for sm120a as the build records them (placeholder blobs:
    choosing reads none)."""
    arch = get_arch(ARCH)
    for s in (s for s in load_specs().specs if s.family == GEMM):
        key = spec_key(GEMM, s.params, ARCH)  # any digest serves as action key here
        cache.put_entry(key, {"cubin": s.name.encode()}, {
            "name": s.name, "family": GEMM, "params": s.params, "arch": ARCH,
            "target": {"sm": arch.sm, "variant": arch.variant}, "entry": "aotc_kernel",
            "toolchain": {"nvcc_version": "13.0"}})
        cache.set_ref(spec_key(GEMM, s.params, ARCH), key, {"name": s.name, "family": GEMM, "params": s.params,
                                                             "arch": ARCH})


@pytest.fixture
def gemm_cache(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    store_gemms(cache)
    rt.set_sources([rt.CacheSource(cache)])
    monkeypatch.setattr(registry, "kernel_for", lambda found, device: found)  # loading needs a GPU
    yield cache
    lookup._sources = None
    registry.clear()
    tuned.forget()
    ops._choices.clear()


def device(name: str = CARD) -> Device:
    return device_from_capability((12, 0), name=name)


SHAPE = {"groups": 8, "m": 4096, "n": 4096, "k": 4096}  # the heuristic picks 128x256: no padding, largest


def table_for(dev: Device, choice_tile: tuple[int, ...], identity: dict | None = None, kernels=None) -> dict:
    """A table as `aotc tune` writes it, choosing `choice_tile` for SHAPE's bucket."""
    stored = lookup.stored_candidates(GEMM, dev)
    chosen = next(f for f in stored if tuple(f.params["tile"]) == choice_tile)
    identity = identity or tuned.device_identity(dev)
    kernels = sorted(kernels if kernels is not None else (f.spec_key for f in stored))
    matches, problem = choice_inputs(GEMM, complete_shape(GEMM, SHAPE))
    return {"schema": tuned.SCHEMA, "key": tuned.table_key(GEMM, identity, kernels), "family": GEMM,
            "device": identity, "kernels": kernels, "choices": {tuned.bucket(matches, problem): chosen.spec_key}}


def choose_for(dev: Device, shape: dict = SHAPE):
    matches, problem = choice_inputs(GEMM, complete_shape(GEMM, shape))
    return ops.choose(GEMM, dev, (json.dumps(shape, sort_keys=True),), matches, problem, None)


def test_choose_takes_the_tuned_tile_over_the_heuristic(gemm_cache):
    dev = device()
    heuristic = choose_for(dev)
    assert tuple(heuristic.params["tile"]) == (128, 256, 32)
    path = tuned.write_table(gemm_cache, table_for(dev, (64, 128, 64)))
    assert path.parent.parent.name == tuned.KIND
    registry.clear()  # as after `aotc tune`: the next choice reads the table
    chosen = choose_for(dev)
    assert tuple(chosen.params["tile"]) == (64, 128, 64)
    # another bucket (m rounds to another power of two): the table has no choice, the heuristic decides
    other = choose_for(dev, {**SHAPE, "m": 64})
    assert other == best([f for f in lookup.stored_candidates(GEMM, dev) if f.params["dtype"] == "bf16"],
                         choice_inputs(GEMM, complete_shape(GEMM, {**SHAPE, "m": 64}))[1], 0)
    # the same bucket, another size in it: still the tuned tile
    assert tuple(choose_for(dev, {**SHAPE, "m": 3000}).params["tile"]) == (64, 128, 64)


@pytest.mark.parametrize("change", ["device name", "driver", "capability", "kernels"])
def test_a_table_of_another_device_driver_or_candidate_set_is_ignored(gemm_cache, change):
    dev = device()
    identity = tuned.device_identity(dev)
    kernels = None
    if change == "device name":
        identity = {**identity, "name": "NVIDIA GeForce RTX 5090"}
    elif change == "driver":
        identity = {**identity, "driver": 12080}
    elif change == "capability":
        identity = {**identity, "cc": [12, 1]}
    else:  # a table measured before one more kernel was built
        kernels = [f.spec_key for f in lookup.stored_candidates(GEMM, dev)][1:]
    tuned.write_table(gemm_cache, table_for(dev, (64, 128, 64), identity, kernels))
    registry.clear()
    assert tuple(choose_for(dev).params["tile"]) == (128, 256, 32)


def test_tables_are_content_addressed_and_checksummed(gemm_cache):
    dev = device()
    table = table_for(dev, (64, 128, 64))
    key = table["key"]
    assert tuned.table_problem(table, key) == ""
    ident = tuned.device_identity(dev)
    kernels = table["kernels"]
    keys = {tuned.table_key(GEMM, ident, kernels), tuned.table_key(GEMM, {**ident, "driver": 1}, kernels),
            tuned.table_key(GEMM, {**ident, "name": "x"}, kernels), tuned.table_key(GEMM, ident, kernels[1:]),
            tuned.table_key("fmha_fwd", ident, kernels)}
    assert len(keys) == 5 and tuned.table_key(GEMM, ident, kernels[::-1]) == key  # order of kernels is no input
    assert "key" in tuned.table_problem({**table, "device": {**ident, "driver": 1}}, key)
    assert "did not time" in tuned.table_problem({**table, "choices": {"b": "0" * 64}}, key)
    with pytest.raises(ValueError):
        tuned.write_table(gemm_cache, {**table, "key": "0" * 64})
    path = tuned.write_table(gemm_cache, table)
    assert tuned.read_table(gemm_cache, key)["choices"] == table["choices"]
    path.write_text(path.read_text().replace(table["choices"][next(iter(table["choices"]))], kernels[0]))
    assert tuned.read_table(gemm_cache, key) is None  # edited: its checksum no longer matches
    registry.clear()
    assert tuple(choose_for(dev).params["tile"]) == (128, 256, 32)


def test_bucket_rounds_problem_dimensions_up_to_powers_of_two():
    b = tuned.bucket({"dtype": "bf16"}, {"m": 3000, "n": 4096, "k": 1, "groups": 8})
    assert b == "dtype=bf16|groups=8,k=1,m=4096,n=4096"
    assert tuned.bucket({"dtype": "bf16"}, {"m": 2049}) != tuned.bucket({"dtype": "bf16"}, {"m": 2048})


def test_pick_keeps_the_heuristic_unless_another_tile_is_clearly_faster():
    assert pick([{"a": 1.0, "b": 0.995}], "a") == "a"  # within 1%: the heuristic stays
    assert pick([{"a": 1.0, "b": 0.9}], "a") == "b"
    # two shapes of one bucket: the least mean time relative to each shape's fastest
    assert pick([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 1.0}], None) == "b"  # a: (1 + 3)/2, b: (2 + 1)/2
    assert pick([{"a": 1.0, "b": 2.0}, {"b": 1.0}], "a") == "b"  # a failed on the second shape


def test_rounds_alternate_direction_and_rotate_so_every_candidate_takes_every_place():
    orders = [round_order(["a", "b", "c"], r) for r in range(6)]
    assert orders[:2] == [["a", "b", "c"], ["c", "b", "a"]]  # A B C, then C B A
    assert sorted(map(tuple, orders)) == sorted({tuple(o) for o in orders})  # six distinct orders
    for place in range(3):
        assert sorted(o[place] for o in orders) == ["a", "a", "b", "b", "c", "c"]
    assert round_order([], 3) == [] and round_order(["a"], 5) == ["a"]


def scripted_timer(script: dict[str, list[float]], calls: list[str] | None = None):
    """A timer for launches that return their key: each key's next scripted time (an exception is raised)."""
    left = {k: iter(v) for k, v in script.items()}

    def timer(fn):
        key = fn()
        if calls is not None:
            calls.append(key)
        value = next(left[key])
        if isinstance(value, BaseException):
            raise value
        return value, "scripted"
    return timer


def launches(*keys: str) -> dict:
    return {k: (lambda k=k: k) for k in keys}


def test_measure_interleaves_rounds_and_retimes_only_the_close_candidates():
    calls: list[str] = []
    script = {"a": [1.00] * 8, "b": [1.04] * 8, "c": [2.0] * 8}
    got = measure(launches("a", "b", "c"), scripted_timer(script, calls), rounds=2, close=0.05, retime=2)
    # two rounds over all three, then two over the two within 5% of the best; c (2x) is not re-timed
    assert calls == ["a", "b", "c", "c", "b", "a", "b", "a", "a", "b"]  # rounds 3 and 4 continue the order
    assert {k: len(v) for k, v in got["rounds"].items()} == {"a": 4, "b": 4, "c": 2}
    assert got["ms"] == pytest.approx({"a": 1.0, "b": 1.04, "c": 2.0}) and got["failed"] == {}
    assert got["how"] == {"a": "scripted", "b": "scripted", "c": "scripted"}
    # one clear winner: nothing to re-time
    calls.clear()
    measure(launches("a", "c"), scripted_timer(script, calls), rounds=2, close=0.05, retime=3)
    assert calls == ["a", "c", "c", "a"]


def test_a_tile_that_is_sometimes_slow_loses_to_a_steady_one_within_noise():
    """The H200 case (2026-12-02): 64x128 timed 0.1062 ms once in the tune and 0.1329 ms in the check,
    128x128 0.1082/0.1077. One timing per tile picked 64x128 (+23.5% in the check); the mean of
    interleaved rounds sees its slow rounds and picks the steady tile."""
    script = {"64x128": [0.1062, 0.1329, 0.1062, 0.1329, 0.1062, 0.1329, 0.1062, 0.1329],
              "128x128": [0.1082, 0.1077, 0.1080, 0.1078, 0.1079, 0.1081, 0.1077, 0.1080],
              "128x256": [0.1078, 0.1090, 0.1085, 0.1088, 0.1086, 0.1087, 0.1084, 0.1089]}
    single = {k: v[0] for k, v in script.items()}
    assert pick([single], "128x256") == "64x128"  # what one timing per tile chose
    got = measure(launches(*script), scripted_timer(script))
    assert pick([got["ms"]], "128x256") in ("128x128", "128x256")  # both within 1% of each other
    assert got["ms"]["64x128"] > 1.1 * got["ms"]["128x128"]


def test_measure_drops_a_candidate_that_fails_in_any_round():
    from aotc.diagnostics import Diagnostic

    error = AotcError(Diagnostic("AOTC-RT-007", "tile cannot run this problem"))
    calls: list[str] = []
    script = {"a": [1.0] * 6, "b": [1.01, error], "c": [0.99] * 6}
    got = measure(launches("a", "b", "c"), scripted_timer(script, calls), rounds=3, close=0.05, retime=1)
    assert "AOTC-RT-007" in got["failed"]["b"] and "b" not in got["ms"] and "b" not in got["rounds"]
    assert calls.count("b") == 2  # failed in round 2: never timed again
    assert got["ms"] == pytest.approx({"a": 1.0, "c": 0.99}) and len(got["rounds"]["a"]) == 4
    # other errors are failures only where the caller says so (the GPU check catches everything)
    with pytest.raises(ZeroDivisionError):
        measure(launches("a"), scripted_timer({"a": [ZeroDivisionError("x")]}))
    got = measure(launches("a"), scripted_timer({"a": [ZeroDivisionError("x")]}), errors=(Exception,))
    assert got["failed"] == {"a": "ZeroDivisionError: x"} and got["ms"] == {}


def test_wheel_packs_tables_of_its_kernels_and_the_installed_tree_serves_them(gemm_cache, tmp_path):
    from aotc.runtime.installed_wheels import _refusal

    dev = device()
    table = table_for(dev, (64, 128, 64))
    tuned.write_table(gemm_cache, table)
    foreign = {**table, "kernels": [*table["kernels"], "f" * 64]}  # times a kernel the wheel lacks: left out
    foreign["key"] = tuned.table_key(GEMM, foreign["device"], foreign["kernels"])
    tuned.write_table(gemm_cache, foreign)
    whl = build_wheel(gemm_cache, select_entries(gemm_cache, [ARCHES[ARCH]]), "k", tmp_path / "dist")
    with zipfile.ZipFile(whl) as zf:
        packed = [n for n in zf.namelist() if f"/{tuned.KIND}/" in n]
        assert [n.rsplit("/", 1)[1] for n in packed] == [f"{table['key']}.json"]
        assert json.loads(zf.read("k/aotc_wheel.json"))["tune_tables"] == 1
        zf.extractall(tmp_path / "site")
    assert not [d for d in check_wheel(whl).diagnostics if d.code == "AOTC-WHEEL-014"]
    # what an installed wheel is: RECORD matches, its store/ read as a read-only cache
    dist_info = next((tmp_path / "site").glob("*.dist-info"))
    record = {r[0]: r[1] for r in csv.reader(io.StringIO((dist_info / "RECORD").read_text())) if len(r) > 1}
    assert _refusal(tmp_path / "site" / "k", record)[0] == ""
    root = tmp_path / "site" / "k" / "store"
    rt.set_sources([rt.CacheSource(Cache(root, store=LocalBlobStore(root, read_only=True)))])
    registry.clear()
    assert tuple(choose_for(dev).params["tile"]) == (64, 128, 64)


def test_wheel_check_flags_a_bad_table(gemm_cache, tmp_path):
    dev = device()
    table = table_for(dev, (64, 128, 64))
    tuned.write_table(gemm_cache, table)
    whl = build_wheel(gemm_cache, select_entries(gemm_cache, [ARCHES[ARCH]]), "k", tmp_path / "dist")
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if f"/{tuned.KIND}/" in info.filename:
                data = data.replace(table["kernels"][0].encode(), table["kernels"][1].encode(), 1)
            dst.writestr(info, data)
    codes = [d.code for d in check_wheel(bad).diagnostics]
    assert "AOTC-WHEEL-014" in codes and "AOTC-WHEEL-009" in codes  # the table itself, and RECORD


def test_shapes_files(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('[[fmha_fwd]]\nbatch = 2\nseqlen_q = 1000\n\n[[grouped_gemm_sm80]]\ngroups = 4\nm = 8\n'
                    'n = 64\nk = 64\ndtype = "fp16"\n')
    shapes = load_shapes(good)
    assert shapes["fmha_fwd"] == [{"batch": 2, "seqlen_q": 1000, "seqlen_k": 1000, "q_heads": 32, "kv_heads": 8,
                                   "head_dim": 128, "dtype": "bf16", "causal": False}]
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"fmha_decode": [{"batch": 4, "seqlen_k": 512}]}))
    assert load_shapes(as_json)["fmha_decode"][0]["kv_heads"] == 8
    for family, shapes_ in DEFAULT_SHAPES.items():  # the built-in set is complete, as a file's shapes are
        assert [complete_shape(family, s) for s in shapes_] == shapes_
        for s in shapes_:
            choice_inputs(family, s)  # what the tune buckets each shape by


@pytest.mark.parametrize("text, suffix, says", [
    ('[[fmha_fwd]]\nbatch = 1\nseqlen = 5\n', "toml", "did you mean seqlen_q"),
    ('[[fmha_fwd]]\nbatch = 1\n', "toml", "lacks 'seqlen_q'"),
    ('[[fmha_fwd]]\nseqlen_q = "long"\n', "toml", "is not an int"),
    ('[[fmha_fwd]]\nseqlen_q = 0\n', "toml", "out of range"),
    ('[[fmha_fwd]]\nseqlen_q = 64\nq_heads = 6\nkv_heads = 4\n', "toml", "not a multiple"),
    ('[[grouped_gemm_sm80]]\ngroups = 2\nm = 1\nn = 12\nk = 64\n', "toml", "multiples of 8"),
    ('[[grouped_gemm_sm80]]\ngroups = 2\nm = 1\nn = 64\nk = 64\ndtype = "e4m3"\n', "toml", "is not one of"),
    ('[[grouped_gemm_sm80]]\ngroups = 4096\nm = 65536\nn = 4096\nk = 4096\n', "toml", "GiB"),
    ('[[fmha_fwd]\n', "toml", "does not parse"),
    ('{"fmha_fwd": [', "json", "does not parse"),
    ('{"fmha_fwd": {}}', "json", "non-empty list"),
    ('[]', "json", "holds no family"),
])
def test_bad_shapes_files_are_coded_errors_with_exit_status_2(tmp_path, capsys, text, suffix, says):
    path = tmp_path / f"shapes.{suffix}"
    path.write_text(text)
    assert main(["tune", "--shapes", str(path), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "AOTC-TUNE-001" in err and says in err, err


def test_unknown_family_and_missing_file(tmp_path, capsys):
    assert main(["tune", "--family", "grouped_gemm", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "AOTC-TUNE-002" in err and "did you mean grouped_gemm_sm80" in err
    assert main(["tune", "--shapes", str(tmp_path / "none.toml"), "--cache-dir", str(tmp_path)]) == 2
    assert "no such shapes file" in capsys.readouterr().err


def _has_gpu() -> bool:
    try:
        rt.query_device(0)
    except AotcError:
        return False
    return True


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the no-GPU error cannot happen here")
def test_no_gpu_is_aotc_rt_001_with_exit_status_2(tmp_path, capsys):
    assert main(["tune", "--json", "--cache-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "AOTC-RT-001" in captured.err and captured.out == ""
    assert not (tmp_path / "v1" / tuned.KIND).exists()


def _device_tune():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "device_tune.py"
    spec = importlib.util.spec_from_file_location("device_tune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_device_proof_builds_catalog_kernels_and_judges_the_tuned_choice(tmp_path):
    tool = _device_tune()
    assert set(tool.BUILD) <= {s.name for s in load_specs().specs}  # what it builds is in the catalog
    assert "fmha_fwd_d64_m128n128" in tool.BUILD  # the head_dim 64 shapes tune over the fastest d64 tile
    assert set(tool.FAMILIES) <= set(DEFAULT_SHAPES)
    rows = tool.judge([
        {"family": GEMM, "shape": {"groups": 8, "m": 16}, "ms": {"a": 1.0, "b": 1.02, "c": 1.2},
         "heuristic": "c", "tuned": "b"},
        {"family": GEMM, "shape": {"groups": 8, "m": 32}, "ms": {"a": 1.0, "b": 1.05}, "heuristic": "a",
         "tuned": "b"}])
    assert [r["ok"] for r in rows] == [True, False]  # 2% and 5% slower than the fastest tile
    assert rows[0]["heuristic_vs_fastest"] == pytest.approx(0.2) and rows[1]["fastest"] == "a"
    data = {"card": "NVIDIA H200", "date": "d", "commit": "abc123", "command": "c", "device": {}, "build": {},
            "tune_seconds": 1.0, "check_seconds": 2.0, "rows": rows}
    json_path, md_path = tool.write(tmp_path, data)
    assert json_path.name == "tune_nvidia_h200.json" and json.loads(json_path.read_text())["rows"][1]["ok"] is False
    md = md_path.read_text()
    assert "1/2 shapes; worst tuned slowdown +5.0%" in md and "+20.0%" in md and "| NO |" in md
    assert "- commit: abc123" in md


def test_device_proof_records_the_commit_it_measured(tmp_path, monkeypatch):
    import subprocess

    tool = _device_tune()
    monkeypatch.setenv("AOTC_COMMIT", "f00d")
    assert tool.commit_of(tmp_path) == "f00d"  # no git here (a copy of the tree): what the command says
    monkeypatch.delenv("AOTC_COMMIT")
    assert tool.commit_of(tmp_path) == "unknown"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "m"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert tool.commit_of(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert tool.commit_of(tmp_path) == f"{head}-dirty"


def test_tune_family_builds_the_table_choose_then_follows(gemm_cache, monkeypatch):
    """The tune's own bookkeeping with the launches and the clock replaced (they need a GPU): every
    candidate timed per shape, the bucket's choice stored, the summary side by side."""
    from aotc import tune

    fake_ms = {(64, 128, 64): 1.0, (128, 128, 64): 1.5, (128, 256, 32): 2.0}
    monkeypatch.setattr(tune, "runner", lambda family, s, ordinal: lambda params: lambda: params)
    dev = device()
    lines: list[str] = []
    shapes = [complete_shape(GEMM, SHAPE), complete_shape(GEMM, {**SHAPE, "dtype": "fp16"})]
    table, rows = tune.tune_family(GEMM, shapes, dev, lines.append,
                                   timer=lambda fn: (fake_ms[tuple(fn()["tile"][:3])], "fake"))
    assert len(lines) == 3 + 1  # three bf16 tiles, the one fp16 tile
    bf16 = tune._row_summary(rows[0])
    assert bf16["heuristic"]["kernel"].startswith("moe_bf16_128x256") and bf16["heuristic"]["ms"] == 2.0
    assert bf16["tuned"]["kernel"].startswith("moe_bf16_64x128") and bf16["fastest"] == bf16["tuned"]
    assert len(table["choices"]) == 2 and table["kernels"] == sorted(f.spec_key for f in lookup.stored_candidates(GEMM, dev))
    text = tune.summary_text({"device": table["device"], "tables": [], "shapes": [bf16]})
    assert "heuristic moe_bf16_128x256" in text and "(2.00x the heuristic's speed)" in text
    tuned.write_table(gemm_cache, table)
    registry.clear()
    assert tuple(choose_for(dev).params["tile"]) == (64, 128, 64)


def test_a_retuned_table_gives_the_wheel_a_new_version(gemm_cache, tmp_path):
    entries = select_entries(gemm_cache, [ARCHES[ARCH]])
    plain = build_wheel(gemm_cache, entries, "k", tmp_path / "a").name
    dev = device()
    tuned.write_table(gemm_cache, {**table_for(dev, (64, 128, 64)), "tuned_at": "2026-12-01T05:00:00Z"})
    first = build_wheel(gemm_cache, entries, "k", tmp_path / "b").name
    tuned.write_table(gemm_cache, {**table_for(dev, (128, 128, 64)), "tuned_at": "2026-12-01T05:00:00Z"})
    second = build_wheel(gemm_cache, entries, "k", tmp_path / "c").name
    assert len({plain, first, second}) == 3  # same kernels; another table, another version

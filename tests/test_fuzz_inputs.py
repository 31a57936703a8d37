"""Property-based fuzzing (hypothesis) of everything aotc reads from outside: spec files (structured
and byte-mangled), cache records (manifests, refs) under every reader (lookups, ls, show, verify, gc),
cubin ELF bytes, kernel wheels (zip bytes and entries) and installed-wheel discovery. Property: a
result or a coded diagnostic, never another exception, never over 2 s. >= 10,000 cases per run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_results import record

from aotc.build.spec import EXPANDED_NAME_PATTERN, load_spec_file
from aotc.cache import Cache
from aotc.cache.maintenance import gc, verify
from aotc.diagnostics import AotcError
from aotc.keys import sha256_hex

CASES: dict[str, int] = {}
FAST = settings(deadline=2000, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def cases(n: int) -> int:
    """Examples per test; AOTC_FUZZ_SCALE scales them (e.g. 0.05 for a quick local run)."""
    return max(1, int(n * float(os.environ.get("AOTC_FUZZ_SCALE", "1"))))


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _record_counts(request):
    failed_before = request.session.testsfailed
    yield
    failed = request.session.testsfailed - failed_before  # a failing property is an exception or a timeout
    record("fuzzing", passed=failed == 0, total_cases=sum(CASES.values()), failed_properties=failed,
           **{f"cases_{k}": v for k, v in sorted(CASES.items())})


def coded(e: AotcError) -> None:
    assert e.diagnostics and all(d.code.startswith("AOTC-") and d.message for d in e.diagnostics)


# ---- spec files ----------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
SCALAR = st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), TEXT,
                   st.floats(allow_nan=True, allow_infinity=True))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=5), max_leaves=12)
FAMILIES = ["fmha_fwd", "fmha_decode", "grouped_gemm_sm80", "gemm_blockscaled_sm120",
            "grouped_gemm_blockscaled_sm120", "nope"]
KEYS = ["block_m", "block_n", "head_dim", "warps", "kv_stages", "dtype", "q_in_regs", "tile", "warp", "stages",
        "a_dtype", "b_dtype", "out_dtype", "schedule", "archs", "doc", "x"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v).replace("inf", "inf")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


TABLE = st.fixed_dictionaries(
    {"name": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,70}", fullmatch=True), TEXT),
     "family": st.sampled_from(FAMILIES)},
    optional={k: st.one_of(VALUE, st.sampled_from([64, 128, 16, 4, "bf16", "fp16", "nvfp4", [128, 128, 64]]),
                           st.lists(st.sampled_from([16, 32, 64, 128, 256]), min_size=1, max_size=2))
              for k in KEYS})


def spec_text(tables: list[dict]) -> str:
    out = []
    for t in tables:
        out.append("[[kernel]]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(out) + "\n"


def check_load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.toml"
        path.write_bytes(data)
        result = load_spec_file(path)
    for diag in result.diagnostics:
        assert diag.code.startswith("AOTC-SPEC-") and diag.message, diag
    for spec in result.specs:
        assert EXPANDED_NAME_PATTERN.fullmatch(spec.name), spec.name  # nothing unsafe reaches a template


@settings(FAST, max_examples=cases(1000))
@given(st.lists(TABLE, min_size=1, max_size=3))
def test_structured_spec_files_load_or_give_coded_diagnostics(tables):
    count("spec_structured")
    check_load(spec_text(tables).encode("utf-8", "surrogatepass"))


GOOD_SPEC = (b'[[kernel]]\nname = "attn"\nfamily = "fmha_fwd"\narchs = ["sm120a"]\nblock_m = [64, 128]\n'
             b'block_n = 64\nwarps = 4\nhead_dim = [64, 128]\ndtype = "bf16"\ndoc = "x"\n')


@settings(FAST, max_examples=cases(2500))
@given(st.lists(st.tuples(st.integers(0, len(GOOD_SPEC)), st.binary(max_size=6), st.integers(0, 4)), max_size=6))
def test_byte_mangled_spec_files_load_or_give_coded_diagnostics(edits):
    count("spec_bytes")
    data = bytearray(GOOD_SPEC)
    for pos, ins, cut in edits:
        pos = min(pos, len(data))
        data[pos:pos + cut] = ins
    check_load(bytes(data))


# ---- cache records ---------------------------------------------------------------------------------
JSONV = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
                     lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
                     max_leaves=15)
KEY, SPEC = sha256_hex(b"entry"), sha256_hex(b"spec")
MANIFEST = {"schema": 1, "key": KEY, "name": "n", "family": "fmha_fwd", "params": {"block_m": 64},
            "arch": "sm120a", "target": {"sm": 120, "variant": "a"}, "spec_key": SPEC,
            "blobs": {"cubin": {"sha256": sha256_hex(b"cubin"), "size": 5}}}
FIELDS = sorted(MANIFEST) + ["resources", "cubins", "smem_model"]


def record_bytes(base: dict, draw_field, draw_value, raw: bytes | None, deep: int) -> bytes:
    if raw is not None:
        return raw
    value = dict(base)
    if draw_field is not None:
        value[draw_field] = draw_value
    text = json.dumps(value)
    return ("[" * deep + text + "]" * deep).encode() if deep else text.encode()


def run_cli(*args: str) -> int:
    from aotc.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


@settings(FAST, max_examples=cases(800))
@given(st.sampled_from(["manifest", "ref"]), st.one_of(st.none(), st.sampled_from(FIELDS)), JSONV,
       st.one_of(st.none(), st.binary(max_size=64)), st.sampled_from([0, 0, 0, 5000]), st.integers(0, 7))
def test_malformed_cache_records_never_crash_a_reader(which, field, value, raw, deep, cli):
    count("cache_records")
    from aotc.runtime.lookup import CacheSource

    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d)
        cache.put_entry(KEY, {"cubin": b"cubin"}, {k: v for k, v in MANIFEST.items() if k not in ("key", "blobs")})
        cache.set_ref(SPEC, KEY, {"family": "fmha_fwd", "params": {"block_m": 64}, "arch": "sm120a", "name": "n"})
        ref = {"schema": 1, "spec_key": SPEC, "key": KEY, "family": "fmha_fwd", "params": {}, "arch": "sm120a"}
        target = cache.manifest_path(KEY) if which == "manifest" else cache.ref_path(SPEC)
        target.write_bytes(record_bytes(MANIFEST if which == "manifest" else ref, field, value, raw, deep))
        for read in (lambda: cache.resolve_ref(SPEC), lambda: CacheSource(cache).resolve(SPEC),
                     lambda: list(cache.entries()), lambda: list(cache.refs())):
            try:
                read()
            except AotcError as e:
                coded(e)
        for argv in (["ls", "--json"], ["show", "n"], ["gc", "--dry-run"]) if cli == 0 else ():  # 1 in 8: argparse
            assert run_cli(*argv, "--cache-dir", d) in (0, 1, 2)
        gc(cache, dry_run=True)
        verify(cache)
        assert verify(cache).ok  # whatever was bad is quarantined: the cache is consistent again


# ---- cubins --------------------------------------------------------------------------------------
def minimal_elf() -> bytes:
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4], head[5], head[6], head[7], head[8] = 2, 1, 1, 0x41, 8
    head[16:18] = (2).to_bytes(2, "little")
    head[18:20] = (190).to_bytes(2, "little")
    head[0x30:0x34] = (0x6007802).to_bytes(4, "little")
    head[0x34:0x36] = (64).to_bytes(2, "little")
    return bytes(head) + bytes(64)


@settings(FAST, max_examples=cases(4500))
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), max_size=12)
                 .map(lambda edits: _patched(minimal_elf(), edits))))
def test_any_bytes_as_a_cubin_give_a_target_or_a_coded_error(data):
    count("cubin_bytes")
    from aotc.elf import cubin_target, kernel_symbols

    for read in (cubin_target, kernel_symbols):
        try:
            read(data)
        except AotcError as e:
            coded(e)


def _patched(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for pos, val in edits:
        out[pos] = val
    return bytes(out)


# ---- kernel wheels -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_wheel(tmp_path_factory) -> bytes:
    from aotc.arch import ARCHES
    from aotc.build.wheel_pack import build_wheel, select_entries

    root = tmp_path_factory.mktemp("fuzz-wheel")
    cache = Cache(root / "cache")
    m = {k: v for k, v in MANIFEST.items() if k not in ("key", "blobs")}
    # a cubin that is no ELF: every check but the SASS scan runs (the scan has its own tests)
    cache.put_entry(KEY, {"cubin": b"no ELF: keeps cuobjdump out of the loop", "source": b"// src"}, {**m, "toolchain": {"nvcc_version": "13"}})
    cache.set_ref(SPEC, KEY, {"family": "fmha_fwd", "params": {"block_m": 64}, "arch": "sm120a", "name": "n"})
    return build_wheel(cache, select_entries(cache, [ARCHES["sm120a"]]), "kfuzz", root / "dist").read_bytes()


WHEEL_CASES: dict[str, bytes] = {}


@settings(FAST, max_examples=cases(1500))
@given(data=st.data())
def test_mangled_wheels_give_a_report_or_a_coded_error(fuzz_wheel, data):
    count("wheels")
    from aotc.build.wheel_check import check_wheel

    whl = bytearray(fuzz_wheel)
    if data.draw(st.booleans()):  # byte level: flips and cuts anywhere in the zip
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(whl) - 1))
            whl[pos] ^= data.draw(st.integers(1, 255))
        if data.draw(st.booleans()):
            del whl[data.draw(st.integers(0, len(whl) - 1)):]
        blob = bytes(whl)
    else:  # entry level: one member replaced by fuzz
        with zipfile.ZipFile(io.BytesIO(fuzz_wheel)) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
        name = data.draw(st.sampled_from(sorted(files) + ["kfuzz/extra.json", "../escape.py"]))
        files[name] = data.draw(st.one_of(st.binary(max_size=80), JSONV.map(lambda v: json.dumps(v).encode())))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, b in files.items():
                zf.writestr(n, b)
        blob = buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.whl"
        path.write_bytes(blob)
        try:
            check_wheel(path)
        except AotcError as e:
            coded(e)

"""Key stability: the same inputs give the same key (also in another process with another hash
seed); every input that changes the compiler's output changes the action key."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aotc import ABI_VERSION
from aotc.keys import action_inputs, action_key, canonical_json, prekey, spec_key

REPO = Path(__file__).resolve().parent.parent
SOURCE = (
    '#include "cutlass/gemm/device/gemm_universal_adapter.h"\nextern "C" __global__ void aotc_kernel() {}\n'
)
TOOLCHAIN = "nvcc 13.0.88 /toolkit sha256:0123"
FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr"]
HEADERS = {
    "cutlass/include/cutlass/cutlass.h": "a" * 64,
    "cutlass/include/cute/tensor.hpp": "b" * 64,
}


def base_key(**changes: object) -> str:
    args = {
        "source": SOURCE,
        "toolchain_identity": TOOLCHAIN,
        "flags": FLAGS,
        "arch": "sm120a",
        "headers": HEADERS,
    }
    args.update(changes)
    return action_key(action_inputs(**args))  # type: ignore[arg-type]


def test_action_key_is_sha256_of_hand_written_canonical_json() -> None:
    # Written out by hand (not via canonical_json) so a change of the key format is caught.
    src = hashlib.sha256(SOURCE.encode()).hexdigest()
    template = (
        '{"abi":ABI,"arch":"sm120a","flags":["-O3","-std=c++17","--expt-relaxed-constexpr"],'
        '"headers":{"cutlass/include/cute/tensor.hpp":"BBB","cutlass/include/cutlass/cutlass.h":"AAA"},'
        '"source_sha256":"SRC","toolchain":"TC"}'
    )
    text = (
        template.replace("ABI", str(ABI_VERSION))
        .replace("BBB", "b" * 64)
        .replace("AAA", "a" * 64)
        .replace("SRC", src)
        .replace("TC", TOOLCHAIN)
    )
    assert base_key() == hashlib.sha256(text.encode()).hexdigest()


def test_same_inputs_same_key_regardless_of_dict_order() -> None:
    reordered = dict(reversed(list(HEADERS.items())))
    assert base_key() == base_key(headers=reordered)
    assert spec_key("fam", {"a": 1, "b": [128, 64]}, "sm120a") == spec_key(
        "fam", {"b": (128, 64), "a": 1}, "sm120a"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"source": SOURCE + " "},
        {"toolchain_identity": "nvcc 13.1.0 /toolkit sha256:0123"},
        {"flags": [*FLAGS, "-DNDEBUG"]},
        {"flags": list(reversed(FLAGS))},  # flag order can change the meaning (e.g. -I search order)
        {"arch": "sm120f"},
        {"headers": {**HEADERS, "cutlass/include/cute/tensor.hpp": "c" * 64}},  # a header's content
        {"headers": {**HEADERS, "cutlass/include/cute/extra.hpp": "d" * 64}},  # one more header read
        {"headers": {"cutlass/include/cutlass/cutlass.h": "a" * 64}},  # one fewer
    ],
    ids=[
        "source",
        "toolchain",
        "flag-added",
        "flag-order",
        "arch",
        "header-digest",
        "header-added",
        "header-removed",
    ],
)
def test_any_input_change_changes_action_key(change: dict) -> None:
    assert base_key(**change) != base_key()


@pytest.mark.parametrize(
    "change",
    [{"source": SOURCE + "\n"}, {"toolchain_identity": "other"}, {"flags": ["-O2"]}, {"arch": "sm121a"}],
)
def test_any_input_change_changes_prekey(change: dict) -> None:
    args = {"source": SOURCE, "toolchain_identity": TOOLCHAIN, "flags": FLAGS, "arch": "sm120a"}
    assert prekey(**{**args, **change}) != prekey(**args)  # type: ignore[arg-type]


def test_prekey_ignores_headers_and_differs_from_action_key() -> None:
    pk = prekey(SOURCE, TOOLCHAIN, FLAGS, "sm120a")
    assert pk == prekey(SOURCE, TOOLCHAIN, list(FLAGS), "sm120a")
    assert pk != base_key()


def test_spec_key_changes_with_family_params_arch() -> None:
    k = spec_key("gemm", {"tile": [128, 128, 128], "stages": "auto"}, "sm120a")
    assert k != spec_key("gemm2", {"tile": [128, 128, 128], "stages": "auto"}, "sm120a")
    assert k != spec_key("gemm", {"tile": [128, 256, 128], "stages": "auto"}, "sm120a")
    assert k != spec_key("gemm", {"tile": [128, 128, 128], "stages": 2}, "sm120a")
    assert k != spec_key("gemm", {"tile": [128, 128, 128], "stages": "auto"}, "sm120f")


def test_sets_serialise_sorted() -> None:
    assert canonical_json({"s": {"b", "a", "c"}}) == '{"s":["a","b","c"]}'
    assert json.loads(canonical_json({"t": (1, 2)})) == {"t": [1, 2]}


def _keys_in_fresh_process(seed: str) -> str:
    code = (
        "from aotc.keys import spec_key, prekey\n"
        "print(spec_key('f', {'dtypes': {'e4m3', 'e2m1', 'bf16', 'f32', 'ue8m0'}, 'tile': (128, 64)}, 'sm120a'))\n"
        "print(prekey('src', 'tc', ['-O3'], 'sm120a'))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_keys_stable_across_processes_and_hash_seeds() -> None:
    # A set's iteration order depends on the string hash seed; keys must not.
    outputs = {_keys_in_fresh_process(seed) for seed in ("0", "1", "2", "12345")}
    assert len(outputs) == 1
    here = spec_key("f", {"dtypes": {"e4m3", "e2m1", "bf16", "f32", "ue8m0"}, "tile": (128, 64)}, "sm120a")
    assert outputs.pop().splitlines()[0] == here
